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
- `Agent(config, spec)`: an `nn.Module` fulfilling `Agent` below (weights and normalisers in its
  state_dict).

Optional protocols, declared by an agent simply by having their members (`isinstance` checks
them; the shared modules ask nothing else of an agent):
- `Staged`: training in stages (QGPO: behaviour model, then critic and energy model);
- `Selecting`: an offline checkpoint-selection metric reported by `update` (Diffusion-QL's BC
  loss), from which the loop keeps a `selected` checkpoint;
- `Counted`: an update counter that drives phase switches (EMA start, stage), which
  `diffrl bench` sets to time the steady state;
- `BenchHooks`: what `diffrl bench` needs beyond `update` / `act` (work between stages, acting
  as a trained agent);
- `GoalConditioned`: acts toward the episode's goal (a dict observation's 'desired_goal', or
  one set per episode by evaluation); the stepper hands it over;
- `Episodic`: keeps state across an episode's steps (a planner's current plan) and is told
  where episodes end and begin;
- `Exploring`: acts differently while collecting data online than when evaluated;
- `Remembering`: keeps values per replay-buffer row beside the transitions and rewrites them
  (DIPO's diffusion memory of Q-improved actions);
- `Planner`: plans whole trajectories from a start toward a goal on request (`diffrl plan`);
- `Inert`: names the acting-time keys that do not change how it acts yet (QGPO's guidance
  scale before its energy model is trained), so an evaluation sweep over one runs once.

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
    # Baselines through d3rlpy (optional: see diffrl/algos/_d3rlpy.py)
    "td3bc": "diffrl.algos.td3bc",
    "iql": "diffrl.algos.iql",
    "bc": "diffrl.algos.bc",
}


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


class Agent(Protocol):
    """What every algorithm's agent has."""

    config: Any
    spec: DataSpec

    def fit_normalizers(self, dataset: Any) -> None: ...
    def batch_sampler(self, dataset: Any, device: torch.device) -> BatchSampler: ...
    def update(self, batch: Any) -> dict[str, float]: ...
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs (B, obs_dim) -> actions (B, act_dim) in the environment's units."""
        ...

    def train_state_dict(self) -> dict[str, Any]:
        """Optimisers, schedulers, counters: plain types and tensors only (saved without pickle)."""
        ...

    def load_train_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Staged(Protocol):
    """Training in stages; their steps add up to `config.steps`."""

    def stages(self) -> list[tuple[str, int, int]]:
        """[(name, steps, batch_size), ...] in order."""
        ...

    def begin_stage(
        self,
        name: str,
        run_dir: Any = None,
        progress: bool = True,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Work before a stage's first step (QGPO: generating support actions). Long work polls
        `stop()` and returns early, its progress saved, once it says True (SIGINT/SIGTERM)."""
        ...


@runtime_checkable
class Selecting(Protocol):
    """`update` reports `selection_metric`; the evaluation whose window mean of it ranks
    `selection_rank`-th smallest (0 = smallest) is the `selected` checkpoint."""

    selection_metric: str
    selection_rank: int


@runtime_checkable
class Counted(Protocol):
    """`num_updates` counts `update` calls and drives phase switches (EMA start, stages)."""

    num_updates: int


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
class BenchHooks(Protocol):
    """What `diffrl bench` asks of an agent beyond `update` and `act`."""

    def bench_work(self, name: str, sampler: Any) -> BenchWork | None:
        """The work before stage `name` (QGPO: generating support actions), or None."""
        ...

    def act_as_trained(self) -> None:
        """Act as a fully trained agent would (QGPO: with energy guidance on)."""
        ...


@runtime_checkable
class GoalConditioned(Protocol):
    """Acts toward a goal: evaluation and online collection call `act_goal` instead of `act`
    when the environment has one."""

    def act_goal(
        self, obs: torch.Tensor, goal: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """obs (B, obs_dim), goal (B, goal_dim) -> actions (B, act_dim)."""
        ...


@runtime_checkable
class Episodic(Protocol):
    """Keeps per-episode state between `act` calls (row i of a batch is one episode)."""

    def reset_episodes(self, carry: np.ndarray) -> None:
        """Called before an `act` whose batch differs from the last one: the new batch has
        len(carry) rows, and row i continues the last batch's row carry[i], or is a new episode
        where carry[i] = -1 (the agent forgets what it kept for it)."""
        ...


@runtime_checkable
class Exploring(Protocol):
    """Acts differently while collecting data online than when evaluated (DIPO: the full
    sampling noise when exploring, none when evaluated)."""

    def explore(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs (B, obs_dim) -> exploration actions (B, act_dim) in the environment's units."""
        ...


@runtime_checkable
class Remembering(Protocol):
    """Keeps per-row values in the replay buffer (`ReplayBuffer` columns) and rewrites them.

    `replay_columns` {name: transition key it starts as}; the loop builds the buffer with them
    and hands it to `attach_buffer` (online runs; `batch_sampler` builds one from a dataset).
    Batches then carry the columns in `extra` and their rows in `index`.
    """

    replay_columns: dict[str, str]

    def attach_buffer(self, buffer: Any) -> None: ...


def explore_on(
    agent: Any, obs: torch.Tensor, goal: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    """An online run's actions: the agent's `explore` if it is `Exploring`, else `act_on`."""
    if isinstance(agent, Exploring):
        return agent.explore(obs, generator)
    return act_on(agent, obs, goal, generator)


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


@runtime_checkable
class Inert(Protocol):
    """Acting-time config keys whose value does not change how the agent acts now."""

    def inert_keys(self) -> frozenset[str]: ...


def inert_keys_of(agent: Any) -> frozenset[str]:
    return agent.inert_keys() if isinstance(agent, Inert) else frozenset()


def act_on(
    agent: Any, obs: torch.Tensor, goal: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    """The agent's actions for a batch: toward `goal` if it takes one and there is one."""
    if goal is not None and isinstance(agent, GoalConditioned):
        return agent.act_goal(obs, goal, generator)
    return agent.act(obs, generator)


def stages_of(agent: Any, steps: int, batch_size: int) -> list[tuple[str, int, int]]:
    """An agent's stages, or one stage `train` for an agent that is not `Staged`."""
    return agent.stages() if isinstance(agent, Staged) else [("train", steps, batch_size)]


def selection_metric_of(agent: Any) -> str | None:
    return agent.selection_metric if isinstance(agent, Selecting) else None


def selection_rank_of(agent: Any) -> int:
    return int(agent.selection_rank) if isinstance(agent, Selecting) else 0


def get_algo(name: str) -> ModuleType:
    """The algorithm module for `name`, or a ConfigError listing the known names."""
    if name not in ALGOS:
        raise ConfigError(f"unknown algorithm '{name}' (known: {', '.join(ALGOS)})")
    return importlib.import_module(ALGOS[name])
