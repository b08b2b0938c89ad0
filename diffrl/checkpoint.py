"""Checkpoints and other run-directory files, all written atomically, read without pickle.

A checkpoint is a directory ``checkpoints/step_0001000/`` holding
- ``model.safetensors``: every tensor of the agent's state_dict (weights, EMA copies, normalisers);
- ``trainer.safetensors`` + ``trainer.json``: the trainer state (optimiser and scheduler state,
  the step, RNG states, algorithm counters): its tensors and arrays in safetensors, the rest as
  JSON, so loading a run directory someone else made runs no code from it (no pickle);
- ``manifest.json``: size and SHA-256 of each of those files, so a truncated or damaged file is
  found before it is used.
It is written into a temporary directory and renamed into place, then ``checkpoints/latest`` (a
one-line text file naming it) is replaced atomically. A run killed at any moment therefore has
a complete checkpoint named by ``latest`` (or none yet), never a half-written one.

Checkpoints written before this format hold ``trainer.pt`` (torch.save). They are read with
``torch.load(weights_only=True)``, allow-listing only the NumPy types of the RNG state; anything
else in such a file is refused with one line, never unpickled. The next save writes the new
format.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffrl.errors import DiffrlError
from diffrl.fileio import atomic_write_text, fsync_dir, fsync_file

MODEL_FILE = "model.safetensors"
# latest: the last saved; best: highest evaluation; selected: the algorithm's offline rule.
POINTERS = ("latest", "best", "selected")
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
MANIFEST = "manifest.json"
LEGACY_TRAINER_FILE = "trainer.pt"  # before 0.2: torch.save (pickle); read with weights_only


class CheckpointError(DiffrlError):
    """A checkpoint file is missing, truncated, damaged or not ours."""


# ----------------------------------------------------------------------------- state trees
# A trainer state is a tree of dicts, lists and tuples with tensors, NumPy arrays and plain
# scalars at the leaves. Containers become tagged JSON objects ({"dict": [[key, value], ...]},
# {"list": [...]}, {"tuple": [...]}) so that int dict keys (optimiser state) and tuples (NumPy's
# RNG state) come back exactly; arrays go to safetensors under a numbered key.


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"tensor": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        # Raw bytes keep every dtype (uint32 RNG keys included) exact.
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).view(np.uint8).reshape(-1).copy())
        return {"ndarray": key, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, dict):
        return {
            "dict": [
                [_encode(k, tensors, where), _encode(v, tensors, f"{where}.{k}")]
                for k, v in obj.items()
            ]
        }
    if isinstance(obj, (list, tuple)):
        tag = "list" if isinstance(obj, list) else "tuple"
        return {tag: [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    raise TypeError(f"trainer state {where}: cannot store a {type(obj).__name__} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(obj, dict):
        return obj
    if "tensor" in obj:
        return tensors[obj["tensor"]]
    if "ndarray" in obj:
        raw = tensors[obj["ndarray"]].numpy()
        return raw.view(np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if "dict" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["dict"]}
    if "list" in obj:
        return [_decode(v, tensors) for v in obj["list"]]
    if "tuple" in obj:
        return tuple(_decode(v, tensors) for v in obj["tuple"])
    raise ValueError(f"unknown node {sorted(obj)[:3]}")


def save_state_tree(directory: Path, state: dict[str, Any]) -> None:
    """Write `state` as trainer.safetensors + trainer.json in `directory` (no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "trainer")
    save_file(tensors, str(directory / TRAINER_TENSORS))
    (directory / TRAINER_JSON).write_text(json.dumps({"format": 1, "state": tree}))


