"""One environment stepper for evaluation, dataset collection and online training.

`EnvStepper` steps n copies of one Gymnasium environment together, so an agent acts on a batch
of observations at once (a diffusion policy's cost is per call, not per row). It flattens
observations for the agent the one way diffrl uses everywhere: a dict observation (PointMaze,
any goal-conditioned task) gives its 'observation' entry, and its 'desired_goal' is kept apart
as `goal` and handed to the agent (`act_goal`, diffrl/algos/base.py). A goal can be set
per episode (`set_goal`), for goal-reaching evaluation and for planners told where to go.

Two ways to run:
- episodes (evaluation): `reset()` starts one episode per environment with its own seed;
  `step(actions)` steps only the environments still running; a finished one stays finished.
- continuing (collection, online training): `autoreset=True` starts a new episode in an
  environment as soon as one ends, and `Step.final_obs` keeps the observation the finished
  episode ended on (the true next state of its last transition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from diffrl.errors import DiffrlError
from diffrl.runtime import threads_tick


@dataclass
class Step:
    """What one `EnvStepper.step` gives, for the `index` environments that were stepped.

    obs / goal: (k, obs_dim) / (k, goal_dim) observations to act on next (after an autoreset,
    the new episode's first); final_obs: (k, obs_dim) the observation each transition really
    led to; reward, terminated, truncated: (k,); episode_return / episode_length: (k,) each
    episode's totals so far (for a finished one, its whole return and length).
    """

    index: np.ndarray
    obs: np.ndarray
    goal: np.ndarray | None
    final_obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: list[dict]
    episode_return: np.ndarray
    episode_length: np.ndarray

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


def split_obs(obs: Any, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray | None]:
    """A raw observation -> (what agents see, its desired goal or None)."""
    if isinstance(obs, dict):
        goal = obs.get("desired_goal")
        return np.asarray(obs["observation"], dtype), (
            None if goal is None else np.asarray(goal, dtype)
        )
    return np.asarray(obs, dtype), None


class EnvStepper:
    """n copies of `env_id`, stepped together.

    Args:
        env_id: a Gymnasium id (made by `diffrl.envs.make_env`, with its one-line errors).
        n: number of environments.
        seed: environment i's first episode is seeded seed + i; later episodes continue each
            environment's own random stream (as `env.reset()` without a seed does).
        autoreset: start a new episode where one ends (continuing); else finished
            environments stop (episodes).
        dtype: observations' dtype (float32 for agents; float64 keeps a simulator's values).
        raw: step the unwrapped environment: no time limit and no wrapper overhead (one
            continuing run, as D4RL's maze2d collection).
        env_kwargs: passed to gymnasium.make.
    """

    def __init__(
        self,
        env_id: str,
        n: int = 1,
        seed: int = 0,
        autoreset: bool = False,
        dtype: Any = np.float32,
        raw: bool = False,
        **env_kwargs: Any,
    ) -> None:
        from diffrl.envs import make_env

        if n < 1:
            raise DiffrlError(f"EnvStepper needs at least one environment, got n={n}")
        self.env_id, self.n, self.seed = env_id, n, int(seed)
        self.autoreset, self.dtype, self.raw = autoreset, dtype, raw
        self.envs = [make_env(env_id, **env_kwargs) for _ in range(n)]
        self._step_fns = [(e.unwrapped if raw else e).step for e in self.envs]
        space = self.envs[0].action_space
        self.action_low = np.asarray(space.low, np.float64)
        self.action_high = np.asarray(space.high, np.float64)
        self.obs: np.ndarray | None = None  # (n, obs_dim)
        self.goal: np.ndarray | None = None  # (n, goal_dim) for dict observations with a goal
        self.active = np.zeros(n, bool)
        self.episode_return = np.zeros(n)
        self.episode_length = np.zeros(n, np.int64)
        self.episodes_started = np.zeros(n, np.int64)

    # ------------------------------------------------------------------ episodes
    def reset(
        self,
        index: Any = None,
        seeds: list[int | None] | None = None,
        options: list[dict | None] | None = None,
    ) -> np.ndarray:
        """Start an episode in the environments `index` (default all); returns all obs.

        seeds: one per environment reset (default: seed + i on an environment's first episode,
        then None); options: Gymnasium reset options per environment (PointMaze: goal_cell,
        reset_cell).
        """
        index = np.arange(self.n) if index is None else np.atleast_1d(np.asarray(index))
        for j, i in enumerate(index):
            i = int(i)
            if seeds is not None:
                seed = seeds[j]
            else:
                seed = self.seed + i if self.episodes_started[i] == 0 else None
            raw, _ = self.envs[i].reset(seed=seed, options=None if options is None else options[j])
            self._store(i, raw)
            self.active[i] = True
            self.episode_return[i] = 0.0
            self.episode_length[i] = 0
            self.episodes_started[i] += 1
        return self.obs

    def _store(self, i: int, raw: Any) -> None:
        obs, goal = split_obs(raw, self.dtype)
        if self.obs is None:
            self.obs = np.zeros((self.n, *obs.shape), self.dtype)
            if goal is not None:
                self.goal = np.zeros((self.n, *goal.shape), self.dtype)
        self.obs[i] = obs
        if goal is not None and self.goal is not None:
            self.goal[i] = goal

    def set_goal(self, i: int, goal: Any) -> None:
        """Set environment i's goal for the rest of its episode (goal-conditioned tasks with a
        `goal` attribute, such as PointMaze); the agent sees it as `goal[i]`."""
        core = self.envs[i].unwrapped
        if not hasattr(core, "goal") or self.goal is None:
            raise DiffrlError(f"environment '{self.env_id}' has no goal to set")
        goal = np.asarray(goal, np.float64).reshape(np.shape(core.goal))
        core.goal = goal
        update = getattr(core, "update_target_site_pos", None)
        if callable(update):
            update()  # the goal marker the simulator renders
        self.goal[i] = goal

    # ------------------------------------------------------------------ stepping
    def step(self, actions: np.ndarray) -> Step:
        """Step the active environments with `actions` (k, act_dim), k = number active, in
        index order. With autoreset every environment is active."""
        threads_tick()  # the agent's threads follow the machine's load (diffrl/runtime.py)
        index = np.flatnonzero(self.active)
        actions = np.asarray(actions)
        if actions.shape[0] != index.size:
            raise DiffrlError(
                f"{index.size} environments are running but {actions.shape[0]} actions were given"
            )
        k = index.size
        final = np.zeros((k, *self.obs.shape[1:]), self.dtype)
        reward = np.zeros(k)
        terminated = np.zeros(k, bool)
        truncated = np.zeros(k, bool)
        infos: list[dict] = []
        for j, i in enumerate(index):
            raw, r, term, trunc, info = self._step_fns[i](actions[j])
            self._store(i, raw)
            final[j] = self.obs[i]
            reward[j], terminated[j], truncated[j] = float(r), bool(term), bool(trunc)
            infos.append(info)
            self.episode_return[i] += float(r)
            self.episode_length[i] += 1
        done = terminated | truncated
        totals = (self.episode_return[index].copy(), self.episode_length[index].copy())
        if done.any():
            ended = index[done]
            if self.autoreset:
                self.reset(ended)
            else:
                self.active[ended] = False
        return Step(
            index=index,
            obs=self.obs[index].copy(),
            goal=None if self.goal is None else self.goal[index].copy(),
            final_obs=final,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            infos=infos,
            episode_return=totals[0],
            episode_length=totals[1],
        )

    def step_one(self, action: np.ndarray, i: int = 0) -> tuple[np.ndarray, float, bool, bool]:
        """Step environment i alone: (its next obs, reward, terminated, truncated), with no
        autoreset and no batch bookkeeping (a tight single-environment loop: maze2d's 1M-step
        collection, where `step`'s per-call arrays cost a third more time)."""
        raw, r, term, trunc, _ = self._step_fns[i](action)
        self._store(i, raw)
        self.episode_return[i] += float(r)
        self.episode_length[i] += 1
        return self.obs[i], float(r), bool(term), bool(trunc)

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def __enter__(self) -> EnvStepper:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
