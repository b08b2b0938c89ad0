"""Online results: DIPO beside SAC at equal environment steps, with wall-clock beside each curve.

For each (environment, algorithm, seed): `diffrl train ALGO --env ENV --seed S --steps STEPS
[--set ...]` into RUNS/ENV/NAME-sS (resumed if it is there, so a stopped benchmark continues
where each run stopped), `--jobs` runs at a time, each on one thread. NAME is the algorithm, or
ALGO:LABEL for a variant given as `--variant LABEL ALGO KEY=VALUE ...` (e.g. DIPO's fast preset:
`--variant fast dipo diffusion_steps=5 action_steps=3`). Then, from each run's metrics:

- the evaluations (every `eval_every` updates, 10 episodes each, the policy without exploration
  noise) against environment steps;
- the training wall-clock: updates over the run's median logged rate (evaluation time left
  out; a pause or a resume does not stretch it), so seconds per 1,000 environment steps
  compare the algorithms' own work.

Writes OUT/NAME.csv (one row per evaluation), OUT/NAME.md (per environment and algorithm: the
mean over seeds of the last evaluation at the common budget, of the best evaluation, and the
wall-clock) and OUT/NAME_ENV.png (return against environment steps and against wall-clock,
mean over seeds with each seed drawn thin).

    python benchmarks/online.py --envs Pendulum-v1 Hopper-v5 --algos dipo sac --seeds 0 1
        [--steps 100000] [--variant fast dipo diffusion_steps=5 action_steps=3]
        [--jobs 2] [--runs runs/online] [--out docs/results] [--name online] [--report]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

from diffrl.run import RunDir


def curve(run: Path) -> list[dict[str, float]]:
    """[{env_steps, step, return, wall}] per evaluation; wall = training seconds so far, the
    updates over the run's median logged rate (each rate covers `log_every` updates with their
    environment steps; the median is robust to an interval stretched by a pause or a resume)."""
    records = RunDir(run).metrics()
    config = RunDir(run).raw_config()
    rates = [r["steps_per_second"] for r in records if "steps_per_second" in r]
    rate = statistics.median(rates) if rates else float("nan")
    out = []
    for r in records:
        wall = r["step"] / rate
        if "eval/return_mean" in r:
            out.append(
                {
                    "step": r["step"],
                    "env_steps": r.get("env_steps", r["step"] + config["warmup_steps"]),
                    "return": r["eval/return_mean"],
                    "return_std": r["eval/return_std"],
                    "wall": wall,
                }
            )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", required=True)
    p.add_argument("--algos", nargs="+", default=["dipo", "sac"])
    p.add_argument("--variant", nargs="+", action="append", default=[], metavar="LABEL ALGO K=V")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=None, help="updates per run (default: preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="every run")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--runs", type=Path, default=Path("runs/online"))
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--name", default="online")
    p.add_argument("--report", action="store_true", help="only write the report")
    args = p.parse_args()

    plans: list[tuple[str, str, str, list[str], int]] = []  # env, name, algo, sets, seed
    variants = [(a, a, []) for a in args.algos]
    variants += [(f"{v[1]}:{v[0]}", v[1], v[2:]) for v in args.variant]
    for env in args.envs:
        for name, algo, sets in variants:
            for seed in args.seeds:
                plans.append((env, name, algo, [*args.set, *sets], seed))

    def run_dir(env: str, name: str, seed: int) -> Path:
        return args.runs / env / f"{name.replace(':', '-')}-s{seed}"

    if not args.report:
        queue, running = list(plans), []
        while queue or running:
            while queue and len(running) < args.jobs:
                env, name, algo, sets, seed = queue.pop(0)
                run = run_dir(env, name, seed)
                if RunDir(run).has_config():
                    argv = ["train", "--resume", str(run)]
                    if args.steps:
                        argv += ["--steps", str(args.steps)]
                else:
                    argv = ["train", algo, "--env", env, "--seed", str(seed)]
                    argv += ["--run-dir", str(run)]
                    argv += ["--steps", str(args.steps)] if args.steps else []
                    for kv in sets:
                        argv += ["--set", kv]
                run.parent.mkdir(parents=True, exist_ok=True)
                log = open(run.parent / f"{run.name}.log", "a")  # noqa: SIM115
                cmd = [sys.executable, "-m", "diffrl.cli", *argv, "--threads", "1"]
                print(" ".join(cmd), flush=True)
                running.append((subprocess.Popen(cmd, stdout=log, stderr=log), log))
            time.sleep(2)
            for proc, log in list(running):
                if proc.poll() is not None:
                    log.close()
                    running.remove((proc, log))

    rows = []
    for env, name, _, _, seed in plans:
        run = run_dir(env, name, seed)
        if not RunDir(run).has_config():
            continue
        for point in curve(run):
            rows.append({"env": env, "algo": name, "seed": seed, **point})
    if not rows:
        raise SystemExit("no runs to report")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    command = "python benchmarks/online.py " + " ".join(sys.argv[1:])
    lines = [
        "# Online results: DIPO and SAC",
        "",
        "Return of the policy without exploration noise, 10 episodes per evaluation; mean over "
        "seeds (± the standard deviation across seeds where there are several). `at budget`: "
        "each seed's last evaluation at the largest environment step every seed of every "
        "algorithm reached (equal environment steps); `best`: each seed's best evaluation, "
        "averaged. Wall-clock: training time on one thread of this 2-core CPU with two runs "
        "side by side, the updates (each with its environment step) over the run's median "
        "logged rate; evaluations and the random warm-up left out.",
        "",
    ]
    for env in args.envs:
        env_rows = [r for r in rows if r["env"] == env]
        if not env_rows:
            continue
        names = list(dict.fromkeys(r["algo"] for r in env_rows))
        seeds_of = {n: sorted({r["seed"] for r in env_rows if r["algo"] == n}) for n in names}
        common = min(
            max(r["env_steps"] for r in env_rows if r["algo"] == n and r["seed"] == s)
            for n in names
            for s in seeds_of[n]
        )
        lines += [
            f"## {env}",
            "",
            f"Equal budget: {common:,} environment steps.",
            "",
            "| algorithm | seeds | return at budget | best return | wall-clock at budget "
            "| s per 1k env steps |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
        for i, n in enumerate(names):
            finals, bests, walls, rates = [], [], [], []
            for s in seeds_of[n]:
                pts = [r for r in env_rows if r["algo"] == n and r["seed"] == s]
                at = [r for r in pts if r["env_steps"] <= common][-1]
                finals.append(at["return"])
                bests.append(max(r["return"] for r in pts))
                walls.append(at["wall"])
                rates.append(1e3 * at["wall"] / max(at["env_steps"], 1))
                color = f"C{i}"
                ax1.plot(
                    [r["env_steps"] for r in pts],
                    [r["return"] for r in pts],
                    color=color,
                    alpha=0.35,
                    lw=0.8,
                )
                ax2.plot(
                    [r["wall"] / 60 for r in pts],
                    [r["return"] for r in pts],
                    color=color,
                    alpha=0.35,
                    lw=0.8,
                )
            # Mean over seeds at each evaluation step they share.
            steps = sorted({r["env_steps"] for r in env_rows if r["algo"] == n})
            mean_x, mean_y, mean_w = [], [], []
            for x in steps:
                ys = [r for r in env_rows if r["algo"] == n and r["env_steps"] == x]
                if len(ys) == len(seeds_of[n]):
                    mean_x.append(x)
                    mean_y.append(statistics.mean(r["return"] for r in ys))
                    mean_w.append(statistics.mean(r["wall"] for r in ys) / 60)
            ax1.plot(mean_x, mean_y, color=f"C{i}", lw=2, label=n)
            ax2.plot(mean_w, mean_y, color=f"C{i}", lw=2, label=n)

            def fmt(v: list[float]) -> str:
                if len(v) > 1:
                    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}"
                return f"{v[0]:.1f}"

            lines.append(
                f"| {n} | {len(seeds_of[n])} | {fmt(finals)} | {fmt(bests)} | "
                f"{statistics.mean(walls) / 60:.1f} min | {statistics.mean(rates):.2f} |"
            )
        ax1.set_xlabel("environment steps")
        ax2.set_xlabel("training wall-clock (minutes, one thread)")
        for ax in (ax1, ax2):
            ax.set_ylabel("return")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(env)
        fig.tight_layout()
        png = f"{args.name}_{env}.png"
        fig.savefig(args.out / png, dpi=120)
        plt.close(fig)
        lines += ["", f"![{env}]({png})", ""]
    if (args.out / "online_modes.md").exists():
        lines += [
            "What the diffusion policy adds, on an environment with four equally good actions: "
            "[online_modes.md](online_modes.md) (`benchmarks/multimodal.py`).",
            "",
        ]
    lines += ["Command:", "", "```", command, "```", ""]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print(f"wrote {args.out / args.name}.md, .csv and figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
