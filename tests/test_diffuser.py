"""Diffuser: value targets, inpainting, horizons, the guided step, warm starts, replanning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from diffrl.algos import DataSpec, get_algo
from diffrl.algos import planner as planning
from diffrl.data import OfflineDataset
from diffrl.errors import ConfigError, DiffrlError

module = get_algo("diffuser")
SPEC = DataSpec(4, 2, (-1.0, -1.0), (1.0, 1.0))
SMALL = {
    "horizon": 4,
    "diffusion_steps": 5,
    "dim": 16,
    "dim_mults": (1, 2),
    "n_plans": 3,
    "value_steps": 0,
    "steps": 100,
}


def _agent(**over) -> module.Agent:
    torch.manual_seed(0)
    return module.Agent(module.Config(**{**SMALL, **over}), SPEC)


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


def test_value_target_is_the_return_to_the_episode_end_with_the_penalty():
    agent = _agent(discount=0.5, value_steps=10, steps=20)
    data = _dataset()
    agent.fit_normalizers(data)
    sampler = agent.batch_sampler(data, torch.device("cpu"))
    got = sampler.returns_to_go[sampler.starts].tolist()
    # 1 + 0.5 * 2 + 0.25 * (3 - 100); 2 + 0.5 * (3 - 100); 3 - 100; 4 + 0.5 * 5; 5
    assert got == pytest.approx([-22.25, -46.5, -97.0, 6.5, 5.0])


def test_inpainted_states_are_kept_at_any_horizon():
    """Start at h = 0 and goal (x, y, 0, 0) at h = H - 1, at the training horizon and at
    horizons the model was not trained at (the U-Net is convolutional in time)."""
    agent = _agent(goal_inpaint=True, obs_norm="limits")
    agent.fit_normalizers(_dataset())
    obs = torch.tensor([[0.1, -0.2, 0.3, 0.0], [0.5, 0.5, -0.1, 0.2]])
    goal = torch.tensor([[0.7, -0.4], [-0.3, 0.2]])
    for horizon in (4, 8, 12):
        plans, values = agent.plan(obs, goal, torch.Generator().manual_seed(0), horizon=horizon)
        assert plans.shape == (2, 3, horizon, 6) and values is None
        states, actions = agent.unnormalize(plans)
        torch.testing.assert_close(states[:, :, 0], obs[:, None].expand(2, 3, 4))
        end = torch.cat([goal, torch.zeros(2, 2)], dim=1)[:, None].expand(2, 3, 4)
        torch.testing.assert_close(states[:, :, -1], end)
        assert actions.shape == (2, 3, horizon, 2)
    with pytest.raises(ConfigError, match="horizon 7 is not divisible by the U-Net.s down-sam"):
        agent.plan(obs, goal, horizon=7)
    with pytest.raises(DiffrlError, match=r"states have 4 dimensions, got shape \(2, 3\)"):
        agent.plan(obs[:, :3])


class _ZeroModel(nn.Module):
    """Predicts x0 = 0 everywhere: the prior alone."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class _LinearValue(nn.Module):
    """V(x) = sum(w * x): its gradient is w wherever x is."""

    def __init__(self, w: torch.Tensor, horizon: int) -> None:
        super().__init__()
        self.w, self.horizon, self.pooled = w, horizon, False

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2))[:, None]


