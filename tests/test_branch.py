"""`diffrl branch`: a new run from another run's checkpoint, with changed settings after it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from diffrl.checkpoint import TRAINER_JSON
from diffrl.cli import main
from diffrl.datasets import make_builtin
from diffrl.run import branch_run, load_agent, make_config, start_run
from diffrl.train import train

SMALL = {"hidden": 32, "diffusion_steps": 5, "batch_size": 32, "log_every": 5}
EVERY_10 = {"save_every": 10, "eval_every": 10, "eval_episodes": 1, "keep_checkpoints": 10}


def _files(run: Path) -> dict[str, str]:
    """Every file under `run` with its SHA-256: what must not change in a branch's source."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def _steps(path: Path) -> list[int]:
    return [json.loads(x)["step"] for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture
def source(tmp_path) -> Path:
    """diffusion-bc on a small toy bandit, 40 steps, checkpoints and evaluations every 10."""
    make_builtin("toy-bandit", size=400, seed=0)
    over = {**SMALL, **EVERY_10, "steps": 40}
    run, ds = start_run(make_config("diffusion-bc", "toy-bandit", over), tmp_path / "src")
    train(run, dataset=ds, progress=False)
    return run


def test_a_branch_without_changes_trains_on_to_the_same_weights(source, tmp_path):
    before = _files(source)
    dst = tmp_path / "dst"
    assert branch_run(source, dst, "20") == 20
    assert _files(source) == before  # the source is not touched

    assert (dst / "checkpoints" / "latest").read_text().strip() == "step_00000020"
    assert max(_steps(dst / "metrics.jsonl")) == 20
    evaluated = [e["step"] for e in json.loads((dst / "selection.json").read_text())["evaluations"]]
    assert evaluated == [10, 20]
    info = json.loads((dst / "run.json").read_text())
    assert info["branched_from"] == {"run": str(source), "step": 20, "set": {}}
    assert not list(tmp_path.glob(".*.tmp"))

    train(dst, resume=True, progress=False)
    a, *_ = load_agent(source)
    b, _, _, step = load_agent(dst)
    assert step == 40
    for key, value in a.state_dict().items():  # the same 20 steps after the copied checkpoint
        assert torch.equal(value, b.state_dict()[key]), key
    assert _steps(dst / "metrics.jsonl") == _steps(source / "metrics.jsonl")
    best = json.loads((dst / "selection.json").read_text())["choices"]["best"]["step"]
    assert best in (10, 20, 30, 40)


def test_a_branch_changes_what_comes_after_its_checkpoint(source, tmp_path, capsys):
    dst = tmp_path / "dst"
    argv = ["branch", str(source), str(dst), "--checkpoint", "20", "--set", "lr=1e-2"]
    assert main([*argv, "--set", "steps=50"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(dst)
    assert f"{dst}: from {source} at step 20 (lr=1e-2, steps=50)" in err
    assert f"continue it with: diffrl train --resume {dst}" in err
    config = json.loads((dst / "config.json").read_text())
    assert (config["lr"], config["steps"]) == (1e-2, 50)

    assert main(["train", "--resume", str(dst), "--no-progress"]) == 0
    a, *_ = load_agent(source)
    b, _, _, step = load_agent(dst)
    assert step == 50
    assert any(not torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_what_a_branch_refuses(source, tmp_path, capsys):
    dst = tmp_path / "dst"
    base = ["branch", str(source), str(dst)]
    assert _error(capsys, [*base, "--set", "algo=qgpo"]) == (
        "error: a branch keeps the run's algo ('diffusion-bc'); start a new run for another one"
    )
    msg = _error(capsys, [*base, "--checkpoint", "20", "--set", "hidden=64"])
    assert msg.startswith("error: --set hidden: the networks no longer fit ")
    assert msg.endswith("a branch can change how training goes on, not the model")
    assert _error(capsys, [*base, "--checkpoint", "20", "--set", "steps=20"]) == (
        "error: the branch starts at step 20 and its config has steps=20: give it more "
        "(--set steps=N)"
    )
    assert _error(capsys, [*base, "--checkpoint", "20", "--set", "nonsense=1"]).startswith(
        "error: unknown config key 'nonsense'"
    )
    assert _error(capsys, [*base, "--checkpoint", "7"]) == (
        f"error: {source}: no checkpoint step_00000007 (steps with a checkpoint: 10, 20, 30, 40)"
    )
    assert _error(capsys, ["branch", str(tmp_path / "nowhere"), str(dst)]) == (
        f"error: {tmp_path / 'nowhere'}: not a diffrl run directory (no config.json)"
    )
    assert not dst.exists()  # nothing written by a refused branch

    (source / "checkpoints" / "step_00000030" / TRAINER_JSON).unlink()
    assert _error(capsys, [*base, "--checkpoint", "30"]) == (
        f"error: {source / 'checkpoints' / 'step_00000030'}: holds weights only (no trainer "
        "state), so training cannot go on from it; branch from a checkpoint saved while the run "
        "trained"
    )
    dst.mkdir()
    (dst / "notes.txt").write_text("mine\n")
    assert _error(capsys, [*base, "--checkpoint", "20"]) == (
        f"error: {dst}: already exists and is not empty; choose another directory"
    )
    assert (dst / "notes.txt").read_text() == "mine\n"


def test_a_qgpo_branch_keeps_the_support_table(tmp_path):
    """Branching after QGPO's behaviour stage with another critic setting: the support table
    (made from the behaviour weights only) is shared, not made again."""
    make_builtin("toy-bandit", size=400, seed=0)
    over = {
        "steps": 30,
        "behavior_steps": 15,
        "behavior_batch_size": 32,
        "batch_size": 32,
        "hidden": 32,
        "support_actions": 4,
        "support_steps": 3,
        "sampling_steps": 3,
        "compile": False,
        "save_every": 10,
        "eval_every": 0,
        "log_every": 10,
        "keep_checkpoints": 10,
    }
    src, ds = start_run(make_config("qgpo", "toy-bandit", over), tmp_path / "src")
    train(src, dataset=ds, progress=False)
    table = src / "support.safetensors"
    assert table.exists()

    dst = tmp_path / "dst"
    branch_run(src, dst, "20", {"critic_lr": "1e-3"})
    train(dst, resume=True, progress=False)
    # A table made again would be a new file (written by rename); this one is src's, linked.
    assert (dst / "support.safetensors").stat().st_ino == table.stat().st_ino
    _, config, _, step = load_agent(dst)
    assert (step, config.critic_lr) == (30, 1e-3)


def test_weights_that_do_not_fit_the_settings_are_one_line(source, capsys):
    """The same check guards `diffrl eval --set` (a shape mismatch was a torch traceback)."""
    msg = _error(capsys, ["eval", str(source), "--set", "hidden=64", "--episodes", "1"])
    assert msg.startswith(
        f"error: {source / 'checkpoints' / 'step_00000040'}: weights do not match the config "
        "(shapes ['actor.denoiser.body.0.weight (32, 8) vs (64, 8)', "
    )
