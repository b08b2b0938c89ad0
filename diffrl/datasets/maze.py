"""D4RL-style maze2d datasets made here on Gymnasium-Robotics PointMaze v3.

How D4RL made maze2d (scripts/generation/generate_maze2d_datasets.py, pointmaze/
waypoint_controller.py) and what is done here:

- ONE continuous run of `size` steps in which the goal is re-drawn on arrival, never reset.
  Here: PointMaze_{UMaze,Medium,Large}-v3 with continuing_task=True, reset_target=True, stepped
  through `env.unwrapped` so Gymnasium's time limit never cuts the run.
- A planner on the maze grid gives waypoints toward the goal's cell: D4RL ran Q-iteration over
  the grid once per goal and followed the resulting list of cells; here a BFS over free cells
  gives a next-cell table for every (cell, goal cell) pair once per maze (`GridPlanner`), and the
  controller follows it cell by cell the same way: the waypoint is the next cell's centre, and it
  moves on to the cell after that once the ball is within 0.1 of the waypoint (D4RL also asked
  the displacement since the last step to be below 0.1: always true here, where speed is clipped
  to 5 and dt = 0.01). Unlike D4RL, if noise pushes the ball out of the two cells it is moving
  between, the path is re-planned from the cell it is in (D4RL kept heading for the old waypoint).
- Waypoint jitter: D4RL subtracted U(0, 0.2) from each waypoint in its qpos grid coordinates
  (x = row, y = column), but its ball body sits at +1.2 while its walls sit at +1.0, so
  physically each waypoint lay U(0, 0.2) PAST the cell centre toward increasing row and column.
  That physical placement is kept: waypoint = cell_rowcol_to_xy((row + U(0, 0.2),
  col + U(0, 0.2))), i.e. x + U(0, 0.2), y - U(0, 0.2) in PointMaze's coordinates. The goal's own
  cell is not jittered.
- Last waypoint: D4RL drove to the goal cell's centre and declared arrival within 0.1 of it at
  low speed; here the last waypoint is the goal position itself and arrival is PointMaze's
  (|xy - goal| <= 0.45 after a step, then a new goal at least 0.45 away is drawn by the env).
  D4RL also drew a new goal after max_episode_steps without arrival; nothing does so here: the
  controller reaches every goal well within that (longest wait in 1M steps, seed 0: umaze 192,
  medium 354, large 542 steps; about 1250 / 665 / 454 arrivals per 100k steps).
- Controller: a = 10 (waypoint - xy) - 1.0 velocity + N(0, 0.5) noise, then clipped to [-1, 1]
  (D4RL's "noisy" variant, the one released).
- Goals: D4RL drew a goal cell uniformly among free cells plus U(-0.1, 0.1) noise; PointMaze draws
  a free cell plus U(-0.25, 0.25). Starts: D4RL a free cell + U(-0.1, 0.1) with N(0, 0.1) velocity;
  PointMaze a free cell (away from the goal) + U(-0.25, 0.25) at rest.

Arrays (D4RL layout): observations = obs['observation'] (x, y, vx, vy); infos/goal = the goal
in force at that row; infos/qpos, infos/qvel (= the observation's halves for the point mass).
Rewards, as D4RL's released files: `rewards` = 1[|xy - eval_goal| <= 0.5], relabelled against
the FIXED evaluation goal of each maze (its 'G' cell, which PointMaze's maps do not mark; kept in
metadata['eval_goal'] at the G cell centre + 0.2 in the row and column directions, where D4RL's
target physically was), with xy the row's observation. That is what D4RL's maze2d reference
scores refer to. Against the moving goal of the run: infos/reward_goal = 1[|xy - goal| <= 0.5]
and infos/reward_dense = exp(-|xy - goal|), goal = the row's infos/goal. PointMaze's own reward
differs: sparse uses 0.45 (not 0.5) and is computed on the NEXT position after the step.

Episodes: `terminals` are all False (continuing task). `timeouts` are True every H rows
(H = D4RL's max_episode_steps: umaze 300, medium 600, large 800), cutting the run into contiguous
segments for trajectory samplers; the size is rounded UP to whole segments (at least `size`
transitions, as locomotion.make gives whole episodes). The run goes on through a timeout row, so
next_observations[i] = observations[i + 1] everywhere, and the last row's comes from the env.
Diffuser instead cut D4RL's run where the ball leaves the evaluation goal; D4RL's own file marks
`terminals` where its controller reached a goal or ran out of its H steps.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections import deque

import numpy as np

from diffrl.data import OfflineDataset
from diffrl.datasets.locomotion import versions
from diffrl.envs import REF_SCORES
from diffrl.errors import DatasetError
from diffrl.progress import bar as progress_bar
from diffrl.stepper import EnvStepper

ENVS = {
    "maze2d-umaze": "PointMaze_UMaze-v3",
    "maze2d-medium": "PointMaze_Medium-v3",
    "maze2d-large": "PointMaze_Large-v3",
}
# D4RL's max_episode_steps for maze2d-{umaze,medium,large}: the segment length here.
HORIZONS = {"maze2d-umaze": 300, "maze2d-medium": 600, "maze2d-large": 800}
# D4RL's evaluation goal ('G' in its maze strings), as (row, column) of the same grid.
EVAL_GOAL_CELLS = {"maze2d-umaze": (1, 1), "maze2d-medium": (6, 6), "maze2d-large": (7, 9)}
DEFAULT_SIZE = 1_000_000

# D4RL's waypoint controller.
P_GAIN = 10.0
D_GAIN = 1.0  # a = P (waypoint - xy) - D velocity
ACTION_NOISE = 0.5
WAYPOINT_JITTER = 0.2
WAYPOINT_REACHED = 0.1
D4RL_TARGET_OFFSET = 0.2  # D4RL's ball body sat 0.2 (rows and columns) past its wall grid
REWARD_RADIUS = 0.5

# Up, down, left, right: the order in which BFS looks at neighbours (ties between equally
# short paths go to the first).
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


def dataset_names() -> list[str]:
    return [f"{family}-v0" for family in ENVS]


def parse(name: str) -> str:
    """'maze2d-umaze-v0' -> 'maze2d-umaze'."""
    family = name.removesuffix("-v0")
    if name.endswith("-v0") and family in ENVS:
        return family
    raise DatasetError(f"unknown maze2d dataset '{name}' (known: {', '.join(dataset_names())})")


def default_size(name: str) -> int:
    parse(name)
    return DEFAULT_SIZE


class GridPlanner:
    """Shortest paths on a maze grid (1 = wall, anything else free), 4-connected.

    Free cells are numbered in row-major order; `next_cell[c, g]` is the index of the cell to
    go to from cell c toward goal cell g (g itself when c == g), `distance[c, g]` the number of
    moves (-1 when g cannot be reached).
    """

    def __init__(self, maze_map: list[list]) -> None:
        self.rows, self.cols = len(maze_map), len(maze_map[0])
        self.cells = [
            (r, c) for r in range(self.rows) for c in range(self.cols) if maze_map[r][c] != 1
        ]
        self.index = np.full((self.rows, self.cols), -1, np.int64)
        for i, (r, c) in enumerate(self.cells):
            self.index[r, c] = i
        n = len(self.cells)
        self.neighbours = [
            [
                int(self.index[r + dr, c + dc])
                for dr, dc in _MOVES
                if 0 <= r + dr < self.rows
                and 0 <= c + dc < self.cols
                and self.index[r + dr, c + dc] >= 0
            ]
            for r, c in self.cells
        ]
        self.distance = np.full((n, n), -1, np.int64)
        self.next_cell = np.full((n, n), -1, np.int64)
        for g in range(n):
            dist = self.distance[:, g]
            dist[g] = 0
            self.next_cell[g, g] = g
            queue = deque([g])
            while queue:  # BFS outward from the goal: a cell's parent is its next step
                c = queue.popleft()
                for nb in self.neighbours[c]:
                    if dist[nb] < 0:
                        dist[nb] = dist[c] + 1
                        self.next_cell[nb, g] = c
                        queue.append(nb)

    def cell_of(self, rowcol) -> int:
        """Index of the free cell at (row, col), or -1 (wall or outside the grid)."""
        r, c = int(rowcol[0]), int(rowcol[1])
        if 0 <= r < self.rows and 0 <= c < self.cols:
            return int(self.index[r, c])
        return -1

    def path(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """Cells (row, col) from `start` to `goal`, both included, following `next_cell`."""
        s, g = self.cell_of(start), self.cell_of(goal)
        if s < 0 or g < 0:
            raise ValueError(f"{start if s < 0 else goal} is not a free cell")
        if self.distance[s, g] < 0:
            raise ValueError(f"no path from {start} to {goal}")
        out = [self.cells[s]]
        while s != g:
            s = int(self.next_cell[s, g])
            out.append(self.cells[s])
        return out


def eval_goal(family: str, maze) -> np.ndarray:
    """D4RL's fixed evaluation goal for `family` in PointMaze coordinates (see module doc)."""
    r, c = EVAL_GOAL_CELLS[family]
    return np.asarray(
        maze.cell_rowcol_to_xy(np.array([r + D4RL_TARGET_OFFSET, c + D4RL_TARGET_OFFSET])),
        np.float64,
    )