class _IdentityModel(nn.Module):
    """Predicts x0 = x_t: the chain keeps what the guides do to it."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x


def test_guided_step_equals_the_closed_form():
    """T = 2, a prior predicting x0 = 0 and a linear value: the plan is
    coef2_0 (coef2_1 (x_T + s Var_1 w) + std_1 z), re-inpainted, with one guide step at t = 1
    and none at t = 0 (t_stopgrad 1)."""
    agent = _agent(
        diffusion_steps=2, value_steps=1, steps=2, guide_scale=0.7, guide_steps=1, t_stopgrad=1
    )
    agent.fit_normalizers(_dataset())
    w = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(1))
    agent.ema, agent.value = _ZeroModel(), _LinearValue(w, 4)
    obs = torch.zeros(1, 4)
    plans, values = agent.plan(obs, generator=torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)
    s = agent.schedule
    x = torch.randn((3, 4, 6), generator=g)
    start = agent.obs_normalizer.normalize(obs)

    def pin(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, 0, 2:] = start
        return x

    x = pin(pin(x) + 0.7 * float(s.posterior_variance[1]) * w)
    z = torch.randn((3, 4, 6), generator=g)
    x = pin(float(s.posterior_mean_coef2[1]) * x + float(s.posterior_variance[1]) ** 0.5 * z)
    x = pin(float(s.posterior_mean_coef2[0]) * x)
    ranked = (x * w).sum(dim=(1, 2)).argsort(descending=True)
    torch.testing.assert_close(plans[0], x[ranked], atol=1e-5, rtol=1e-5)
    assert values[0].tolist() == sorted(values[0].tolist(), reverse=True)


def test_composed_guide_adds_its_gradient_in_environment_units():
    """The value (scale 0.7) plus a user guide score(states) = sum(u * states): one guide step
    adds Var_1 (0.7 w + d score / d x) with d score / d x = u * std on the state columns (the
    Gaussian normaliser's chain rule) and 0 on the actions."""
    from diffrl.guides import Guide

    agent = _agent(
        diffusion_steps=2, value_steps=1, steps=2, guide_scale=0.7, guide_steps=1, t_stopgrad=1
    )
    agent.fit_normalizers(_dataset())
    w = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(1))
    u = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(2))
    agent.ema, agent.value = _ZeroModel(), _LinearValue(w, 4)
    guide = Guide(lambda states, actions: (states * u).sum(dim=(1, 2)), weight=2.0)
    obs = torch.zeros(1, 4)
    plans, _ = agent.plan(obs, generator=torch.Generator().manual_seed(5), guides=[guide])

    g = torch.Generator().manual_seed(5)
    s = agent.schedule
    x = torch.randn((3, 4, 6), generator=g)
    start = agent.obs_normalizer.normalize(obs)
    std = agent.obs_normalizer.unnormalize(torch.ones(4)) - agent.obs_normalizer.unnormalize(
        torch.zeros(4)
    )
    grad = 0.7 * w + torch.cat([torch.zeros(1, 4, 2), 2.0 * u * std], dim=-1)

    def pin(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, 0, 2:] = start
        return x

    x = pin(pin(x) + float(s.posterior_variance[1]) * grad)
    z = torch.randn((3, 4, 6), generator=g)
    x = pin(float(s.posterior_mean_coef2[1]) * x + float(s.posterior_variance[1]) ** 0.5 * z)
    x = pin(float(s.posterior_mean_coef2[0]) * x)
    ranked = (x * w).sum(dim=(1, 2)).argsort(descending=True)
    torch.testing.assert_close(plans[0], x[ranked], atol=1e-5, rtol=1e-5)


def test_builtin_guides_steer_plans_without_retraining():
    """Under a prior that keeps its input (x0 = x_t), `avoid` empties a disc the plain plans
    cross and `via` brings them nearer a point; the pinned start stays exact. Bad guides are
    one line."""
    from diffrl.guides import Guide, avoid, via

    agent = _agent(horizon=8, n_plans=16, guide_steps=2, t_stopgrad=0)
    agent.fit_normalizers(_dataset())
    agent.ema = _IdentityModel()
    start = np.zeros(4, np.float32)

    def xy(guides) -> np.ndarray:
        plans = agent.plans(start, generator=torch.Generator().manual_seed(0), guides=guides)
        assert all((p["states"][0] == start).all() for p in plans)
        return np.stack([p["states"][:, :2] for p in plans])

    plain = xy([])
    centre = plain[:, 1:].reshape(-1, 2).mean(axis=0)
    inside = lambda p: (np.linalg.norm(p[:, 1:] - centre, axis=-1) < 0.5).mean()  # noqa: E731
    assert inside(plain) > 0.05
    assert inside(xy([avoid(centre, 0.5, weight=50.0)])) < inside(plain) / 3
    target = np.array([2.0, -2.0])
    near = lambda p: np.linalg.norm(p - target, axis=-1).min(axis=1).mean()  # noqa: E731
    assert near(xy([via(target, weight=1.0)])) < near(plain) - 0.5
    with pytest.raises(DiffrlError, match="avoid: the radius must be > 0, got 0"):
        avoid((0, 0), 0)
    with pytest.raises(DiffrlError, match=r"via: the point takes 2 numbers, got 3"):
        via((1, 2, 3))
    bad = Guide(lambda states, actions: states.sum(), name="total")
    with pytest.raises(DiffrlError, match=r"guide total: must return one score per plan"):
        agent.plans(start, guides=[bad])
    with pytest.raises(DiffrlError, match="guides need guide_steps >= 1"):
        _agent(guide_steps=0).plans(start, guides=[avoid((0, 0), 1.0)])


