"""The seed's question 1: classifier-free conditioning (Decision Diffuser) against a value
"classifier" guide (Diffuser), on the same data, budget and evaluation.

Reads a trained `diffuser` run and a trained `decision-diffuser` run on the same dataset and
evaluates both on the same episodes (same seeds), at the planning settings given (default:
each run's own, i.e. its preset):

1. the normalised score of each and its wall-clock time per decision (environment step
   included);
2. what each is sensitive to: Diffuser's `guide_scale`; Decision Diffuser's `guidance_weight`
   and `target_return`, each swept with the other settings fixed (the same episodes for every
   value);
3. with `--grid`, Decision Diffuser's score over target_return x guidance_weight (a heat map).

Writes OUT/NAME.csv (one row per evaluation), OUT/NAME.md (the tables and the command) and
OUT/NAME_sensitivity.png (score against each swept key), OUT/NAME_grid.png with --grid.

Run (alone on the machine, nothing set by hand, for planning speed):
    python benchmarks/planners.py --diffuser RUN --decision-diffuser RUN
        [--episodes 10] [--guide-scales 0,1e-5,1e-4,1e-3] [--weights 1,1.2,1.8,3]
        [--targets 0.6,0.8,0.9,1,1.1] [--grid] [--out docs/results] [--name planners]
        [--diffuser-set KEY=VALUE ...] [--dd-set KEY=VALUE ...] [--report]

`--report` redraws the tables and figures from OUT/NAME.csv without evaluating again (the
command shown is the one without `--report`, which reproduces the CSV: evaluations are seeded).

`--diffuser-set` / `--dd-set` change a planner's acting settings for every row of it (e.g.
`n_plans=16` for a run trained before its preset sampled 16 plans); they are printed in the
tables. The target-return plot marks the data's best return-to-go in the model's units (the
largest y the model saw in training).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from pathlib import Path
from typing import Any


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def timed_eval(run: Any, episodes: int, seed: int, **settings: Any) -> dict[str, Any]:
    """One evaluation with its wall-clock milliseconds per decision."""
    start = time.perf_counter()
    result = run.evaluate(episodes=episodes, seed=seed, **settings)
    elapsed = time.perf_counter() - start
    steps = max(1.0, result["length_mean"] * result["episodes"])
    return {**result, "ms_per_decision": 1e3 * elapsed / steps}


def data_best_return(run: Any) -> float:
    """The largest return condition y in the run's dataset, in the model's units (what
    target_return means)."""
    from diffrl.api import load_dataset

    agent = run.agent
    rtg = agent.returns_to_go(load_dataset(run.config.dataset))
    return float(rtg.max() / float(agent.returns_scale))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--diffuser", required=True, type=Path)
    p.add_argument("--decision-diffuser", required=True, type=Path)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=20_000, help="first evaluation seed")
    p.add_argument("--guide-scales", default="0,1e-5,1e-4,1e-3")
    p.add_argument("--weights", default="1,1.2,1.8,3")
    p.add_argument("--targets", default="0.6,0.8,0.9,1,1.1")
    p.add_argument("--grid", action="store_true", help="DD: target_return x guidance_weight")
    p.add_argument("--diffuser-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dd-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--name", default="planners")
    p.add_argument("--report", action="store_true", help="redraw from OUT/NAME.csv only")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from diffrl.api import load
    from diffrl.config import parse_set_args
    from diffrl.runtime import set_threads, thread_policy, wait_policy

    set_threads(args.threads)
    diffuser, dd = load(args.diffuser), load(args.decision_diffuser)
    for run, algo in ((diffuser, "diffuser"), (dd, "decision-diffuser")):
        if run.config.algo != algo:
            raise SystemExit(f"error: {run.path} is a {run.config.algo} run, not {algo}")
    if diffuser.config.dataset != dd.config.dataset:
        raise SystemExit(
            f"error: the runs are on different datasets ({diffuser.config.dataset}, "
            f"{dd.config.dataset})"
        )
    rows: list[dict[str, Any]] = []
    fixed = {
        "diffuser": parse_set_args(args.diffuser_set),
        "decision-diffuser": parse_set_args(args.dd_set),
    }

    cached: list[dict[str, Any]] = []
    if args.report:
        csv_path = args.out / f"{args.name}.csv"
        if not csv_path.exists():
            raise SystemExit(f"error: --report: {csv_path} does not exist (run without --report)")
        with open(csv_path, newline="") as f:
            cached = list(csv.DictReader(f))

    def record(algo: str, run: Any, key: str, value: Any, **settings: Any) -> dict[str, Any]:
        if args.report:
            row = cached[len(rows)]
            if (row["algo"], row["key"]) != (algo, key) or str(row["value"]) != str(value):
                raise SystemExit(
                    f"error: --report: row {len(rows) + 1} of the CSV is {row['algo']} "
                    f"{row['key']}={row['value']}, not {algo} {key}={value} (other options?)"
                )
            for k in ("score", "score_std", "return", "length", "ms_per_decision"):
                row[k] = float(row[k])
            row["step"] = int(row["step"])
            rows.append(row)
            return row
        r = timed_eval(run, args.episodes, args.seed, **{**fixed[algo], **settings})
        row = {
            "algo": algo,
            "key": key,
            "value": value,
            "score": r.get("normalized_score"),
            "score_std": r.get("normalized_score_std"),
            "return": r["return_mean"],
            "length": r["length_mean"],
            "ms_per_decision": r["ms_per_decision"],
            "step": run.step,
        }
        rows.append(row)
        print(row, flush=True)
        return row

    base = [
        record("diffuser", diffuser, "preset", ""),
        record("decision-diffuser", dd, "preset", ""),
    ]
    for v in _floats(args.guide_scales):
        record("diffuser", diffuser, "guide_scale", v, guide_scale=v)
    for v in _floats(args.weights):
        record("decision-diffuser", dd, "guidance_weight", v, guidance_weight=v)
    for v in _floats(args.targets):
        record("decision-diffuser", dd, "target_return", v, target_return=v)
    grid: dict[tuple[float, float], float] = {}
    if args.grid:
        for tr in _floats(args.targets):
            for w in _floats(args.weights):
                row = record(
                    "decision-diffuser",
                    dd,
                    "grid",
                    f"{tr},{w}",
                    target_return=tr,
                    guidance_weight=w,
                )
                grid[(tr, w)] = row["score"]

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    best_y = data_best_return(dd)
    keys = [("diffuser", "guide_scale"), ("decision-diffuser", "guidance_weight")]
    keys.append(("decision-diffuser", "target_return"))
    # A sweep given as '' (e.g. --guide-scales '' for a maze, where Diffuser plans unguided)
    # has no panel.
    keys = [(a, k) for a, k in keys if any(r["algo"] == a and r["key"] == k for r in rows)]
    # One y-range for every panel, so that a flat sweep looks flat beside a steep one.
    fig, axes = plt.subplots(
        1, len(keys), figsize=(4.4 * len(keys), 3.6), squeeze=False, sharey=True
    )
    axes = axes[0]
    for ax, (algo, key) in zip(axes, keys, strict=True):
        pts = [r for r in rows if r["algo"] == algo and r["key"] == key]
        xs = [float(r["value"]) for r in pts]
        ys = [r["score"] for r in pts]
        # Error bars: the standard error of the mean over the episodes.
        es = [r["score_std"] / args.episodes**0.5 for r in pts]
        ax.errorbar(range(len(xs)), ys, yerr=es, marker="o", capsize=3)
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        if key == "target_return":
            # Where the data's best return falls between the swept values.
            ax.axvline(np.interp(best_y, xs, range(len(xs))), color="grey", ls="--")
            ax.text(np.interp(best_y, xs, range(len(xs))), min(ys), " data's best", color="grey")
        ax.set_xlabel(key)
        ax.set_ylabel("normalised score")
        ax.set_title(f"{algo}: {key}")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{dd.config.dataset}: sensitivity ({args.episodes} episodes per point, "
        "bars: standard error)"
    )
    fig.tight_layout()
    fig.savefig(args.out / f"{args.name}_sensitivity.png", dpi=120)
    if grid:
        trs, ws = _floats(args.targets), _floats(args.weights)
        z = np.array([[grid[(tr, w)] for w in ws] for tr in trs])
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        im = ax.imshow(z, origin="lower", cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(ws)), [f"{w:g}" for w in ws])
        ax.set_yticks(range(len(trs)), [f"{t:g}" for t in trs])
        ax.set_xlabel("guidance_weight w")
        ax.set_ylabel("target_return")
        for i in range(len(trs)):
            for j in range(len(ws)):
                ax.text(j, i, f"{z[i, j]:.0f}", ha="center", va="center", color="w")
        fig.colorbar(im, ax=ax, label="normalised score")
        ax.set_title(f"Decision Diffuser on {dd.config.dataset}")
        fig.tight_layout()
        fig.savefig(args.out / f"{args.name}_grid.png", dpi=120)

    argv = [a for a in sys.argv[1:] if a != "--report"]
    command = "python benchmarks/planners.py " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        f"# Diffuser against Decision Diffuser on {dd.config.dataset}",
        "",
        f"Same data, same evaluation: {args.episodes} episodes per row, seeds from {args.seed}; "
        f"Diffuser at step {diffuser.step:,}, Decision Diffuser at step {dd.step:,}. Time per "
        "decision: wall clock of the evaluation over its environment steps "
        f"(threads at the end: {torch.get_num_threads()}, {thread_policy()}; OpenMP: "
        f"{wait_policy()}; run it alone on the machine for planning speed). "
        f"The data's best return-to-go is target_return {best_y:.3f} in Decision Diffuser's "
        f"units (returns / {float(dd.agent.returns_scale):g}).",
        "",
        f"Settings changed for every row: Diffuser {fixed['diffuser'] or 'none'}; Decision "
        f"Diffuser {fixed['decision-diffuser'] or 'none'}.",
        "",
        "| planner | settings | normalised score | return | ms per decision |",
        "| --- | --- | --- | --- | --- |",
    ]

    def line(r: dict[str, Any]) -> str:
        what = "preset" if r["key"] == "preset" else f"{r['key']}={r['value']}"
        return (
            f"| {r['algo']} | {what} | {r['score']:.1f} ± {r['score_std']:.1f} | "
            f"{r['return']:.1f} | {r['ms_per_decision']:.1f} |"
        )

    lines += [line(r) for r in base]
    lines += ["", "Sensitivity (one key changed from the preset):", ""]
    lines += ["| planner | settings | normalised score | return | ms per decision |"]
    lines += ["| --- | --- | --- | --- | --- |"]
    lines += [line(r) for r in rows if r["key"] not in ("preset", "grid")]
    if grid:
        lines += ["", f"![target_return x guidance_weight]({args.name}_grid.png)"]
    lines += [
        "",
        f"![sensitivity]({args.name}_sensitivity.png)",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
    ]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print(f"wrote {args.out / args.name}.csv, .md and figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