def run(env_id: str, steps: int, seed: int, progress: bool = True, desc: str | None = None) -> dict:
    """Drive PointMaze `env_id` for `steps` steps as one run; return the raw arrays.

    Keys: observations (steps + 1, 4) float64 (the last is the final next observation),
    actions (steps, 2), goals (steps, 2) (the goal in force when the row was observed),
    arrivals (int), action_low, action_high, and `maze` (the env's Maze object).
    """
    # One continuing run on the unwrapped environment: no time limit cuts it.
    stepper = EnvStepper(
        env_id, 1, seed, dtype=np.float64, raw=True, continuing_task=True, reset_target=True
    )
    env = stepper.envs[0]
    core = env.unwrapped
    maze = core.maze
    planner = GridPlanner(maze.maze_map)
    next_cell, cells = planner.next_cell, planner.cells
    cell_xy_to_rowcol, cell_rowcol_to_xy = maze.cell_xy_to_rowcol, maze.cell_rowcol_to_xy
    noise_seed, jitter_seed = np.random.SeedSequence(seed).spawn(2)
    noise = np.random.default_rng(noise_seed).normal(0.0, ACTION_NOISE, size=(steps, 2))
    # One jitter draw per step, used when that step sets a new waypoint (deterministic).
    jitter = np.random.default_rng(jitter_seed).uniform(0.0, WAYPOINT_JITTER, size=(steps, 2))
    low, high = stepper.action_low, stepper.action_high
    lo0, lo1, hi0, hi1 = float(low[0]), float(low[1]), float(high[0]), float(high[1])

    obs = np.empty((steps + 1, 4), np.float64)
    actions = np.empty((steps, 2), np.float64)
    goals = np.empty((steps, 2), np.float64)
    obs[0] = stepper.reset()[0]
    action = np.zeros(2, np.float64)
    goal = None
    goal_cell = from_cell = wp_cell = -1
    gx = gy = wx = wy = 0.0
    arrivals = 0
    reached2 = WAYPOINT_REACHED**2
    bar = progress_bar(total=steps, desc=desc or env_id, unit="step", disable=not progress)
    try:
        for t in range(steps):
            x, y, vx, vy = obs[t].tolist()
            replan = False
            if core.goal is not goal:  # the env drew a new goal (or this is the first step)
                goal = core.goal
                gx, gy = goal.tolist()
                goal_cell = planner.cell_of(cell_xy_to_rowcol(goal))
                replan = True
            cell = planner.cell_of(cell_xy_to_rowcol(obs[t, :2]))
            if cell >= 0 and (replan or (cell != from_cell and cell != wp_cell)):
                from_cell, wp_cell = cell, int(next_cell[cell, goal_cell])
                replan = True
            elif wp_cell != goal_cell and (x - wx) ** 2 + (y - wy) ** 2 < reached2:
                from_cell, wp_cell = wp_cell, int(next_cell[wp_cell, goal_cell])
                replan = True
            if replan:
                if wp_cell == goal_cell:
                    wx, wy = gx, gy
                else:
                    r, c = cells[wp_cell]
                    jr, jc = jitter[t].tolist()
                    wx, wy = cell_rowcol_to_xy(np.array([r + jr, c + jc])).tolist()
            n0, n1 = noise[t].tolist()
            a0 = P_GAIN * (wx - x) - D_GAIN * vx + n0
            a1 = P_GAIN * (wy - y) - D_GAIN * vy + n1
            action[0] = hi0 if a0 > hi0 else (lo0 if a0 < lo0 else a0)
            action[1] = hi1 if a1 > hi1 else (lo1 if a1 < lo1 else a1)
            actions[t] = action
            goals[t] = goal
            obs[t + 1] = stepper.step_one(action)[0]
            if core.goal is not goal:
                arrivals += 1
            if (t + 1) % 1000 == 0:
                bar.update(1000)
        bar.update(steps - bar.n)
    finally:
        bar.close()
        stepper.close()
    return {
        "observations": obs,
        "actions": actions,
        "goals": goals,
        "arrivals": arrivals,
        "action_low": low.tolist(),
        "action_high": high.tolist(),
        "maze": maze,
    }


