"""QGPO: the CEP loss, exact energy guidance in closed form, CEP learning the guidance on the toy
mixture, in-support softmax Q targets, the support-action cache, configs and evaluation sweeps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffrl.algos import DataSpec, qgpo
from diffrl.algos.qgpo import Agent, Config, cep_loss
from diffrl.data import OfflineDataset, TransitionBatch
from diffrl.datasets import toy_bandit
from diffrl.errors import ConfigError, DiffrlError


def _agent(obs_dim: int = 1, act_dim: int = 1, **over) -> Agent:
    torch.manual_seed(0)
    spec = DataSpec(obs_dim, act_dim, (-1.0,) * act_dim, (1.0,) * act_dim)
    return Agent(Config(**{"steps": 10, "behavior_steps": 5, "compile": False, **over}), spec)


# ----------------------------------------------------------------------------- CEP loss
def test_cep_loss_hand_example():
    # p = softmax(1 * [0, ln 3]) = [1/4, 3/4]; log softmax([0, ln 2]) = [ln 1/3, ln 2/3]
    f = torch.tensor([[0.0, math.log(2.0)]])
    q = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(0.25 * math.log(1 / 3) + 0.75 * math.log(2 / 3))
    assert cep_loss(f, q, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # beta = 2: p = [1/10, 9/10]; two states average
    f2 = torch.tensor([[0.0, math.log(2.0)], [1.0, 1.0]])
    q2 = torch.tensor([[0.0, math.log(3.0)], [5.0, 5.0]])
    hand = (-(0.1 * math.log(1 / 3) + 0.9 * math.log(2 / 3)) + math.log(2.0)) / 2
    assert cep_loss(f2, q2, 2.0).item() == pytest.approx(hand, rel=1e-6)


def test_cep_loss_is_minimised_by_the_tilted_energy():
    q = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    f = (3.0 * q + 7.0).requires_grad_(True)  # any per-state shift of beta q is optimal
    cep_loss(f, q, 3.0).backward()
    assert f.grad.abs().max() < 1e-7
    worse = cep_loss(3.0 * q + 0.3 * torch.randn(4, 16), q, 3.0)
    assert worse > cep_loss(3.0 * q, q, 3.0)


# ----------------------------------------------------------------------------- exact guidance
class _GaussianEps(nn.Module):
    """The exact noise predictor of mu = N(m, s^2) (1-d action): sigma (x - alpha m) / v_t."""

    def __init__(self, sde, m: float, s: float) -> None:
        super().__init__()
        self.sde, self.m, self.s = sde, m, s

    def forward(self, x, t, obs):
        a, sg = self.sde.alpha(t), self.sde.sigma(t)
        return sg * (x - a * self.m) / (a * a * self.s**2 + sg * sg)


class _LinearQEnergy(nn.Module):
    """The exact intermediate energy for Q(a) = c a under mu = N(m, s^2), up to a constant:
    E_t(x) = log E[exp(c a) | x_t = x] = c alpha s^2 x / (alpha^2 s^2 + sigma^2) + const."""

    def __init__(self, sde, c: float, s: float) -> None:
        super().__init__()
        self.sde, self.c, self.s = sde, c, s

    def forward(self, x, t, obs):
        a, sg = self.sde.alpha(t), self.sde.sigma(t)
        return self.c * a * self.s**2 * x / (a * a * self.s**2 + sg * sg)

    def action_grad(self, x, t, obs):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            return torch.autograd.grad(self(xg, t, obs).sum(), xg)[0]


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.0])
def test_guided_sampling_draws_from_the_tilted_gaussian(scale):
    """mu = N(0.1, 0.2^2), Q = 5 a: pi ~ mu exp(scale Q) = N(0.1 + scale * 5 * 0.04, 0.2^2)."""
    agent = _agent(solver_skip="logSNR", solver_order=3, sampling_steps=15)
    agent.behavior = _GaussianEps(agent.sde, 0.1, 0.2)
    agent.energy = _LinearQEnergy(agent.sde, 5.0, 0.2)
    obs = torch.zeros(1, 1)
    with torch.no_grad():
        x = agent.sample(obs, 40_000, scale, generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(0.1 + scale * 0.2, abs=0.01)
    assert x.std().item() == pytest.approx(0.2, rel=0.04)


def test_guided_eps_adds_the_scaled_energy_gradient():
    agent = _agent(obs_dim=3, act_dim=2)
    x = torch.randn(6, 2)
    obs = torch.randn(3, 3)  # two rows per state
    t = 0.4
    with torch.no_grad():
        got = agent.guided_eps(x, t, obs, 2.5)
        plain = agent.guided_eps(x, t, obs, 0.0)
    xg = x.clone().requires_grad_(True)
    agent.energy(xg, t, obs.repeat_interleave(2, dim=0)).sum().backward()
    torch.testing.assert_close(got, plain - agent.sde.sigma(t) * 2.5 * xg.grad)
    torch.testing.assert_close(plain, agent.behavior(x, t, obs))


# ----------------------------------------------------------------------------- CEP learns it
class _MixtureEps(nn.Module):
    """The exact noise predictor of the toy bandit's behaviour mixture (4 equal Gaussians)."""

    def __init__(self, sde) -> None:
        super().__init__()
        self.sde = sde
        self.centres = torch.tensor([c for c, _ in toy_bandit.MODES.values()])
        self.s2 = toy_bandit.MODE_STD**2

    def forward(self, x, t, obs):
        a, sg = self.sde.alpha(t), self.sde.sigma(t)
        v = a * a * self.s2 + sg * sg
        diff = x[:, None, :] - a * self.centres[None]  # (N, 4, 2)
        resp = torch.softmax(-(diff**2).sum(-1) / (2 * v), dim=1)
        return sg * (resp[..., None] * diff).sum(1) / v


