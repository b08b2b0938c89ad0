"""Behaviour-policy training (SAC via stable-baselines3) on a cheap env: snapshots, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from diffrl.behavior import (  # noqa: E402
    BehaviorConfig,
    BehaviorTrainer,
    fork_run,
    import_run,
    read_evals,
    read_state,
    read_transitions,
)
from diffrl.cli import main  # noqa: E402
from diffrl.errors import DiffrlError  # noqa: E402

SMALL = {"snapshot_every": 200, "eval_episodes": 1, "learning_starts": 300, "buffer_size": 5000}


def test_snapshots_transitions_and_resume(tmp_path, monkeypatch):
    import tempfile

    # SB3's default logger would leave an empty SB3-<date> folder in the temp dir per learn().
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    run = tmp_path / "sac"
    state = BehaviorTrainer(run, BehaviorConfig("Pendulum-v1", steps=400, **SMALL)).train(False)
    assert [s["step"] for s in state["snapshots"]] == [200, 400]  # Pendulum episodes: 200
    assert list((tmp_path / "tmp").glob("SB3-*")) == []

    # an orphan left by a kill between writes is cleaned up on resume
    (run / "step_0000999.zip").write_bytes(b"half")
    trainer = BehaviorTrainer(run, BehaviorConfig("Pendulum-v1", steps=600))
    state = trainer.train(progress=False)
    assert state["steps_done"] == 600 and state["resumes"] == 1
    assert not (run / "step_0000999.zip").exists()
    assert sorted(p.name for p in run.glob("step_*.zip")) == [
        "step_0000200.zip",
        "step_0000400.zip",
        "step_0000600.zip",
    ]
    assert [int(r["step"]) for r in read_evals(run)] == [200, 400, 600]

    data = read_transitions(run)
    assert len(data["rewards"]) == 600
    assert data["timeouts"].sum() == 3 and not data["terminals"].any()
    ends = np.flatnonzero(data["timeouts"])
    assert list(ends) == [199, 399, 599]  # whole episodes only
    inside = np.setdiff1d(np.arange(599), ends)
    np.testing.assert_array_equal(
        data["next_observations"][inside], data["observations"][inside + 1]
    )
    assert np.abs(data["actions"]).max() <= 2.0  # Pendulum's bounds, env units

    import stable_baselines3 as sb3

    model = sb3.SAC.load(run / "step_0000600.zip", device="cpu")
    action, _ = model.predict(data["observations"][0], deterministic=True)
    assert action.shape == (1,)


def test_replay_buffer_is_refilled_on_resume(tmp_path):
    run = tmp_path / "sac"
    BehaviorTrainer(run, BehaviorConfig("Pendulum-v1", steps=400, **SMALL)).train(False)
    import stable_baselines3 as sb3

    from diffrl.envs import make_env

    trainer = BehaviorTrainer(run)
    model = trainer._make_model(sb3, make_env("Pendulum-v1"))
    data = read_transitions(run)
    buf = model.replay_buffer
    assert buf.pos == 400
    np.testing.assert_array_equal(buf.observations[:400, 0], data["observations"])
    np.testing.assert_allclose(buf.actions[:400, 0], data["actions"] / 2.0, rtol=1e-6)


def test_import_and_cli(tmp_path, capsys):
    src = tmp_path / "Pendulum-v1"
    BehaviorTrainer(src, BehaviorConfig("Pendulum-v1", steps=400, **SMALL)).train(False)
    data = read_transitions(src)
    np.savez(src / "transitions.npz", **data)  # the shared/behavior layout
    for p in src.glob("step_*.zip"):
        p.rename(src / p.name)
    run = tmp_path / "continued"
    import_run(src, run, up_to=300)
    state = read_state(run)
    assert state["steps_done"] == 200 and state["config"]["env_id"] == "Pendulum-v1"
    assert len(read_transitions(run)["rewards"]) == 200

    args = ["behavior", "train", "Pendulum-v1", "--run-dir", str(run), "--steps", "400"]
    assert main([*args, "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 400
    assert main(["behavior", "info", str(run), "--json"]) == 0
    assert [r["step"] for r in json.loads(capsys.readouterr().out)["snapshots"]] == [200, 400]

    with pytest.raises(DiffrlError, match="holds a run on Pendulum-v1, not Hopper-v5"):
        BehaviorTrainer(run, BehaviorConfig("Hopper-v5"))
    assert main(["behavior", "info", str(tmp_path)]) == 2
    assert "not a behaviour run (no state.json)" in capsys.readouterr().err


def test_imported_prefix_is_recreated_when_missing(tmp_path):
    src = tmp_path / "Pendulum-v1"
    BehaviorTrainer(src, BehaviorConfig("Pendulum-v1", steps=400, **SMALL)).train(False)
    np.savez(src / "transitions.npz", **read_transitions(src))
    run = tmp_path / "continued"
    import_run(src, run)
    before = read_transitions(run)
    first = run / "transitions" / read_state(run)["chunks"][0]["file"]
    first.unlink()  # the run dir travelled without the prefix copied from `src`
    BehaviorTrainer(run, BehaviorConfig("Pendulum-v1", steps=600)).train(progress=False)
    after = read_transitions(run)
    assert len(after["rewards"]) == 600
    for key, value in before.items():
        np.testing.assert_array_equal(after[key][:400], value)


def test_run_dir_without_its_recordings_resumes_from_the_snapshot(tmp_path):
    run = tmp_path / "sac"
    BehaviorTrainer(run, BehaviorConfig("Pendulum-v1", steps=400, **SMALL)).train(False)
    for chunk in (run / "transitions").glob("chunk_0000200_*"):
        chunk.unlink()
    state = BehaviorTrainer(run, BehaviorConfig("Pendulum-v1", steps=600)).train(False)
    assert state["steps_done"] == 600
    assert [c["start"] for c in state["dropped_chunks"]] == [200]
    assert len(read_transitions(run)["rewards"]) == 400  # 0-200 and 400-600


def test_fork_continues_a_snapshot_with_a_new_learning_rate(tmp_path, capsys):
    src = tmp_path / "sac"
    BehaviorTrainer(src, BehaviorConfig("Pendulum-v1", steps=400, **SMALL)).train(False)
    with pytest.raises(DiffrlError, match=r"sac: no snapshot at step 300 \(snapshots: 200, 400\)"):
        fork_run(src, tmp_path / "bad", 300)

    run = tmp_path / "fork"
    args = ["behavior", "fork", str(src), str(run), "--step", "200"]
    assert main(args) == 0 and capsys.readouterr().out.strip() == str(run)
    state = read_state(run)
    assert state["steps_done"] == 200 and state["config"]["seed"] == 1
    assert state["forked_from"] == {"run": str(src), "step": 200}
    np.testing.assert_array_equal(
        read_transitions(run)["actions"], read_transitions(src)["actions"][:200]
    )
    assert [r["step"] for r in read_evals(run)] == [200]
    assert main(args) == 2 and "already holds a behaviour run" in capsys.readouterr().err

    # Resuming with a new learning rate: SB3's optimisers run at it and the change is recorded.
    import stable_baselines3 as sb3
    from stable_baselines3.common.logger import Logger

    from diffrl.envs import make_env

    trainer = BehaviorTrainer(run, BehaviorConfig("Pendulum-v1", steps=400, learning_rate=1e-4))
    model = trainer._make_model(sb3, make_env("Pendulum-v1"))
    model.set_logger(Logger(None, []))
    model._update_learning_rate([model.actor.optimizer, model.critic.optimizer])
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    train = ["behavior", "train", "Pendulum-v1", "--run-dir", str(run), "--steps", "400"]
    assert main([*train, "--learning-rate", "1e-4", "--no-progress"]) == 0
    state = read_state(run)
    assert state["steps_done"] == 400 and state["config"]["learning_rate"] == 1e-4
    assert state["config"]["snapshot_every"] == SMALL["snapshot_every"]  # kept, not reset
    assert state["learning_rate_changes"] == [{"step": 200, "learning_rate": 1e-4}]


def test_bad_learning_rate_is_a_one_line_error(tmp_path, capsys):
    args = ["behavior", "train", "Pendulum-v1", "--run-dir", str(tmp_path / "r")]
    assert main([*args, "--learning-rate", "0"]) == 2
    assert "--learning-rate must be > 0, got 0.0" in capsys.readouterr().err
    assert main([*args, "--snapshot-every", "-5"]) == 2
    assert "--snapshot-every must be > 0, got -5" in capsys.readouterr().err


def test_snapshot_is_loaded_without_unpickling(tmp_path):
    """A zip whose pickled entries would run code loads as SB3.load would, and runs nothing."""
    import base64
    import pickle
    import zipfile

    import stable_baselines3 as sb3
    import torch

    from diffrl.behavior import load_sac
    from diffrl.envs import make_env

    env = make_env("Pendulum-v1")
    model = sb3.SAC("MlpPolicy", env, learning_starts=50, buffer_size=500, seed=0, device="cpu")
    model.learn(120)
    path = tmp_path / "snap.zip"
    model.save(path)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(files["data"])
    evil = base64.b64encode(pickle.dumps(Payload())).decode()
    for key in ("observation_space", "lr_schedule"):
        data[key] = {":type:": "x", ":serialized:": evil}
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in files.items():
            zf.writestr(name, raw)

    loaded = load_sac(sb3, path, env, 3e-4, learning_starts=50, buffer_size=500)
    assert not marker.exists()
    assert loaded.num_timesteps == model.num_timesteps == 120
    a, b = loaded.policy.state_dict(), model.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert torch.equal(loaded.log_ent_coef, model.log_ent_coef)
    opt_a, opt_b = loaded.critic.optimizer.state_dict(), model.critic.optimizer.state_dict()
    assert all(
        torch.equal(opt_a["state"][k]["exp_avg"], opt_b["state"][k]["exp_avg"])
        for k in opt_b["state"]
    )

    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DiffrlError, match="bad.zip: not a stable-baselines3 snapshot"):
        load_sac(sb3, tmp_path / "bad.zip", env, 3e-4)


def test_behaviour_run_looks_like_every_run(tmp_path, capsys):
    """config.json and metrics.jsonl as in diffrl runs, and `--resume DIR` like `diffrl train`."""
    run = tmp_path / "sac"
    BehaviorTrainer(run, BehaviorConfig("Pendulum-v1", steps=200, **SMALL)).train(False)
    config = json.loads((run / "config.json").read_text())
    assert (config["algo"], config["env_id"], config["steps"]) == (
        "sac-behavior",
        "Pendulum-v1",
        200,
    )
    assert main(["behavior", "train", "--resume", str(run), "--steps", "400", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 400
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [200, 400]
    assert all(isinstance(r["eval/return_mean"], float) for r in rows)
    assert main(["behavior", "train", "--resume", str(tmp_path / "none")]) == 2
    assert "no behaviour run here to resume" in capsys.readouterr().err
