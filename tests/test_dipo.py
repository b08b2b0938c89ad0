"""DIPO and SAC: the action-gradient step, the diffusion memory, targets, online runs, errors."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from diffrl.algos import DataSpec, dipo, sac
from diffrl.checkpoint import load_newest_intact
from diffrl.cli import main
from diffrl.data import TransitionBatch
from diffrl.data.online import OnlineSource, ReplayBuffer

CPU = torch.device("cpu")


def _agent(act_dim: int = 2, obs_dim: int = 3, **settings) -> dipo.Agent:
    base = {"diffusion_steps": 5, "hidden": 32, "t_hidden": 32, "compile": False}
    config = dipo.Config(**{**base, **settings})
    spec = DataSpec(obs_dim, act_dim, (-1.0,) * act_dim, (1.0,) * act_dim)
    return dipo.Agent(config, spec)


class QuadraticQ(nn.Module):
    """Both heads Q(s, a) = -||a - c||^2 (head 2 lower by 1, so min picks head 2)."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c = nn.Parameter(c.clone())  # a parameter, to check it gets no gradient

    def forward(self, obs, action):
        q = -((action - self.c) ** 2).sum(-1, keepdim=True)
        return q, q - 1.0


def _official_action_gradient(obs, actions, critic, steps, lr, max_norm):
    """The official loop (agent/DiPo.py, action_gradient), verbatim in its torch calls."""
    best = actions.clone().requires_grad_(True)
    opt = torch.optim.Adam([best], lr=lr, eps=1e-5)
    for _ in range(steps):
        best.requires_grad_(True)
        q1, q2 = critic(obs, best)
        loss = -torch.min(q1, q2)
        opt.zero_grad()
        loss.backward(torch.ones_like(loss))
        nn.utils.clip_grad_norm_([best], max_norm=max_norm, norm_type=2)
        opt.step()
        best.requires_grad_(False)
        best.clamp_(-1.0, 1.0)
    return best.detach()


def test_action_gradient_matches_a_hand_step_and_the_official_loop():
    c = torch.tensor([0.3, 5.0])  # the second coordinate's optimum is outside the box
    agent = _agent(action_lr=0.1, action_steps=1, action_grad_ratio=0.05)
    agent.critic = QuadraticQ(c)
    obs = torch.zeros(4, 3)
    a0 = torch.tensor([[0.0, 0.0], [0.5, 0.9], [-0.5, -1.0], [0.3, 0.99]])
    # One step by hand: g = d/da -min Q = 2 (a - c); clipped to norm 2 x 0.05 = 0.1 over the
    # whole (B, A) tensor; Adam's first step is lr g / (|g| + eps) per entry; then clamped.
    g = 2 * (a0 - c)
    g = g * min(1.0, 0.1 / (g.norm().item() + 1e-6))
    hand = (a0 - 0.1 * g / (g.abs() + 1e-5)).clamp(-1, 1)
    one = agent.improve_actions(obs, a0)
    torch.testing.assert_close(one, hand)
    assert agent.critic.c.grad is None  # no weight gradients in the action steps
    assert one[3, 1] == 1.0  # clamped at the bound it was pushed past
    # Many steps: the same as the official loop with torch.optim.Adam and clip_grad_norm_.
    agent = _agent(action_lr=0.03, action_steps=20, action_grad_ratio=0.3)
    agent.critic = QuadraticQ(c)
    a0 = torch.rand(16, 2) * 2 - 1
    ours = agent.improve_actions(torch.zeros(16, 3), a0)
    ref = _official_action_gradient(torch.zeros(16, 3), a0, agent.critic, 20, 0.03, 2 * 0.3)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    assert (ours[:, 1] > a0[:, 1]).all()  # uphill on Q


