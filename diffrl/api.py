"""The Python API: what the CLI does, in a few lines (the CLI is a thin layer over it).

import diffrl

data = diffrl.load_dataset("toy-bandit")                  # name, file or Minari id
config = diffrl.make_config("diffusion-bc", "toy-bandit", steps=2_000, seed=1)
run = diffrl.fit(config, run_dir="runs/bc-toy")           # trains, checkpoints, evaluates
run = diffrl.load("runs/bc-toy")                          # any run directory, later
actions = run.act(data.observations[:5])                  # numpy in, numpy out (env units)
print(run.evaluate(episodes=10))                          # the run's evaluation summary
print(run.evaluate(sampling_steps=5, sampler="ddim"))     # acting-time keys, per call
print(run.sweep("sampling_steps", [5, 50], sampler="ddim"))  # every value, none chosen
run = diffrl.resume("runs/bc-toy", steps=4_000)           # continue (or a killed run)

A planner in a user's own loop: `run.act(obs, goal=(x, y))` (or PointMaze's dict observation,
whose desired_goal is the goal), and `run.new_episode()` when an episode starts again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrl.errors import DiffrlError
from diffrl.guides import Guide
from diffrl.precision import precision_scope
from diffrl.progress import denoising_shown
from diffrl.runtime import threads_tick


def load_dataset(name_or_path: str) -> Any:
    """An `OfflineDataset` from a built-in name (made on first use), a file or a Minari id."""
    from diffrl.datasets import resolve

    return resolve(name_or_path)


def make_config(algo: str, dataset: str = "", **settings: Any) -> Any:
    """`algo`'s config: its defaults, the dataset's preset, then `settings` (checked)."""
    from diffrl.run import make_config as _make_config

    return _make_config(algo, dataset, settings)


def fit(config: Any, run_dir: str | Path | None = None, progress: bool = True) -> Run:
    """Start a run of `config` in `run_dir` (default runs/ALGO/...) and train it to the end."""
    from diffrl.run import start_run
    from diffrl.train import train as _train

    path, dataset = start_run(config, run_dir)
    _train(path, dataset=dataset, progress=progress)
    return Run(path)


def resume(run_dir: str | Path, progress: bool = True, **settings: Any) -> Run:
    """Continue a run from its newest intact checkpoint; `settings` may change the keys that
    leave the model as it is (steps, env_id, evaluation settings, device)."""
    from diffrl.train import train as _train

    _train(run_dir, resume=True, progress=progress, overrides=settings)
    return Run(run_dir)


def load(run_dir: str | Path, checkpoint: str = "latest", device: str | None = None) -> Run:
    """A run directory, ready to act and evaluate (`checkpoint`: latest, best, selected, STEP)."""
    return Run(run_dir, checkpoint, device)


class Run:
    """A run directory: its config, and its agent at one checkpoint (loaded on first use)."""

    def __init__(
        self, run_dir: str | Path, checkpoint: str = "latest", device: str | None = None
    ) -> None:
        from diffrl.run import load_run

        self.path = Path(run_dir)
        self.checkpoint = checkpoint
        self.device = device
        self.progress = False  # bars during evaluation and planning (the CLI turns them on)
        self.config, self.spec, self.info = load_run(self.path)
        self._loaded: tuple[Any, Any, int] | None = None
        self._with: tuple[str, tuple[Any, Any, int]] | None = None  # built with settings

    def _agent(self, settings: dict[str, Any]) -> tuple[Any, Any, int]:
        from diffrl.run import load_agent

        if settings:  # acting-time keys: an agent built with them, from the same weights
            # The last such agent is kept: a planner's plans live in it between `act` calls.
            key = repr(sorted(settings.items()))
            if self._with is None or self._with[0] != key:
                agent, config, _, step = load_agent(
                    self.path, self.checkpoint, settings, self.device
                )
                self._with = (key, (agent, config, step))
            return self._with[1]
        if self._loaded is None:
            agent, config, _, step = load_agent(self.path, self.checkpoint, None, self.device)
            self._loaded = (agent, config, step)
        return self._loaded

    @property
    def agent(self) -> Any:
        """The agent (an nn.Module) at the loaded checkpoint, with the run's own settings."""
        return self._agent({})[0]

    @property
    def step(self) -> int:
        """The gradient step of the loaded checkpoint."""
        return self._agent({})[2]

    def act(
        self, obs: Any, seed: int | None = None, goal: Any = None, **settings: Any
    ) -> np.ndarray:
        """Actions for observations (obs_dim,) or (B, obs_dim), in the environment's units.

        `obs` may also be a goal-reaching environment's dict observation ({'observation',
        'desired_goal', ...}, as PointMaze returns): its 'desired_goal' is the goal then.
        `goal` (goal_dim,) or (B, goal_dim), e.g. a maze position x,y: where an agent that
        takes goals (a maze planner) steers; checked like every goal (size, a maze's walls).
        Without one such an agent acts as its training data did, toward no place in
        particular. A planner keeps a plan per row between calls and replans on its own
        schedule: call `new_episode()` when an episode starts again.
        """
        from diffrl.envs import check_point

        agent, config, _ = self._agent(settings)
        threads_tick()  # threads follow the machine's load (diffrl/runtime.py)
        device = next(agent.parameters()).device
        if isinstance(obs, Mapping):
            if "observation" not in obs:
                raise DiffrlError(
                    f"act: a dict observation needs an 'observation' entry, got {sorted(obs)}"
                )
            goal = obs.get("desired_goal") if goal is None else goal
            obs = obs["observation"]
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
        single = x.ndim == 1
        if x.shape[-1] != self.spec.obs_dim or x.ndim not in (1, 2):
            raise DiffrlError(
                f"act: observations must have shape ({self.spec.obs_dim},) or "
                f"(B, {self.spec.obs_dim}), got {tuple(x.shape)}"
            )
        x = x.reshape(-1, self.spec.obs_dim)
        g = None
        if goal is not None:
            # One goal (goal_dim,) for every row, or one per row (B, goal_dim).
            rows = np.asarray(goal, np.float64)
            rows = np.broadcast_to(rows, (len(x), rows.size)) if rows.ndim <= 1 else rows
            if rows.ndim != 2 or rows.shape[0] != len(x) or rows.shape[1] == 0:
                raise DiffrlError(
                    f"act: goal must have shape (goal_dim,) or ({len(x)}, goal_dim), "
                    f"got {np.shape(goal)}"
                )
            for row in np.unique(rows, axis=0):  # each distinct goal checked once
                check_point(config.env_id, row, "act: goal ")
            g = torch.tensor(rows, dtype=torch.float32, device=device)  # a copy: rows may be a view
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        with torch.no_grad(), precision_scope(config.precision, device):
            actions = agent.act_goal(x, g, generator).cpu().numpy()
        return actions[0] if single else actions

    def new_episode(self, **settings: Any) -> None:
        """Forget what an agent keeps between `act` calls (a planner's plans): the next call
        starts every row's episode afresh. Agents without such state need no call."""
        agent, _, _ = self._agent(settings)
        agent.reset_episodes(np.full(0, -1))

    def evaluate(
        self, episodes: int | None = None, seed: int | None = None, **settings: Any
    ) -> dict[str, Any]:
        """The evaluation summary (normalised score, returns, ...) at this checkpoint."""
        from diffrl.evaluate import evaluate

        agent, config, _ = self._agent(self._as_configured(settings))
        episodes, seed = self._episodes_seed(config, episodes, seed)
        device = next(agent.parameters()).device
        meta = self.info.get("dataset_metadata")
        return evaluate(agent, config, episodes, seed, device, meta, progress=self.progress)

    def sweep(
        self,
        key: str,
        values: list[Any],
        episodes: int | None = None,
        seed: int | None = None,
        **settings: Any,
    ) -> list[dict[str, Any]]:
        """Every value of one acting-time key evaluated on the same episodes; none is chosen."""
        from diffrl.evaluate import Sweep

        agent, config, _ = self._agent(self._as_configured(settings))
        episodes, seed = self._episodes_seed(config, episodes, seed)
        device = next(agent.parameters()).device
        text = f"{key}=" + ",".join(str(v) for v in values)
        sweep = Sweep(text, config, self.spec, device)
        meta = self.info.get("dataset_metadata")
        with precision_scope(config.precision, device):
            results = sweep.run(agent, episodes, seed, device, meta, progress=self.progress)
        return [{"value": v, **r} for v, r in zip(sweep.values(), results, strict=True)]

    def plan(
        self,
        start: Any,
        goal: Any = None,
        horizon: int | None = None,
        n_plans: int | None = None,
        seed: int = 0,
        guides: Sequence[Guide] = (),
        waypoints: Mapping[int, Sequence[float]] | None = None,
        **settings: Any,
    ) -> list[dict[str, Any]]:
        """A planner's plans from `start` toward `goal`, best first (`diffrl plan`):
        [{"states": (H, obs_dim), "actions": (H, act_dim), "value": float or None}, ...];
        `guides`: planning-time objectives (diffrl.guides.avoid, via, or Guide(fn))."""
        from diffrl.algos import Planner
        from diffrl.envs import check_point, known_maze

        agent, config, _ = self._agent(settings)
        if not isinstance(agent, Planner):
            raise DiffrlError(f"{config.algo} does not plan trajectories")
        # Every point a user names is checked once, here (sizes, and a maze's walls).
        env_id = config.env_id
        start = check_point(env_id, start, "start ")
        if start.size < self.spec.obs_dim and known_maze(env_id) is not None:
            start = np.pad(start, (0, self.spec.obs_dim - start.size))  # a position at rest
        if goal is not None:
            goal = check_point(env_id, goal, "goal ")
        # A waypoint may pin x alone: only (x, y) and more can be placed against the walls.
        waypoints = {
            int(h): check_point(env_id if len(p) >= 2 else "", p, f"waypoint {h}:")
            for h, p in (waypoints or {}).items()
        }
        generator = torch.Generator().manual_seed(seed)
        device = next(agent.parameters()).device
        with precision_scope(config.precision, device), denoising_shown(self.progress):
            return agent.plans(start, goal, horizon, n_plans, generator, guides, waypoints)

    def evaluation(
        self,
        episodes: int | None = None,
        seed: int | None = None,
        sweep: tuple[str, Sequence[Any]] | None = None,
        save: bool = True,
        **settings: Any,
    ) -> dict[str, Any]:
        """What `diffrl eval` prints and keeps: the run, checkpoint, seed and settings, then the
        evaluation summary, or (`sweep` (key, values)) every value's on the same episodes;
        NaN as None. `save` writes it to the run directory (eval.json, atomically)."""
        from diffrl.fileio import finite
        from diffrl.run import RunDir

        _, config, _ = self._agent(self._as_configured(settings))
        episodes, seed = self._episodes_seed(config, episodes, seed)
        out: dict[str, Any] = {
            "run_dir": str(self.path),
            "algo": config.algo,
            "dataset": config.dataset,
            "env_id": config.env_id,
            "checkpoint_step": self.step,
            "seed": seed,
            "overrides": settings,
        }
        if sweep is not None:
            key, values = sweep
            out["sweep"] = {
                "key": key,
                "results": self.sweep(key, list(values), episodes, seed, **settings),
            }
        else:
            out.update(self.evaluate(episodes, seed, **settings))
        out = finite(out)
        if save:
            RunDir(self.path).write_eval(out)
        return out

    def _as_configured(self, settings: dict[str, Any]) -> dict[str, Any]:
        # An evaluation is of the run as configured: a training-time sweep (model selection
        # during training) is not repeated on the episodes reported.
        if self.config.eval_sweep and "eval_sweep" not in settings:
            return {**settings, "eval_sweep": ""}
        return settings

    @staticmethod
    def _episodes_seed(config: Any, episodes: int | None, seed: int | None) -> tuple[int, int]:
        from diffrl.config import MAX_SEED
        from diffrl.run import eval_seed

        episodes = config.eval_episodes if episodes is None else int(episodes)
        if episodes < 1:
            raise DiffrlError(f"episodes must be >= 1, got {episodes}")
        if seed is None:
            return episodes, eval_seed(config.seed, "eval")
        if not 0 <= int(seed) <= MAX_SEED:
            raise DiffrlError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
        return episodes, int(seed)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {self.config.algo} on {self.config.dataset})"