class _ModeQ(nn.Module):
    """Q(s, a) = the mean reward of the mode nearest to a."""

    def q_min(self, obs, action):
        centres = torch.tensor([c for c, _ in toy_bandit.MODES.values()])
        rewards = torch.tensor([r for _, r in toy_bandit.MODES.values()])
        nearest = torch.cdist(action, centres).argmin(dim=1)
        return rewards[nearest][:, None]


def _modes(actions: torch.Tensor) -> dict[str, float]:
    return toy_bandit.evaluate_actions(actions.numpy())["mode_fractions"]


def test_cep_trained_energy_guides_the_exact_behaviour_model_to_the_best_mode():
    """Only f is learned (CEP on support actions from mu, Q from the modes' rewards): guided
    samples must then concentrate on right_bottom, while scale 0 keeps the four modes."""
    agent = _agent(obs_dim=2, act_dim=2, hidden=64, energy_lr=1e-3)
    agent.behavior = _MixtureEps(agent.sde)
    agent.critic_target = _ModeQ()
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([c for c, _ in toy_bandit.MODES.values()])
    obs = torch.zeros(64, 2)
    for _ in range(300):
        pick = torch.randint(4, (64, 16), generator=gen)
        support = centres[pick] + toy_bandit.MODE_STD * torch.randn(64, 16, 2, generator=gen)
        batch = TransitionBatch(obs, support[:, 0], torch.zeros(64, 1), obs, torch.ones(64, 1))
        agent._energy_update(batch, support.clamp(-1, 1))
    with torch.no_grad():
        plain = _modes(agent.sample(torch.zeros(1, 2), 2000, 0.0, generator=gen))
        guided = _modes(agent.sample(torch.zeros(1, 2), 2000, 1.0, generator=gen))
    for name in toy_bandit.MODES:
        assert 0.15 <= plain[name] <= 0.35, plain
    assert guided["right_bottom"] >= 0.8, guided


