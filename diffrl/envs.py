"""Dataset names -> Gymnasium environments and D4RL reference scores for normalisation.

normalized = 100 * (return - min) / (max - min), with D4RL's per-environment min (random
policy) and max (expert) returns (REFERENCES.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from typing import Any

from diffrl.errors import DiffrlError

# env family -> (ref_min_score, ref_max_score), D4RL's constants.
REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
    "antmaze": (0.0, 1.0),
}

# env family -> Gymnasium id (v5 keeps the v2 observation layout and reward weights).
GYM_IDS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
    "maze2d-umaze": "PointMaze_UMaze-v3",
    "maze2d-medium": "PointMaze_Medium-v3",
    "maze2d-large": "PointMaze_Large-v3",
}

# Environments evaluated without Gymnasium (see diffrl.evaluate).
NON_GYM_ENVS = ("toy-bandit",)


def env_family(name: str) -> str | None:
    """'hopper-medium-v2' -> 'hopper'; 'maze2d-umaze-v1' -> 'maze2d-umaze'; 'Hopper-v5' too."""
    low = name.lower()
    for family in sorted(REF_SCORES, key=len, reverse=True):
        if low.startswith(family):
            return family
    for family, gym_id in GYM_IDS.items():
        if low == gym_id.lower():
            return family
    return None


def reference_scores(name: str) -> tuple[float, float] | None:
    """D4RL (min, max) returns for a dataset name or env id, or None if there is none."""
    family = env_family(name)
    return REF_SCORES.get(family) if family else None


def normalized_score(name: str, returns: Any) -> Any:
    """100 * (R - min) / (max - min) for the env behind `name`; None without references."""
    ref = reference_scores(name)
    if ref is None:
        return None
    lo, hi = ref
    return 100.0 * (returns - lo) / (hi - lo)


def gym_id_for(name: str) -> str | None:
    """The Gymnasium id for a D4RL-style dataset name (None if unknown)."""
    family = env_family(name)
    return GYM_IDS.get(family) if family else None


def make_env(env_id: str, **kwargs: Any):
    """gymnasium.make with a one-line error when the environment or its extra is missing."""
    import gymnasium as gym

    if env_id.startswith("PointMaze") and not importlib.util.find_spec("gymnasium_robotics"):
        raise DiffrlError(
            f"environment '{env_id}' needs gymnasium-robotics: pip install -e '.[maze]'"
        )
    if env_id.startswith("PointMaze"):
        # Its import prints a notice about Adroit environments to stderr; not ours to show.
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise DiffrlError(f"cannot make environment '{env_id}': {exc}") from None
    except (ImportError, ModuleNotFoundError) as exc:
        raise DiffrlError(
            f"environment '{env_id}' needs a package that is not installed ({exc}); "
            "try: pip install 'gymnasium[mujoco]' gymnasium-robotics"
        ) from None
