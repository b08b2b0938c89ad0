"""A planner (Diffuser or Decision Diffuser) on a locomotion dataset: the final score beside the
offline table, and the fast planning preset against the official planning settings on the same
model and episodes.

Reads a `diffrl train diffuser|decision-diffuser --dataset hopper-...` run directory (its
preset plans at the fast settings) and writes, under --out:
    NAME.csv / .md     the final checkpoint's score on --episodes episodes (the run's planning
                       settings); the same model at --compare-checkpoint evaluated with the fast
                       and with the official planning settings on the same --compare-episodes
                       episodes (paired: same seeds); every training evaluation; and the offline
                       table's rows for the same dataset (docs/results/offline_seed0.csv)
    NAME_curve.png     normalised score against training steps, the offline algorithms' final
                       scores as horizontal lines

Each evaluation is the output of `diffrl eval RUN --json` with the same settings, cached under
RUN/evals/ and reused when its run, checkpoint, seed, episodes and overrides match, so a long
evaluation (the official settings decide in about 1 s here) can be run once by the CLI, e.g.

    diffrl eval RUN --checkpoint 60000 --episodes 3 --seed 0 --set n_plans=64 --set sampler=ddpm \
        --set sampling_steps=20 --set guide_steps=2 --set t_stopgrad=4 --set warm_start=0 --json \
        > RUN/evals/official_60000_3_0.json

Run: python benchmarks/planner_locomotion.py --run RUN_DIR [--episodes 30]
      [--compare-checkpoint STEP --compare-episodes 3 (0: no comparison)] [--out docs/results]
      [--name NAME]
(NAME: diffuser_hopper / decision_diffuser_hopper by default, from the run's algorithm)
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from diffrl.run import RunDir

# The released planning settings per algorithm. Diffuser (config/locomotion.py): t_stopgrad as
# the hopper medium-expert preset has it; guide_scale is the run's (the official one for the
# dataset). Decision Diffuser (config/locomotion_config.py): one plan by DDPM over all of its
# diffusion steps, no warm start; target return and guidance weight are the run's.
OFFICIAL = {
    "diffuser": {
        "n_plans": 64,
        "sampler": "ddpm",
        "sampling_steps": 20,
        "guide_steps": 2,
        "t_stopgrad": 4,
        "warm_start": 0.0,
    },
    "decision-diffuser": {"sampler": "ddpm", "sampling_steps": 0, "warm_start": 0.0},
}
LABELS = {"diffuser": "Diffuser", "decision-diffuser": "Decision Diffuser"}


def describe(config: Any, sets: dict[str, str] | None = None) -> str:
    """The run's training budget and planning settings (with `sets` changed), in one paragraph."""
    preset = "the run's preset" + (
        " with " + ", ".join(f"{k}={v}" for k, v in sets.items()) if sets else ""
    )
    if config.algo == "diffuser":
        return (
            f"{config.value_steps:,} value steps, then {config.steps - config.value_steps:,} "
            f"trajectory-model steps (batch {config.batch_size}, H {config.horizon}, width "
            f"{config.dim}). Planning: {preset} (n_plans {config.n_plans}, "
            f"{config.sampler} {config.sampling_steps} steps, guide_steps {config.guide_steps}, "
            f"t_stopgrad {config.t_stopgrad}, warm_start {config.warm_start}, guide_scale "
            f"{config.guide_scale})."
        )
    return (
        f"{config.steps:,} steps (batch {config.batch_size}, H {config.horizon}, width "
        f"{config.dim}, {config.diffusion_steps} diffusion steps). Planning: {preset} "
        f"({config.sampler} {config.sampling_steps} steps, warm_start {config.warm_start}, "
        f"target_return {config.target_return}, guidance_weight {config.guidance_weight}, "
        + (
            f"returns / {config.returns_scale:g})."
            if config.returns_scale
            else "returns / the data's largest return-to-go, so 1.0 is the data's best)."
        )
    )


