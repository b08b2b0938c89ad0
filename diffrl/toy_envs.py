"""diffrl's own small Gymnasium environments (registered under the `diffrl/` namespace).

`diffrl/FourGoals-v0`: one step from the origin in the plane; the action a in [-1, 1]^2 is where
the point lands, and the reward is the sum of four equal Gaussian bumps at (+-0.6, +-0.6)
(std 0.15): four equally good ways to act, and nothing between them (the origin earns
under 1e-6).
Every episode is one step and terminates. The observation is the start position, (0, 0) plus
uniform noise in [-0.05, 0.05]^2, so that a policy still sees a state. It is the online
analogue of Diffusion-QL's toy bandit with the modes' rewards equal: a policy that represents
one Gaussian must pick one mode or fall between them (the multimodality demonstration in
docs/results/online.md).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

GOALS = np.array([[0.6, 0.6], [-0.6, 0.6], [-0.6, -0.6], [0.6, -0.6]], dtype=np.float32)
GOAL_STD = 0.15


def four_goals_reward(actions: np.ndarray) -> np.ndarray:
    """(..., 2) -> (...): sum_g exp(-||a - g||^2 / (2 std^2)); 1 at a goal's centre."""
    d2 = ((np.asarray(actions)[..., None, :] - GOALS) ** 2).sum(-1)
    return np.exp(-d2 / (2 * GOAL_STD**2)).sum(-1)


def nearest_goal(actions: np.ndarray, radius: float = 0.25) -> np.ndarray:
    """Index of the goal within `radius` of each action (..., 2), or -1 for none."""
    d = np.sqrt(((np.asarray(actions)[..., None, :] - GOALS) ** 2).sum(-1))
    idx = d.argmin(-1)
    return np.where(d.min(-1) <= radius, idx, -1)


class FourGoals(gym.Env):
    """One-step, four equally good goals (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._obs = np.zeros(2, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs = self.np_random.uniform(-0.05, 0.05, 2).astype(np.float32)
        return self._obs.copy(), {}

    def step(self, action: np.ndarray):
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        reward = float(four_goals_reward(a))
        return a.copy(), reward, True, False, {"goal": int(nearest_goal(a))}


def register() -> None:
    """Register diffrl's environments with Gymnasium (idempotent)."""
    if "diffrl/FourGoals-v0" not in gym.registry:
        gym.register("diffrl/FourGoals-v0", entry_point=FourGoals)
