"""Make every built-in locomotion dataset and tabulate it beside its D4RL counterpart.

Writes docs/results/datasets.csv and docs/results/datasets.md. Usage:

    DIFFRL_DATA=/some/dir .venv/bin/python benchmarks/datasets_table.py [--names N ...] [--size N]

Each dataset is exactly `diffrl datasets make NAME [--size N]` (seed 0), timed, then
`diffrl datasets info NAME`. Rows already in the CSV are kept (the script resumes).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from diffrl.datasets import BUILTINS, locomotion, make_builtin, maze, resolve

# D4RL counterparts as ../shared/design/DATASETS.md gives them (for orientation only: another
# simulator version and other behaviour policies); blank where it gives no figure.
# normalised = 100 (R - min) / (max - min) with REFERENCES.md's constants.
D4RL = {
    "hopper-medium-v0": ("1M", "about 44-48 (return 1400-1600)"),
    "hopper-medium-replay-v0": ("about 400k", ""),
    "hopper-expert-v0": ("1M", "about 108 (return about 3500)"),
    "hopper-medium-expert-v0": ("about 2M", ""),
    "halfcheetah-medium-v0": ("1M", "about 40.7 (return about 4770)"),
    "halfcheetah-medium-replay-v0": ("about 200k", ""),
    "halfcheetah-expert-v0": ("1M", "about 87.6 (return about 10600)"),
    "halfcheetah-medium-expert-v0": ("about 2M", ""),
}
FIELDS = [
    "name", "transitions", "episodes", "return_mean", "return_min", "return_max",
    "normalized_return_mean", "seconds", "d4rl_transitions", "d4rl_normalized_mean",
    "arrivals_per_100k_steps",
]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", nargs="*", default=locomotion.dataset_names() + maze.dataset_names())
    p.add_argument("--size", type=int, default=None, help="default: each recipe's")
    p.add_argument("--out", default="docs/results")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "datasets.csv"
    rows = {}
    if csv_path.exists():
        with open(csv_path) as f:
            rows = {r["name"]: r for r in csv.DictReader(f)}
    for name in args.names:
        if name in rows:
            continue
        t0 = time.perf_counter()
        try:
            make_builtin(name, size=args.size)
        except Exception as exc:  # an expert policy may not ship yet: note it and go on
            print(f"{name}: {exc}", flush=True)
            continue
        seconds = time.perf_counter() - t0
        s = resolve(name).stats()
        d4rl_n, d4rl_score = D4RL.get(name, ("", ""))
        rows[name] = {
            "name": name,
            "transitions": s["transitions"],
            "episodes": s["episodes"],
            "return_mean": round(s["return_mean"], 1),
            "return_min": round(s["return_min"], 1),
            "return_max": round(s["return_max"], 1),
            "normalized_return_mean": round(s["normalized_return_mean"], 1),
            "seconds": round(seconds, 1),
            "d4rl_transitions": d4rl_n,
            "d4rl_normalized_mean": d4rl_score,
            "arrivals_per_100k_steps": resolve(name).metadata.get("arrivals_per_100k_steps", ""),
        }
        print(rows[name], flush=True)
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows[n] for n in sorted(rows, key=list(BUILTINS).index))
    lines = [
        "# Built-in datasets beside D4RL's",
        "",
        "Each row is `diffrl datasets make NAME` (seed 0, timed) then `diffrl datasets info NAME`.",
        "",
        "Command: `DIFFRL_DATA=DIR .venv/bin/python benchmarks/datasets_table.py` (it resumes: "
        "rows already in datasets.csv are kept).",
        "",
        "| dataset | transitions | episodes | return mean [min, max] | normalised | make (s) "
        "| goal arrivals / 100k | D4RL transitions | D4RL normalised |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in sorted(rows, key=list(BUILTINS).index):
        r = rows[n]
        lines.append(
            f"| {n} | {int(r['transitions']):,} | {r['episodes']} | {r['return_mean']} "
            f"[{r['return_min']}, {r['return_max']}] | {r['normalized_return_mean']} "
            f"| {r['seconds']} | {r.get('arrivals_per_100k_steps') or ''} "
            f"| {r['d4rl_transitions'] or ''} | {r['d4rl_normalized_mean'] or ''} "
            "|"
        )
    (out / "datasets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
