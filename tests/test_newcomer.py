"""What a new user's day found (issue 43): each case is one clear line and nothing written
where the input is bad, and the documented behaviour where it is not."""

from __future__ import annotations

import json

import numpy as np
import pytest

import diffrl
from diffrl.cli import main
from diffrl.errors import DiffrlError


@pytest.fixture
def toy_run(tmp_path):
    config = diffrl.make_config("diffusion-bc", "toy-bandit", steps=10, eval_every=0)
    return diffrl.fit(config, run_dir=tmp_path / "toy", progress=False)


@pytest.fixture(scope="module")
def maze_run(tmp_path_factory):
    """A tiny Diffuser on a small maze2d-umaze file (the maze preset: goal inpainting)."""
    pytest.importorskip("gymnasium_robotics")
    import os

    from diffrl.datasets import make_builtin

    root = tmp_path_factory.mktemp("maze")
    old = os.environ.get("DIFFRL_DATA")
    os.environ["DIFFRL_DATA"] = str(root / "data")
    try:
        make_builtin("maze2d-umaze-v0", size=600, seed=0)
        small = {"horizon": 8, "diffusion_steps": 4, "dim": 16, "dim_mults": (1, 2)}
        config = diffrl.make_config(
            "diffuser", "maze2d-umaze-v0", steps=4, eval_every=0, batch_size=4, **small
        )
        run = diffrl.fit(config, run_dir=root / "run", progress=False)
    finally:
        if old is None:
            os.environ.pop("DIFFRL_DATA", None)
        else:
            os.environ["DIFFRL_DATA"] = old
    return run


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


# 1. an environment that does not fit the data, at evaluation time
def test_eval_in_an_environment_of_other_sizes_is_one_line(toy_run, capsys):
    path = toy_run.path
    capsys.readouterr()
    assert main(["eval", str(path), "--set", "env_id=Pendulum-v1", "--no-progress"]) == 2
    msg = _error(capsys)
    assert msg == (
        "error: environment 'Pendulum-v1' has observations of size 3 and actions of size 1; "
        f"the data has {toy_run.spec.obs_dim} and {toy_run.spec.act_dim}"
    )
    assert not (path / "eval.json").exists()
    with pytest.raises(DiffrlError, match="has observations of size 3"):
        toy_run.evaluate(env_id="Pendulum-v1")


# 2. seeds outside numpy's range, before any directory is made
@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ("-1", "config key 'seed' must be >= 0, got -1"),
        ("4294967296", "config key 'seed' must be <= 2147483647, got 4294967296"),
    ],
)
def test_a_seed_out_of_range_writes_nothing(tmp_path, capsys, seed, message):
    run = tmp_path / "run"
    argv = ["train", "diffusion-bc", "--dataset", "toy-bandit", "--seed", seed]
    assert main([*argv, "--run-dir", str(run), "--no-progress"]) == 2
    assert _error(capsys) == f"error: {message}"
    assert not run.exists()


def test_an_evaluation_seed_out_of_range_is_one_line(toy_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(toy_run.path), "--seed", "-1", "--no-progress"]) == 2
    assert _error(capsys) == "error: seed must be between 0 and 2147483647, got -1"
    assert not (toy_run.path / "eval.json").exists()


# 4. eval_goal: one check wherever a goal enters
def test_eval_goal_is_checked_against_the_environment(toy_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["eval", str(toy_run.path), "--set", "eval_goal=1,1", "--no-progress"]) == 2
    assert _error(capsys) == (
        "error: eval_goal=1,1: environment 'toy-bandit' has no goal to set (eval_goal is for "
        "goal-reaching tasks such as PointMaze)"
    )
    argv = ["train", "diffusion-bc", "--dataset", "toy-bandit", "--set", "eval_goal=1,1"]
    assert main([*argv, "--run-dir", str(tmp_path / "new"), "--no-progress"]) == 2
    assert "has no goal to set" in _error(capsys)
    assert not (tmp_path / "new").exists()