def test_written_out_critic_backward_matches_the_official_autograd_loop():
    """The TwinQ path (manual backward through Linear + Mish) against autograd and
    torch.optim.Adam on the same critic, at the official action-gradient settings."""
    torch.manual_seed(0)
    agent = _agent(action_lr=0.03, action_steps=20, action_grad_ratio=0.1, act_dim=3, obs_dim=5)
    obs, a0 = torch.randn(64, 5), torch.rand(64, 3) * 2 - 1
    ours = agent.improve_actions(obs, a0)
    assert all(p.grad is None for p in agent.critic.parameters())  # no weight gradients
    ref = _official_action_gradient(obs, a0, agent.critic, 20, 0.03, 3 * 0.1)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
    assert (ours - a0).abs().max() > 0.1  # it moved


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile")
def test_compiled_graphs_agree_with_eager():
    eager = _agent(action_steps=3, act_dim=2)
    compiled = _agent(action_steps=3, act_dim=2, compile=True)
    compiled.load_state_dict(eager.state_dict())
    obs, a0 = torch.randn(32, 3), torch.rand(32, 2) * 2 - 1
    torch.testing.assert_close(
        compiled.improve_actions(obs, a0), eager.improve_actions(obs, a0), atol=1e-5, rtol=1e-5
    )
    batch = TransitionBatch(
        obs=obs,
        action=a0,
        reward=torch.randn(32, 1),
        next_obs=torch.randn(32, 3),
        not_done=torch.ones(32, 1),
    )
    torch.manual_seed(3)
    y_c = compiled.critic_target_value(batch)
    torch.manual_seed(3)
    y_e = eager.critic_target_value(batch)
    torch.testing.assert_close(y_c, y_e, atol=1e-5, rtol=1e-5)
    assert not compiled.graphs.failed


def _attached_buffer(agent: dipo.Agent) -> ReplayBuffer:
    """8 random transitions (obs 3, action 2) in a replay buffer with the diffusion memory,
    attached to `agent`."""
    buf = ReplayBuffer(3, 2, capacity=8, device=CPU, columns=agent.replay_columns)
    rng = np.random.default_rng(0)
    buf.add(
        rng.normal(size=(8, 3)),
        rng.uniform(-1, 1, (8, 2)),
        rng.normal(size=8),
        rng.normal(size=(8, 3)),
        np.zeros(8, bool),
    )
    agent.attach_buffer(buf)
    return buf


def test_update_writes_improved_actions_back_by_row_and_keeps_the_executed_ones():
    agent = _agent(action_steps=3, action_lr=0.1)
    buf = _attached_buffer(agent)
    executed = buf.action.clone()
    assert torch.equal(buf.columns["best_action"], executed)  # starts as the executed action
    batch = buf.sample(4, torch.Generator().manual_seed(1))
    best = batch.extra["best_action"].clone()
    agent.update(batch)
    rows = batch.index.unique()
    untouched = torch.ones(8, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(buf.action, executed)  # the critic's data are not rewritten
    assert torch.equal(buf.columns["best_action"][untouched], executed[untouched])
    assert not torch.allclose(buf.columns["best_action"][rows], executed[rows])
    # The written rows are the action-gradient step's output from the critic after its step
    # (the actor's step that follows does not change it); a row drawn twice gets one value.
    again = agent.improve_actions(batch.obs, best)
    torch.testing.assert_close(buf.columns["best_action"][batch.index], again)


def test_action_gradient_start_holds_the_memory_until_the_critic_has_trained():
    agent = _agent(action_steps=3, action_lr=0.1, action_gradient_start=2)
    buf = _attached_buffer(agent)
    executed = buf.action.clone()
    critic_before = [p.clone() for p in agent.critic.parameters()]
    for _ in range(2):  # the warm-up: the critic learns, the memory stays as collected
        metrics = agent.update(buf.sample(4, torch.Generator().manual_seed(1)))
        assert metrics["action_shift"] == 0.0
    assert torch.equal(buf.columns["best_action"], executed)
    assert any(
        not torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters(), strict=True)
    )
    batch = buf.sample(4, torch.Generator().manual_seed(2))
    assert agent.update(batch)["action_shift"] > 0.0  # the third update improves and writes
    assert not torch.allclose(buf.columns["best_action"][batch.index], executed[batch.index])


