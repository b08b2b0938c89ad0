"""A sweep against the same runs one after another: wall-clock of N runs of one algorithm.

1. one after another: `diffrl train ALGO --dataset DATASET --seed S --steps STEPS` for each
   seed, each with torch's default threads (one per core), as a user would run them by hand;
2. as one sweep: `diffrl sweep --algos ALGO --datasets DATASET --seeds ... --steps STEPS` with
   `--threads` per trial (1 by default: on a 2-core machine two single-threaded runs side by
   side).

Every run has the same settings (`--set`); both phases start from nothing (fresh run
directories under --work). Writes OUT/NAME.csv and OUT/NAME.md (times and the ratio).

    python benchmarks/sweep_speed.py [--algo diffusion-ql] [--dataset toy-bandit]
        [--seeds 0 1 2 3] [--steps 2000] [--threads 1] [--set KEY=VALUE ...]
        [--work /tmp/sweep_speed] [--out docs/results] [--name sweep_speed]

Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", default="diffusion-ql")
    p.add_argument("--dataset", default="toy-bandit")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1, help="per trial in the sweep")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--work", type=Path, default=Path("/tmp/sweep_speed"))
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--name", default="sweep_speed")
    args = p.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    cli = [sys.executable, "-m", "diffrl.cli"]
    sets = [x for kv in args.set for x in ("--set", kv)]
    # Make the dataset first, so neither phase pays for it.
    subprocess.run([*cli, "datasets", "make", args.dataset], check=False, capture_output=True)

    one_by_one = 0.0
    for seed in args.seeds:
        run = args.work / "hand" / f"{args.algo}-s{seed}"
        cmd = [*cli, "train", args.algo, "--dataset", args.dataset, "--seed", str(seed)]
        cmd += ["--steps", str(args.steps), "--run-dir", str(run), "--no-progress", *sets]
        t = timed(cmd)
        print(f"one after another: seed {seed} {t:.1f} s", flush=True)
        one_by_one += t
    cmd = [*cli, "sweep", "--algos", args.algo, "--datasets", args.dataset]
    cmd += ["--seeds", ",".join(map(str, args.seeds)), "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads), "--out", str(args.work / "sweep"), "--no-progress"]
    swept = timed([*cmd, *sets])
    print(f"sweep: {swept:.1f} s", flush=True)

    ratio = swept / one_by_one
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["how", "runs", "steps", "threads_per_run", "seconds"])
        w.writerow(["one after another", len(args.seeds), args.steps, "default", one_by_one])
        w.writerow(["sweep", len(args.seeds), args.steps, args.threads, swept])
    command = "python benchmarks/sweep_speed.py " + " ".join(sys.argv[1:])
    (args.out / f"{args.name}.md").write_text(
        "\n".join(
            [
                f"# {len(args.seeds)} {args.algo} runs on {args.dataset}: one sweep against one "
                "after another",
                "",
                f"{args.steps:,} steps each, {os.cpu_count()} cores; every phase from fresh run "
                "directories (Ray's start-up counts in the sweep's time).",
                "",
                "| how | threads per run | wall-clock (s) |",
                "| --- | --- | --- |",
                f"| one after another (`diffrl train`) | default (one per core) | "
                f"{one_by_one:.1f} |",
                f"| one sweep (`diffrl sweep`) | {args.threads} | {swept:.1f} |",
                "",
                f"The sweep takes **{ratio:.2f}x** the time of the runs one after another.",
                "",
                "Command:",
                "",
                "```",
                command,
                "```",
                "",
            ]
        )
    )
    print(f"ratio {ratio:.2f}; wrote {args.out / args.name}.md and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
