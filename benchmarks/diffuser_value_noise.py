"""The seed notes' question 2: must Diffuser's value guide be trained on noised trajectories?

Diffuser guides each denoising step with grad V(x_t, t), so the official value function is
trained on noised windows x_t with their noise level t. The question: would a value trained on
clean windows (an ordinary return regressor) guide as well? This script answers it on one
trained Diffuser run, with everything but the value's training inputs held fixed:

1. the clean value: the run's value stage again, same data, seed, batch, learning rate and
   number of steps, with `value_noise=false` (trained here into --clean, resumable);
2. how well each value predicts the return from x_t at each noise level t (RMSE, correlation,
   on windows drawn from the training data with a fixed seed); the clean value is asked about
   x_t as if it were clean (t = 0), as the planner asks it;
3. the same trajectory model evaluated on the same episodes guided by each value, and unguided
   (one plan, guide_scale 0), at the planning settings given (default: the fast preset).

Writes OUT/NAME.csv (one row per value and noise level, and one per evaluation) and
OUT/NAME.md (both tables and the command).

Run: python benchmarks/diffuser_value_noise.py --run RUN_DIR --clean CLEAN_DIR
      [--episodes 10] [--fast | --set key=value ...] [--out docs/results]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch


def train_clean(run_dir: Path, clean_dir: Path, progress: bool) -> None:
    """The run's value stage again with value_noise=false, into `clean_dir` (resumes)."""
    from diffrl import api
    from diffrl.checkpoint import list_checkpoints
    from diffrl.run import load_run

    config, _, _ = load_run(run_dir)
    if not config.value_noise:
        raise SystemExit(f"error: {run_dir} already trained its value on clean windows")
    steps = config.value_steps
    if clean_dir.exists() and list_checkpoints(clean_dir):
        if max(list_checkpoints(clean_dir)) >= steps:
            return
        api.resume(clean_dir, progress=progress)
        return
    clean = dataclasses.replace(
        config, value_noise=False, steps=steps, eval_every=0, eval_episodes=1
    )
    api.fit(clean, clean_dir, progress=progress)