def test_critic_target_bootstraps_through_truncations_not_terminations():
    agent = _agent()

    class ConstQ(nn.Module):
        def forward(self, obs, action):
            return torch.full((obs.shape[0], 1), 10.0), torch.full((obs.shape[0], 1), 7.0)

    agent.critic_target = ConstQ()
    batch = TransitionBatch(
        obs=torch.zeros(2, 3),
        action=torch.zeros(2, 2),
        reward=torch.tensor([[1.0], [1.0]]),
        next_obs=torch.zeros(2, 3),
        not_done=torch.tensor([[1.0], [0.0]]),  # row 0 truncated (bootstraps), row 1 terminated
    )
    y = agent.critic_target_value(batch)
    torch.testing.assert_close(y, torch.tensor([[1.0 + 0.99 * 7.0], [1.0]]))


@pytest.mark.parametrize("truncated_terminal", [False, True])
def test_online_source_marks_time_limits_as_the_config_says(truncated_terminal):
    """Pendulum-v1 only truncates (200 steps): its last row bootstraps unless asked not to."""
    config = dipo.Config(
        env_id="Pendulum-v1",
        warmup_steps=200,
        buffer_size=500,
        truncated_terminal=truncated_terminal,
    )
    spec = DataSpec(3, 1, (-2.0,), (2.0,))
    source = OnlineSource(lambda o, g, gen: torch.zeros(len(o), 1), config, spec, CPU)
    try:
        source.collect(200, torch.Generator().manual_seed(0))
    finally:
        source.close()
    not_done = source.buffer.not_done[:200, 0]
    assert not_done[:199].eq(1).all()
    assert not_done[199].item() == (0.0 if truncated_terminal else 1.0)


def test_replay_columns_round_trip_and_restart_from_their_key():
    buf = ReplayBuffer(2, 1, capacity=4, device=CPU, columns={"best_action": "action"})
    buf.add(np.ones((3, 2)), np.full((3, 1), 0.5), np.zeros(3), np.ones((3, 2)), np.zeros(3))
    buf.columns["best_action"][1] = -0.25
    state = buf.state_dict()
    other = ReplayBuffer(2, 1, capacity=4, device=CPU, columns={"best_action": "action"})
    other.load_state_dict(state)
    assert other.columns["best_action"][:3, 0].tolist() == [0.5, -0.25, 0.5]
    del state["column/best_action"]  # an older checkpoint: the column starts as the action
    other.load_state_dict(state)
    assert other.columns["best_action"][:3, 0].tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(Exception, match="replay column 'action' must start from one of"):
        ReplayBuffer(2, 1, 4, CPU, columns={"action": "obs"})


def test_evaluation_is_deterministic_given_x_T_and_exploration_is_not():
    agent = _agent()
    obs = torch.randn(5, 3)
    a = agent.act(obs, torch.Generator().manual_seed(0))
    b = agent.act(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    # Evaluation noise off: only x_T is random, so the chain is the DDPM mean path.
    noise = agent.actor.chain_noise(5, torch.Generator().manual_seed(0), obs)
    noise[1:] = 0
    mean_path = agent.actor.ddpm_chain(obs, noise).clamp(-1, 1)
    torch.testing.assert_close(a, mean_path)
    e1 = agent.explore(obs, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(e1, a)  # the per-step noise is on when exploring
    assert (e1.abs() <= 1).all()


def test_dipo_online_run_saves_its_diffusion_memory_and_resumes(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "dipo", "--env", "Pendulum-v1", "--run-dir", str(run), "--no-progress"]
    argv += ["--steps", "40", "--set", "warmup_steps=32", "--set", "batch_size=16"]
    argv += ["--set", "eval_every=0", "--set", "save_every=20", "--set", "eval_episodes=1"]
    argv += ["--set", "hidden=32", "--set", "t_hidden=32", "--set", "diffusion_steps=5"]
    argv += ["--set", "compile=false"]
    assert main(argv) == 0
    _, _, trainer, problems = load_newest_intact(run, CPU)
    assert not problems and trainer["step"] == 40
    buf = trainer["source"]["buffer"]
    assert buf["size"] == 32 + 40
    moved = (buf["column/best_action"] - buf["action"]).abs().amax(dim=1) > 0
    assert moved.any()  # improved actions were written back and saved
    assert main(["train", "--resume", str(run), "--steps", "50", "--no-progress"]) == 0
    _, _, after, _ = load_newest_intact(run, CPU)
    col = after["source"]["buffer"]["column/best_action"]
    assert after["step"] == 50 and col.shape[0] == 32 + 50
    # rows never drawn after the resume kept their saved improved actions
    kept = (col[:72] == buf["column/best_action"]).all(dim=1)
    assert kept.sum() >= 72 - 10 * 16


class _ImageEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (4, 4))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, *, seed=None, options=None):
        return np.zeros((4, 4), np.float32), {}

    def step(self, action):
        return np.zeros((4, 4), np.float32), 0.0, False, False, {}


