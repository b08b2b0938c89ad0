"""Algorithm registry and the contract every algorithm file fulfils, written down in one place.

An algorithm module defines:
- `Config`: a frozen dataclass extending `diffrl.config.TrainConfig`. Acting-time knobs (sampler,
  sampling_steps, guidance_scale, ...) are config fields like any other: `diffrl eval --set` and
  `--sweep` change them by building the agent again from the same weights, so an agent reads
  them where it is built and needs no setter. `Config.RESUME_KEYS` lists the keys a resume may
  change (those that leave the model as it is).
- `presets(dataset: str) -> dict`: per-dataset overrides of `Config`'s defaults;
- optionally `FAST: dict`: the acting-time settings of the algorithm's fastest preset
  (`diffrl bench plan --fast`);
- `Agent(config, spec)`: a subclass of `AgentBase` (diffrl/algos/base.py), which lists every
  member the shared modules call, with the defaults an algorithm inherits unless its paper
  needs otherwise (stages, a checkpoint-selection metric, exploring, per-episode state, replay
  columns, keys that do not act yet, what `diffrl bench` times).

The one capability checked (`isinstance`) is `Planner` below: planning whole trajectories on
request (`diffrl plan`), which only the trajectory planners can (diffrl/algos/planner.py).

Online runs (`diffrl train ALGO --env ENV_ID`, no dataset) give `update` batches from a replay
buffer (`diffrl.data.online`) instead of `batch_sampler(dataset)`; `fit_normalizers` is not
called (there is no data before the run).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from diffrl.errors import ConfigError
from diffrl.guides import Guide

ALGOS: dict[str, str] = {
    "diffusion-bc": "diffrl.algos.diffusion_bc",
    "diffusion-ql": "diffrl.algos.diffusion_ql",
    "gaussian-bc": "diffrl.algos.gaussian_bc",
    "qgpo": "diffrl.algos.qgpo",
    "diffuser": "diffrl.algos.diffuser",
    "decision-diffuser": "diffrl.algos.decision_diffuser",
    "dipo": "diffrl.algos.dipo",
    "sac": "diffrl.algos.sac",
    # The successors: IDQL, flow Q-learning (EDP is Diffusion-QL's `q_action=approx`)
    "idql": "diffrl.algos.idql",
    "fql": "diffrl.algos.fql",
    # Baselines through d3rlpy (optional: see diffrl/algos/_d3rlpy.py)
    "td3bc": "diffrl.algos.td3bc",
    "iql": "diffrl.algos.iql",
    "bc": "diffrl.algos.bc",
}


# `diffrl bench`'s algorithm when none is named: the one the speed tables lead with.
BENCH_DEFAULT = "diffusion-ql"


@dataclass(frozen=True)
class DataSpec:
    """What an agent must know about its data to be built (saved in every run directory)."""

    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]

    @classmethod
    def from_env(cls, env_id: str) -> DataSpec:
        """The spec of an environment's spaces (online runs); dict observations by their
        'observation' entry."""
        from diffrl.envs import env_spaces

        obs_dim, act_dim, low, high = env_spaces(env_id)
        return cls(obs_dim, act_dim, tuple(low), tuple(high))

    @classmethod
    def from_dataset(cls, dataset: Any) -> DataSpec:
        low, high = dataset.action_bounds()
        return cls(
            obs_dim=int(dataset.obs_dim),
            act_dim=int(dataset.act_dim),
            action_low=tuple(float(x) for x in np.asarray(low).reshape(-1)),
            action_high=tuple(float(x) for x in np.asarray(high).reshape(-1)),
        )


class BatchSampler(Protocol):
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Any: ...


@dataclass
class BenchWork:
    """Work an agent does before a stage, described for `diffrl bench` to time (bench.py runs
    the clock): `run()` does one unit of it on `items` items (e.g. support actions for 256
    states); `stand_in()` then replaces the rest of it with placeholders (the stage's update
    cost does not depend on their values); `info` is reported beside the rate."""

    label: str
    run: Callable[[], Any]
    items: int
    unit: str
    stand_in: Callable[[], None]
    info: dict[str, Any]


@runtime_checkable
class Planner(Protocol):
    """Plans whole trajectories on request (`diffrl plan`)."""

    def plans(
        self,
        start: np.ndarray,
        goal: np.ndarray | None = None,
        horizon: int | None = None,
        n_plans: int | None = None,
        generator: torch.Generator | None = None,
        guides: Sequence[Guide] = (),
        waypoints: Mapping[int, Sequence[float]] | None = None,
    ) -> list[dict[str, Any]]:
        """Plans from `start` (obs_dim,) toward `goal` (its first dims, or None), best first:
        [{"states": (H, obs_dim), "actions": (H, act_dim), "value": float or None}, ...] in
        the environment's units, with the pinned states exactly as given; `guides`
        (diffrl.guides) are objectives added at planning time; `waypoints` {h: the first k
        state values} pins those at plan index h (negative from the end)."""
        ...


from diffrl.algos.base import AgentBase  # noqa: E402 - needs DataSpec and BenchWork above

Agent = AgentBase  # the contract's name in type hints


def get_algo(name: str) -> ModuleType:
    """The algorithm module for `name`, or a ConfigError listing the known names."""
    if name not in ALGOS:
        raise ConfigError(f"unknown algorithm '{name}' (known: {', '.join(ALGOS)})")
    return importlib.import_module(ALGOS[name])


def fast_settings(name: str) -> dict[str, Any]:
    """The algorithm's fast preset (its module's `FAST`: cheaper sampling for benchmarks and
    quick looks), or a ConfigError where it has none."""
    fast = getattr(get_algo(name), "FAST", None)
    if fast is None:
        raise ConfigError(f"{name} has no fast preset (--fast)")
    return dict(fast)
