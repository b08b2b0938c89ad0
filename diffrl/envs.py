"""Dataset names -> Gymnasium environments and D4RL reference scores for normalisation.

normalized = 100 * (return - min) / (max - min), with D4RL's per-environment min (random
policy) and max (expert) returns (REFERENCES.md).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from diffrl.errors import DiffrlError

if TYPE_CHECKING:
    import torch

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

# Environments evaluated without Gymnasium: env id -> a module with
# `evaluate_agent(agent, device, generator) -> dict` and `plot_agent(agent, config, step, out_dir)`.
NON_GYM_ENVS: dict[str, str] = {"toy-bandit": "diffrl.datasets.toy_bandit"}


def non_gym_env(env_id: str) -> Any:
    """The module behind one of diffrl's own environments (NON_GYM_ENVS), else None."""
    if env_id not in NON_GYM_ENVS:
        return None
    import importlib

    return importlib.import_module(NON_GYM_ENVS[env_id])


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


def _register(env_id: str) -> Any:
    """Gymnasium, with gymnasium-robotics' environments registered when `env_id` needs them."""
    import gymnasium as gym

    if env_id.startswith("diffrl/"):
        from diffrl.toy_envs import register

        register()
    if env_id.startswith("PointMaze"):
        if not importlib.util.find_spec("gymnasium_robotics"):
            raise DiffrlError(
                f"environment '{env_id}' needs gymnasium-robotics: pip install -e '.[maze]'"
            )
        # Its import prints a notice about Adroit environments to stderr; not ours to show.
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    return gym


def env_spaces(env_id: str) -> tuple[int, int, list[float], list[float]]:
    """(obs size, action size, action low, action high) of a Box-action environment; dict
    observations by their 'observation' entry (what agents receive)."""
    if env_id in NON_GYM_ENVS:
        raise DiffrlError(f"'{env_id}' is not a Gymnasium environment: it cannot run online")
    gym = _register(env_id)
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise DiffrlError(f"unknown environment '{env_id}': {exc}") from None
    env = make_env(env_id)
    try:
        space = env.observation_space
        if isinstance(space, gym.spaces.Dict) and "observation" in space.spaces:
            space = space.spaces["observation"]
        if not isinstance(env.action_space, gym.spaces.Box):
            raise DiffrlError(
                f"environment '{env_id}' has {type(env.action_space).__name__} actions "
                f"({env.action_space}); diffrl's algorithms need continuous (Box) actions"
            )
        if not isinstance(space, gym.spaces.Box) or len(space.shape or ()) != 1:
            raise DiffrlError(
                f"environment '{env_id}' has observations {env.observation_space}; diffrl "
                "needs a flat Box (a vector), or a dict with one under 'observation'"
            )
        low = np.asarray(env.action_space.low, np.float64).reshape(-1)
        high = np.asarray(env.action_space.high, np.float64).reshape(-1)
        return int(np.prod(space.shape)), low.size, low.tolist(), high.tolist()
    finally:
        env.close()


def check_env(env_id: str, obs_dim: int, act_dim: int) -> None:
    """A one-line DiffrlError unless `env_id` can be made and its spaces fit the data.

    Runs call it before their first step, so a wrong environment is found at start-up, not
    at the first evaluation. Dict observations are compared by their 'observation' entry (what
    the agents receive). diffrl's own environments (the toy bandit) need no simulator.
    """
    if env_id in NON_GYM_ENVS:
        return
    env_obs, env_act, _, _ = env_spaces(env_id)
    if (env_obs, env_act) != (obs_dim, act_dim):
        raise DiffrlError(
            f"environment '{env_id}' has observations of size {env_obs} and actions of size "
            f"{env_act}; the data has {obs_dim} and {act_dim}"
        )


def maze_layout(env_id: str) -> dict[str, Any] | None:
    """A PointMaze environment's grid: {"map": rows of 1 (wall) / other (free), "cell": cell
    size, "centres": (rows, cols, 2) xy of each cell's centre}; None for other environments.

    Read from the environment's registration (its `maze_map`), without building it: PointMaze
    places cell (r, c) at x = (c + 1/2) s - W s / 2, y = H s / 2 - (r + 1/2) s for a W x H
    map and cell size s = 1 (gymnasium-robotics' `Maze.cell_rowcol_to_xy`)."""
    if not env_id.startswith("PointMaze"):
        return None
    gym = _register(env_id)
    try:
        kwargs = gym.spec(env_id).kwargs
    except gym.error.Error as exc:
        raise DiffrlError(f"cannot make environment '{env_id}': {exc}") from None
    grid = [[1 if v == 1 else 0 for v in row] for row in kwargs["maze_map"]]
    cell = float(kwargs.get("maze_size_scaling", 1.0))  # PointMaze's is 1
    rows, cols = len(grid), len(grid[0])
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    centres = np.stack(
        [(c + 0.5) * cell - cols * cell / 2, rows * cell / 2 - (r + 0.5) * cell], axis=-1
    ).astype(np.float64)
    return {"map": grid, "cell": cell, "centres": centres}