def make(name: str, size: int, seed: int, progress: bool = True) -> OfflineDataset:
    """Dataset `name` (e.g. 'maze2d-umaze-v0'): at least `size` transitions, whole segments."""
    family = parse(name)
    if size <= 0:
        raise DatasetError(f"{name}: size must be positive, got {size}")
    env_id, horizon = ENVS[family], HORIZONS[family]
    n = math.ceil(size / horizon) * horizon
    raw = run(env_id, n, seed, progress=progress, desc=name)

    obs = raw["observations"].astype(np.float32)
    goals = raw["goals"].astype(np.float32)
    # Rewards from the stored (float32) values, so anyone recomputing them from the file agrees.
    xy = obs[:n, :2].astype(np.float64)
    dist = np.linalg.norm(xy - goals.astype(np.float64), axis=1)
    target = np.round(eval_goal(family, raw["maze"]), 6)
    dist_eval = np.linalg.norm(xy - target, axis=1)
    timeouts = np.zeros(n, bool)
    timeouts[horizon - 1 :: horizon] = True
    arrivals = int(raw["arrivals"])
    dataset = OfflineDataset(
        observations=obs[:n],
        actions=raw["actions"].astype(np.float32),
        rewards=(dist_eval <= REWARD_RADIUS).astype(np.float32),
        next_observations=obs[1:],
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        infos={
            "goal": goals,
            "qpos": obs[:n, :2].copy(),
            "qvel": obs[:n, 2:].copy(),
            "reward_dense": np.exp(-dist).astype(np.float32),
            "reward_goal": (dist <= REWARD_RADIUS).astype(np.float32),
        },
    )
    lo, hi = REF_SCORES[family]
    vers = versions()
    try:
        vers["gymnasium-robotics"] = importlib.metadata.version("gymnasium-robotics")
    except importlib.metadata.PackageNotFoundError:
        pass
    dataset.metadata.update(
        {
            "name": name,
            "env_id": env_id,
            "recipe": (
                f"one continuous {env_id} run (continuing_task, reset_target), driven by D4RL's "
                "BFS-waypoint PD controller a = 10 (waypoint - xy) - 1.0 vel + N(0, 0.5), "
                f"clipped, cut into {horizon}-step segments"
            ),
            "seed": seed,
            "size": size,
            "horizon": horizon,
            "ref_min_score": lo,
            "ref_max_score": hi,
            "goal_arrivals": arrivals,
            "arrivals_per_100k_steps": round(arrivals * 100_000 / n, 1),
            "eval_goal": [float(v) for v in target],
            "eval_goal_cell": list(EVAL_GOAL_CELLS[family]),
            "versions": vers,
            "action_low": raw["action_low"],
            "action_high": raw["action_high"],
        }
    )
    return dataset
