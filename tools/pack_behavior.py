"""Copy a behaviour run's resumable state into the repo (behavior-progress/ENV), small enough
to commit: state.json, evals.csv and the last snapshot (policy, critics, optimisers, entropy
coefficient). With --transitions, also the chunks recorded after the import. On resume the
imported prefix is re-created from shared/behavior, chunks left behind are dropped, and the
replay buffer is refilled from what remains.

    .venv/bin/python tools/pack_behavior.py /work/bh/Hopper-v5 [--out behavior-progress]
Resume in a later session:
    cp -r behavior-progress/Hopper-v5 /work/bh/Hopper-v5
    .venv/bin/diffrl behavior train Hopper-v5 --run-dir /work/bh/Hopper-v5 --steps 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from diffrl.fileio import atomic_write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default="behavior-progress")
    p.add_argument("--transitions", action="store_true", help="also copy the new chunks")
    args = p.parse_args()
    run = Path(args.run_dir)
    state = json.loads((run / "state.json").read_text())  # read once: the run may go on
    dest = Path(args.out) / run.name
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "transitions").mkdir(parents=True)
    last = state["snapshots"][-1]["file"]
    shutil.copy2(run / last, dest / last)
    for i, chunk in enumerate(state["chunks"]):
        if (i == 0 and state.get("imported_from")) or not args.transitions:
            continue
        shutil.copy2(run / "transitions" / chunk["file"], dest / "transitions" / chunk["file"])
    evals = (run / "evals.csv").read_text().splitlines()
    keep = [evals[0]] + [r for r in evals[1:] if int(r.split(",")[0]) <= state["steps_done"]]
    (dest / "evals.csv").write_text("\n".join(keep) + "\n")
    atomic_write_json(dest / "state.json", state)
    print(f"{dest}: {state['steps_done']} steps, last snapshot {last}")


if __name__ == "__main__":
    main()
