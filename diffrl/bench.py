"""Speed benchmarks on synthetic data of a given shape (`diffrl bench train|act`).

They need no dataset and no simulator: random observations/actions/rewards in the requested
dims, the algorithm's real `Agent` with its default config (or `--set` overrides), and a
wall-clock loop after a warm-up (which also absorbs one-off compilation). Compare ratios
measured in one sitting on one machine, never absolute numbers across machines.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np
import torch

from diffrl.algos import BenchWork, DataSpec, fast_settings, get_algo
from diffrl.config import acting_settings, apply_overrides
from diffrl.data import OfflineDataset
from diffrl.errors import ConfigError
from diffrl.precision import check_precision, precision_scope
from diffrl.runtime import governor, thread_policy, threads_tick, tune_cpu_allocator, wait_policy

WARMUP_SECONDS = 3.0
WARMUP_CALLS = 20


def synthetic_dataset(obs_dim: int, act_dim: int, n: int = 10_000, seed: int = 0) -> OfflineDataset:
    """n random transitions in episodes of 1000 steps (actions in [-1, 1])."""
    if obs_dim < 1 or act_dim < 1:
        raise ConfigError(f"--obs-dim and --act-dim must be >= 1 (got {obs_dim}, {act_dim})")
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, obs_dim)).astype(np.float32)
    next_obs = rng.standard_normal((n, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1.0, 1.0, (n, act_dim)).astype(np.float32)
    actions[0], actions[1] = -1.0, 1.0  # bounds exactly [-1, 1]
    timeouts = np.zeros(n, dtype=bool)
    timeouts[999::1000] = True
    return OfflineDataset(
        observations=obs,
        actions=actions,
        rewards=rng.standard_normal(n).astype(np.float32),
        next_observations=next_obs,
        terminals=np.zeros(n, dtype=bool),
        timeouts=timeouts,
        metadata={"source": "synthetic"},
    )


def _agent(algo: str, obs_dim: int, act_dim: int, device: torch.device, overrides: dict) -> Any:
    module = get_algo(algo)
    config = apply_overrides(module.Config(algo=algo, dataset="synthetic"), overrides)
    check_precision(config.precision, device)
    spec = DataSpec(obs_dim, act_dim, (-1.0,) * act_dim, (1.0,) * act_dim)
    return module.Agent(config, spec).to(device), config


def _settings(algo: str, fast: bool, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The algorithm's FAST settings (with `fast`), then the overrides."""
    return {**(fast_settings(algo) if fast else {}), **dict(overrides or {})}


def _timed(fn, seconds: float, sync) -> tuple[int, float]:
    # Warm up for a time and a count: the first calls of a new shape compile kernels.
    start, k = time.perf_counter(), 0
    while time.perf_counter() - start < WARMUP_SECONDS or k < WARMUP_CALLS:
        threads_tick()  # as a user's loop does (diffrl/runtime.py: threads follow the load)
        fn()
        k += 1
    sync()
    n, start = 0, time.perf_counter()
    while True:
        threads_tick()
        fn()
        n += 1
        if n % 5 == 0 or seconds <= 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return n, elapsed


