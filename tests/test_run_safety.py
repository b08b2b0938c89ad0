"""Nothing lost, nothing run from a file: trainer state without pickle, damaged checkpoints,
validation before anything is written, resume checks, Ctrl-C, and the messages around them."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffrl.checkpoint import (
    LEGACY_TRAINER_FILE,
    MANIFEST,
    MODEL_FILE,
    TRAINER_JSON,
    TRAINER_TENSORS,
    CheckpointError,
    load_state_tree,
    rng_state,
    save_state_tree,
)
from diffrl.cli import main
from diffrl.data import OfflineDataset, write_d4rl_hdf5

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "eval_every=20", "--set", "save_every=10", "--set", "log_every=10"]


def train_small(run_dir: Path, steps: int = 40, algo: str = "diffusion-bc", *extra: str) -> None:
    argv = ["train", algo, "--dataset", "toy-bandit", "--steps", str(steps)]
    assert main([*argv, "--run-dir", str(run_dir), "--no-progress", *SMALL, *extra]) == 0


def ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}"


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / MODEL_FILE))


def to_legacy(path: Path) -> None:
    """Rewrite a checkpoint as diffrl wrote it before this format: trainer.pt (torch.save)."""
    state = load_state_tree(path)
    for name in (TRAINER_JSON, TRAINER_TENSORS, MANIFEST):
        (path / name).unlink()
    torch.save(state, path / LEGACY_TRAINER_FILE)


class Payload:
    """A pickle that creates a file when unpickled (what a hostile run directory would hold)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# ------------------------------------------------------------- 1. no pickle
