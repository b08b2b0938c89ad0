"""Diffuser on a maze2d dataset: the run's evaluations and its plans at several horizons.

Reads a finished (or stopped) `diffrl train diffuser --dataset maze2d-...` run directory and
writes, under --out:
    diffuser_maze.csv / .md   every evaluation (step, normalised score, its std, return) and, per
                              planning horizon, the share of planned states that lie inside a
                              wall (a plausible path has none); with --draws, how often
                              the executed plan enters a wall, one plan against several
                              ranked by their states in walls
    diffuser_maze_H{H}.png    --plans plans from --start to --goal at each horizon, over the walls
    diffuser_maze_curve.png   normalised score against training steps

Run: python benchmarks/diffuser_maze.py --run RUN_DIR [--start -1,-1 --goal -1,1
      --horizons 64 128 256 --plans 4 --draws 20 --out docs/results]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from diffrl.run import RunDir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--start", default="-1,-1")
    parser.add_argument("--goal", default="-1,1")
    parser.add_argument("--horizons", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--plans", type=int, default=4)
    parser.add_argument(
        "--draws",
        type=int,
        default=0,
        help="also plan this many times (seeds 0..) at the trained horizon with one plan "
        "(official) and with --plans plans ranked by states in walls, and count the executed "
        "plans that enter a wall",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--name", default="diffuser_maze")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffrl.api import load
    from diffrl.envs import in_wall, maze_layout
    from diffrl.plotting import plot_plans

    run = load(args.run)
    config = run.config
    layout = maze_layout(config.env_id)
    if layout is None:
        raise SystemExit(f"error: {args.run} is not a maze run (env {config.env_id})")
    evals = [r for r in RunDir(args.run).metrics() if any(k.startswith("eval/") for k in r)]
    start = [float(v) for v in args.start.split(",")] + [0.0, 0.0]
    goal = [float(v) for v in args.goal.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    horizons = []
    for h in args.horizons:
        plans = run.plan(start, goal, horizon=h, n_plans=args.plans, seed=0)
        states = np.concatenate([np.asarray(p["states"])[:, :2] for p in plans])
        walls = float(np.mean([in_wall(layout, xy) for xy in states]))
        path = args.out / f"{args.name}_H{h}.png"
        title = f"Diffuser, step {run.step:,}: horizon {h} (trained at {config.horizon})"
        plot_plans(plans, path, layout, start, goal, title)
        horizons.append({"horizon": h, "plans": len(plans), "in_wall_share": walls})

    draws = []
    for n in (1, args.plans) if args.draws else ():
        hit = 0
        for seed in range(args.draws):
            first = run.plan(start, goal, n_plans=n, seed=seed, rank_walls=True)[0]
            hit += any(in_wall(layout, xy) for xy in np.asarray(first["states"])[:, :2])
        draws.append({"plans": n, "draws": args.draws, "in_wall": hit})
        print(json.dumps(draws[-1]), file=sys.stderr, flush=True)

    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "normalized_score", "normalized_score_std", "return_mean"])
        for e in evals:
            writer.writerow(
                [
                    e["step"],
                    e.get("eval/normalized_score"),
                    e.get("eval/normalized_score_std"),
                    e.get("eval/return_mean"),
                ]
            )

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [e["step"] for e in evals]
    scores = [e.get("eval/normalized_score") for e in evals]
    ax.plot(steps, scores, "o-")
    ax.set_xlabel("training step")
    ax.set_ylabel("normalised score")
    ax.set_title(f"Diffuser on {config.dataset}")
    fig.savefig(args.out / f"{args.name}_curve.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    lines = [
        f"# Diffuser on {config.dataset}",
        "",
        f"Run: horizon {config.horizon}, {config.diffusion_steps} diffusion steps, U-Net dim "
        f"{config.dim} x {list(config.dim_mults)}, batch {config.batch_size}, checkpoint step "
        f"{run.step:,}; evaluation: {config.eval_episodes} episodes, goal `{config.eval_goal}`.",
        "",
        f"Command: `python benchmarks/{Path(__file__).name} --run RUN_DIR --start={args.start} "
        f"--goal={args.goal} --horizons {' '.join(map(str, args.horizons))} --plans "
        f"{args.plans}" + (f" --draws {args.draws}" if args.draws else "") + "`",
        "",
        "| step | normalised score | std | return |",
        "| --- | --- | --- | --- |",
    ]
    for e in evals:
        lines.append(
            f"| {e['step']:,} | {e.get('eval/normalized_score', float('nan')):.1f} | "
            f"{e.get('eval/normalized_score_std', float('nan')):.1f} | "
            f"{e.get('eval/return_mean', float('nan')):.1f} |"
        )
    lines += [
        "",
        f"Plans from {args.start} to {args.goal} at several horizons (same weights):",
        "",
        "| horizon | plans | share of planned states inside a wall | figure |",
        "| --- | --- | --- | --- |",
    ]
    for h in horizons:
        name = f"{args.name}_H{h['horizon']}.png"
        lines.append(
            f"| {h['horizon']} | {h['plans']} | {h['in_wall_share']:.3f} | [{name}]({name}) |"
        )
    if draws:
        lines += [
            "",
            f"The executed plan (the first) at horizon {config.horizon}, {args.draws} draws "
            "(seeds 0..), from one sampled plan (official) or from several ranked by their "
            "states inside walls (`rank_walls`):",
            "",
            "| plans sampled | executed plans with a state inside a wall |",
            "| --- | --- |",
        ]
        lines += [f"| {d['plans']} | {d['in_wall']} of {d['draws']} |" for d in draws]
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / args.name}.csv, .md and figures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