def test_guides_on_the_x0_estimate_differentiate_through_the_model():
    """guide_target=x0 scores the model's x0 estimate. Under a linear model x0 = x_t / 2 and a
    linear guide, the chain is linear in the guide's push, and the push through the model is
    half the push on x_t: the change the guide makes to the plans is exactly half."""
    from diffrl.guides import Guide

    u = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(3))
    pull = [Guide(lambda states, actions: (states * u).sum(dim=(1, 2)))]

    class Half(nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return 0.5 * x

    def plans(target: str, guides) -> np.ndarray:
        agent = _agent(diffusion_steps=2, guide_steps=1, t_stopgrad=1, guide_target=target)
        agent.fit_normalizers(_dataset())
        agent.ema = Half()
        out = agent.plans(
            np.zeros(4, np.float32), generator=torch.Generator().manual_seed(0), guides=guides
        )
        return np.stack([p["states"] for p in out])

    plain = plans("xt", [])
    on_xt, on_x0 = plans("xt", pull) - plain, plans("x0", pull) - plain
    assert np.abs(on_xt).max() > 1e-2
    np.testing.assert_allclose(on_x0, 0.5 * on_xt, atol=1e-5)


def test_waypoints_are_pinned_exactly_at_any_index():
    """Waypoints pin the first k state values at index h (negative from the end), exactly, in
    environment units, at the training horizon and at another; bad ones are one line."""
    agent = _agent(horizon=8, n_plans=3)
    agent.fit_normalizers(_dataset())
    start = np.array([0.1, -0.2, 0.3, 0.4], np.float32)
    for horizon in (8, 12):
        plans = agent.plans(
            start,
            horizon=horizon,
            generator=torch.Generator().manual_seed(0),
            waypoints={3: [1.5, -2.0], -2: [0.25, 0.5, -0.75]},
        )
        for p in plans:
            assert len(p["states"]) == horizon
            assert (p["states"][0] == start).all()
            assert p["states"][3, :2].tolist() == [1.5, -2.0]
            assert p["states"][-2, :3].tolist() == [0.25, 0.5, -0.75]
    # The sampler itself keeps them (not only the copy written back): normalised, pinned.
    x, _ = agent.plan(torch.as_tensor(start)[None], waypoints={5: torch.tensor([[1.5, -2.0]])})
    states, _ = agent.unnormalize(x)
    torch.testing.assert_close(
        states[0, :, 5, :2], torch.tensor([[1.5, -2.0]]).expand(3, 2), atol=1e-5, rtol=0
    )
    with pytest.raises(DiffrlError, match=r"waypoint index 8 must be inside the plan, 1 to 7"):
        agent.plans(start, waypoints={8: [0.0, 0.0]})
    with pytest.raises(DiffrlError, match=r"waypoint index 0 must be inside the plan"):
        agent.plans(start, waypoints={0: [0.0, 0.0]})
    with pytest.raises(DiffrlError, match="a waypoint has 1 to 4 values, got 5"):
        agent.plans(start, waypoints={2: [0.0] * 5})


def test_warm_start_denoises_from_part_way():
    agent = _agent(warm_start=0.4)
    calls: list[int] = []

    class Counted(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            calls.append(int(t[0]))
            return self.model(x, t)

    agent.ema = Counted(agent.ema)
    obs = torch.zeros(2, 4)
    agent.plan(obs)
    assert calls == [4, 3, 2, 1, 0]
    calls.clear()
    agent.plan(obs, warm=torch.zeros(2, 4, 6))
    assert calls == [1, 0]  # 0.4 x 5 steps


def test_replanning_follows_the_episodes():
    """A plan every `replan_every` steps of an episode; a new episode plans afresh."""
    agent = _agent(replan_every=3)
    plans = []
    original = agent.plan

    def counted(obs, goal=None, generator=None, **kw):
        plans.append(obs.shape[0])
        return original(obs, goal, generator, **kw)

    agent.plan = counted  # type: ignore[method-assign]
    obs = torch.zeros(2, 4)
    agent.reset_episodes(np.array([-1, -1]))
    for _ in range(4):
        assert agent.act(obs).shape == (2, 2)
    assert plans == [2, 2]  # steps 0 and 3
    agent.reset_episodes(np.array([1]))  # episode 0 ended; the batch is episode 1 alone
    agent.act(obs[:1])
    assert plans == [2, 2]  # episode 1 is at step 4 of its plan
    agent.reset_episodes(np.array([0, -1]))  # a new episode joins
    agent.act(obs)
    assert plans == [2, 2, 1]


def test_shrinking_horizon_keeps_the_arrival_time():
    """shrink_horizon: each replan is the previous plan's remaining length (rounded down to the
    U-Net's factor, 2 here), so a goal pinned at the end stays where it was in time; below the
    factor the plan is followed to its end. Off: every plan is full length."""
    for shrink, want in ((True, [8, 6, 4, 2]), (False, [8, 8, 8, 8, 8, 8])):
        agent = _agent(horizon=8, replan_every=2, shrink_horizon=shrink)
        agent.fit_normalizers(_dataset())
        horizons: list[int] = []
        original = agent.plan

        def counted(
            obs, goal=None, generator=None, *, horizon=None, _h=horizons, _o=original, **kw
        ):
            _h.append(horizon)
            return _o(obs, goal, generator, horizon=horizon, **kw)

        agent.plan = counted  # type: ignore[method-assign]
        agent.reset_episodes(np.array([-1]))
        for _ in range(11):
            assert agent.act(torch.zeros(1, 4)).shape == (1, 2)
        assert horizons == want


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="'horizon' must be a multiple of the U-Net's down-samp"):
        module.Config(horizon=30)
    with pytest.raises(ConfigError, match="need value_steps <= steps"):
        module.Config(steps=10, value_steps=20)
    agent = _agent(value_steps=1, steps=2, guide_scale=0.1, value_head="flatten")
    with pytest.raises(DiffrlError, match="the value guide was trained at horizon 4"):
        agent.plan(torch.zeros(1, 4), horizon=8)


def test_pooled_value_guides_and_ranks_at_any_horizon():
    agent = _agent(value_steps=1, steps=2, guide_scale=0.1)
    for horizon in (4, 8, 16):
        plans, values = agent.plan(torch.zeros(2, 4), horizon=horizon)
        assert plans.shape == (2, 3, horizon, 6) and values.shape == (2, 3)
        assert (values[:, :-1] >= values[:, 1:]).all()  # best first


def _cross_maze() -> dict:
    """A 3 x 3 grid of unit cells centred on the origin, walls at the centre and corners."""
    grid = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    centres = np.array([[[c - 1.0, 1.0 - r] for c in range(3)] for r in range(3)])
    return {"map": grid, "cell": 1.0, "centres": centres}


def test_walls_hit_agrees_with_the_point_by_point_test():
    from diffrl.envs import in_wall, walls_hit

    layout = _cross_maze()
    xy = torch.as_tensor(np.random.default_rng(0).uniform(-2, 2, size=(5, 40, 2)))
    expected = [[sum(in_wall(layout, p) for p in plan)] for plan in xy.numpy()]
    assert walls_hit(layout, xy).tolist() == [e[0] for e in expected]


def test_plans_with_fewer_states_in_walls_rank_first(monkeypatch):
    """A known maze map ranks the same sampled plans feasible-first; off, they keep their
    order (no value: the order they were sampled in)."""
    from diffrl.envs import walls_hit

    agent = _agent(n_plans=8)
    agent.eval()
    maze = _cross_maze()
    monkeypatch.setattr(planning, "known_maze", lambda env_id: maze)
    ranked = agent.plans(
        np.zeros(4, np.float32), horizon=8, generator=torch.Generator().manual_seed(1)
    )
    counts = [p["in_walls"] for p in ranked]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    agent.config = module.Config(**{**SMALL, "n_plans": 8, "rank_walls": False})
    plain = agent.plans(
        np.zeros(4, np.float32), horizon=8, generator=torch.Generator().manual_seed(1)
    )
    assert [p["in_walls"] for p in plain] != counts  # this draw is not sorted by itself
    key = lambda p: p["states"].tobytes()  # noqa: E731
    assert sorted(map(key, ranked)) == sorted(map(key, plain))  # the same plans, reordered
    xy = torch.as_tensor(np.stack([p["states"][:, :2] for p in plain]))
    assert walls_hit(maze, xy).tolist() == [p["in_walls"] for p in plain]


def test_value_trains_on_clean_or_noised_windows():
    data = _dataset()
    for noise in (True, False):
        agent = _agent(value_steps=5, steps=10, value_noise=noise)
        agent.fit_normalizers(data)
        sampler = agent.batch_sampler(data, torch.device("cpu"))
        seen: list[torch.Tensor] = []
        agent.value.register_forward_pre_hook(
            lambda module, args, seen=seen: seen.append(args[1].clone())
        )
        losses = [agent.update(sampler.sample(8))["value_loss"] for _ in range(5)]
        assert all(np.isfinite(losses))
        ts = torch.cat(seen)
        assert bool((ts == 0).all()) is (not noise)
        # Planning asks a clean value about x_t as if clean (t = 0), a noised one at t.
        seen.clear()
        agent.eval()
        agent.plan(torch.zeros(1, 4))
        guide_ts = torch.cat(seen)
        assert bool((guide_ts == 0).all()) is (not noise)


def test_plan_command_pins_start_and_goal_and_draws(tmp_path, capsys):
    """`diffrl plan RUN --start -1,1 --goal -1,-1 --json`: negative coordinates as typed, the
    pinned states exact, a figure; bad points are one line."""
    import json

    from diffrl.cli import main
    from diffrl.datasets import make_builtin

    pytest.importorskip("gymnasium_robotics")
    make_builtin("maze2d-umaze-v0", size=600, seed=0)
    run = tmp_path / "run"
    small = ["horizon=8", "diffusion_steps=4", "dim=16", "dim_mults=1,2", "steps=6"]
    argv = ["train", "diffuser", "--dataset", "maze2d-umaze-v0", "--run-dir", str(run)]
    sets = [x for kv in small + ["eval_every=0", "batch_size=4"] for x in ("--set", kv)]
    assert main([*argv, *sets, "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "plan.png"
    argv = ["plan", str(run), "--start", "-1.0,1.0", "--goal", "-1.0,-1.0", "--plans", "3"]
    assert main([*argv, "--horizon", "12", "--json", "--out", str(out)]) == 0
    plans = json.loads(capsys.readouterr().out)["plans"]
    assert len(plans) == 3 and out.stat().st_size > 0
    for plan in plans:
        assert len(plan["states"]) == 12 and len(plan["actions"]) == 12
        assert plan["states"][0] == [-1.0, 1.0, 0.0, 0.0]  # exactly as given
        assert plan["states"][-1] == [-1.0, -1.0, 0.0, 0.0]
        assert plan["value"] is None  # the maze preset trains no value guide
    # Guides given on the command line: negative coordinates as typed; drawn in the figure.
    argv = ["plan", str(run), "--start", "-1.0,1.0", "--goal", "-1.0,-1.0", "--avoid", "-1,0,0.3"]
    assert main([*argv, "--via", "-0.8,0.5", "--json", "--out", str(out)]) == 0
    plans = json.loads(capsys.readouterr().out)["plans"]
    assert plans[0]["states"][0] == [-1.0, 1.0, 0.0, 0.0]
    assert main([*argv[:-1], "-1,0", "--json"]) == 2
    assert "--avoid takes X,Y,RADIUS, got '-1,0'" in capsys.readouterr().err
    # Waypoints: pinned exactly, negative indices as typed; one in a wall is refused.
    argv = ["plan", str(run), "--start", "-1.0,1.0", "--goal", "-1.0,-1.0", "--plans", "2"]
    argv += ["--horizon", "16", "--waypoint", "5:1,0.5", "--waypoint", "-4:0,-1"]
    assert main([*argv, "--json", "--out", str(out)]) == 0
    for plan in json.loads(capsys.readouterr().out)["plans"]:
        assert plan["states"][5][:2] == [1.0, 0.5] and plan["states"][-4][:2] == [0.0, -1.0]
    assert main([*argv[:-2], "--waypoint", "5:0,0"]) == 2
    assert "waypoint 5:0,0 is in a wall or outside the maze" in capsys.readouterr().err
    assert main([*argv[:-2], "--waypoint", "5"]) == 2
    assert "--waypoint takes INDEX:X,Y (e.g. 40:1,-1), got '5'" in capsys.readouterr().err
    assert main(["plan", str(run), "--start", "0.0,0.0", "--goal", "-1,-1"]) == 2
    assert "start 0,0 is in a wall or outside the maze" in capsys.readouterr().err
    assert main(["plan", str(run), "--start", "-1,1", "--horizon", "7"]) == 2
    assert "horizon 7 is not divisible" in capsys.readouterr().err


def test_bench_plan_times_one_decision(capsys, monkeypatch):
    import json

    import diffrl.bench as bench
    from diffrl.cli import main

    monkeypatch.setattr(bench, "WARMUP_SECONDS", 0.0)
    monkeypatch.setattr(bench, "WARMUP_CALLS", 1)
    argv = ["bench", "plan", "--algo", "diffuser", "--obs-dim", "4", "--act-dim", "2"]
    argv += ["--horizon", "8", "--plans", "2", "--sampling-steps", "3", "--guide-steps", "1"]
    sets = ["dim=16", "dim_mults=1,2", "diffusion_steps=5"]
    argv += [x for kv in sets for x in ("--set", kv)] + ["--seconds", "0.2", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ms_per_plan"] > 0 and out["plans_per_second"] == pytest.approx(
        1000 / out["ms_per_plan"], rel=1e-2
    )
    assert out["ms_per_decision"] > 0 and out["decisions_per_second"] > 0
    assert out["horizon"] == 8 and out["settings"]["n_plans"] == 2
    assert (out["settings"]["sampling_steps"], out["settings"]["guide_steps"]) == (3, 1)
    assert main([*argv[:2], "--fast", *argv[2:]]) == 0
    fast = json.loads(capsys.readouterr().out)["settings"]
    assert (fast["sampler"], fast["n_plans"]) == ("ddim", 2)  # explicit flags win over FAST
    assert main(["bench", "plan", "--algo", "diffusion-bc", "--seconds", "0.1"]) == 2
    assert "diffusion-bc does not plan trajectories" in capsys.readouterr().err


def test_presets_cut_for_the_cpu_are_what_the_docs_say():
    from diffrl.run import make_config

    hopper = make_config("diffuser", "hopper-medium-expert-v0")
    assert (hopper.steps, hopper.value_steps, hopper.guide_scale) == (120_000, 20_000, 1e-4)
    # Evaluated at the fast planner: the official 64 plans x 20 steps is 1.1 s a decision here.
    assert {k: getattr(hopper, k) for k in module.FAST} == module.FAST
    cheetah = make_config("diffuser", "halfcheetah-medium-v0")
    assert (cheetah.horizon, cheetah.dim_mults, cheetah.guide_scale) == (4, (1, 4, 8), 1e-3)
    maze = make_config("diffuser", "maze2d-medium-v0")
    assert (maze.horizon, maze.diffusion_steps, maze.dim, maze.n_plans) == (256, 256, 16, 4)
    assert maze.rank_walls  # the plan with the fewest states in walls is executed
    assert make_config("diffuser", "maze2d-umaze-v0").n_plans == 16
    assert maze.value_steps == 0 and maze.controller == "maze"