def _norm(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as comparable values: '64', 64 and 64.0 are the same setting."""
    out = {}
    for k, v in settings.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = str(v)
    return out


def cached_eval(
    run_dir: Path, name: str, checkpoint: str, episodes: int, seed: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    """`diffrl eval --json`'s output for these settings: from RUN/evals/NAME.json or computed."""
    from diffrl.api import load
    from diffrl.fileio import atomic_write_json

    path = run_dir / "evals" / f"{name}.json"
    run = load(run_dir, checkpoint, "cpu")
    if path.exists():
        out = json.loads(path.read_text())
        same = (
            out.get("checkpoint_step") == run.step
            and out.get("seed") == seed
            and out.get("episodes") == episodes
            and _norm(out.get("overrides") or {}) == _norm(overrides)
        )
        if same:
            print(f"reusing {path}", flush=True)
            return out
        print(f"{path} has other settings: evaluating again", flush=True)
    run.progress = sys.stderr.isatty()
    out = run.evaluation(episodes, seed, save=False, **overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, out)
    return out


def expert_share(returns: list[float], threshold: float = 3000.0) -> str:
    """Episodes with a return above `threshold` (hopper: ran like the expert) as 'k of n'."""
    return f"{sum(r > threshold for r in returns)} of {len(returns)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None, help="default: the CLI's eval seed")
    parser.add_argument("--compare-checkpoint", default=None, help="STEP (default: latest)")
    parser.add_argument(
        "--compare-episodes", type=int, default=3, help="0: no fast-against-official comparison"
    )
    parser.add_argument("--compare-seed", type=int, default=0)
    parser.add_argument("--offline", type=Path, default=Path("docs/results/offline_seed0.csv"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--name", default=None, help="default: ALGO_hopper")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a planning setting for the final evaluation (as `diffrl eval --set`)",
    )
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffrl.api import load
    from diffrl.config import parse_set_args
    from diffrl.errors import ConfigError
    from diffrl.run import eval_seed
    from diffrl.runtime import set_threads

    set_threads(args.threads)
    run = load(args.run, "latest", "cpu")
    try:
        sets = parse_set_args(args.set)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    config, default_seed = run.config, eval_seed(run.config.seed, "eval")
    if config.algo not in OFFICIAL:
        raise SystemExit(f"error: {args.run} is a {config.algo} run, not a planner's")
    official, label = OFFICIAL[config.algo], LABELS[config.algo]
    # Hopper-medium-expert's episodes are either expert-like (return above 3,000) or not.
    hme = config.dataset.startswith("hopper-medium-expert")
    args.name = args.name or f"{config.algo.replace('-', '_')}_hopper"
    seed = default_seed if args.seed is None else args.seed
    tag = "".join(f"_{k}={v}" for k, v in sorted(sets.items()))
    final = cached_eval(
        args.run,
        f"final_{run.step}_{args.episodes}_{seed}{tag}",
        "latest",
        args.episodes,
        seed,
        sets,
    )
    print(json.dumps({k: final[k] for k in ("checkpoint_step", "normalized_score")}), flush=True)

    ckpt = args.compare_checkpoint or "latest"
    compare = args.compare_episodes > 0
    compare_step = load(args.run, ckpt, "cpu").step if compare else run.step
    paired = {}
    settings = (("fast (the preset)", {}), ("official", official))
    for setting, overrides in settings if compare else ():
        tag = "fast" if not overrides else "official"
        name = f"{tag}_{compare_step}_{args.compare_episodes}_{args.compare_seed}"
        paired[setting] = cached_eval(
            args.run, name, ckpt, args.compare_episodes, args.compare_seed, overrides
        )
        print(setting, json.dumps(paired[setting]["returns"]), flush=True)

    curve = []
    for row in RunDir(args.run).metrics():
        if "eval/normalized_score" in row:
            curve.append(
                (row["step"], row["eval/normalized_score"], row["eval/normalized_score_std"])
            )
    offline = []
    if args.offline.exists():
        with open(args.offline) as f:
            offline = [r for r in csv.DictReader(f) if r["dataset"] == config.dataset]

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "name", "step", "episodes", "score", "score_std", "return_mean"])
        w.writerow(
            [
                "final",
                config.algo,
                final["checkpoint_step"],
                final["episodes"],
                final["normalized_score"],
                final["normalized_score_std"],
                final["return_mean"],
            ]
        )
        for setting, r in paired.items():
            w.writerow(
                [
                    "paired",
                    setting,
                    r["checkpoint_step"],
                    r["episodes"],
                    r["normalized_score"],
                    r["normalized_score_std"],
                    r["return_mean"],
                ]
            )
        for step, score, std in curve:
            w.writerow(["training_eval", config.algo, step, config.eval_episodes, score, std, ""])
        for r in offline:
            w.writerow(
                [
                    "offline",
                    r["algo"],
                    r["final_step"],
                    r["final_n_episodes"],
                    r["final_n_score"],
                    r["final_n_std"],
                    "",
                ]
            )

    fig, ax = plt.subplots(figsize=(6, 3.6))
    if curve:
        s, m, sd = zip(*curve, strict=True)
        ax.errorbar(s, m, yerr=sd, marker="o", capsize=3, label=f"{label} (training evals)")
    ax.errorbar(
        [final["checkpoint_step"]],
        [final["normalized_score"]],
        yerr=[final["normalized_score_std"]],
        marker="s",
        color="k",
        capsize=3,
        label=f"{label} final ({final['episodes']} episodes)",
    )
    for i, r in enumerate(offline):
        ax.axhline(
            float(r["final_n_score"]),
            ls="--",
            lw=1,
            color=f"C{i + 1}",
            label=f"{r['algo']} at {int(r['final_step']) // 1000}k",
        )
    ax.set_xlabel(
        "gradient steps (value stage, then trajectory model)"
        if config.algo == "diffuser"
        else "gradient steps"
    )
    ax.set_ylabel("normalised score")
    ax.set_title(config.dataset)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out / f"{args.name}_curve.png", dpi=120)

    command = "python benchmarks/planner_locomotion.py " + " ".join(
        "RUN" if a == str(args.run) else shlex.quote(a) for a in sys.argv[1:]
    )
    lines = [
        f"# {label} on {config.dataset}",
        "",
        f"Run `{args.run.name}`: {describe(config, sets)}",
        "",
        f"## Final: step {final['checkpoint_step']:,}, {final['episodes']} episodes "
        f"(seeds from {seed})",
        "",
        "| algorithm | normalised score |" + (" episodes above 3,000 return |" if hme else ""),
        "| --- | --- |" + (" --- |" if hme else ""),
        f"| **{label}** (planner, fast preset) | **{final['normalized_score']:.1f}** ± "
        f"{final['normalized_score_std']:.1f} |"
        + (f" {expert_share(final['returns'])} |" if hme else ""),
    ]
    for r in offline:
        lines.append(
            f"| {r['algo']} ({int(r['final_step']) // 1000}k steps, offline table) | "
            f"{float(r['final_n_score']):.1f} ± {float(r['final_n_std']):.1f} |"
            + (" |" if hme else "")
        )
    if paired:
        lines += [
            "",
            f"## Fast preset against the official planning settings: step {compare_step:,}, the "
            f"same {args.compare_episodes} episodes (seeds from {args.compare_seed})",
            "",
            f"Official: {official} (the rest is the run's). An evaluation steps its "
            "episodes together, so each decision plans for all of them at once. A cached "
            "evaluation is the output of `diffrl eval RUN --checkpoint STEP --episodes N --seed S "
            "--set KEY=VALUE ... --json`, run with these settings.",
            "",
            "| planning | normalised score | returns |",
            "| --- | --- | --- |",
        ]
        for setting, r in paired.items():
            rets = ", ".join(f"{x:.0f}" for x in r["returns"])
            lines.append(
                f"| {setting} | {r['normalized_score']:.1f} ± {r['normalized_score_std']:.1f} "
                f"| {rets} |"
            )
    lines += [
        "",
        "## Training evaluations (fast preset)",
        "",
        "| step | normalised score |",
        "| --- | --- |",
    ]
    lines += [f"| {s:,} | {m:.1f} ± {sd:.1f} |" for s, m, sd in curve]
    lines += ["", f"![curve]({args.name}_curve.png)", "", "Command:", "", "```", command, "```", ""]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print(f"wrote {args.out / args.name}.csv, .md and _curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