def load_state_tree(directory: Path) -> dict[str, Any]:
    """The state written by `save_state_tree` (a CheckpointError names an unreadable file)."""
    path = directory / TRAINER_JSON
    try:
        doc = json.loads(path.read_text())
        tree = doc["state"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot read trainer state ({_short(exc)})") from None
    try:
        tensors = load_file(str(directory / TRAINER_TENSORS), device="cpu")
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise CheckpointError(
            f"{directory / TRAINER_TENSORS}: cannot read trainer state ({_short(exc)})"
        ) from None
    try:
        return _decode(tree, tensors)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed trainer state ({_short(exc)})") from None


def _legacy_safe_globals() -> list[Any]:
    """The only non-torch types a pre-0.2 trainer.pt holds: NumPy's RNG state (an ndarray)."""
    import numpy.dtypes as npd

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [_reconstruct, np.ndarray, np.dtype, npd.UInt32DType]


def load_legacy_trainer(path: Path) -> dict[str, Any]:
    """A pre-0.2 trainer.pt read with weights_only=True: plain types and tensors only."""
    try:
        with torch.serialization.safe_globals(_legacy_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:  # a pickled object the allow-list does not name: refused, never unpickled
            raise CheckpointError(
                f"{path}: refused: it holds a pickled '{found.group(1)}', not only tensors and "
                "numbers; it was not unpickled"
            ) from None
        raise CheckpointError(f"{path}: cannot read trainer state ({_short(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: refused: not a trainer state (a {type(state).__name__})")
    return state


def _short(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line (torch's unpickling errors run to many lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        save_state_tree(tmp, {"step": step, **trainer_state})
        files = (MODEL_FILE, TRAINER_TENSORS, TRAINER_JSON)
        manifest = {
            "step": step,
            "files": {
                n: {"bytes": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in files
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for name in (*files, MANIFEST):
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


def list_checkpoints(run_dir: str | Path) -> list[int]:
    """The steps that have a checkpoint directory, ascending."""
    out = []
    for p in (Path(run_dir) / "checkpoints").glob("step_*"):
        if p.is_dir() and p.name[5:].isdigit():
            out.append(int(p.name[5:]))
    return sorted(out)


def _steps_text(run_dir: str | Path) -> str:
    steps = list_checkpoints(run_dir)
    return ", ".join(str(s) for s in steps) if steps else "none"


def resolve_checkpoint(run_dir: str | Path, which: str = "latest") -> Path | None:
    """The checkpoint dir for `which`: a pointer name (see POINTERS), 'step_…' or a step number.

    None when the pointer does not exist yet (no checkpoint saved); a CheckpointError naming
    the steps there are when a step is asked for that has none.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    if which in POINTERS:
        pointer = ckpt_root / which
        if not pointer.exists():
            return None
        target = ckpt_root / pointer.read_text().strip()
    elif which.isdigit():
        target = ckpt_root / checkpoint_name(int(which))
    elif which.startswith("step_"):
        target = ckpt_root / which
    else:
        raise CheckpointError(
            f"--checkpoint '{which}': use latest, best, selected or a step "
            f"(steps with a checkpoint: {_steps_text(run_dir)})"
        )
    if not target.is_dir():
        raise CheckpointError(
            f"{run_dir}: no checkpoint {target.name} "
            f"(steps with a checkpoint: {_steps_text(run_dir)})"
        )
    if not (target / MODEL_FILE).exists():
        raise CheckpointError(f"{target}: checkpoint is missing {MODEL_FILE}")
    return target


def verify_checkpoint(path: Path, names: tuple[str, ...] | None = None) -> None:
    """Check the files (all, or `names`) against the manifest (sizes and SHA-256);
    a CheckpointError naming the first file that is not whole."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        return  # written before manifests: the readers below still check what they can
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path}: damaged ({_short(exc)})") from None
    for name, want in files.items():
        if names is not None and name not in names:
            continue
        f = path / name
        if not f.exists():
            raise CheckpointError(f"{f}: missing")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(
                f"{f}: truncated or damaged ({size} bytes, {want['bytes']} written)"
            )
        if _sha256(f) != want["sha256"]:
            raise CheckpointError(f"{f}: damaged (its SHA-256 differs from the one written)")


def load_model(path: Path, device: torch.device) -> tuple[dict[str, torch.Tensor], int]:
    """(model state_dict on `device`, its step) from a checkpoint directory: the weights file
    alone (safetensors), so evaluating a run reads no trainer state at all."""
    verify_checkpoint(path, (MODEL_FILE,))
    try:
        tensors = load_file(str(path / MODEL_FILE), device=str(device))
        with safe_open(str(path / MODEL_FILE), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise CheckpointError(
            f"{path / MODEL_FILE}: cannot read checkpoint ({_short(exc)})"
        ) from None
    step = meta.get("step", path.name[5:])
    return tensors, int(step) if str(step).isdigit() else 0


def load_checkpoint(path: Path, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state_dict on `device`, trainer state) from a checkpoint directory; no pickle."""
    verify_checkpoint(path)
    try:
        tensors = load_file(str(path / MODEL_FILE), device=str(device))
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise CheckpointError(
            f"{path / MODEL_FILE}: cannot read checkpoint ({_short(exc)})"
        ) from None
    trainer: dict = {}
    if (path / TRAINER_JSON).exists():
        trainer = load_state_tree(path)
    elif (path / LEGACY_TRAINER_FILE).exists():
        trainer = load_legacy_trainer(path / LEGACY_TRAINER_FILE)
    return tensors, trainer


def load_newest_intact(
    run_dir: str | Path, device: torch.device
) -> tuple[Path, dict[str, torch.Tensor], dict, list[str]] | None:
    """The newest checkpoint that reads whole: (dir, tensors, trainer, problems with newer ones).

    `latest` is tried first, then every step directory from the newest down, so a damaged
    last checkpoint costs only the steps since the one before it. None when there is none.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    candidates: list[Path] = []
    latest = resolve_checkpoint(run_dir, "latest") if (ckpt_root / "latest").exists() else None
    if latest is not None:
        candidates.append(latest)
    for step in reversed(list_checkpoints(run_dir)):
        p = ckpt_root / checkpoint_name(step)
        if p not in candidates:
            candidates.append(p)
    problems: list[str] = []
    for path in candidates:
        try:
            tensors, trainer = load_checkpoint(path, device)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if "step" not in trainer:
            problems.append(f"{path}: no trainer state (step unknown)")
            continue
        return path, tensors, trainer, problems
    if problems:
        raise CheckpointError(f"{run_dir}: no intact checkpoint; " + "; ".join(problems))
    return None
