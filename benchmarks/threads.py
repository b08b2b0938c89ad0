"""Two trainings at once against one alone: which thread settings hold up on a busy machine.

For each algorithm and each setting, runs `diffrl bench train` alone, then two copies at the
same time, and reports each copy's training steps/s and its ratio to the run alone:

    default      what a user gets: nothing set by hand (diffrl/runtime.py: a short OpenMP spin,
                 threads that follow the machine's load)
    passive      diffrl's default before 2026-12-07, set by hand: OMP_WAIT_POLICY=PASSIVE, one
                 thread per core, no adapting (DIFFRL_ADAPTIVE_THREADS=0)
    active       the hand setting the earlier published speeds used: OMP_WAIT_POLICY=ACTIVE,
                 one thread per core, no adapting
    threads-1    --threads 1 (pinned)

Rounds repeat the whole set, interleaved, so machine noise hits every setting alike. Every
process starts with OMP_WAIT_POLICY, GOMP_SPINCOUNT, OMP_NUM_THREADS and
DIFFRL_ADAPTIVE_THREADS removed from its environment, then gets the setting's. Writes
docs/results/threads.{csv,md}.

    .venv/bin/python benchmarks/threads.py [--algos diffusion-bc,diffusion-ql] [--rounds 2]
        [--seconds 10] [--out docs/results]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXED = {"DIFFRL_ADAPTIVE_THREADS": "0"}
# setting: (extra CLI arguments, environment variables)
SETTINGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "default": ([], {}),
    "passive": ([], {"OMP_WAIT_POLICY": "PASSIVE", **FIXED}),
    "active": ([], {"OMP_WAIT_POLICY": "ACTIVE", **FIXED}),
    "threads-1": (["--threads", "1"], {}),
}
CLEARED = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "DIFFRL_ADAPTIVE_THREADS")


def command(setting: str, algo: str, seconds: float) -> list[str]:
    extra = SETTINGS[setting][0]
    args = ["bench", "train", "--algo", algo, "--seconds", str(seconds), "--json", *extra]
    return [sys.executable, "-m", "diffrl.cli", *args]


def start(setting: str, cmd: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(SETTINGS[setting][1])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> float:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"bench failed ({proc.returncode}): {err.strip()[-300:]}")
    return float(json.loads(out[out.index("{") :])["steps_per_second"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--algos", default="diffusion-bc,diffusion-ql")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = p.parse_args()
    rows: list[dict] = []
    for r in range(args.rounds):
        for algo in args.algos.split(","):
            for setting in SETTINGS:
                cmd = command(setting, algo, args.seconds)
                alone = finish(start(setting, cmd))
                pair = [start(setting, cmd), start(setting, cmd)]
                a, b = (finish(x) for x in pair)
                row = {"round": r, "algo": algo, "setting": setting, "alone": alone}
                row.update({"pair_a": a, "pair_b": b})
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "threads.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Two trainings at once against one alone",
        "",
        f"`diffrl bench train --algo ALGO --seconds {args.seconds:g}` alone, then two copies at "
        f"once; medians over {args.rounds} interleaved rounds; steps/s. 'worse of pair / alone' "
        "is the slower copy's speed as a fraction of the run alone with the same setting; "
        "'worse of pair / default alone' as a fraction of the default setting's run alone "
        "(what a user who runs one training gets).",
        "",
        "Command: `.venv/bin/python benchmarks/threads.py "
        f"--algos {args.algos} --rounds {args.rounds} --seconds {args.seconds:g}`",
        "",
        "| algo | setting | alone | pair (each) | worse of pair / alone | "
        "worse of pair / default alone | pair total / alone |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for algo in args.algos.split(","):
        default = {
            x["round"]: x["alone"] for x in rows if x["algo"] == algo and x["setting"] == "default"
        }
        for setting in SETTINGS:
            sel = [x for x in rows if x["algo"] == algo and x["setting"] == setting]
            alone = statistics.median(x["alone"] for x in sel)
            a = statistics.median(x["pair_a"] for x in sel)
            b = statistics.median(x["pair_b"] for x in sel)
            worst = statistics.median(min(x["pair_a"], x["pair_b"]) / x["alone"] for x in sel)
            vs_default = statistics.median(
                min(x["pair_a"], x["pair_b"]) / default[x["round"]] for x in sel
            )
            total = statistics.median((x["pair_a"] + x["pair_b"]) / x["alone"] for x in sel)
            lines.append(
                f"| {algo} | {setting} | {alone:.1f} | {a:.1f}, {b:.1f} | {worst:.2f} | "
                f"{vs_default:.2f} | {total:.2f} |"
            )
    (out / "threads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
