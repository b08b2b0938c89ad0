"""Diffuser's planning speed beside the official code, in one sitting, A B A B.

Alternates `benchmarks/official_diffuser.py` (the official planner, imported from a checkout of
jannerm/diffuser given by path) and `diffrl bench plan --algo diffuser` at the official
locomotion settings (H 32, 64 plans, 20 steps, 2 guide steps; hopper sizes 11 / 3), each in its
own process, for --rounds rounds; then `diffrl bench plan --fast`. Writes OUT/diffuser_speed.csv
and OUT/diffuser_speed.md (every measurement, and the ratio of the medians).

    python benchmarks/diffuser_speed.py --official-repo PATH [--rounds 2] [--seconds 20]
        [--threads N] [--out docs/results]

Run it on a quiet machine: both sides are compute-bound, and anything else running changes
both, by different amounts.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

SETTINGS = ["--obs-dim", "11", "--act-dim", "3", "--horizon", "32", "--plans", "64"]
SETTINGS += ["--sampling-steps", "20", "--guide-steps", "2"]


def _run(argv: list[str]) -> dict:
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{") :])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-repo", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args()
    here = Path(__file__).resolve().parent
    threads = ["--threads", str(args.threads)] if args.threads else []
    seconds = ["--seconds", str(args.seconds)]
    official = [sys.executable, str(here / "official_diffuser.py")]
    official += ["--official-repo", str(args.official_repo), *SETTINGS, *seconds, *threads]
    bench = [sys.executable, "-m", "diffrl.cli", "bench", "plan", "--algo", "diffuser"]
    ours = [*bench, *SETTINGS, *seconds, *threads, "--json"]
    # --fast alone: explicit flags (plans, steps) would override the fast preset's.
    fast = [*bench, "--obs-dim", "11", "--act-dim", "3", *seconds, *threads, "--json", "--fast"]
    rows = []
    for r in range(args.rounds):
        for code, argv in (("official", official), ("diffrl", ours)):
            res = _run([*argv, "--json"] if code == "official" else argv)
            rows.append(
                {
                    "round": r + 1,
                    "code": code,
                    "settings": "official",
                    "ms_per_plan": res["ms_per_plan"],
                    "ms_per_decision": res.get("ms_per_decision", res["ms_per_plan"]),
                    "threads": res["threads"],
                }
            )
            print(rows[-1], flush=True)
    for r in range(args.rounds):
        res = _run(fast)
        rows.append(
            {
                "round": r + 1,
                "code": "diffrl",
                "settings": "fast",
                "ms_per_plan": res["ms_per_plan"],
                "ms_per_decision": res["ms_per_decision"],
                "threads": res["threads"],
            }
        )
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "diffuser_speed.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def median(code: str, settings: str, key: str) -> float:
        return statistics.median(
            r[key] for r in rows if r["code"] == code and r["settings"] == settings
        )

    off = median("official", "official", "ms_per_plan")
    ours_ms = median("diffrl", "official", "ms_per_plan")
    fast_plan = median("diffrl", "fast", "ms_per_plan")
    fast_act = median("diffrl", "fast", "ms_per_decision")
    lines = [
        "# Diffuser planning speed beside the official code",
        "",
        f"One sitting, A B A B, {args.rounds} rounds of {args.seconds:g} s each, "
        f"{rows[0]['threads']} threads, random weights (the cost does not depend on them).",
        "",
        "Command: `python benchmarks/diffuser_speed.py --official-repo PATH "
        f"--rounds {args.rounds} --seconds {args.seconds:g}`",
        "",
        "| code | settings | ms per plan (each round) | median | plans/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for code, settings, key in (
        ("official", "official", "ms_per_plan"),
        ("diffrl", "official", "ms_per_plan"),
        ("diffrl", "fast", "ms_per_plan"),
        ("diffrl", "fast", "ms_per_decision"),
    ):
        each = [r[key] for r in rows if r["code"] == code and r["settings"] == settings]
        med = statistics.median(each)
        label = settings if key == "ms_per_plan" else "fast, replans while acting"
        lines.append(
            f"| {code} | {label} | {', '.join(f'{v:.1f}' for v in each)} | {med:.1f} "
            f"| {1e3 / med:.2f} |"
        )
    lines += [
        "",
        f"- diffrl at the official settings: **{off / ours_ms:.2f}x** the official speed.",
        f"- `--fast` (4 plans, 4 DDIM steps, 1 guide step): {fast_plan:.1f} ms per plan from "
        f"noise; **{fast_act:.1f} ms per decision** while acting ({1e3 / fast_act:.1f}/s), each "
        "decision a replan warm-started half-way from the previous plan.",
        "",
        "Settings: H 32, hopper sizes (11 / 3), 64 plans, 20 diffusion steps, 2 guide steps, "
        "scale 0.1, t_stopgrad 2, gradients scaled by the posterior variance.",
    ]
    (args.out / "diffuser_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
