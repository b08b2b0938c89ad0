"""Built-in maze2d datasets made on PointMaze v3 (small runs) and the grid planner."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from diffrl.datasets import maze
from diffrl.envs import make_env
from diffrl.errors import DatasetError

N = 3000


@pytest.fixture(scope="module")
def umaze():
    return maze.make("maze2d-umaze-v0", N, seed=0, progress=False)


def test_umaze_has_the_d4rl_layout_and_300_step_segments(umaze):
    ds = umaze
    assert len(ds) == N and ds.observations.shape == (N, 4) and ds.actions.shape == (N, 2)
    assert np.abs(ds.actions).max() <= 1.0
    assert ds.infos["goal"].shape == (N, 2)
    np.testing.assert_array_equal(ds.infos["qpos"], ds.observations[:, :2])
    np.testing.assert_array_equal(ds.infos["qvel"], ds.observations[:, 2:])
    assert not ds.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(ds.timeouts), np.arange(299, N, 300))
    np.testing.assert_array_equal(ds.episode_starts, np.arange(0, N, 300))
    # one continuous run: the next observation is the next row's, through timeout rows too
    np.testing.assert_array_equal(ds.next_observations[:-1], ds.observations[1:])
    meta = ds.metadata
    assert meta["name"] == "maze2d-umaze-v0" and meta["env_id"] == "PointMaze_UMaze-v3"
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (23.85, 161.86)
    assert meta["seed"] == 0 and meta["size"] == N and "gymnasium" in meta["versions"]
    assert meta["action_low"] == [-1.0, -1.0] and meta["action_high"] == [1.0, 1.0]


def test_rewards_are_one_exactly_within_half_a_metre_of_the_goal(umaze):
    ds = umaze
    xy = ds.observations[:, :2].astype(np.float64)
    # `rewards`: D4RL's labelling, against the maze's fixed evaluation goal
    target = np.asarray(ds.metadata["eval_goal"], dtype=np.float64)
    dist_eval = np.linalg.norm(xy - target, axis=1)
    np.testing.assert_array_equal(ds.rewards, (dist_eval <= 0.5).astype(np.float32))
    assert 0 < ds.rewards.sum() < N  # both values occur, so the check above means something
    # infos: against the moving goal of the run
    dist = np.linalg.norm(xy - ds.infos["goal"].astype(np.float64), axis=1)
    np.testing.assert_array_equal(ds.infos["reward_goal"], (dist <= 0.5).astype(np.float32))
    assert 0 < ds.infos["reward_goal"].sum() < N
    np.testing.assert_allclose(ds.infos["reward_dense"], np.exp(-dist), rtol=1e-6)


def test_goal_is_redrawn_on_arrival_during_the_run(umaze):
    ds = umaze
    goal = ds.infos["goal"]
    changed = np.flatnonzero(np.any(goal[1:] != goal[:-1], axis=1)) + 1
    arrivals = ds.metadata["goal_arrivals"]
    assert arrivals >= 15  # about 37 expected in 3000 steps: the controller reaches goals
    assert len(changed) in (arrivals, arrivals - 1)  # an arrival on the last step is unseen
    # each change follows a step that ended within PointMaze's 0.45 of the old goal
    reached = np.linalg.norm(ds.next_observations[changed - 1, :2] - goal[changed - 1], axis=1)
    assert (reached <= 0.45 + 1e-5).all()
    assert ds.metadata["arrivals_per_100k_steps"] == pytest.approx(arrivals * 1e5 / N, abs=0.1)


def test_same_seed_same_arrays_other_seed_differs(umaze):
    again = maze.make("maze2d-umaze-v0", N, seed=0, progress=False)
    other = maze.make("maze2d-umaze-v0", N, seed=1, progress=False)
    for key in ("observations", "actions", "rewards", "next_observations"):
        np.testing.assert_array_equal(getattr(again, key), getattr(umaze, key))
    np.testing.assert_array_equal(again.infos["goal"], umaze.infos["goal"])
    assert not np.array_equal(other.observations, umaze.observations)
    assert not np.array_equal(other.actions, umaze.actions)


def test_size_is_rounded_up_to_whole_segments():
    ds = maze.make("maze2d-medium-v0", 700, seed=0, progress=False)
    assert len(ds) == 1200
    np.testing.assert_array_equal(np.flatnonzero(ds.timeouts), [599, 1199])
    assert ds.metadata["horizon"] == 600


def _bfs(maze_map, goal):
    dist = {goal: 0}
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nb = (r + dr, c + dc)
            if maze_map[nb[0]][nb[1]] != 1 and nb not in dist:
                dist[nb] = dist[(r, c)] + 1
                queue.append(nb)
    return dist


def test_planner_steps_to_free_neighbours_along_shortest_paths_in_the_large_maze():
    env = make_env(maze.ENVS["maze2d-large"])
    grid = env.unwrapped.maze
    env.close()
    planner = maze.GridPlanner(grid.maze_map)
    free = [(r, c) for r, row in enumerate(grid.maze_map) for c, v in enumerate(row) if v != 1]
    assert sorted(planner.cells) == sorted(free) and len(free) > 40
    for g, goal in enumerate(planner.cells):
        dist = _bfs(grid.maze_map, goal)
        assert len(dist) == len(free)  # the large maze is connected
        for s, start in enumerate(planner.cells):
            nxt = planner.cells[int(planner.next_cell[s, g])]
            if s == g:
                assert nxt == goal
                continue
            assert abs(nxt[0] - start[0]) + abs(nxt[1] - start[1]) == 1
            assert grid.maze_map[nxt[0]][nxt[1]] != 1
            path = planner.path(start, goal)
            assert path[0] == start and path[-1] == goal and len(path) - 1 == dist[start]
    # planner cells and the env's coordinates agree
    for cell in planner.cells:
        xy = grid.cell_rowcol_to_xy(np.array(cell))
        assert tuple(grid.cell_xy_to_rowcol(xy)) == cell


def test_unknown_maze_name_is_a_one_line_dataset_error():
    with pytest.raises(DatasetError) as err:
        maze.make("maze2d-huge-v0", 100, seed=0)
    message = str(err.value)
    assert "maze2d-huge-v0" in message and "\n" not in message
    assert maze.dataset_names() == ["maze2d-umaze-v0", "maze2d-medium-v0", "maze2d-large-v0"]
    assert maze.DEFAULT_SIZE == 1_000_000
