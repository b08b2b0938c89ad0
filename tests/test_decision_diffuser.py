"""Decision Diffuser: classifier-free mixing, condition dropout, inverse dynamics, return
targets, history conditioning, planning and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrl.algos import DataSpec
from diffrl.algos import decision_diffuser as module
from diffrl.algos import planner as planning
from diffrl.data import OfflineDataset
from diffrl.errors import ConfigError, DiffrlError

SPEC = DataSpec(obs_dim=4, act_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
SMALL = {
    "horizon": 8,
    "diffusion_steps": 5,
    "dim": 16,
    "dim_mults": (1, 2),
    "inv_hidden": 32,
    "steps": 100,
}


def _agent(spec: DataSpec = SPEC, **over) -> module.Agent:
    torch.manual_seed(0)
    return module.Agent(module.Config(**{**SMALL, **over}), spec)


def _dataset() -> OfflineDataset:
    """Episode 1: rewards 1, 2, 3, terminates; episode 2: rewards 4, 5, time limit."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 4)).astype(np.float32)
    return OfflineDataset(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(5, 2)).astype(np.float32),
        rewards=np.array([1, 2, 3, 4, 5], np.float32),
        next_observations=obs,
        terminals=np.array([0, 0, 1, 0, 0], bool),
        timeouts=np.array([0, 0, 0, 0, 1], bool),
    )


def test_classifier_free_mixing_equals_the_hand_computation():
    agent = _agent(guidance_weight=1.7)
    agent.ema.load_state_dict(agent.model.state_dict())
    # Give the return embedding some weight so conditional and null passes differ.
    with torch.no_grad():
        for p in agent.ema.cond_mlp.parameters():
            p.normal_()
    x, t, y = torch.randn(3, 8, 4), torch.tensor([0, 2, 4]), torch.tensor([[0.2], [0.9], [1.1]])
    with torch.no_grad():
        cond, null = agent.ema(x, t, y), agent.ema(x, t, None)
        got = agent.eps(x, t, y)
    assert not torch.allclose(cond, null)
    torch.testing.assert_close(got, null + 1.7 * (cond - null), atol=1e-5, rtol=1e-5)
    # w = 1 is the conditional model alone, w = 0 the unconditional one.
    with torch.no_grad():
        one = module.Agent(module.Config(**{**SMALL, "guidance_weight": 1.0}), SPEC)
        one.ema.load_state_dict(agent.ema.state_dict())
        torch.testing.assert_close(one.eps(x, t, y), cond, atol=1e-5, rtol=1e-5)


def test_condition_dropout_rate_and_return_targets():
    data = _dataset()
    agent = _agent(discount=0.5, cond_dropout=0.25)
    agent.fit_normalizers(data)
    # The scale: the largest |discounted return-to-go| with the -100 termination penalty:
    # 1 + 0.5 * 2 + 0.25 * (3 - 100) = -22.25; 2 + 0.5 * (3 - 100) = -46.5; -97; 6.5; 5.
    assert float(agent.returns_scale) == pytest.approx(97.0)
    sampler = agent.batch_sampler(data, torch.device("cpu"))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    agent.model.register_forward_pre_hook(
        lambda module, args: seen.append((args[2].clone(), args[3].clone()))
    )
    gen = torch.Generator().manual_seed(0)
    batches = [sampler.sample(256, gen) for _ in range(10)]
    for batch in batches:
        agent.update(batch)
    drops = torch.cat([d for _, d in seen])
    assert abs(float(drops.mean()) - 0.25) < 0.04  # 2,560 draws: std 0.009
    for (y, _), batch in zip(seen, batches, strict=True):
        torch.testing.assert_close(y, batch.returns / 97.0)
    want = {-22.25, -46.5, -97.0, 6.5, 5.0}
    got = {round(float(v) * 97.0, 3) for y, _ in seen for v in y[:, 0]}
    assert got == want


