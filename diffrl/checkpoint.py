"""Checkpoints and other run-directory files, all written atomically.

A checkpoint is a directory ``checkpoints/step_0001000/`` holding
- ``model.safetensors``: every tensor of the agent's state_dict (weights, EMA copies, normalisers);
- ``trainer.pt``: optimiser and scheduler state, the step, RNG states, and algorithm counters.
It is written into a temporary directory and renamed into place, then ``checkpoints/latest`` (a
one-line text file naming it) is replaced atomically. A run killed at any moment therefore has
a complete checkpoint named by ``latest`` (or none yet), never a half-written one.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from diffrl.errors import DiffrlError
from diffrl.fileio import atomic_write_text, fsync_dir, fsync_file

MODEL_FILE = "model.safetensors"
# latest: the last saved; best: highest evaluation; selected: the algorithm's offline rule.
POINTERS = ("latest", "best", "selected")
TRAINER_FILE = "trainer.pt"


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    agent: torch.nn.Module,
    trainer_state: dict[str, Any],
    keep: int = 2,
    protect: tuple[str, ...] = (),
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, prune old ones; return its dir."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=ckpt_root))
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in agent.state_dict().items()}
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"step": str(step)})
        torch.save({"step": step, **trainer_state}, tmp / TRAINER_FILE)
        for name in (MODEL_FILE, TRAINER_FILE):
            fsync_file(tmp / name)
        if final.exists():  # re-saving a step (e.g. after a resume): move the old one aside first
            old = ckpt_root / f".old.{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(ckpt_root)
    atomic_write_text(ckpt_root / "latest", final.name + "\n")
    _prune(ckpt_root, keep, protect=(final.name, *protect))
    return final


def _prune(ckpt_root: Path, keep: int, protect: tuple[str, ...]) -> None:
    steps = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - max(keep, 1))]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)


def clean_partial(run_dir: str | Path) -> None:
    """Remove temporary checkpoint directories left by a run killed while saving."""
    for tmp in (Path(run_dir) / "checkpoints").glob(".step_*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in (Path(run_dir) / "checkpoints").glob(".old.*"):
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_checkpoint(run_dir: str | Path, which: str = "latest") -> Path | None:
    """The checkpoint dir for `which`: a pointer name (see POINTERS), 'step_…' or a step number."""
    ckpt_root = Path(run_dir) / "checkpoints"
    if which in POINTERS:
        pointer = ckpt_root / which
        if not pointer.exists():
            return None
        target = ckpt_root / pointer.read_text().strip()
    elif which.isdigit():
        target = ckpt_root / checkpoint_name(int(which))
    else:
        target = ckpt_root / which
    if not (target / MODEL_FILE).exists():
        raise DiffrlError(f"{target}: checkpoint is missing {MODEL_FILE}")
    return target


def load_checkpoint(path: Path, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state_dict on `device`, trainer state) from a checkpoint directory."""
    try:
        tensors = load_file(str(path / MODEL_FILE), device=str(device))
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise DiffrlError(f"{path / MODEL_FILE}: cannot read checkpoint ({exc})") from None
    trainer: dict = {}
    if (path / TRAINER_FILE).exists():
        trainer = torch.load(path / TRAINER_FILE, map_location="cpu", weights_only=False)
    return tensors, trainer