def test_state_tree_round_trip_is_exact(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    np.random.seed(5)
    random.seed(5)
    state = {
        "step": 7,
        "agent": {"opt": opt.state_dict(), "n": 3, "none": None, "x": 0.1, "flag": True},
        "rng": rng_state(torch.Generator().manual_seed(1)),
    }
    save_state_tree(tmp_path, state)
    back = load_state_tree(tmp_path)
    assert back["step"] == 7 and back["agent"]["n"] == 3 and back["agent"]["none"] is None
    assert list(back["agent"]["opt"]["state"]) == [0, 1]  # int keys stay ints
    assert back["agent"]["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay
    for k in (0, 1):
        for name, value in state["agent"]["opt"]["state"][k].items():
            assert torch.equal(back["agent"]["opt"]["state"][k][name], value)
    np_state = back["rng"]["numpy"]
    assert np_state[0] == "MT19937" and np_state[1].dtype == np.uint32
    assert np.array_equal(np_state[1], state["rng"]["numpy"][1])
    assert back["rng"]["python"] == state["rng"]["python"]
    assert torch.equal(back["rng"]["generator"], state["rng"]["generator"])
    np.random.set_state(np_state)  # accepted as NumPy's own
    torch.optim.Adam(model.parameters()).load_state_dict(back["agent"]["opt"])


def test_state_tree_refuses_objects_it_cannot_store_without_pickle(tmp_path):
    with pytest.raises(TypeError, match=r"trainer state trainer.x: cannot store a object"):
        save_state_tree(tmp_path, {"x": object()})


def test_checkpoint_holds_no_pickle(tmp_path):
    run = tmp_path / "run"
    train_small(run)
    files = sorted(p.name for p in ckpt(run, 40).iterdir())
    assert files == sorted([MANIFEST, MODEL_FILE, TRAINER_JSON, TRAINER_TENSORS])
    json.loads((ckpt(run, 40) / TRAINER_JSON).read_text())


def test_pickle_payload_in_run_dir_is_never_executed(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run)
    marker = tmp_path / "pwned"
    for step in (20, 30, 40):
        path = ckpt(run, step)
        for name in (TRAINER_JSON, TRAINER_TENSORS, MANIFEST):
            (path / name).unlink()
        torch.save({"step": step, "agent": Payload(marker)}, path / LEGACY_TRAINER_FILE)
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0  # weights are safetensors: eval needs no more
    assert not marker.exists()
    assert main(["train", "--resume", str(run), "--steps", "60", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists()
    assert len(err) == 2 and err[0].startswith("resuming")
    assert err[1].startswith(f"error: {run}: no intact checkpoint; ")
    assert f"{ckpt(run, 40)}/trainer.pt: refused: it holds a pickled 'io.open'" in err[1]
    assert "it was not unpickled" in err[1]


def test_run_made_before_the_change_resumes_exactly(tmp_path):
    """A legacy trainer.pt (plain tensors and the RNG state) is read with weights_only and the
    run continues exactly as from the new format."""
    new, old = tmp_path / "new", tmp_path / "old"
    train_small(new, 20)
    shutil.copytree(new, old)
    to_legacy(ckpt(old, 20))
    for run in (new, old):
        assert main(["train", "--resume", str(run), "--steps", "40", "--no-progress"]) == 0
    a, b = weights(ckpt(new, 40)), weights(ckpt(old, 40))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (ckpt(old, 40) / TRAINER_JSON).exists()  # written in the new format from then on
    assert main(["eval", str(old), "--json"]) == 0


# ------------------------------------------------------------- 2. nothing thrown away
def _no_env_file(path: Path, seed: int = 0) -> Path:
    """A dataset whose metadata names no environment (obs and actions 2-d, like the toy)."""
    rng = np.random.default_rng(seed)
    n = 400
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[49::50] = True
    data = OfflineDataset(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs,
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
    )
    write_d4rl_hdf5(data, path)
    return path


def test_dataset_without_environment_trains_and_keeps_its_model(tmp_path, capsys):
    data, run = _no_env_file(tmp_path / "mine.hdf5"), tmp_path / "run"
    argv = ["train", "diffusion-bc", "--dataset", str(data), "--steps", "30"]
    assert main([*argv, "--run-dir", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "its metadata names no environment, so this run trains without evaluation" in err
    assert (ckpt(run, 30) / MODEL_FILE).exists()
    # Rescued later: the environment is set on resume and the final evaluation runs.
    assert main(["train", "--resume", str(run), "--set", "env_id=toy-bandit"]) == 0
    assert "final evaluation: samples 1000" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["env_id"] == "toy-bandit"


def test_final_checkpoint_is_written_before_the_final_evaluation(tmp_path, monkeypatch):
    import diffrl.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(diffrl.evaluate, "evaluate", broken)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        main(
            ["train", "diffusion-bc", "--dataset", "toy-bandit", "--steps", "30"]
            + ["--run-dir", str(run), "--no-progress", "--set", "eval_every=0"]
        )
    assert (ckpt(run, 30) / MODEL_FILE).exists()


def test_resume_set_takes_only_keys_that_leave_the_model(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run, 20)
    before = (run / "config.json").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "lr=1e-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "error: --resume cannot change 'lr': it changes the model or how it is trained; "
        "start a new run instead (keys a resume may change: clip_x0, ddim_eta, device, env_id, "
    )
    assert err.endswith("sampler, sampling_steps, save_every, steps)")
    assert (run / "config.json").read_text() == before
    argv = ["train", "--resume", str(run), "--steps", "30", "--set", "eval_episodes=3"]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["steps"], config["eval_episodes"], config["device"]) == (30, 3, "cpu")


def test_resume_refuses_an_environment_that_does_not_fit(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run, 20)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "env_id=Hopper-v5"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: environment 'Hopper-v5' has observations of size 11 and actions of size 3; "
        "the data has 2 and 2"
    )
    assert json.loads((run / "config.json").read_text())["env_id"] == "toy-bandit"


def test_resuming_a_finished_run_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run, 20)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert f"{run}: finished (20 of 20 steps); nothing to do" in capsys.readouterr().err


def test_a_run_trained_by_another_process_is_refused_then_free_when_it_dies(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run, 20)
    # Another process holds the run (as a second `diffrl train --resume` would find it).
    code = (
        "import sys, time; from diffrl.fileio import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--steps", "30", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err == (
            f"error: {run}: another process (pid {holder.pid}) is training this run; wait for "
            "it or stop it (Ctrl-C writes a checkpoint) before resuming"
        )
        assert not ckpt(run, 30).exists()
    finally:
        holder.kill()
        holder.wait()
    # The operating system dropped the dead holder's lock: the run resumes at once.
    assert main(["train", "--resume", str(run), "--steps", "30", "--no-progress", *SMALL]) == 0
    assert ckpt(run, 30).exists()


# ------------------------------------------------------------- 4. resume checks data
def test_resume_refuses_changed_data(tmp_path, capsys):
    data, run = _no_env_file(tmp_path / "mine.hdf5"), tmp_path / "run"
    argv = ["train", "diffusion-bc", "--dataset", str(data), "--steps", "20"]
    assert main([*argv, "--run-dir", str(run), "--no-progress"]) == 0
    _no_env_file(data, seed=1)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "30"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {run}: the dataset '{data}' changed since the run started ")
    assert "(then: 400 transitions, 8 episodes, rows " in err


def test_datasets_make_keeps_an_existing_file_unless_forced(capsys):
    assert main(["datasets", "make", "toy-bandit", "--size", "300"]) == 0
    path = Path(capsys.readouterr().out.split()[-1])
    before = path.read_bytes()
    assert main(["datasets", "make", "toy-bandit", "--size", "500"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {path}: exists (300 transitions); pass --force to replace it"
    )
    assert path.read_bytes() == before
    assert main(["datasets", "list", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["name"], row["transitions"], row["default_size"]) == ("toy-bandit", 300, 10_000)
    assert main(["datasets", "make", "toy-bandit", "--size", "500", "--force"]) == 0
    capsys.readouterr()
    assert main(["datasets", "list"]) == 0
    assert "made        500" in capsys.readouterr().out


# ------------------------------------------------------------- 5. damaged checkpoints
def test_truncated_checkpoint_is_one_line_and_resume_falls_back(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run, 40)
    model = ckpt(run, 40) / MODEL_FILE
    with open(model, "r+b") as fh:
        fh.truncate(model.stat().st_size // 2)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"error: {model}: truncated or damaged (")
    assert err.endswith("other checkpoints: steps 20, 30 (--checkpoint STEP)")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"skipping checkpoint: {model}: truncated or damaged" in err
    assert "resuming from the newest intact checkpoint, step_00000030" in err
    assert main(["eval", str(run), "--json"]) == 0  # step 40 written again, whole


def test_damaged_trainer_state_is_one_line(tmp_path):
    run = tmp_path / "run"
    train_small(run, 20)
    (ckpt(run, 20) / TRAINER_JSON).write_text("{not json")
    from diffrl.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="trainer.json: truncated or damaged"):
        load_checkpoint(ckpt(run, 20), torch.device("cpu"))
    (ckpt(run, 20) / MANIFEST).unlink()  # without a manifest the reader itself refuses
    with pytest.raises(CheckpointError, match="trainer.json: cannot read trainer state"):
        load_checkpoint(ckpt(run, 20), torch.device("cpu"))


# ------------------------------------------------------------- 6. validation first
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "lr=-1"], "error: config key 'lr' must be >= 0, got -1.0"),
        (["--set", "sampler=euler"], "error: config key 'sampler' must be one of ddpm | ddim"),
        (["--device", "mps"], "error: device 'mps' requested but Apple's MPS is not available"),
        (["--device", "tpu"], "error: config key 'device': unknown device 'tpu'"),
        (["--set", "env_id=Hoper-v5"], "error: unknown environment 'Hoper-v5': "),
        (["--steps", "0"], "error: config key 'steps' must be >= 1, got 0"),
    ],
)
def test_bad_values_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    run = tmp_path / "run"
    argv = ["train", "diffusion-bc", "--dataset", "toy-bandit", "--run-dir", str(run)]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(message)
    assert not run.exists()


def test_eval_refuses_zero_episodes_and_keeps_eval_json(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run, 20)
    assert main(["eval", str(run), "--json"]) == 0
    before = (run / "eval.json").read_text()
    capsys.readouterr()
    for n in ("0", "-3"):
        assert main(["eval", str(run), "--episodes", n, "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.strip() == f"error: --episodes must be >= 1, got {n}"
    assert (run / "eval.json").read_text() == before


def test_run_dir_that_failed_at_start_up_is_reused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # what a run killed before its first checkpoint left
    (run / "metrics.jsonl").write_text('{"step": 5}\n')
    train_small(run, 20)
    assert "holds a run that never saved a checkpoint; starting it afresh" in (
        capsys.readouterr().err
    )
    assert ckpt(run, 20).exists()
    assert main(["train", "diffusion-bc", "--dataset", "toy-bandit", "--run-dir", str(run)]) == 2
    assert "already holds a run; continue it with `diffrl train --resume" in (
        capsys.readouterr().err
    )


# ------------------------------------------------------------- 7. Ctrl-C
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_checkpoint_and_says_how_to_resume(tmp_path, sig):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIFFRL_FAST_MISH": "0"}
    argv = ["train", "diffusion-bc", "--dataset", "toy-bandit", "--steps", "1000000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffrl.cli", *argv, "--run-dir", str(run), "--no-progress"]
        + ["--set", "log_every=10", "--set", "save_every=1000000", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not (
        (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2
    ):
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    step = int((run / "checkpoints" / "latest").read_text().strip()[5:])
    assert step >= 20
    assert f"interrupted at step {step:,}: checkpoint written; continue with " in err
    assert f"`diffrl train --resume {run}`" in err
    assert out.strip() == str(run)
    assert main(["train", "--resume", str(run), "--steps", str(step + 10), "--no-progress"]) == 0
    assert (run / "checkpoints" / f"step_{step + 10:08d}").exists()


# ------------------------------------------------------------- 3. threads
def test_threads_flag(capsys):
    argv = ["bench", "train", "--algo", "diffusion-bc", "--seconds", "0.5", "--json"]
    assert main([*argv, "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    # (the default spin and adapting threads: tests/test_runtime.py)
    assert out["threads"] == 1 and out["thread_policy"] == "pinned"
    assert main([*argv, "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --threads must be >= 1, got 0"


# ------------------------------------------------------------- 8. messages
def test_version_and_help_defaults(capsys):
    import diffrl

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"diffrl {diffrl.__version__}"
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "(default: Diffusion-QL's," in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "(default: latest)" in " ".join(capsys.readouterr().out.split())


def test_checkpoint_choice_messages(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run, 20)
    capsys.readouterr()
    assert main(["eval", str(run), "--checkpoint", "selected"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: diffusion-bc has no offline selection rule, so no checkpoint is 'selected'; "
        "use --checkpoint latest, best or a step"
    )
    assert main(["eval", str(run), "--checkpoint", "15"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {run}: no checkpoint step_00000015 (steps with a checkpoint: 10, 20)"
    )


def test_eval_prints_scores_to_a_readable_precision(tmp_path, capsys):
    run = tmp_path / "run"
    train_small(run, 20)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "reward_mean" in x)
    value = line.split(":")[1].strip()
    assert len(value.replace(".", "").replace("-", "").lstrip("0")) <= 4, line


def test_curves_group_sweeps_and_parts_into_panels():
    from diffrl.plotting import _panel_of

    assert _panel_of("eval/by_guidance_scale/3/return_mean") == (
        "eval/return_mean by guidance_scale",
        "3",
    )
    assert _panel_of("eval/by_guidance_scale/3/mode_fractions/left_up") == (
        "eval/mode_fractions/left_up by guidance_scale",
        "3",
    )
    assert _panel_of("eval/mode_fractions/left_up") == ("eval/mode_fractions", "left_up")
    assert _panel_of("loss") == ("loss", None)
