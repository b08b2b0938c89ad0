"""What a diffusion policy adds online: DIPO against SAC on diffrl/FourGoals-v0, where four
actions are equally good (diffrl/toy_envs.py).

Trains (or reuses) `diffrl train dipo --env diffrl/FourGoals-v0` and `diffrl train sac --env
diffrl/FourGoals-v0` (their presets) into RUNS/dipo-sS and RUNS/sac-sS, then draws --samples
actions from each trained policy at fresh start states: DIPO evaluated (no per-step noise: the
policy is still a distribution over its starting noise), DIPO exploring (the full per-step
noise, what fills its replay buffer), SAC evaluated (tanh of its mean: one action per state)
and SAC exploring (a sample of its Gaussian). `--variant LABEL ALGO KEY=VALUE ...` adds a run
with those settings, in RUNS/ALGO-LABEL-sS (e.g. `--variant cw2000 dipo
action_gradient_start=2000`: DIPO whose critic learns for 2,000 updates before the
action-gradient steps begin). Reports the share of actions
landing within 0.25 of each goal, the share landing near none, and the mean reward. Writes
OUT/online_modes.{csv,md,png}.

    python benchmarks/multimodal.py [--seeds 0 1] [--samples 1000] [--runs runs/fourgoals]
        [--variant LABEL ALGO KEY=VALUE ...] [--out docs/results]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

from diffrl.run import RunDir

ENV = "diffrl/FourGoals-v0"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--runs", type=Path, default=Path("runs/fourgoals"))
    p.add_argument("--variant", nargs="+", action="append", default=[], metavar="LABEL ALGO K=V")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args()
    # (run name, label in the table, algorithm, --set values)
    variants = [("dipo", "dipo", "dipo", []), ("sac", "sac", "sac", [])]
    for v in args.variant:
        if len(v) < 2 or v[1] not in ("dipo", "sac"):
            raise SystemExit(f"error: --variant {' '.join(v)}: expected LABEL dipo|sac K=V ...")
        variants.append((f"{v[1]}-{v[0]}", f"{v[1]}:{v[0]}", v[1], v[2:]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from diffrl.api import load
    from diffrl.toy_envs import GOALS, four_goals_reward, nearest_goal

    for name, _, algo, sets in variants:
        for seed in args.seeds:
            run = args.runs / f"{name}-s{seed}"
            if RunDir(run).has_config():
                # Finished: a no-op; stopped part-way: continues to the preset's budget.
                cmd = [sys.executable, "-m", "diffrl.cli", "train", "--resume", str(run)]
                cmd += ["--no-progress", "--threads", "1"]
            else:
                cmd = [sys.executable, "-m", "diffrl.cli", "train", algo, "--env", ENV]
                cmd += ["--seed", str(seed), "--run-dir", str(run), "--no-progress"]
                cmd += ["--threads", "1"]
                for kv in sets:
                    cmd += ["--set", kv]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)

    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.uniform(-0.05, 0.05, (args.samples, 2)), dtype=torch.float32)
    rows, drawn = [], {}
    for name, algo, _, _ in variants:
        for seed in args.seeds:
            run = load(args.runs / f"{name}-s{seed}")
            agent = run.agent
            g = torch.Generator().manual_seed(seed)
            policies = {
                f"{algo} (evaluated)": lambda o, a=agent, g=g: a.act(o, g),
                f"{algo} (exploring)": lambda o, a=agent, g=g: a.explore(o, generator=g),
            }
            for label, fn in policies.items():
                with torch.no_grad():
                    actions = fn(obs).numpy()
                near = nearest_goal(actions)
                row = {"policy": label, "seed": seed, "step": run.step}
                for k in range(len(GOALS)):
                    row[f"goal_{k}"] = float((near == k).mean())
                row["none"] = float((near == -1).mean())
                row["goals_covered"] = int(sum(row[f"goal_{k}"] >= 0.1 for k in range(4)))
                row["reward_mean"] = float(four_goals_reward(actions).mean())
                rows.append(row)
                if seed == args.seeds[0]:
                    drawn[label] = actions
                print(row, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "online_modes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    grid = np.linspace(-1, 1, 201)
    xx, yy = np.meshgrid(grid, grid)
    reward = four_goals_reward(np.stack([xx, yy], -1))
    # One row per policy: evaluated, exploring.
    n_rows = len(drawn) // 2
    fig, axes = plt.subplots(n_rows, 2, figsize=(8, 4 * n_rows), squeeze=False)
    for ax, (label, actions) in zip(axes.ravel(), drawn.items(), strict=True):
        ax.contourf(xx, yy, reward, levels=20, cmap="Greys", alpha=0.6)
        ax.scatter(actions[:, 0], actions[:, 1], s=4, alpha=0.5, color="C3")
        ax.set_title(f"{label}, seed {args.seeds[0]}")
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_aspect("equal")
    fig.suptitle(f"{ENV}: {args.samples} actions at start states (grey: reward)")
    fig.tight_layout()
    fig.savefig(args.out / "online_modes.png", dpi=120)

    head = (
        "| policy | seed | goal 1 | goal 2 | goal 3 | goal 4 | near none | goals with >= 10 % "
        "| mean reward |"
    )
    lines = [
        "# Several equally good actions: DIPO against SAC",
        "",
        f"`{ENV}` (diffrl/toy_envs.py): one step; reward = four equal Gaussian bumps at "
        "(+-0.6, +-0.6), std 0.15, so four actions are equally good. Each policy's preset "
        f"(20,000 updates after 1,000 random steps). {args.samples} actions per policy at fresh "
        "start states; an action counts for a goal within 0.25 of it.",
        "",
        *[
            f"- `{label}`: {algo} with " + ", ".join(sets)
            for _, label, algo, sets in variants
            if sets
        ],
        "",
        head,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        goals = " | ".join(f"{r[f'goal_{k}']:.2f}" for k in range(4))
        lines.append(
            f"| {r['policy']} | {r['seed']} | {goals} | {r['none']:.2f} | "
            f"{r['goals_covered']} | {r['reward_mean']:.3f} |"
        )
    lines += [
        "",
        "![actions](online_modes.png)",
        "",
        "Command:",
        "",
        "```",
        "python benchmarks/multimodal.py " + " ".join(sys.argv[1:]),
        "```",
        "",
    ]
    (args.out / "online_modes.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'online_modes'}.md, .csv, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
