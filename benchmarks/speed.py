"""Diffusion-QL speed, diffrl beside the official code's computation, in one sitting.

Runs, interleaved for `--rounds` rounds (so that machine noise hits both alike):
    python benchmarks/official_dql.py train|act --json          (the official structure)
    diffrl bench train|act --algo diffusion-ql --json            (diffrl, default config)
    the same with DIFFRL_TUNE_MALLOC=0                            (glibc's default allocator)
    diffrl bench train|act --algo diffusion-ql --set compile=false --json   (no torch.compile)
    the same with DIFFRL_FAST_MISH=0                              (everything eager)
(`--short`: the official code (or structure) and diffrl only, into speed_short.{csv,md})
each in a fresh process, at hopper shapes (obs 11, action 3, batch 256), and writes
docs/results/speed.{csv,md} with medians and ratios. With `--official-repo PATH` (a checkout of
the official repository) the official code itself runs first in every round too, and the ratios
are taken against it.

    .venv/bin/python benchmarks/speed.py [--rounds 3] [--seconds 15] [--official-repo PATH]
        [--out docs/results] [--short]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = ["--obs-dim", "11", "--act-dim", "3"]
# The official code's own figures on this machine type (shared/design/REFERENCES.md, issue 4).
QUOTED_TRAIN, QUOTED_ACT_MS = 12.5, 7.8


def run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return json.loads(out[out.index("{") :])


def torch_version() -> str:
    import torch

    return torch.__version__


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--official-repo", help="a checkout of the official code, timed too")
    p.add_argument("--out", default="docs/results")
    p.add_argument(
        "--short",
        action="store_true",
        help="only the official code (or structure) and diffrl as a user gets it: more rounds "
        "in the same time, for the ratio alone",
    )
    args = p.parse_args()
    py = sys.executable
    sec = ["--seconds", str(args.seconds)]
    bench = [py, "-m", "diffrl.cli", "bench"]
    eager = ["--set", "compile=false"]
    official = [py, "benchmarks/official_dql.py"]
    variants = {}
    if args.official_repo:
        repo = ["--official-repo", args.official_repo]
        variants["official code"] = lambda w: [*official, w, *SHAPE, *sec, *repo]
    variants |= {
        "official structure": lambda w: [*official, w, *SHAPE, *sec],
        "diffrl": lambda w: [*bench, w, *SHAPE, *sec],
        "diffrl, default allocator (DIFFRL_TUNE_MALLOC=0)": lambda w: [
            "env",
            "DIFFRL_TUNE_MALLOC=0",
            *bench,
            w,
            *SHAPE,
            *sec,
        ],
        "diffrl, not compiled (compile=false)": lambda w: [*bench, w, *SHAPE, *sec, *eager],
        "diffrl, all eager (+ DIFFRL_FAST_MISH=0, the native Mish)": lambda w: [
            "env",
            "DIFFRL_FAST_MISH=0",
            *bench,
            w,
            *SHAPE,
            *sec,
            *eager,
        ],
    }
    if args.short:
        keep = ("official code" if args.official_repo else "official structure", "diffrl")
        variants = {k: v for k, v in variants.items() if k in keep}
    keys = {"train": "steps_per_second", "act": "ms_per_action"}
    rows = []
    for r in range(args.rounds):
        for what, key in keys.items():
            for name, cmd in variants.items():
                value = run(cmd(what) + ["--json"])[key]
                rows.append({"round": r, "what": what, "variant": name, key: value})
                print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "speed_short" if args.short else "speed"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["round", "what", "variant", *keys.values()])
        w.writeheader()
        w.writerows(rows)
    med = {
        (what, name): statistics.median(
            x[keys[what]] for x in rows if x["what"] == what and x["variant"] == name
        )
        for what in keys
        for name in variants
    }
    base = next(iter(variants))
    base_t, base_a = med[("train", base)], med[("act", base)]
    repo_arg = " --official-repo PATH" if args.official_repo else ""
    lines = [
        "# Diffusion-QL speed: diffrl beside the official code",
        "",
        f"Hopper shapes (obs 11, action 3), batch 256, T = 5, 50 candidates per action; median of "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s each, every measurement in a "
        "fresh process, on one machine in one sitting, torch "
        f"{torch_version()}. `official structure` is "
        "`benchmarks/official_dql.py`, the official code's computation re-created in plain "
        "PyTorch (see its header)"
        + (
            "; `official code` is the official repository's own `agents/ql_diffusion.py` "
            "imported from a checkout and timed by the same script (`--official-repo`)."
            if args.official_repo
            else "."
        ),
        "",
        f"Command: `.venv/bin/python benchmarks/speed.py --rounds {args.rounds} "
        f"--seconds {args.seconds:g}{repo_arg}{' --short' if args.short else ''}`",
        "",
        f"The last two columns compare with the official code's own figures on this machine "
        f"type, {QUOTED_TRAIN:g} steps/s and {QUOTED_ACT_MS:g} ms per action "
        "(shared/design/REFERENCES.md).",
        "",
        f"| variant | train steps/s | x {base} | x quoted 12.5 | ms per action "
        f"| {base} / this | quoted 7.8 / this |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in variants:
        t, a = med[("train", name)], med[("act", name)]
        lines.append(
            f"| {name} | {t:.1f} | {t / base_t:.2f} | {t / QUOTED_TRAIN:.2f} | {a:.2f} "
            f"| {base_a / a:.2f} | {QUOTED_ACT_MS / a:.2f} |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / (stem + '.csv')} and {out / (stem + '.md')}")


if __name__ == "__main__":
    main()