def test_inverse_dynamics_recovers_a_linear_system():
    """s' = s + B a with B invertible: f(s, s') must learn a = B^-1 (s' - s)."""
    rng = np.random.default_rng(0)
    n, ep = 4000, 40
    B = np.array([[0.5, 0.2], [-0.1, 0.4]], np.float32)
    actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    obs = np.zeros((n, 2), np.float32)
    for i in range(n):
        if i % ep:
            obs[i] = obs[i - 1] + actions[i - 1] @ B.T
        else:
            obs[i] = rng.uniform(-1, 1, size=2)
    timeouts = np.zeros(n, bool)
    timeouts[ep - 1 :: ep] = True
    data = OfflineDataset(
        observations=obs,
        actions=actions,
        rewards=np.zeros(n, np.float32),
        next_observations=obs,
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
    )
    spec = DataSpec(obs_dim=2, act_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
    agent = _agent(spec, horizon=4, dim=8, inv_hidden=64, lr=1e-3, ema_start=10**6)
    agent.fit_normalizers(data)
    sampler = agent.batch_sampler(data, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        agent.update(sampler.sample(64, gen))
    s = torch.as_tensor(rng.uniform(-3, 3, size=(500, 2)).astype(np.float32))
    a = torch.as_tensor(rng.uniform(-1, 1, size=(500, 2)).astype(np.float32))
    s1 = s + a @ torch.as_tensor(B).T
    norm = agent.obs_normalizer
    with torch.no_grad():
        got = agent.actions_between(norm.normalize(s), norm.normalize(s1))
    r2 = 1 - ((got - a) ** 2).sum() / ((a - a.mean(0)) ** 2).sum()
    assert r2 > 0.95, float(r2)


def test_history_is_pinned_and_shifted_while_acting():
    agent = _agent(history=2, warm_start=0.0)
    agent.fit_normalizers(_dataset())
    agent.eval()
    gen = torch.Generator().manual_seed(0)
    seen: list[torch.Tensor] = []
    real_plan = agent.plan

    def spy(known, *args, **kwargs):
        out, values = real_plan(known, *args, **kwargs)
        seen.append(out[:, 0])
        # The known states (environment units) pinned exactly, normalised, in every plan.
        want = agent.obs_normalizer.normalize(known)[:, None].expand(-1, out.shape[1], -1, -1)
        torch.testing.assert_close(out[:, :, : known.shape[1]], want)
        return out, values

    agent.plan = spy  # type: ignore[method-assign]
    observations = [torch.randn(2, 4) for _ in range(4)]
    for obs in observations:
        actions = agent.act(obs, gen)
        assert actions.shape == (2, 2) and torch.isfinite(actions).all()
    torch.testing.assert_close(agent._hist, torch.stack(observations[-3:], dim=1))
    # The first plan's history: the first state repeated K + 1 times.
    first = agent.obs_normalizer.normalize(observations[0])
    torch.testing.assert_close(seen[0][:, :3], first[:, None].expand(-1, 3, -1))
    # A new episode in row 1 (carry -1) starts its history afresh.
    agent.reset_episodes(np.array([0, -1]))
    agent.act(observations[0], gen)
    torch.testing.assert_close(agent._hist[1], observations[0][1][None].expand(3, -1))


def test_plans_pin_start_and_goal_and_reload(tmp_path):
    agent = _agent(goal_inpaint=True)
    agent.fit_normalizers(_dataset())
    agent.eval()
    start, goal = np.array([0.1, -0.2, 0.3, 0.0]), np.array([0.5, 0.4])
    plans = agent.plans(start, goal, n_plans=3, generator=torch.Generator().manual_seed(0))
    assert len(plans) == 3
    for plan in plans:
        assert plan["states"].shape == (8, 4) and plan["actions"].shape == (8, 2)
        np.testing.assert_array_equal(plan["states"][0], start.astype(np.float32))
        np.testing.assert_allclose(plan["states"][-1], [0.5, 0.4, 0.0, 0.0], rtol=0, atol=1e-6)
        assert plan["value"] is None
    with pytest.raises(DiffrlError, match="guides need a value function"):
        agent.plans(start, guides=[lambda s, a: s.sum()])  # type: ignore[list-item]
    with pytest.raises(DiffrlError, match="the start state needs 4 values, got 3"):
        agent.plans(np.zeros(3))
    # Waypoints are checked as Diffuser's are (one check, diffusion/guidance.py): index 0 would
    # overwrite the pinned start, 8 is past the plan's end.
    for h in (0, 8, -8):
        with pytest.raises(DiffrlError, match=rf"waypoint index {h} must be inside the plan, "):
            agent.plans(start, waypoints={h: [0.0, 0.0]})
    with pytest.raises(DiffrlError) as err:
        agent.plans(start, waypoints={0: [0.0, 0.0]})
    assert str(err.value) == (
        "decision-diffuser: waypoint index 0 must be inside the plan, 1 to 7 or -7 to -1 "
        "(0 is the start)"
    )
    plans = agent.plans(start, waypoints={3: [0.25, -0.5]}, n_plans=2)
    np.testing.assert_allclose(plans[0]["states"][3][:2], [0.25, -0.5], atol=1e-6)


def test_low_temperature_zero_is_deterministic_ddim():
    agent = _agent(temperature=0.0, sampler="ddim", sampling_steps=3)
    agent.fit_normalizers(_dataset())
    agent.eval()
    known = torch.zeros(2, 1, 4)
    a, _ = agent.plan(known, generator=torch.Generator().manual_seed(0))
    b, _ = agent.plan(known, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_bad_settings_are_one_line_errors():
    from diffrl.run import make_config

    with pytest.raises(ConfigError, match="target_return") as err:
        make_config("decision-diffuser", "", {"target_return": "high"})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="'history' \\(8\\) must leave room"):
        module.Config(**{**SMALL, "history": 8})
    with pytest.raises(ConfigError, match="must be a finite number"):
        module.Config(**{**SMALL, "target_return": float("nan")})
    with pytest.raises(ConfigError, match="multiple of the U-Net's down-sampling factor 2"):
        module.Config(**{**SMALL, "horizon": 9})


def test_bench_act_fast_prints_ms_per_action(capsys, monkeypatch):
    import json

    import diffrl.bench as bench
    from diffrl.cli import main

    monkeypatch.setattr(bench, "WARMUP_SECONDS", 0.0)
    monkeypatch.setattr(bench, "WARMUP_CALLS", 1)
    argv = ["bench", "act", "--algo", "decision-diffuser", "--obs-dim", "4", "--act-dim", "2"]
    sets = ["dim=16", "dim_mults=1,2", "horizon=8", "diffusion_steps=10"]
    argv += [x for kv in sets for x in ("--set", kv)] + ["--seconds", "0.2", "--json"]
    assert main([*argv, "--fast"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ms_per_action"] > 0 and out["fast"] is True
    assert out["settings"]["sampler"] == "ddim" and out["settings"]["warm_start"] == 0.5
    assert main(["bench", "act", "--algo", "gaussian-bc", "--fast", "--seconds", "0.1"]) == 2
    assert "gaussian-bc has no fast preset" in capsys.readouterr().err


def test_presets_are_what_the_docs_say():
    from diffrl.run import make_config

    hopper = make_config("decision-diffuser", "hopper-medium-expert-v0")
    assert (hopper.returns_scale, hopper.target_return, hopper.guidance_weight) == (400, 0.9, 1.2)
    assert (hopper.steps, hopper.horizon, hopper.dim) == (100_000, 32, 32)
    assert {k: getattr(hopper, k) for k in module.FAST} == module.FAST
    cheetah = make_config("decision-diffuser", "halfcheetah-medium-v0")
    assert (cheetah.returns_scale, cheetah.warm_start, cheetah.target_return) == (0, 0.0, 0.6)
    maze = make_config("decision-diffuser", "maze2d-umaze-v0")
    assert (maze.horizon, maze.diffusion_steps, maze.goal_inpaint, maze.pad) == (
        128,
        64,
        True,
        False,
    )
    assert (maze.n_plans, maze.rank_walls, hopper.n_plans) == (16, True, 1)  # as Diffuser's


def test_maze_plans_rank_by_states_in_walls_and_acting_executes_the_first(monkeypatch):
    """With a known maze map, `diffrl plan`'s plans come fewest-in-walls first and acting
    samples `n_plans` per decision and follows the plan with the fewest."""
    from diffrl.envs import walls_hit

    grid = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]  # walls at the centre and corners
    centres = np.array([[[c - 1.0, 1.0 - r] for c in range(3)] for r in range(3)])
    maze = {"map": grid, "cell": 1.0, "centres": centres}
    agent = _agent(n_plans=8)
    agent.fit_normalizers(_dataset())
    agent.eval()
    monkeypatch.setattr(planning, "known_maze", lambda env_id: maze)
    plans = agent.plans(np.zeros(4, np.float32), generator=torch.Generator().manual_seed(1))
    counts = [p["in_walls"] for p in plans]
    assert len(plans) == 8 and counts == sorted(counts) and counts[0] < counts[-1]
    # Acting: the executed plan is the least-in-walls of the 8 sampled for each row.
    sampled: list[torch.Tensor] = []
    real_plan = agent.plan

    def spy(known, *args, **kwargs):
        out = real_plan(known, *args, **kwargs)
        sampled.append(out)
        return out

    agent.plan = spy  # type: ignore[method-assign]
    agent.act(torch.zeros(2, 4), torch.Generator().manual_seed(2))
    plans, _ = sampled[0]
    assert plans.shape[:2] == (2, 8)  # 8 plans per row, ranked
    walls = walls_hit(maze, agent.obs_normalizer.unnormalize(plans)[..., :2])
    assert (walls.diff(dim=1) >= 0).all()
    executed = walls_hit(maze, agent.obs_normalizer.unnormalize(agent._plans)[..., :2])
    assert executed.tolist() == walls.min(dim=1).values.tolist()
