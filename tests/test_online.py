"""Online runs through the shared loop: replay buffer, checkpointed with the run, restored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffrl.checkpoint import load_newest_intact
from diffrl.cli import main
from diffrl.data.online import ReplayBuffer
from diffrl.errors import DiffrlError

TESTS = Path(__file__).parent


def test_replay_buffer_ring_in_place_and_round_trip():
    buf = ReplayBuffer(2, 1, capacity=5, device=torch.device("cpu"))
    for i in range(7):  # wraps: rows hold transitions 5, 6, 2, 3, 4
        buf.add(
            np.full((1, 2), i),
            np.full((1, 1), i),
            np.array([i]),
            np.full((1, 2), i + 0.5),
            np.array([i == 3]),
        )
    assert (len(buf), buf.ptr) == (5, 2)
    assert buf.obs[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert buf.not_done[:, 0].tolist() == [1, 1, 1, 0, 1]  # only a true termination stops it
    buf.action[torch.tensor([0, 1])] = -1.0  # writable in place (DIPO's improved actions)
    batch = buf.sample(64, torch.Generator().manual_seed(0))
    assert torch.equal(batch.action[:, 0], buf.action[batch.index, 0])
    assert torch.equal(batch.obs, buf.obs[batch.index])
    other = ReplayBuffer(2, 1, capacity=5, device=torch.device("cpu"))
    other.load_state_dict(buf.state_dict())
    for key in ReplayBuffer.KEYS:
        assert torch.equal(getattr(other, key), getattr(buf, key))
    assert (other.size, other.ptr) == (5, 2)
    small = ReplayBuffer(2, 1, capacity=3, device=torch.device("cpu"))
    with pytest.raises(DiffrlError, match="holds 5 transitions, more than buffer_size 3"):
        small.load_state_dict(buf.state_dict())


def _buffer(run: Path) -> tuple[int, dict]:
    ckpt, _, trainer, problems = load_newest_intact(run, torch.device("cpu"))
    assert not problems
    return int(trainer["step"]), trainer["source"]


def test_online_run_killed_resumes_with_its_buffer(tmp_path):
    """`diffrl train example-bc --env Pendulum-v1`, SIGKILLed after its first checkpoint,
    resumes with the replay buffer exactly as saved and goes on filling it."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # conftest registers the example algorithm
    code = "import sys, conftest; from diffrl.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["train", "example-bc", "--env", "Pendulum-v1", "--run-dir", str(run)]
    argv += ["--steps", "1000000", "--no-progress", "--set", "warmup_steps=64"]
    argv += ["--set", "save_every=40", "--set", "eval_every=0", "--set", "batch_size=16"]
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "latest").exists():
            assert proc.poll() is None, "the run stopped before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    step, saved = _buffer(run)
    assert step % 40 == 0 and step >= 40
    buf = saved["buffer"]
    # warm-up, then one environment step per update
    assert buf["size"] == saved["env_steps"] == 64 + step
    assert buf["obs"].shape == (64 + step, 3)

    assert main(["train", "--resume", str(run), "--steps", str(step + 10), "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["dataset"], config["env_id"]) == ("", "Pendulum-v1")
    new_step, resumed = _buffer(run)
    assert new_step == step + 10
    after = resumed["buffer"]
    assert after["size"] == buf["size"] + 10 and resumed["env_steps"] == saved["env_steps"] + 10
    for key in ReplayBuffer.KEYS:  # the saved rows are intact, the new ones follow
        assert torch.equal(after[key][: buf["size"]], buf[key]), key
    # the episode cut by the kill restarted: the first new row is a fresh reset's state
    first_new = after["obs"][buf["size"]]
    assert not torch.equal(first_new, buf["next_obs"][-1])


def test_online_run_needs_an_environment(tmp_path, capsys):
    assert main(["train", "example-bc", "--run-dir", str(tmp_path / "r")]) == 2
    assert "diffrl train ALGO --env ENV_ID (online)" in capsys.readouterr().err
    assert main(["train", "example-bc", "--env", "toy-bandit", "--run-dir", str(tmp_path)]) == 2
    assert "'toy-bandit' is not a Gymnasium environment" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()
