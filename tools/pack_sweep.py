"""Copy a sweep's results and resumable state into the repo (sweep-progress/NAME), small enough
to commit, so that a sweep longer than one session carries over to a machine that keeps nothing.

Kept: the sweep's grid and trial states, and in every run directory its small files (config,
metrics, trial record, logs, cached final evaluations) and its newest checkpoint only. Of a
finished run's checkpoint only the weights are kept (the report's final evaluation and
`diffrl eval` need no optimiser state, and `diffrl sweep --resume` skips the run); an unfinished
run keeps the whole checkpoint, so the sweep resumes it from there, and its caches under 40 MB
(a bigger one, QGPO's support table on hopper, is made again on resume). With --results-only no
checkpoint is kept: enough for `diffrl report` once every run's final evaluation is cached
(run the report first), not for resuming.

    .venv/bin/python tools/pack_sweep.py runs/sweeps/offline_hme [--out sweep-progress]
Resume in a later session:
    cp -r sweep-progress/offline_hme runs/sweeps/offline_hme
    .venv/bin/diffrl sweep --resume runs/sweeps/offline_hme
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from diffrl.checkpoint import list_checkpoints
from diffrl.run import RunDir

SKIP = {".lock"}
WEIGHTS_ONLY_DROP = {"trainer.safetensors", "trainer.json"}
MAX_CACHE_BYTES = 40_000_000


def pack_run(run: Path, dest: Path, results_only: bool = False) -> tuple[int, bool]:
    """Copy one run directory; return (newest checkpoint step, finished)."""
    steps = list_checkpoints(run)
    budget = int(RunDir(run).raw_config().get("steps", 0))
    step = steps[-1] if steps else 0
    finished = step >= budget > 0
    dest.mkdir(parents=True, exist_ok=True)
    for f in run.iterdir():
        if not f.is_file() or f.name in SKIP:
            continue
        # A finished run's caches (QGPO's support table) are not needed to act or report; an
        # unfinished run's are kept unless too big to commit (the run regenerates them).
        if f.suffix == ".safetensors" and (finished or f.stat().st_size > MAX_CACHE_BYTES):
            if not finished:
                print(f"{run.name}: {f.name} ({f.stat().st_size / 1e6:.0f} MB) not packed")
            continue
        shutil.copy2(f, dest / f.name)
    if not steps or results_only:
        return step, finished
    name = f"step_{step:08d}"
    src = run / "checkpoints" / name
    out = dest / "checkpoints" / name
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if not (finished and f.name in WEIGHTS_ONLY_DROP):
            shutil.copy2(f, out / f.name)
    (dest / "checkpoints" / "latest").write_text(name + "\n")
    return step, finished


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir")
    p.add_argument("--out", default="sweep-progress")
    p.add_argument("--results-only", action="store_true", help="no checkpoints (see above)")
    args = p.parse_args()
    sweep = Path(args.sweep_dir)
    if not (sweep / "sweep.json").exists():
        raise SystemExit(f"error: {sweep}: not a sweep directory (no sweep.json)")
    dest = Path(args.out) / sweep.name
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("sweep.json", "trials.json"):
        if (sweep / f).exists():
            shutil.copy2(sweep / f, tmp / f)
    for config in sorted(sweep.glob(f"*/*/{RunDir.CONFIG}")):
        run = config.parent
        step, finished = pack_run(run, tmp / run.relative_to(sweep), args.results_only)
        print(f"{run.relative_to(sweep)}: step {step:,}{' (finished)' if finished else ''}")
    # Replace the previous pack only once the new one is complete.
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
