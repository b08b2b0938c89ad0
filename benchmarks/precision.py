"""fp32 against bf16 (`--precision`), side by side: training steps/s and ms per action or plan.

For each item, `diffrl bench ... --precision fp32` and `... --precision bf16` run one after the
other in fresh processes, for `--rounds` interleaved rounds, with the settings a user gets
(nothing set by hand). Writes OUT/NAME.{csv,md} (NAME precision_speed unless --name) with
medians and the bf16 / fp32 ratio (above 1: bf16 is faster). --items picks rows by short name.

    .venv/bin/python benchmarks/precision.py [--rounds 2] [--seconds 10] [--out docs/results]
        [--items dql-train,diffuser-plan] [--name precision_speed]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

HOPPER = ["--obs-dim", "11", "--act-dim", "3"]
DIFFUSER_OFFICIAL = ["--horizon", "32", "--plans", "64", "--sampling-steps", "20"]
DIFFUSER_OFFICIAL += ["--guide-steps", "2"]
# name: (bench arguments, the figure read, True when higher is better)
ITEMS: dict[str, tuple[list[str], str, bool]] = {
    "Diffusion-QL training": (["train", "--algo", "diffusion-ql"], "steps_per_second", True),
    "Diffusion-BC training": (["train", "--algo", "diffusion-bc"], "steps_per_second", True),
    "Diffusion-QL acting": (["act", "--algo", "diffusion-ql"], "ms_per_action", False),
    "QGPO acting": (["act", "--algo", "qgpo"], "ms_per_action", False),
    "Decision Diffuser acting, fast preset": (
        ["act", "--algo", "decision-diffuser", "--fast"],
        "ms_per_action",
        False,
    ),
    "Diffuser plan, official settings": (
        ["plan", "--algo", "diffuser", *DIFFUSER_OFFICIAL],
        "ms_per_plan",
        False,
    ),
    "Diffuser plan, fast preset": (["plan", "--algo", "diffuser", "--fast"], "ms_per_plan", False),
}


# --items: short names for the rows above, in order.
SHORT = dict(
    zip(
        ["dql-train", "dbc-train", "dql-act", "qgpo-act", "dd-act"]
        + ["diffuser-plan", "diffuser-fast"],
        ITEMS,
        strict=True,
    )
)


def run(args: list[str], precision: str, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "diffrl.cli", "bench", *args, *HOPPER]
    cmd += ["--seconds", str(seconds), "--precision", precision, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--items", default="all", help=f"comma-separated, of: {', '.join(SHORT)}")
    p.add_argument("--name", default="precision_speed", help="output file stem")
    args = p.parse_args()
    wanted = list(SHORT) if args.items == "all" else args.items.split(",")
    unknown = [w for w in wanted if w not in SHORT]
    if unknown:
        p.error(f"unknown --items {', '.join(unknown)}; choose from {', '.join(SHORT)}")
    items = {SHORT[w]: ITEMS[SHORT[w]] for w in wanted}
    rows = []
    for r in range(args.rounds):
        for name, (bench, key, _) in items.items():
            for precision in ("fp32", "bf16"):
                res = run(bench, precision, args.seconds)
                row = {"round": r + 1, "item": name, "precision": precision, key: res[key]}
                row.update(threads=res["threads"], thread_policy=res["thread_policy"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["round", "item", "precision", "metric", "value"])
        writer.writeheader()
        for row in rows:
            key = ITEMS[row["item"]][1]
            head = {k: row[k] for k in ("round", "item", "precision")}
            writer.writerow({**head, "metric": key, "value": row[key]})
    lines = [
        "# fp32 against bf16, side by side",
        "",
        f"`diffrl bench` with `--precision fp32` and `--precision bf16`, one after the other in "
        f"fresh processes, {args.rounds} interleaved rounds of {args.seconds:g} s, hopper shapes "
        "(observation 11, action 3), default settings (nothing set by hand). Medians; 'bf16 "
        "speed-up' is how many times faster bf16 is (above 1: faster).",
        "",
        f"Command: `.venv/bin/python benchmarks/precision.py --rounds {args.rounds} "
        f"--seconds {args.seconds:g}"
        + ("" if args.items == "all" else f" --items {args.items}")
        + ("" if args.name == "precision_speed" else f" --name {args.name}")
        + "`",
        "",
        "| what | figure | fp32 | bf16 | bf16 speed-up |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (_, key, higher) in items.items():
        med = {
            prec: statistics.median(
                x[key] for x in rows if x["item"] == name and x["precision"] == prec
            )
            for prec in ("fp32", "bf16")
        }
        ratio = med["bf16"] / med["fp32"] if higher else med["fp32"] / med["bf16"]
        label = key.replace("_", " ").replace("ms per", "ms per")
        lines.append(f"| {name} | {label} | {med['fp32']:.2f} | {med['bf16']:.2f} | {ratio:.2f}x |")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