def in_wall(layout: dict[str, Any], xy: Any) -> bool:
    """Whether point xy lies in a wall cell (or outside the grid) of `maze_layout`'s maze."""
    centres, half = layout["centres"], layout["cell"] / 2
    x, y = float(xy[0]), float(xy[1])
    for r, row in enumerate(layout["map"]):
        for c, wall in enumerate(row):
            cx, cy = centres[r, c]
            if abs(x - cx) <= half and abs(y - cy) <= half:
                return bool(wall)
    return True


def open_cells(layout: dict[str, Any]) -> list[tuple[float, float]]:
    """The centres (x, y) of a maze's open cells, row by row (each cell spans centre +- cell/2)."""
    return [
        (float(layout["centres"][r, c][0]), float(layout["centres"][r, c][1]))
        for r, row in enumerate(layout["map"])
        for c, wall in enumerate(row)
        if not wall
    ]


def _points(values: Any) -> str:
    return ",".join(f"{v:g}" for v in values)


@functools.cache
def goal_size(env_id: str) -> int | None:
    """The size of an environment's goal (its observations' 'desired_goal'), None without one."""
    if env_id in NON_GYM_ENVS:
        return None
    gym = _register(env_id)
    env = make_env(env_id)
    try:
        space = env.observation_space
        if isinstance(space, gym.spaces.Dict) and "desired_goal" in space.spaces:
            return int(np.prod(space.spaces["desired_goal"].shape))
        return None
    finally:
        env.close()


def check_point(env_id: str, point: Any, label: str, size: int | None = None) -> np.ndarray:
    """One check for a goal, or any point a user names in an environment, wherever it enters
    (eval_goal, `Run.act`'s goal, `diffrl plan`'s start, goal and waypoints): finite numbers,
    `size` of them where given, and in a maze at least (x, y) inside an open cell. A one-line
    DiffrlError that names `label` otherwise; the point as float64 (n,)."""
    try:
        values = np.asarray(point, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DiffrlError(f"{label} must be numbers, got {point!r}") from None
    if not np.isfinite(values).all() or values.size == 0:
        raise DiffrlError(f"{label} must be finite numbers, got {_points(values) or 'nothing'}")
    if size is not None and values.size != size:
        raise DiffrlError(
            f"{label}{_points(values)} has {values.size} value(s); {env_id}'s goals have {size}"
        )
    layout = known_maze(env_id) if env_id else None
    if layout is not None:
        if values.size < 2:
            raise DiffrlError(f"{label}{_points(values)}: a point in {env_id} needs x,y")
        if in_wall(layout, values[:2]):
            cells = " ".join(_points(c) for c in open_cells(layout))
            raise DiffrlError(
                f"{label}{_points(values[:2])} is in a wall or outside the maze of {env_id}; "
                f"its open cells are centred at x,y = {cells} "
                f"(each +-{layout['cell'] / 2:g})"
            )
    return values


@functools.cache
def known_maze(env_id: str) -> dict[str, Any] | None:
    """`maze_layout(env_id)` for a PointMaze, else None, built once per environment id (a
    planner ranks its plans against it)."""
    return maze_layout(env_id) if env_id.startswith("PointMaze") else None


def walls_hit(layout: dict[str, Any], xy: torch.Tensor) -> torch.Tensor:
    """How many of each plan's points lie in no open cell: xy (..., H, 2) -> counts (...,).

    The vectorised `in_wall` (a point on the edge between an open cell and a wall is open)."""
    import torch

    centres = torch.as_tensor(layout["centres"], dtype=xy.dtype, device=xy.device)
    is_open = torch.tensor(layout["map"], device=xy.device).reshape(-1) == 0
    open_centres = centres.reshape(-1, 2)[is_open]  # (C, 2)
    half = layout["cell"] / 2
    inside = ((xy[..., None, :] - open_centres).abs() <= half).all(-1)  # (..., H, C)
    return (~inside.any(-1)).sum(-1)


def walls_crossed(layout: dict[str, Any], xy: torch.Tensor, samples: int = 8) -> torch.Tensor:
    """How many of each plan's steps (the straight segment from one state to the next) pass
    through a wall: xy (..., H, 2) -> counts (...,).

    A step is blocked when any of `samples` evenly spaced points strictly between its two
    states lies in no open cell; a plan can have every state in an open cell and still jump
    across a wall from one state to the next (an undertrained model does)."""
    import torch

    frac = torch.arange(1, samples + 1, dtype=xy.dtype, device=xy.device) / (samples + 1)
    a, b = xy[..., :-1, None, :], xy[..., 1:, None, :]  # (..., H - 1, 1, 2)
    between = a + (b - a) * frac[:, None]  # (..., H - 1, samples, 2)
    return (walls_hit(layout, between) > 0).sum(-1)


def make_env(env_id: str, **kwargs: Any):
    """gymnasium.make with a one-line error when the environment or its extra is missing."""
    gym = _register(env_id)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise DiffrlError(f"cannot make environment '{env_id}': {exc}") from None
    except (ImportError, ModuleNotFoundError) as exc:
        raise DiffrlError(
            f"environment '{env_id}' needs a package that is not installed ({exc}); "
            "try: pip install 'gymnasium[mujoco]' gymnasium-robotics"
        ) from None