def test_maze_goals_are_checked_for_size_and_walls(maze_run, capsys):
    path = maze_run.path
    (path / "eval.json").unlink(missing_ok=True)
    capsys.readouterr()
    argv = ["eval", str(path), "--episodes", "1", "--no-progress", "--set"]
    assert main([*argv, "eval_goal=1"]) == 2
    assert _error(capsys) == "error: eval_goal=1 has 1 value(s); PointMaze_UMaze-v3's goals have 2"
    for goal in ("5,5", "0,0"):  # outside the maze; inside its middle wall
        assert main([*argv, f"eval_goal={goal}"]) == 2
        msg = _error(capsys)
        assert msg.startswith(f"error: eval_goal={goal} is in a wall or outside the maze of ")
        assert "open cells are centred at x,y = " in msg and "-1,1" in msg
    assert main([*argv, "eval_goal=abc"]) == 2
    assert "eval_goal must be '', 'dataset' or numbers X,Y,...; got 'abc'" in _error(capsys)
    assert not (path / "eval.json").exists()
    # A goal in an open cell is evaluated toward.
    assert main([*argv, "eval_goal=1,-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overrides"] == {"eval_goal": "1,-1"}


# 8. the Python API gives a planner its goal
def test_run_act_gives_a_maze_planner_its_goal(maze_run):
    run = diffrl.load(maze_run.path)
    agent = run.agent
    obs = np.array([-1.0, 1.0, 0.0, 0.0])
    for goal in ([1.0, -1.0], [-1.0, -1.0]):
        run.new_episode()
        action = run.act(obs, seed=0, goal=goal)
        assert action.shape == (2,) and np.all(np.abs(action) <= 1)
        # The plan the agent follows ends at the goal, at rest (the maze preset pins it).
        last = agent.obs_normalizer.unnormalize(agent._plans[:, -1, agent.act_dim :])
        assert np.allclose(last[0].numpy(), [*goal, 0, 0], atol=1e-5)
    # PointMaze's own dict observation: its desired_goal is the goal.
    run.new_episode()
    run.act({"observation": obs, "desired_goal": np.array([1.0, 1.0])}, seed=0)
    last = agent.obs_normalizer.unnormalize(agent._plans[:, -1, agent.act_dim :])
    assert np.allclose(last[0, :2].numpy(), [1.0, 1.0], atol=1e-5)
    # One goal for a batch of observations applies to every row.
    run.new_episode()
    actions = run.act(np.stack([obs, obs]), seed=0, goal=[1.0, -1.0])
    assert actions.shape == (2, 2)
    last = agent.obs_normalizer.unnormalize(agent._plans[:, -1, agent.act_dim :])
    assert np.allclose(last[:, :2].numpy(), [[1.0, -1.0], [1.0, -1.0]], atol=1e-5)
    with pytest.raises(DiffrlError, match=r"act: goal must have shape \(goal_dim,\) or \(2, "):
        run.act(np.stack([obs, obs]), goal=np.zeros((3, 2)))
    with pytest.raises(DiffrlError, match=r"act: goal 0,0 is in a wall or outside the maze"):
        run.act(obs, goal=[0.0, 0.0])
    with pytest.raises(DiffrlError, match="needs an 'observation' entry"):
        run.act({"achieved_goal": obs})


def test_plan_checks_points_in_python_too(maze_run):
    run = diffrl.load(maze_run.path)
    with pytest.raises(DiffrlError, match="^goal 5,5 is in a wall or outside the maze"):
        run.plan([-1.0, 1.0], goal=[5.0, 5.0])
    plans = run.plan([-1.0, 1.0], goal=[1.0, -1.0], horizon=8, n_plans=2)
    assert plans[0]["states"][0].tolist() == [-1.0, 1.0, 0.0, 0.0]  # a start at rest


def test_plan_shows_its_denoising_and_no_progress_hides_it(maze_run, capsys):
    argv = ["plan", str(maze_run.path), "--start", "-1,1", "--goal", "1,-1", "--horizon", "8"]
    assert main(argv) == 0
    assert "denoise" in capsys.readouterr().err
    assert main([*argv, "--no-progress"]) == 0
    assert "denoise" not in capsys.readouterr().err


# 6. --no-progress hides every bar, dataset building's too
def test_no_progress_hides_the_dataset_bar(tmp_path, capsys):
    pytest.importorskip("gymnasium_robotics")
    from diffrl import progress

    out = tmp_path / "p.hdf5"
    argv = ["datasets", "make", "maze2d-umaze-v0", "--size", "600", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert "maze2d-umaze-v0:" not in capsys.readouterr().err
    assert progress.enabled()  # off for that command only
    assert main([*argv, "--force"]) == 0
    assert "maze2d-umaze-v0: 100%" in capsys.readouterr().err


# 7. a dataset that names no environment says so
def test_datasets_info_says_when_no_environment_is_named(tmp_path, capsys):
    import h5py

    from diffrl.data.io import write_d4rl_hdf5

    data = diffrl.load_dataset("toy-bandit")
    plain = tmp_path / "plain.hdf5"
    data.metadata.clear()
    write_d4rl_hdf5(data, plain)
    assert main(["datasets", "info", str(plain)]) == 0
    assert "env_id: none (store it as the file's metadata 'env_id'" in capsys.readouterr().out
    with h5py.File(plain, "a") as f:  # as docs/datasets.md shows
        f.create_dataset("metadata/env_id", data="Pendulum-v1")
    assert main(["datasets", "info", str(plain), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["env_id"] == "Pendulum-v1"


def test_datasets_info_lists_a_mazes_open_cells(maze_run, capsys):
    path = maze_run.path.parent / "data" / "maze2d-umaze-v0.hdf5"
    assert main(["datasets", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["env_id"] == "PointMaze_UMaze-v3" and info["cell_size"] == 1.0
    # UMaze: a U of 7 open cells around the middle wall.
    assert len(info["open_cells"]) == 7 and [0.0, 0.0] not in info["open_cells"]


# 13. a plan that jumps across a wall between two open states is counted as such
def test_steps_through_walls_are_counted_against_the_point_test(maze_run, capsys):
    import torch

    from diffrl.envs import in_wall, maze_layout, walls_crossed, walls_hit

    maze = maze_layout("PointMaze_UMaze-v3")
    # UMaze: the wall is the middle row's left two cells; (-1, 1) -> (-1, -1) crosses it, and
    # so does the diagonal (1, 1) -> (-1, -1); the other steps go round the U.
    path = [[-1.0, 1.0], [-1.0, -1.0], [0.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]]
    xy = torch.tensor([path], dtype=torch.float64)
    assert walls_hit(maze, xy).tolist() == [0]
    # An independent count: the point test on 100 points inside each step.
    expected = sum(
        any(in_wall(maze, np.add(a, np.subtract(b, a) * f)) for f in np.linspace(0.01, 0.99, 100))
        for a, b in zip(path[:-1], path[1:], strict=True)
    )
    assert expected == 2
    assert walls_crossed(maze, xy).tolist() == [expected]
    assert main(["plan", str(maze_run.path), "--start", "-1,1", "--goal", "1,-1"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "state(s) inside walls" in line and "step(s) from one state to the next through" in line


# 11. a run stopped before its first checkpoint
def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path, capsys):
    from diffrl.run import start_run
    from diffrl.train import train

    config = diffrl.make_config("diffusion-bc", "toy-bandit", steps=1000, save_every=5000)
    path, _ = start_run(config, tmp_path / "run")  # as a run killed before its first save
    capsys.readouterr()
    train(path, resume=True, steps=1000, progress=False, overrides={"eval_every": 0})
    err = capsys.readouterr().err
    assert "no checkpoint to resume from" in err and "starting from step 0" in err
    assert "save_every 5,000 >= steps 1,000: the only checkpoint is the final one" in err


# 12. an online preset can be seen before training
def test_config_shows_an_online_preset(capsys):
    assert main(["config", "dipo", "--env", "Pendulum-v1", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["env_id"] == "Pendulum-v1" and config["dataset"] == ""
    from diffrl.config import to_dict

    preset = diffrl.make_config("dipo", env_id="Pendulum-v1")
    assert config == json.loads(json.dumps(to_dict(preset)))  # what `train dipo --env` uses
    assert preset != diffrl.make_config("dipo")  # the preset changes something
    assert main(["config", "dipo", "--env", "Pendulum-v1", "--dataset", "toy-bandit"]) == 2
    assert _error(capsys) == "error: --dataset and --env name two presets; give one"


# 9. step axes written short
def test_step_ticks_are_short():
    from diffrl.plotting import short_count

    assert [short_count(v) for v in (300, 12_500, 1_000_000, 0)] == ["300", "12.5k", "1M", "0"]


# 3, for a user's own script: Python run from the folder that holds a clone named diffrl
def test_import_from_the_folder_that_holds_the_clone_finds_the_package(tmp_path):
    """There the clone's folder is a namespace package `diffrl` on sys.path[0]; an editable
    install through an import hook lost to it ("module 'diffrl' has no attribute 'load'")."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(diffrl.__file__).resolve().parents[1]
    (tmp_path / "diffrl").symlink_to(root)
    code = "import diffrl; print(diffrl.__file__); diffrl.load"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("__init__.py")