def value_fit(run_agent, clean_agent, dataset, n: int, seed: int) -> list[dict]:
    """RMSE and correlation of each value's prediction of the return, per noise level."""
    from diffrl.diffusion import q_sample

    sampler = run_agent.batch_sampler(dataset, torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    batch = sampler.sample(n, generator)
    x0 = run_agent.trajectories(batch)
    target = batch.returns[:, 0]
    rows = []
    T = run_agent.config.diffusion_steps
    levels = sorted({0, T // 4, T // 2, 3 * T // 4, T - 1})
    for t in levels:
        tt = torch.full((n,), t, dtype=torch.long)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = q_sample(run_agent.schedule, x0, tt, noise) if t > 0 else x0
        with torch.no_grad():
            for name, agent in (("noised", run_agent), ("clean", clean_agent)):
                pred = agent._values(x_t, tt)
                err = float(torch.sqrt(((pred - target) ** 2).mean()))
                corr = float(np.corrcoef(pred.numpy(), target.numpy())[0, 1])
                rows.append({"value": name, "t": t, "rmse": err, "corr": corr})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a Diffuser run (noised value)")
    parser.add_argument("--clean", required=True, type=Path, help="where the clean value trains")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20_000, help="first evaluation seed")
    parser.add_argument("--fast", action="store_true", help="plan at the fast preset")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--windows", type=int, default=4096, help="windows for the value fit")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--name", default="diffuser_value_noise")
    args = parser.parse_args()

    from diffrl.algos import diffuser
    from diffrl.api import load_dataset
    from diffrl.checkpoint import load_model, resolve_checkpoint
    from diffrl.evaluate import evaluate
    from diffrl.run import load_agent
    from diffrl.runtime import set_threads

    set_threads(args.threads)
    progress = sys.stderr.isatty()
    train_clean(args.run, args.clean, progress)

    settings = dict(diffuser.FAST) if args.fast else {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = value
    run_agent, config, info, step = load_agent(args.run, "latest", settings, "cpu")
    clean_agent, _, _, _ = load_agent(args.run, "latest", settings, "cpu")
    # The clean value's weights in the same planner; asked about x_t as if clean (t = 0).
    tensors, clean_step = load_model(resolve_checkpoint(args.clean, "latest"), torch.device("cpu"))
    value = {k[len("value.") :]: v for k, v in tensors.items() if k.startswith("value.")}
    clean_agent.value.load_state_dict(value)
    clean_agent.config = dataclasses.replace(clean_agent.config, value_noise=False)

    dataset = load_dataset(config.dataset)
    fit = value_fit(run_agent, clean_agent, dataset, args.windows, seed=0)
    for row in fit:
        print(json.dumps(row), flush=True)

    meta = info.get("dataset_metadata")
    unguided = {**settings, "guide_scale": 0.0, "n_plans": 1}
    plain_agent, plain_config, _, _ = load_agent(args.run, "latest", unguided, "cpu")
    scores = []
    for name, agent, cfg in (
        ("noised value (official)", run_agent, config),
        ("clean value", clean_agent, clean_agent.config),
        ("no guide (1 plan)", plain_agent, plain_config),
    ):
        result = evaluate(agent, cfg, args.episodes, args.seed, torch.device("cpu"), meta, progress)
        row = {
            "guide": name,
            "score": result.get("normalized_score"),
            "score_std": result.get("normalized_score_std"),
            "return": result.get("return_mean"),
            "length": result.get("length_mean"),
            "episodes": args.episodes,
        }
        scores.append(row)
        print(json.dumps(row), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "value", "t", "rmse", "corr", "score", "score_std", "return"])
        for r in fit:
            writer.writerow(["value_fit", r["value"], r["t"], r["rmse"], r["corr"], "", "", ""])
        for r in scores:
            writer.writerow(
                ["eval", r["guide"], "", "", "", r["score"], r["score_std"], r["return"]]
            )
    shown = {
        k: getattr(config, k)
        for k in (
            "n_plans",
            "sampler",
            "sampling_steps",
            "guide_scale",
            "guide_steps",
            "t_stopgrad",
        )
    }
    named = {str(args.run): "RUN", str(args.clean): "CLEAN"}
    command = "python benchmarks/diffuser_value_noise.py " + " ".join(
        named.get(a, shlex.quote(a)) for a in sys.argv[1:]
    )
    lines = [
        f"# Diffuser: a value guide trained on noised or clean trajectories ({config.dataset})",
        "",
        f"Trajectory model: `{args.run.name}` at step {step:,}; both values: "
        f"{config.value_steps:,} steps, batch {config.value_batch_size}, lr {config.value_lr} "
        f"(clean: step {clean_step:,}). Planning: {shown}. {args.episodes} episodes each, "
        f"seeds from {args.seed}.",
        "",
        "| guide | normalised score | return | episode length |",
        "| --- | --- | --- | --- |",
    ]
    for r in scores:
        lines.append(
            f"| {r['guide']} | {r['score']:.1f} ± {r['score_std']:.1f} | {r['return']:.1f} | "
            f"{r['length']:.0f} |"
        )
    lines += [
        "",
        f"How well each value predicts the return of {args.windows:,} training windows from x_t "
        "(the clean value asked at t = 0, as the planner asks it):",
        "",
        "| noise level t | noised: RMSE | noised: corr | clean: RMSE | clean: corr |",
        "| --- | --- | --- | --- | --- |",
    ]
    by = {(r["value"], r["t"]): r for r in fit}
    for t in sorted({r["t"] for r in fit}):
        n, c = by[("noised", t)], by[("clean", t)]
        lines.append(
            f"| {t} | {n['rmse']:.1f} | {n['corr']:.3f} | {c['rmse']:.1f} | {c['corr']:.3f} |"
        )
    lines += ["", "Command:", "", "```", command, "```", ""]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print(f"wrote {args.out / args.name}.csv and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