class _OverScaledEnergy(nn.Module):
    """A guidance gradient towards right_bottom that is active at large t only (as the true
    intermediate energies are) but too strong to be exact: c * min(1, t / 0.2) * (1, -1)."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def action_grad(self, x, t, obs):
        return self.c * min(1.0, float(t) / 0.2) * torch.tensor([1.0, -1.0]).expand_as(x)


def test_clip_x0_keeps_an_over_scaled_guidance_on_the_data():
    """Exact behaviour mixture, guidance 10 x an over-strong large-t gradient: the official
    sampler drives every sample out of the box; with x0 clamped they land on right_bottom."""
    fractions = {}
    for clip in (False, True):
        agent = _agent(obs_dim=2, act_dim=2, clip_x0=clip)
        agent.behavior = _MixtureEps(agent.sde)
        agent.energy = _OverScaledEnergy(0.5)
        with torch.no_grad():
            x = agent.sample(
                torch.zeros(1, 2), 2000, 10.0, generator=torch.Generator().manual_seed(0)
            )
            plain = agent.sample(
                torch.zeros(1, 2), 2000, 0.0, generator=torch.Generator().manual_seed(0)
            )
        fractions[clip] = _modes(x)
        for name in toy_bandit.MODES:  # unguided sampling of in-box data: the clamp is inactive
            assert 0.15 <= _modes(plain)[name] <= 0.35
    assert fractions[False]["off_mode"] >= 0.9, fractions
    assert fractions[True]["right_bottom"] >= 0.85, fractions


# ----------------------------------------------------------------------------- critic target
def test_in_support_softmax_target():
    agent = _agent(obs_dim=2, act_dim=1, critic_lr=0.0, beta=2.0)
    b, m = 4, 3
    gen = torch.Generator().manual_seed(1)
    batch = TransitionBatch(
        obs=torch.randn(b, 2, generator=gen),
        action=torch.rand(b, 1, generator=gen) * 2 - 1,
        reward=torch.randn(b, 1, generator=gen),
        next_obs=torch.randn(b, 2, generator=gen),
        not_done=torch.tensor([[1.0], [0.0], [1.0], [1.0]]),
    )
    support = torch.rand(b, m, 1, generator=gen) * 2 - 1
    with torch.no_grad():
        q = torch.stack(
            [
                agent.critic_target.q_min(batch.next_obs[i : i + 1].expand(m, 2), support[i])[:, 0]
                for i in range(b)
            ]
        )
    v = (torch.softmax(2.0 * q, dim=1) * q).sum(1, keepdim=True)
    hand = batch.reward + batch.not_done * 0.99 * v
    out = agent._q_update(batch, support)
    assert out["target_q"] == pytest.approx(hand.mean().item(), rel=1e-5)
    # beta_q overrides beta for the value, and a large beta_q approaches the max
    sharp = _agent(obs_dim=2, act_dim=1, critic_lr=0.0, beta_q=1e4)
    sharp.critic_target.load_state_dict(agent.critic_target.state_dict())
    out = sharp._q_update(batch, support)
    hand_max = batch.reward + batch.not_done * 0.99 * q.max(1, keepdim=True).values
    assert out["target_q"] == pytest.approx(hand_max.mean().item(), rel=1e-4)


# ----------------------------------------------------------------------------- support cache
def _tiny_dataset(n_eps: int = 3, length: int = 5) -> OfflineDataset:
    rng = np.random.default_rng(0)
    n = n_eps * length
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    nxt = np.roll(obs, -1, axis=0).copy()
    ends = np.arange(length - 1, n, length)
    nxt[ends] = rng.normal(size=(len(ends), 3))  # last step of each episode: a new state
    terminals = np.zeros(n, bool)
    terminals[ends] = True
    return OfflineDataset(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=nxt,
        terminals=terminals,
        timeouts=np.zeros(n, bool),
        episode_starts=np.arange(0, n, length),
        next_valid=np.ones(n, bool),
        infos={},
        metadata={"name": "tiny"},
    )


def _support_agent(**over) -> Agent:
    spec = DataSpec(3, 2, (-1.0, -1.0), (1.0, 1.0))
    torch.manual_seed(0)
    cfg = {"steps": 10, "behavior_steps": 5, "support_actions": 4, "support_steps": 2}
    cfg["compile"] = False
    return Agent(Config(**{**cfg, "support_chunk": 4, **over}), spec)


def _count_samples(agent: Agent, monkeypatch) -> list[int]:
    """Let `agent.sample` run as usual, appending to the returned list at each call."""
    real, calls = agent.sample, []
    monkeypatch.setattr(agent, "sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_support_table_covers_every_state_and_next_state(tmp_path):
    agent = _support_agent()
    data = _tiny_dataset()
    smp = agent.batch_sampler(data, torch.device("cpu"))
    agent.prepare_support(tmp_path, progress=False)
    n = len(smp)
    # next states reuse the next row's state inside an episode: 15 rows + 3 episode ends
    assert agent._support.shape == (n + 3, 4, 2)
    torch.testing.assert_close(agent._support_states[:n], smp.obs)
    torch.testing.assert_close(agent._support_states[agent._next_ref], smp.next_obs)
    assert agent._support.abs().max() <= 1.0


def test_support_cache_is_reused_regenerated_and_resumed(tmp_path, monkeypatch):
    data = _tiny_dataset()
    full = _support_agent()
    full.batch_sampler(data, torch.device("cpu"))
    full.prepare_support(tmp_path / "a", progress=False)

    # Reused: a second agent with the same weights does not sample at all.
    again = _support_agent()
    again.batch_sampler(data, torch.device("cpu"))

    def no_sampling(*args, **kwargs):
        raise AssertionError("support actions were regenerated")

    monkeypatch.setattr(again, "sample", no_sampling)
    again.prepare_support(tmp_path / "a", progress=False)
    assert torch.equal(again._support, full._support)

    # Regenerated: other behaviour weights invalidate the cache.
    other = _support_agent()
    with torch.no_grad():
        next(other.behavior.parameters()).add_(0.1)
    other.batch_sampler(data, torch.device("cpu"))
    old = _cache_fingerprint(tmp_path / "a")
    calls = _count_samples(other, monkeypatch)
    other.prepare_support(tmp_path / "a", progress=False)
    assert len(calls) == 5  # 18 states in chunks of 4
    assert _cache_fingerprint(tmp_path / "a") != old

    # Resumed: a generation killed after 2 chunks continues to the same table.
    monkeypatch.setattr(qgpo, "SUPPORT_SAVE_SECONDS", 0.0)
    killed = _support_agent()
    killed.batch_sampler(data, torch.device("cpu"))
    real, calls = killed.sample, []

    def dies_after_two(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(killed, "sample", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        killed.prepare_support(tmp_path / "b", progress=False)
    resumed = _support_agent()
    resumed.batch_sampler(data, torch.device("cpu"))
    resumed.prepare_support(tmp_path / "b", progress=False)
    assert torch.equal(resumed._support, full._support)
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_support_generation_stops_when_asked_and_keeps_its_chunks(tmp_path, monkeypatch):
    """A stop request (SIGINT/SIGTERM to the run) during generation saves the chunks made so
    far at once, not only at the next periodic save, and a later run makes only the rest."""
    data = _tiny_dataset()
    full = _support_agent()
    full.batch_sampler(data, torch.device("cpu"))
    full.prepare_support(tmp_path / "a", progress=False)

    stopped = _support_agent()
    stopped.batch_sampler(data, torch.device("cpu"))
    calls = _count_samples(stopped, monkeypatch)
    stopped.prepare_support(tmp_path / "b", progress=False, stop=lambda: len(calls) >= 2)
    assert len(calls) == 2 and stopped._support is None and stopped.training

    resumed = _support_agent()
    resumed.batch_sampler(data, torch.device("cpu"))
    calls = _count_samples(resumed, monkeypatch)
    resumed.prepare_support(tmp_path / "b", progress=False)
    assert len(calls) == 3  # 5 chunks, 2 kept
    assert torch.equal(resumed._support, full._support)


def _cache_fingerprint(run_dir):
    from safetensors import safe_open

    with safe_open(str(run_dir / qgpo.SUPPORT_FILE), framework="pt") as fh:
        return fh.metadata()["fingerprint"]


def test_critic_stage_without_support_is_a_clear_error():
    agent = _support_agent()
    agent.num_updates = 5
    batch = TransitionBatch(*(torch.zeros(2, d) for d in (3, 2, 1, 3, 1)))
    with pytest.raises(DiffrlError, match="support actions"):
        agent.update(batch)


# ----------------------------------------------------------------------------- config, presets
@pytest.mark.parametrize(
    "over,match",
    [
        ({"behavior_steps": 20, "steps": 10}, "behavior_steps <= steps"),
        ({"q_fraction": 1.5}, "q_fraction"),
        ({"solver_order": 4}, "solver_order"),
        ({"solver_method": "adaptive"}, "solver_method"),
        ({"solver_skip": "quadratic"}, "solver_skip"),
        ({"reward_norm": "zscore"}, "reward_norm"),
        ({"support_actions": 0}, "support_actions"),
    ],
)
def test_bad_config_values(over, match):
    with pytest.raises(ConfigError, match=match):
        Config(**over)


def test_presets():
    assert qgpo.presets("hopper-medium-v0")["eval_sweep"] == "guidance_scale=0,1,2,3,5,8,10"
    toy = qgpo.presets("toy-bandit")
    assert toy["steps"] > toy["behavior_steps"] > 0
    assert toy["eval_sweep"] == "guidance_scale=0,1,3,10"
    assert Config().behavior_steps == 600_000 and Config().support_actions == 16  # official
    assert Config().sampling_steps == 15 and Config().solver_order == 2


def test_return_range_reward_scale():
    data = _tiny_dataset()
    agent = _support_agent()
    smp = agent.batch_sampler(data, torch.device("cpu"))
    returns = np.asarray(data.episode_returns())
    scale = 1000.0 / (returns.max() - returns.min())
    torch.testing.assert_close(smp.reward[:, 0], torch.as_tensor(data.rewards * scale).float())
    plain = _support_agent(reward_norm="none").batch_sampler(data, torch.device("cpu"))
    torch.testing.assert_close(plain.reward[:, 0], torch.as_tensor(data.rewards))


def test_energy_action_grad_equals_autograd():
    agent = _agent(obs_dim=3, act_dim=2)
    x, obs = torch.randn(9, 2), torch.randn(9, 3)
    t = torch.rand(9)
    xg = x.clone().requires_grad_(True)
    agent.energy(xg, t, obs).sum().backward()
    torch.testing.assert_close(agent.energy.action_grad(x, t, obs), xg.grad)


def test_compiled_sampling_equals_eager():
    obs = torch.randn(3, 2)
    out = {}
    for compiled in (False, True):
        agent = _agent(obs_dim=2, act_dim=2, compile=compiled, sampling_steps=4)
        agent.energy_updates += 1
        out[compiled] = [
            agent.sample(obs, 2, scale, generator=torch.Generator().manual_seed(0))
            for scale in (0.0, 1.5)
        ]
        assert not agent.graphs.failed
    for eager, comp in zip(out[False], out[True], strict=True):
        torch.testing.assert_close(eager, comp, atol=1e-5, rtol=1e-5)


def test_guidance_only_after_the_energy_model_is_trained():
    agent = _agent(guidance_scale=5.0)
    agent.behavior = _GaussianEps(agent.sde, 0.1, 0.2)  # samples well inside [-1, 1]
    obs = torch.zeros(8, 1)
    a0 = agent.act(obs, torch.Generator().manual_seed(0))
    with torch.no_grad():
        b0 = agent.unnormalize_action(
            agent.sample(obs, 1, 0.0, generator=torch.Generator().manual_seed(0))
        )
    assert torch.equal(a0, b0)  # untrained f: no guidance
    agent.energy_updates += 1
    a1 = agent.act(obs, torch.Generator().manual_seed(0))
    assert not torch.equal(a0, a1)


def test_evaluation_sweeps_guidance_scales():
    from diffrl.evaluate import Sweep, evaluate

    cfg = Config(
        env_id="toy-bandit", eval_sweep="guidance_scale=0,2", sampling_steps=3, compile=False
    )
    spec = DataSpec(2, 2, (-1.0, -1.0), (1.0, 1.0))
    agent = Agent(cfg, spec)
    agent.energy_updates += 1
    sweep = Sweep(cfg.eval_sweep, cfg, spec, torch.device("cpu"))
    result = evaluate(agent, cfg, 1, 0, torch.device("cpu"), sweep=sweep)
    assert set(result["by_guidance_scale"]) == {"0", "2"}
    assert result["guidance_scale"] in (0.0, 2.0)
    best = result["by_guidance_scale"][f"{result['guidance_scale']:g}"]
    assert (
        result["reward_mean"]
        == best["reward_mean"]
        == max(r["reward_mean"] for r in result["by_guidance_scale"].values())
    )
    assert agent.guidance_scale == cfg.guidance_scale  # the evaluated agent is left as it was
    # Each value's agent acts as an agent built with that scale and the same weights.
    for value, swept in zip(sweep.values(), sweep.agents, strict=True):
        assert swept.guidance_scale == value and int(swept.energy_updates) == 1


def test_evaluation_sweep_runs_once_while_guidance_cannot_act(monkeypatch):
    """Before the energy model is trained every guidance scale acts alike: one evaluation
    stands for all of them; once it is trained each scale is evaluated."""
    import diffrl.evaluate as ev

    cfg = Config(
        env_id="toy-bandit", eval_sweep="guidance_scale=0,2,5", sampling_steps=3, compile=False
    )
    spec = DataSpec(2, 2, (-1.0, -1.0), (1.0, 1.0))
    agent = Agent(cfg, spec)
    sweep = ev.Sweep(cfg.eval_sweep, cfg, spec, torch.device("cpu"))
    scales = []
    once = ev._evaluate_once

    def counting(swept, config, *args):
        scales.append(config.guidance_scale)
        return once(swept, config, *args)

    monkeypatch.setattr(ev, "_evaluate_once", counting)
    before = ev.evaluate(agent, cfg, 1, 0, torch.device("cpu"), sweep=sweep)
    assert scales == [0.0]
    assert before["guidance_scale"] == 0.0 and "by_guidance_scale" not in before
    agent.energy_updates += 1
    after = ev.evaluate(agent, cfg, 1, 0, torch.device("cpu"), sweep=sweep)
    assert scales == [0.0, 0.0, 2.0, 5.0]
    assert set(after["by_guidance_scale"]) == {"0", "2", "5"}
    assert before["reward_mean"] == after["by_guidance_scale"]["0"]["reward_mean"]


def test_old_config_key_is_read_with_a_notice(capsys):
    from diffrl.config import from_dict, to_dict

    old = to_dict(Config())
    del old["eval_sweep"]
    old["eval_guidance_scales"] = [0.0, 1.0, 3.0]
    assert from_dict(Config, old).eval_sweep == "guidance_scale=0,1,3"
    assert capsys.readouterr().err == (
        "notice: config key 'eval_guidance_scales' is renamed; "
        "read as eval_sweep='guidance_scale=0,1,3'\n"
    )


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 400), ("ddpm", 2000)])
def test_every_sampler_draws_the_guided_policy(sampler, steps):
    """The shared sampler keys work for QGPO: DDIM and ancestral DDPM on the VP-SDE sample
    pi ~ mu exp(scale Q) too (mu = N(0.1, 0.2^2), Q = 5 a, scale 2: N(0.5, 0.2^2)). Both are
    first order on a grid uniform in t, so they need many steps for the spread (std measured:
    DDIM 0.188 / 0.197 at 100 / 400 steps, DDPM 0.193 / 0.198 at 500 / 2000)."""
    agent = _agent(sampler=sampler, sampling_steps=steps, compile=False)
    agent.behavior = _GaussianEps(agent.sde, 0.1, 0.2)
    agent.energy = _LinearQEnergy(agent.sde, 5.0, 0.2)
    obs = torch.zeros(1, 1)
    with torch.no_grad():
        x = agent.sample(obs, 40_000, 2.0, generator=torch.Generator().manual_seed(0))
        y = agent.sample(obs, 40_000, 2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    assert x.mean().item() == pytest.approx(0.5, abs=0.01)
    assert x.std().item() == pytest.approx(0.2, rel=0.03)
