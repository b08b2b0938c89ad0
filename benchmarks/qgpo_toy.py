"""QGPO on the toy bandit: samples at guidance scales 0, 1, 3 and 10 from one trained run.

Writes docs/results/qgpo_toy.{csv,md,png}. Usage:

    .venv/bin/python benchmarks/qgpo_toy.py --seeds 0
    .venv/bin/python benchmarks/qgpo_toy.py --seeds 0 --precision bf16   # -> qgpo_toy_bf16.*

Each run is exactly `diffrl train qgpo --dataset toy-bandit --seed S` (the preset), then the
final checkpoint is evaluated at each scale as `diffrl eval RUN --set guidance_scale=X` does
(1000 samples, evaluation seed S + 20000). Runs are kept (and resumed) under --runs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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

MODES = ("left_up", "left_bottom", "right_up", "right_bottom", "off_mode")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0, 10.0])
    p.add_argument("--out", default="docs/results")
    p.add_argument("--runs", default="runs/bench-toy", help="runs are kept (and reused) here")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args()
    tag = "" if args.precision == "fp32" else f"_{args.precision}"
    name = f"qgpo_toy{tag}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, panels = [], []
    preset_clip = make_config("qgpo", "toy-bandit", {}).clip_x0
    for seed in args.seeds:
        run_dir = Path(args.runs) / f"qgpo-s{seed}{tag.replace('_', '-')}"
        seconds = float("nan")
        if RunDir(run_dir).has_config():
            train(run_dir, resume=True, progress=True)  # no-op when already finished
        else:
            config = make_config("qgpo", "toy-bandit", {"seed": seed, "precision": args.precision})
            run_dir, dataset = start_run(config, run_dir)
            t0 = time.perf_counter()
            train(run_dir, dataset=dataset, progress=True)
            seconds = time.perf_counter() - t0
        # The preset's sampler, then the official one (no x0 clamp) on the same weights.
        for clip in dict.fromkeys((bool(preset_clip), False)):
            agent, config, _, step = load_agent(run_dir, overrides={"clip_x0": clip})
            device = next(agent.parameters()).device
            for scale in args.scales:
                cfg = dataclasses.replace(config, guidance_scale=scale, eval_sweep="")
                agent.guidance_scale = scale
                result = evaluate(agent, cfg, 0, eval_seed(seed, "eval"), device)
                fr = result["mode_fractions"]
                rows.append(
                    {
                        "seed": seed,
                        "clip_x0": clip,
                        "guidance_scale": scale,
                        "steps": step,
                        "train_seconds": round(seconds, 1) if seconds == seconds else "n/a",
                        "reward_mean": round(result["reward_mean"], 3),
                        **{m: round(fr[m], 3) for m in MODES},
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
                if seed == args.seeds[0] and clip == preset_clip:
                    gen = torch.Generator(device=device).manual_seed(eval_seed(seed, "eval"))
                    obs = torch.zeros((1000, 2), device=device)
                    with precision_scope(config.precision, device):
                        samples = agent.act(obs, gen).cpu().numpy()
                    panels.append((f"QGPO, guidance scale {scale:g}", samples))

    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Toy bandit: QGPO's energy guidance at several scales"
        + (f" ({args.precision})" if tag else ""),
        "",
        "Fractions of 1000 sampled actions within 0.2 of each mode's centre, and the mean",
        "reward of the sampled actions' modes (off-mode = 0), for one trained QGPO run sampled",
        "at each guidance scale. Behaviour data: 10,000 actions, 25 % per mode; mode rewards",
        "3.0 / 0.0 / 1.5 / 5.0 (left_up / left_bottom / right_up / right_bottom) + N(0, 0.5^2).",
        "Preset: `diffrl config qgpo --dataset toy-bandit`. `clip_x0`: the sampler clamps each",
        "x0 estimate to the action box (the preset's sampler); false is the official sampler,",
        "run on the same weights. The figure shows the preset's sampler.",
        "",
        "Command: `.venv/bin/python benchmarks/qgpo_toy.py --seeds "
        + " ".join(map(str, args.seeds))
        + (f" --precision {args.precision}" if tag else "")
        + "`. Train seconds are n/a for runs reused from --runs.",
        "",
        "| seed | clip_x0 | scale | steps | train s | left_up | left_bottom | right_up "
        "| right_bottom | off_mode | reward_mean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {str(r['clip_x0']).lower()} | {r['guidance_scale']:g} | {r['steps']} "
            f"| {r['train_seconds']} | "
            + " | ".join(f"{r[m]:.3f}" for m in MODES)
            + f" | {r['reward_mean']:.3f} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    data = resolve("toy-bandit").actions
    plot_toy_actions(
        data,
        panels,
        out / f"{name}.png",
        radius=toy_bandit.MODE_RADIUS,
        centres=[c for c, _ in toy_bandit.MODES.values()],
    )
    print(f"wrote {out}/{name}.csv, .md and .png")


if __name__ == "__main__":
    main()
