"""The command line as a new user meets it: datasets, train, eval, plot, resume, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from diffrl.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env_extra: dict | None = None, timeout: float = 300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIFFRL_FAST_MISH": "0", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "diffrl.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_help_lists_everything(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("datasets", "train", "eval", "plot", "config", "algos"):
        assert cmd in out


def test_datasets_make_info_list(capsys, tmp_path):
    assert main(["datasets", "make", "toy-bandit", "--size", "1000", "--seed", "2", "--json"]) == 0
    path = Path(json.loads(capsys.readouterr().out)["path"])
    assert path.exists() and path.parent == Path(os.environ["DIFFRL_DATA"])
    assert main(["datasets", "info", "toy-bandit", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["transitions"] == 1000 and info["episodes"] == 1000
    assert (info["obs_dim"], info["act_dim"]) == (2, 2)
    assert abs(info["return_mean"] - 2.375) < 0.1
    assert main(["datasets", "info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["transitions"] == 1000
    assert main(["datasets", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name": "toy-bandit", "made": True}.items() <= rows[0].items()


def test_info_has_normalized_return_with_reference(capsys, tmp_path):
    path = tmp_path / "hopper-medium-v2.hdf5"
    n = 20
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((n, 11), np.float32)
        f["actions"] = np.zeros((n, 3), np.float32)
        f["rewards"] = np.full(n, 10.0, np.float32)
        f["terminals"] = np.zeros(n, bool)
        t = np.zeros(n, bool)
        t[9] = t[19] = True
        f["timeouts"] = t
    assert main(["datasets", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2 and info["return_mean"] == 100.0
    lo, hi = -20.272305, 3234.3  # D4RL hopper references (file name -> family)
    assert info["normalized_return_mean"] == pytest.approx(100 * (100 - lo) / (hi - lo))


@pytest.mark.parametrize(
    "make_file,expected",
    [
        (None, "error: {path}: no such file"),
        ("no_actions", "error: {path}: missing key 'actions'"),
        ("nan_obs", "error: {path}: key 'observations' contains NaN (first at row 3)"),
        (
            "short_rewards",
            "error: {path}: key 'rewards' has 9 rows, expected 10 (as 'observations')",
        ),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, make_file, expected):
    path = tmp_path / "bad.hdf5"
    if make_file:
        obs = np.zeros((10, 3), np.float32)
        if make_file == "nan_obs":
            obs[3, 1] = np.nan
        with h5py.File(path, "w") as f:
            f["observations"] = obs
            if make_file != "no_actions":
                f["actions"] = np.zeros((10, 2), np.float32)
            f["rewards"] = np.zeros(9 if make_file == "short_rewards" else 10, np.float32)
            f["terminals"] = np.zeros(10, bool)
    for args in (
        ["datasets", "info", str(path)],
        ["train", "diffusion-bc", "--dataset", str(path)],
    ):
        proc = run_cli(*args)
        assert proc.returncode != 0
        assert proc.stderr.strip() == expected.format(path=path), proc.stderr
        assert "Traceback" not in proc.stderr


def test_unknown_names_are_clear(capsys):
    assert main(["datasets", "make", "toy-bandits"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'toy-bandits'") and "'toy-bandit'" in err
    assert main(["train", "diffusion-qq", "--dataset", "toy-bandit"]) == 2
    assert "unknown algorithm 'diffusion-qq'" in capsys.readouterr().err
    assert main(["train", "diffusion-bc", "--dataset", "toy-bandit", "--set", "lr=fast"]) == 2
    assert capsys.readouterr().err == "error: config key 'lr' expects float, got 'fast'\n"


def test_train_eval_plot_end_to_end(capsys, tmp_path):
    run = tmp_path / "run"
    args = ["train", "diffusion-bc", "--dataset", "toy-bandit", "--run-dir", str(run)]
    args += ["--steps", "40", "--no-progress", "--set", "hidden=32", "--set", "eval_every=20"]
    args += ["--set", "diffusion_steps=10"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(run)
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 40 and config["hidden"] == 32 and config["t_dim"] == 4  # preset
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in x for x in lines)
    assert any("loss" in x for x in lines) and any("eval/reward_mean" in x for x in lines)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000040"
    assert (run / "checkpoints" / "step_00000040" / "model.safetensors").exists()
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((run / "tb").glob("events.out.tfevents.*"))

    for extra in ([], ["--sampler", "ddim", "--sampling-steps", "5"], ["--sampler", "dpm-solver"]):
        assert main(["eval", str(run), "--json", *extra]) == 0
        result = json.loads(capsys.readouterr().out)
        fr = result["mode_fractions"]
        assert set(fr) == {"left_up", "left_bottom", "right_up", "right_bottom", "off_mode"}
        assert sum(fr.values()) == pytest.approx(1.0)
        assert result["samples"] == 1000 and "reward_mean" in result
        assert json.loads((run / "eval.json").read_text()) == result

    # ddpm with fewer steps than T: ancestral sampling on strided steps
    assert main(["eval", str(run), "--sampler", "ddpm", "--sampling-steps", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 1000
    assert main(["eval", str(run), "--sampling-steps", "5000"]) == 2
    assert "sampling_steps must be in 1.." in capsys.readouterr().err

    assert main(["plot", str(run)]) == 0
    pngs = capsys.readouterr().out.split()
    assert {Path(p).name for p in pngs} == {"curves.png", "actions.png"}
    assert all(Path(p).stat().st_size > 5000 for p in pngs)


def test_killed_run_resumes_to_full_steps(tmp_path):
    """SIGKILL a real training process mid-way, then --resume finishes all its steps."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIFFRL_FAST_MISH": "0"}
    cmd = [sys.executable, "-m", "diffrl.cli", "train", "diffusion-bc", "--dataset", "toy-bandit"]
    cmd += ["--run-dir", str(run), "--steps", "3000", "--no-progress"]
    cmd += ["--set", "save_every=100", "--set", "log_every=50", "--set", "hidden=32"]
    cmd += ["--set", "eval_every=0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        latest.exists() and latest.read_text().strip() >= "step_00000300"
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip().split("_")[1])
    assert 300 <= killed_at < 3000, "the run finished before it could be killed"

    done = run_cli("train", "--resume", str(run), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00003000"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert train_steps == list(range(50, 3001, 50))  # every step logged once, in order
    assert not list((run / "checkpoints").glob(".step_*"))
    ev = run_cli("eval", str(run), "--json")
    assert ev.returncode == 0 and json.loads(ev.stdout)["checkpoint_step"] == 3000


@pytest.mark.filterwarnings("ignore")
def test_minari_dataset_by_id_trains_and_evaluates_in_its_env(capsys, tmp_path):
    """A dataset written by minari itself: info by id, train on it, roll out in its env."""
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(0)
    buffers = []
    for i, t in enumerate((30, 40, 50)):
        trunc = np.zeros(t, bool)
        trunc[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=rng.uniform(-1, 1, (t + 1, 3)).astype(np.float32),
                actions=rng.uniform(-2, 2, (t, 1)).astype(np.float32),
                rewards=rng.normal(size=t),
                terminations=np.zeros(t, bool),
                truncations=trunc,
            )
        )
    dataset_id = "diffrl-test/pendulum/random-v0"
    minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        env="Pendulum-v1",
        algorithm_name="random",
        ref_min_score=-1500.0,
        ref_max_score=-150.0,
    )
    assert main(["datasets", "info", dataset_id, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["transitions"], info["episodes"], info["obs_dim"], info["act_dim"]) == (
        120,
        3,
        3,
        1,
    )
    assert "normalized_return_mean" in info

    run = tmp_path / "run"
    args = ["train", "gaussian-bc", "--dataset", dataset_id, "--run-dir", str(run)]
    args += ["--steps", "20", "--no-progress", "--set", "eval_episodes=2", "--set", "hidden=16"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env_id"] == "Pendulum-v1" and result["episodes"] == 3
    assert len(result["returns"]) == 3 and result["length_mean"] == 200  # Pendulum's time limit
    lo, hi = -1500.0, -150.0  # the dataset's own reference scores win
    expected = 100 * (np.mean(result["returns"]) - lo) / (hi - lo)
    assert result["normalized_score"] == pytest.approx(expected)