def test_online_runs_reject_bad_environments_in_one_line(tmp_path, capsys):
    gym.register("DiffrlTestImage-v0", entry_point=_ImageEnv)
    cases = [
        ("NoSuchEnv-v0", "unknown environment 'NoSuchEnv-v0'"),
        ("CartPole-v1", "environment 'CartPole-v1' has Discrete actions"),
        (
            "DiffrlTestImage-v0",
            "environment 'DiffrlTestImage-v0' has observations Box(0.0, 1.0, (4, 4)",
        ),
    ]
    for env_id, message in cases:
        code = main(["train", "dipo", "--env", env_id, "--run-dir", str(tmp_path / env_id)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert message in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / env_id).exists()


def test_sac_log_prob_matches_torch_distributions():
    actor = sac.TanhGaussianActor(3, 2, 16, 2)
    obs = torch.randn(64, 3)
    torch.manual_seed(0)
    a, logp = actor.sample(obs)
    mu, log_std = actor(obs)
    base = torch.distributions.Normal(mu, log_std.exp())
    dist = torch.distributions.TransformedDistribution(
        base, [torch.distributions.TanhTransform(cache_size=1)]
    )
    ref = dist.log_prob(a.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1, keepdim=True)
    # The 1e-6 in log(1 - tanh^2 + 1e-6) (SB3's) moves it slightly where |a| is near 1.
    close = a.abs().amax(-1) < 0.99
    torch.testing.assert_close(logp[close], ref[close], atol=1e-3, rtol=1e-3)
    assert math.isfinite(logp.sum().item())


def test_sac_learns_pendulum_targets_and_temperature_on_a_few_updates():
    """Smoke of the update: the temperature falls while the entropy is above its target."""
    config = sac.Config(hidden=32)
    agent = sac.Agent(config, DataSpec(3, 1, (-2.0,), (2.0,)))
    g = torch.Generator().manual_seed(0)
    batch = TransitionBatch(
        obs=torch.randn(64, 3, generator=g),
        action=torch.rand(64, 1, generator=g) * 4 - 2,
        reward=torch.randn(64, 1, generator=g),
        next_obs=torch.randn(64, 3, generator=g),
        not_done=torch.ones(64, 1),
    )
    out = [agent.update(batch) for _ in range(50)]
    assert out[-1]["alpha"] < out[0]["alpha"] < 1.0
    assert out[-1]["critic_loss"] < out[0]["critic_loss"]
    act = agent.act(batch.obs)
    assert act.shape == (64, 1) and (act.abs() <= 2).all()


def test_four_goals_has_four_equal_modes_and_nothing_between():
    from diffrl.envs import make_env
    from diffrl.toy_envs import GOALS, four_goals_reward, nearest_goal

    np.testing.assert_allclose(four_goals_reward(GOALS), 1.0, atol=1e-6)
    assert four_goals_reward(np.zeros(2)) < 1e-6
    assert nearest_goal(np.array([[0.55, 0.62], [0.0, 0.0], [-0.6, -0.7]])).tolist() == [0, -1, 2]
    env = make_env("diffrl/FourGoals-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,) and np.abs(obs).max() <= 0.05
    _, reward, terminated, truncated, info = env.step(np.array([-0.6, 0.6]))
    assert terminated and not truncated and info["goal"] == 1
    assert reward == pytest.approx(1.0, abs=1e-6)
