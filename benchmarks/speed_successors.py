"""The successors' speed beside Diffusion-QL's, in one sitting (issue 45).

Runs, interleaved for `--rounds` rounds (so that machine noise hits every variant alike), each
in a fresh process with the settings a user gets (no environment variables), at hopper shapes
(obs 11, action 3, batch 256):
    diffrl bench train|act --algo diffusion-ql                       (the chain: the paper)
    diffrl bench train|act --algo diffusion-ql --set q_action=approx (EDP's approximation)
    diffrl bench train|act --algo idql
    diffrl bench train|act --algo fql                                (official width 512)
    diffrl bench train|act --algo fql --set hidden=256               (the locomotion preset's)
and writes docs/results/speed_successors.{csv,md} with medians, each round's ratio to
Diffusion-QL's chain, and the same table into docs/results/speed.md between its markers.

    .venv/bin/python benchmarks/speed_successors.py [--rounds 3] [--seconds 10]
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
VARIANTS = {
    "Diffusion-QL (chain)": ["--algo", "diffusion-ql"],
    "Diffusion-QL + EDP (q_action=approx)": ["--algo", "diffusion-ql", "--set", "q_action=approx"],
    "IDQL": ["--algo", "idql"],
    "FQL (width 512, official)": ["--algo", "fql"],
    "FQL (width 256, locomotion preset)": ["--algo", "fql", "--set", "hidden=256"],
}
BEGIN, END = "<!-- successors: begin -->", "<!-- successors: end -->"


def run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return json.loads(out[out.index("{") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", default="docs/results")
    args = p.parse_args()
    bench = [sys.executable, "-m", "diffrl.cli", "bench"]
    keys = {"train": "steps_per_second", "act": "ms_per_action"}
    rows = []
    for r in range(args.rounds):
        for what, key in keys.items():
            for name, flags in VARIANTS.items():
                cmd = [*bench, what, *flags, *SHAPE, "--seconds", str(args.seconds), "--json"]
                out = run(cmd)
                rows.append(
                    {
                        "round": r,
                        "what": what,
                        "variant": name,
                        key: out[key],
                        "threads": out["threads"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    out_dir = Path(args.out)
    with open(out_dir / "speed_successors.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["round", "what", "variant", *keys.values(), "threads"])
        w.writeheader()
        w.writerows(rows)

    def values(what: str, name: str) -> list[float]:
        return [x[keys[what]] for x in rows if x["what"] == what and x["variant"] == name]

    base = next(iter(VARIANTS))
    table = [
        "| variant | train steps/s (median) | x Diffusion-QL's chain, per round | "
        "act ms per action (median) |",
        "| --- | --- | --- | --- |",
    ]
    for name in VARIANTS:
        per_round = [
            a / b for a, b in zip(values("train", name), values("train", base), strict=True)
        ]
        ratios = ", ".join(f"{x:.2f}" for x in per_round)
        table.append(
            f"| {name} | {statistics.median(values('train', name)):.1f} | {ratios} | "
            f"{statistics.median(values('act', name)):.3f} |"
        )
    command = (
        f"`.venv/bin/python benchmarks/speed_successors.py --rounds {args.rounds} "
        f"--seconds {args.seconds:g}`"
    )
    text = "\n".join(
        [
            "# The successors' speed beside Diffusion-QL's",
            "",
            f"Command: {command}. Each figure is `diffrl bench train|act --json` in a fresh "
            "process with the defaults a user gets (threads following the machine's load, "
            "float32), at hopper shapes (obs 11, action 3, batch 256 for training; one "
            "observation per action), the variants interleaved round by round on this 2-core "
            "CPU; the ratio is taken within each round.",
            "",
            *table,
            "",
        ]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "speed_successors.md").write_text(text)
    speed = out_dir / "speed.md"
    page = speed.read_text()
    section = f"{BEGIN}\n{text.replace('# The', '## The', 1)}{END}"
    if BEGIN in page:
        page = page[: page.index(BEGIN)] + section + page[page.index(END) + len(END) :]
    else:
        page = page.rstrip("\n") + "\n\n" + section + "\n"
    speed.write_text(page)


if __name__ == "__main__":
    main()
