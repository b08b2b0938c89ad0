"""Toy bandit: any algorithms at their toy presets, side by side (Gaussian BC, Diffusion-BC and
Diffusion-QL by default).

Writes docs/results/NAME.{csv,md,png}. Usage:

    .venv/bin/python benchmarks/toy.py --algos gaussian-bc diffusion-bc diffusion-ql --seeds 0
    .venv/bin/python benchmarks/toy.py --algos gaussian-bc diffusion-bc --seeds 0 1 2 --name toy_bc
    .venv/bin/python benchmarks/toy.py --algos diffusion-bc diffusion-ql --precision bf16 \
        --name toy_bf16
    .venv/bin/python benchmarks/toy.py --algos idql fql --seeds 0 1 2 --name toy_successors

Each run is exactly `diffrl train ALGO --dataset toy-bandit --seed S` (the preset's defaults)
followed by `diffrl eval RUN --json`; the runs are kept under --runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from diffrl.datasets import resolve, toy_bandit
from diffrl.evaluate import evaluate
from diffrl.plotting import plot_toy_actions
from diffrl.precision import precision_scope
from diffrl.run import RunDir, eval_seed, load_agent, make_config, start_run
from diffrl.train import train

ALGOS = ("gaussian-bc", "diffusion-bc", "diffusion-ql")
TITLES = {
    "toy": "Gaussian BC, Diffusion-BC and Diffusion-QL",
    "toy_bc": "Gaussian BC vs Diffusion-BC",
    "toy_successors": "IDQL and FQL (the successors) at their toy presets",
}
MODES = ("left_up", "left_bottom", "right_up", "right_bottom", "off_mode")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", default=list(ALGOS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--name", default="toy", help="output file stem under --out")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--runs", default="runs/bench-toy", help="runs are kept (and reused) here")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args()
    tag = "" if args.precision == "fp32" else f"-{args.precision}"
    name = args.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, panels = [], {}
    for algo in args.algos:
        for seed in args.seeds:
            run_dir = Path(args.runs) / f"{algo}-s{seed}{tag}"
            if (run_dir / "checkpoints" / "latest").exists():
                cfg = RunDir(run_dir).raw_config()
                seconds = float("nan")
                if cfg["steps"] > int(
                    (run_dir / "checkpoints" / "latest").read_text().split("_")[1]
                ):
                    train(run_dir, resume=True, progress=True)
            else:
                config = make_config(
                    algo, "toy-bandit", {"seed": seed, "precision": args.precision}
                )
                run_dir, dataset = start_run(config, run_dir)
                t0 = time.perf_counter()
                train(run_dir, dataset=dataset, progress=True)
                seconds = time.perf_counter() - t0
            agent, config, info, step = load_agent(run_dir)
            device = next(agent.parameters()).device
            result = evaluate(agent, config, 0, eval_seed(seed, "eval"), device)
            fr = result["mode_fractions"]
            rows.append(
                {
                    "algo": algo,
                    "seed": seed,
                    "steps": step,
                    "train_seconds": round(seconds, 1) if seconds == seconds else "n/a",
                    "reward_mean": round(result["reward_mean"], 3),
                    **{m: round(fr[m], 3) for m in MODES},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            if seed == args.seeds[0]:
                gen = torch.Generator(device=device).manual_seed(seed)
                obs = torch.zeros((1000, 2), device=device)
                with precision_scope(config.precision, device):
                    panels[algo] = agent.act(obs, gen).cpu().numpy()

    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Toy bandit: {TITLES.get(name, ', '.join(args.algos))}",
        "",
        "Fractions of 1000 sampled actions within 0.2 of each mode's centre, and the mean",
        "reward of the sampled actions' modes (off-mode = 0). Behaviour data: 10,000 actions,",
        "25 % per mode. Presets as in `diffrl config ALGO --dataset toy-bandit`"
        + (f", precision {args.precision}." if tag else "."),
        "",
        "Command: `.venv/bin/python benchmarks/toy.py --algos "
        + " ".join(args.algos)
        + " --seeds "
        + " ".join(map(str, args.seeds))
        + (f" --precision {args.precision}" if tag else "")
        + f" --name {name}`. Train seconds are n/a for runs reused from --runs.",
        "",
        "| algo | seed | steps | train s | left_up | left_bottom | right_up | right_bottom "
        "| off_mode | reward_mean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['algo']} | {r['seed']} | {r['steps']} | {r['train_seconds']} | "
            + " | ".join(f"{r[m]:.3f}" for m in MODES)
            + f" | {r['reward_mean']:.3f} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    data = resolve("toy-bandit").actions
    centres = [c for c, _ in toy_bandit.MODES.values()]
    plot_toy_actions(
        data,
        [("behaviour data", data[:1000])] + [(a, panels[a]) for a in args.algos],
        out / f"{name}.png",
        radius=toy_bandit.MODE_RADIUS,
        centres=centres,
    )
    print(f"wrote {out / name}.csv, .md and .png")


if __name__ == "__main__":
    main()