def _env(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),  # at the end of the timed loop
        "thread_policy": thread_policy(),
        "thread_changes": governor.changes,  # how often the governor changed the count
        "omp_wait_policy": wait_policy(),
        "machine": platform.machine(),
        "tuned_allocator": tune_cpu_allocator(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _sync(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def bench_train(
    algo: str,
    obs_dim: int,
    act_dim: int,
    batch_size: int = 256,
    seconds: float = 20.0,
    device: torch.device | str = "cpu",
    overrides: dict[str, Any] | None = None,
    fast: bool = False,
) -> dict[str, Any]:
    """Full gradient steps per second (everything `Agent.update` does, batch sampling included);
    `fast` applies the algorithm's `FAST` settings first."""
    tune_cpu_allocator()
    device = torch.device(device)
    torch.manual_seed(0)
    agent, config = _agent(algo, obs_dim, act_dim, device, _settings(algo, fast, overrides))
    data = synthetic_dataset(obs_dim, act_dim)
    agent.fit_normalizers(data)
    agent.train()
    sampler = agent.batch_sampler(data, device)
    sync = _sync(device)
    base = {"algo": algo, "obs_dim": obs_dim, "act_dim": act_dim}
    if len(agent.stages()) > 1:
        with precision_scope(config.precision, device):
            stages = _bench_stages(agent, sampler, batch_size, seconds, sync)
        return {**base, **_env(device), "precision": config.precision, "stages": stages}
    # Measure the steady state: past any warm-up phase (e.g. the EMA start).
    agent.num_updates = 10**6
    with precision_scope(config.precision, device):
        n, elapsed = _timed(lambda: agent.update(sampler.sample(batch_size)), seconds, sync)
    return {
        **base,
        **_env(device),  # after the loop: the thread count it ended with
        "steps_per_second": round(n / elapsed, 2),
        "steps": n,
        "seconds": round(elapsed, 2),
        "batch_size": batch_size,
        "fast": fast,
        "precision": config.precision,
    }


def _time_work(work: BenchWork, seconds: float, sync) -> dict[str, Any]:
    """Items per second of an agent's between-stage work (after `_timed`'s warm-up: the first
    calls may compile), then its stand-in for the rest."""
    with torch.no_grad():
        n, elapsed = _timed(work.run, seconds, sync)
    work.stand_in()
    return {
        f"{work.unit}_per_second": round(n * work.items / elapsed, 1),
        **work.info,
        "seconds": round(elapsed, 2),
    }


def _bench_stages(agent: Any, sampler: Any, batch_size: int, seconds: float, sync) -> dict:
    """Per stage of an agent in stages: its update steps per second at the stage's batch
    size (`--batch-size` is the last stage's), and the rate of the work an agent does between
    stages (`agent.bench_work`: e.g. generating support actions, in states per second)."""
    out: dict[str, Any] = {}
    first = 0
    stages = agent.stages()
    for i, (name, n_steps, stage_batch) in enumerate(stages):
        bs = batch_size if i == len(stages) - 1 else stage_batch
        work = agent.bench_work(name, sampler)
        if work is not None:
            out[work.label] = _time_work(work, seconds, sync)
        # Inside the stage, past its first steps (phase switches happen by step count).
        agent.num_updates = first + min(1000, max(n_steps - 1, 0))
        start = agent.num_updates

        def step(bs: int = bs, start: int = start) -> None:
            agent.update(sampler.sample(bs))
            agent.num_updates = start  # stay in the measured phase

        n, elapsed = _timed(step, seconds, sync)
        out[name] = {
            "steps_per_second": round(n / elapsed, 2),
            "steps": n,
            "seconds": round(elapsed, 2),
            "batch_size": bs,
        }
        first += n_steps
    return out


def bench_act(
    algo: str,
    obs_dim: int,
    act_dim: int,
    seconds: float = 10.0,
    device: torch.device | str = "cpu",
    overrides: dict[str, Any] | None = None,
    fast: bool = False,
) -> dict[str, Any]:
    """Milliseconds to choose one action for one observation (as in an environment loop, step
    after step: a planner replans as its settings say); `fast` applies the algorithm's `FAST`
    settings first."""
    tune_cpu_allocator()
    device = torch.device(device)
    torch.manual_seed(0)
    agent, config = _agent(algo, obs_dim, act_dim, device, _settings(algo, fast, overrides))
    agent.fit_normalizers(synthetic_dataset(obs_dim, act_dim, n=2000))
    agent.eval()
    agent.act_as_trained()
    obs = torch.randn(1, obs_dim, device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def one() -> None:
        agent.act(obs, generator)

    with precision_scope(config.precision, device):
        n, elapsed = _timed(one, seconds, _sync(device))
    out = {
        "algo": algo,
        "ms_per_action": round(elapsed / n * 1e3, 4),
        "actions_per_second": round(n / elapsed, 3),
        "actions": n,
        "fast": fast,
        "precision": config.precision,
        "seconds": round(elapsed, 2),
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        **_env(device),
    }
    # The acting-time settings timed (sampler, steps, candidates, guidance, ...).
    out["settings"] = acting_settings(config)
    return out


def bench_plan(
    algo: str,
    obs_dim: int,
    act_dim: int,
    horizon: int | None = None,
    n_plans: int | None = None,
    seconds: float = 10.0,
    device: torch.device | str = "cpu",
    overrides: dict[str, Any] | None = None,
    fast: bool = False,
) -> dict[str, Any]:
    """Milliseconds for one decision's plans from one state and from noise (`Planner.plans`),
    guided as a trained planner is, and for one decision while acting step after step (`act`:
    replanning as the settings say, warm-started where they say so); `fast` applies the
    algorithm's `FAST` settings first."""
    from diffrl.algos import Planner

    tune_cpu_allocator()
    device = torch.device(device)
    torch.manual_seed(0)
    settings = _settings(algo, fast, overrides)
    if horizon is not None:
        settings["horizon"] = horizon
    if n_plans is not None:
        settings["n_plans"] = n_plans
    agent, config = _agent(algo, obs_dim, act_dim, device, settings)
    if not isinstance(agent, Planner):
        raise ConfigError(f"{algo} does not plan trajectories: use `diffrl bench act`")
    agent.fit_normalizers(synthetic_dataset(obs_dim, act_dim, n=2000))
    agent.eval()
    start = np.zeros(obs_dim, np.float32)
    generator = torch.Generator(device=device).manual_seed(0)

    def one() -> None:
        agent.plans(start, None, None, None, generator)

    with precision_scope(config.precision, device):
        n, elapsed = _timed(one, seconds, _sync(device))
    ms = elapsed / n * 1e3
    # Decisions while acting from one state, step after step: what an episode pays per step
    # (a replan every `replan_every` steps, warm-started from the last plan where that is set).
    obs = torch.zeros(1, obs_dim, device=device)

    def decide() -> None:
        agent.act_goal(obs, None, generator)

    with torch.no_grad(), precision_scope(config.precision, device):
        n_act, elapsed_act = _timed(decide, seconds, _sync(device))
    ms_act = elapsed_act / n_act * 1e3
    return {
        "algo": algo,
        "ms_per_plan": round(ms, 3),
        "plans_per_second": round(1e3 / ms, 3),
        "ms_per_decision": round(ms_act, 3),
        "decisions_per_second": round(1e3 / ms_act, 3),
        "calls": n,
        "seconds": round(elapsed, 2),
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "horizon": config.horizon,
        "fast": fast,
        "precision": config.precision,
        "settings": acting_settings(config),
        **_env(device),
    }
