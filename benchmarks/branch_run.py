"""Start a new run directory from another run's checkpoint, with changed settings for what comes
after it: the new run's config is the old one with KEY=VALUE overrides, its history (metrics,
evaluations) is the old run's up to the checkpoint, and `diffrl train --resume NEW` (or a sweep
whose trial is NEW) trains on from there. Files the agent keeps beside its checkpoints
(QGPO's support table) are copied too. The source run is not changed.

Use it only where the steps up to the checkpoint are the same under the new settings (e.g. a
QGPO run's behaviour stage when only the critic stage changes); say so where the result is
reported.

    python benchmarks/branch_run.py SRC_RUN STEP|latest|best DST_RUN KEY=VALUE ...
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from diffrl.checkpoint import CheckpointError, resolve_checkpoint
from diffrl.fileio import atomic_write_json

KEPT_FILES = ("support.safetensors",)  # agent files that depend only on the copied weights


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def branch(src: Path, step: str, dst: Path, overrides: dict[str, object]) -> int:
    try:
        ckpt = resolve_checkpoint(src, step)
    except CheckpointError as exc:
        raise SystemExit(str(exc)) from None
    if ckpt is None:
        raise SystemExit(f"{src}: no checkpoint yet")
    name = ckpt.name
    at = int(name.split("_")[1])
    if dst.exists():
        raise SystemExit(f"{dst}: already exists")
    config = json.loads((src / "config.json").read_text())
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise SystemExit(f"{src}/config.json has no key {', '.join(unknown)}")
    config.update(overrides)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, tmp / "checkpoints" / name)
    (tmp / "checkpoints" / "latest").write_text(name + "\n")  # as save_checkpoint writes it
    atomic_write_json(tmp / "config.json", config)
    shutil.copy2(src / "run.json", tmp / "run.json")
    for kept in KEPT_FILES:
        if (src / kept).exists():
            shutil.copy2(src / kept, tmp / kept)
    if (src / "metrics.jsonl").exists():
        lines = (src / "metrics.jsonl").read_text().splitlines()
        keep = [x for x in lines if x.strip() and json.loads(x).get("step", 0) <= at]
        (tmp / "metrics.jsonl").write_text("".join(x + "\n" for x in keep))
    if (src / "selection.json").exists():
        sel = json.loads((src / "selection.json").read_text())
        sel["evaluations"] = [e for e in sel.get("evaluations", []) if e["step"] <= at]
        sel["choices"] = {k: c for k, c in sel.get("choices", {}).items() if c["step"] <= at}
        atomic_write_json(tmp / "selection.json", sel)
    note = f"branched from {src} at step {at} with {json.dumps(overrides)}\n"
    (tmp / "train.log").write_text(note)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dst)
    return at


def main() -> None:
    if len(sys.argv) < 4:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    src, step, dst = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    overrides = {}
    for item in sys.argv[4:]:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        overrides[key] = _value(value)
    at = branch(src, step, dst, overrides)
    print(f"{dst}: from {src} at step {at}, with {overrides}")


if __name__ == "__main__":
    main()
