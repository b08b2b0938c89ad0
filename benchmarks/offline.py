"""Offline results: every algorithm on the same datasets, with the same gradient-step budget.

For each (dataset, algo, seed): `diffrl train ALGO --dataset DATASET --steps STEPS --seed S`
into RUNS/DATASET/ALGO-sS (resumed if it is there: a killed benchmark continues where each run
stopped), then the final and selected evaluations are read from the run directory. Writes
OUT/offline.csv, OUT/offline.md (with the published D4RL numbers beside, marked as a different
dataset) and OUT/offline_curves_DATASET.png.

    .venv/bin/python benchmarks/offline.py --steps 100000 \\
        --datasets hopper-medium-v0 hopper-medium-expert-v0 halfcheetah-medium-v0 \\
        --algos diffusion-ql qgpo diffusion-bc td3bc iql bc [--seeds 0] [--runs runs/offline]

Maze2d (goal-reaching) datasets, as Diffuser's table:

    .venv/bin/python benchmarks/offline.py --steps 40000 --datasets maze2d-umaze-v0 \\
        --algos diffuser diffusion-ql iql td3bc bc --set eval_goal=dataset --name maze \\
        --runs runs/maze

`--set KEY=VALUE` goes to every run's config (here D4RL's single fixed goal in the training
evaluations); `--name` names the outputs (OUT/NAME.csv, NAME.md, NAME_curves_DATASET.png). On a
maze2d dataset the checkpoint at the budget is also evaluated on the multi-task variant (a new
goal each episode, `eval_goal=''`), the `multi-task` column.

The table is rewritten after every run; `--report` writes it from the runs there are without
training (a run short of the budget is marked unfinished, with its last evaluated step).

The `final` column is a separate evaluation of the checkpoint at the budget with
`--final-episodes` episodes (30 by default; seeds 30,000 + seed onwards, none of them a training
evaluation's), cached in RUN/final_eval_N.json. The training-time evaluations have 10 episodes
each, and on hopper-medium-expert, where an episode either runs like the expert (~3,400) or
falls like the medium policy (~1,100), one of them swings by tens of points between
neighbouring checkpoints.

QGPO's two gradient stages get STEPS each (see `budget`); its score is that of the best
guidance scale of the preset's sweep at each evaluation (docs/algorithms/qgpo.md).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from diffrl.evaluate import eval_score
from diffrl.report import final_eval
from diffrl.run import RunDir, make_config, start_run
from diffrl.train import train

# Published normalised D4RL (v2) scores, for orientation only: a different dataset (D4RL's,
# made with MuJoCo-py v2 environments and other behaviour policies). Diffusion-QL's and QGPO's
# from their papers (shared/design/REFERENCES.md). The baselines' (BC, TD3+BC, IQL): Table 1 of
# the IQL paper (Kostrikov et al. 2022, arXiv 2110.06169), which Diffusion-QL's Table 1 also
# quotes; checked against the copy of that table in Diffuser's plotting/locomotion_scores.py.
# Diffusion-BC has no published D4RL number.
PUBLISHED = {
    "bc": {"hopper-medium": 52.9, "hopper-medium-expert": 52.5, "halfcheetah-medium": 42.6},
    "td3bc": {"hopper-medium": 59.3, "hopper-medium-expert": 98.0, "halfcheetah-medium": 48.3},
    "iql": {
        "hopper-medium": 66.3,
        "hopper-medium-expert": 91.5,
        "halfcheetah-medium": 47.4,
        # maze2d (single-task): the Diffuser paper's table (REFERENCES.md, "Diffuser").
        "maze2d-umaze": 47.4,
        "maze2d-medium": 34.9,
        "maze2d-large": 58.6,
    },
    "diffuser": {"maze2d-umaze": 113.9, "maze2d-medium": 121.5, "maze2d-large": 123.0},
    "qgpo": {  # REFERENCES.md: the QGPO paper's table
        "hopper-medium": 98.0,
        "hopper-medium-replay": 96.9,
        "hopper-medium-expert": 108.0,
        "halfcheetah-medium": 54.1,
        "halfcheetah-medium-replay": 47.6,
        "halfcheetah-medium-expert": 93.5,
    },
    "diffusion-ql": {
        "hopper-medium": 90.5,
        "hopper-medium-replay": 101.3,
        "hopper-medium-expert": 111.1,
        "halfcheetah-medium": 51.1,
        "halfcheetah-medium-replay": 47.8,
        "halfcheetah-medium-expert": 96.8,
    },
}


def budget(algo: str, steps: int) -> dict:
    """The config keys that give `algo` the budget of `steps` gradient steps.

    QGPO trains in two gradient stages (behaviour model; then critic and energy model): each
    gets `steps`, so its critic/energy stage is as long as the other algorithms' training.
    """
    if algo == "qgpo":
        return {"behavior_steps": steps, "steps": 2 * steps}
    return {"steps": steps}


def run_one(
    dataset: str,
    algo: str,
    seed: int,
    steps: int,
    eval_every: int,
    runs: Path,
    settings: dict[str, str] | None = None,
) -> Path:
    run_dir = runs / dataset / f"{algo}-s{seed}"
    if RunDir(run_dir).has_config():
        train(run_dir, resume=True, steps=budget(algo, steps)["steps"])
    else:
        over = {**(settings or {}), "seed": seed, **budget(algo, steps), "eval_every": eval_every}
        over["save_every"] = eval_every
        config = make_config(algo, dataset, over)
        run_dir, data = start_run(config, run_dir)
        train(run_dir, dataset=data)
    return run_dir


def training_evals(run_dir: Path) -> list[tuple[int, float, float | None]]:
    """(step, score, std) of each evaluation during training, scored as `eval_score` scores a
    result (normalised score, else mean return or reward: the toy bandit has no references)."""
    out = []
    for m in RunDir(run_dir).metrics():
        result = {k.removeprefix("eval/"): v for k, v in m.items() if k.startswith("eval/")}
        score = eval_score(result)
        if score is not None:
            out.append((m["step"], score, result.get("normalized_score_std")))
    return out


def summarise(run_dir: Path) -> dict:
    evals = training_evals(run_dir)
    final = evals[-1] if evals else (None, None, None)
    out = {
        "final_step": final[0],
        "final_score": final[1],
        "final_std": final[2],
        "best_score": max((e[1] for e in evals), default=None),
    }
    chosen = RunDir(run_dir).selection_choices().get("selected")
    if chosen:
        out["selected_step"], out["selected_score"] = chosen["step"], chosen["score"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["hopper-medium-v0", "halfcheetah-medium-v0"])
    p.add_argument(
        "--algos", nargs="+", default=["diffusion-ql", "diffusion-bc", "td3bc", "iql", "bc"]
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument(
        "--final-episodes",
        type=int,
        default=30,
        help="episodes of the separate evaluation of the checkpoint at the budget (0 = none)",
    )
    p.add_argument("--runs", default="runs/offline")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--name", default="offline", help="output file stem (NAME.csv, NAME.md)")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config key for every new run (repeatable)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="train nothing: write the table from the runs there are (unfinished ones marked; "
        "finished ones are given their final evaluation if it is not cached yet)",
    )
    args = p.parse_args()
    if args.final_episodes < 0:
        p.error(f"--final-episodes must be >= 0, got {args.final_episodes}")
    bad = [kv for kv in args.settings if "=" not in kv]
    if bad:
        p.error(f"--set needs KEY=VALUE, got {bad[0]!r}")
    args.settings = dict(kv.split("=", 1) for kv in args.settings)
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        write_report(args, runs, out)
        return
    for dataset in args.datasets:
        for algo in args.algos:
            for seed in args.seeds:
                run_one(dataset, algo, seed, args.steps, args.eval_every, runs, args.settings)
                # The table is rewritten after every run, so a stopped benchmark leaves one.
                write_report(args, runs, out)


def collect(args: argparse.Namespace, runs: Path) -> list[dict]:
    """One row per (dataset, algo, seed) whose run directory exists, finished or not."""
    rows = []
    for dataset in args.datasets:
        for algo in args.algos:
            for seed in args.seeds:
                run_dir = runs / dataset / f"{algo}-s{seed}"
                if RunDir(run_dir).has_config():
                    row = {"dataset": dataset, "algo": algo, "seed": seed, **summarise(run_dir)}
                    end = budget(algo, args.steps)["steps"]
                    row["done"] = (row["final_step"] or 0) >= end
                    if row["done"] and args.final_episodes > 0:
                        result = final_eval(run_dir, end, args.final_episodes)
                        row["final_n_score"] = eval_score(result)
                        row["final_n_std"] = result.get("normalized_score_std")
                        row["final_n_episodes"] = args.final_episodes
                        if dataset.startswith("maze2d-"):
                            multi = final_eval(run_dir, end, args.final_episodes, multi_task=True)
                            row["multi_score"] = eval_score(multi)
                            row["multi_std"] = multi.get("normalized_score_std")
                    rows.append(row)
    return rows


def write_report(args: argparse.Namespace, runs: Path, out: Path) -> None:
    rows = collect(args, runs)
    if not rows:
        return
    mazes = any(r["dataset"].startswith("maze2d-") for r in rows)
    with open(out / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}, key=str))
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [
        f"# Offline results at {args.steps:,} gradient steps",
        "",
        "Normalised score (D4RL reference returns), one row per seed. `final`: the checkpoint at "
        f"the budget evaluated separately on {args.final_episodes} episodes (mean ± std over "
        "episodes); the other columns come from the evaluations during training, every "
        f"{args.eval_every:,} steps with 10 episodes each (`last`: the one at the budget). "
        "Datasets are "
        "diffrl's built-ins (made here in Gymnasium MuJoCo v5 or PointMaze), not D4RL's: the "
        "published column is D4RL v2 at each paper's own budget, for orientation only. A run "
        "that has not reached the budget yet has no `final` score and shows the step of its "
        "last evaluation in `last`.",
        "",
        "Command: `.venv/bin/python benchmarks/offline.py --steps "
        + f"{args.steps} --datasets {' '.join(args.datasets)} --algos {' '.join(args.algos)} "
        + f"--seeds {' '.join(map(str, args.seeds))}"
        + "".join(f" --set {k}={v}" for k, v in args.settings.items())
        + (f" --name {args.name}" if args.name != "offline" else "")
        + "`",
        "",
        f"| dataset | algo | seed | final ({args.final_episodes} episodes) "
        + ("| multi-task final " if mazes else "")
        + "| last (10 episodes) "
        "| best during training | selected (offline rule) | published D4RL (different data) |",
        "| --- " * (9 if mazes else 8) + "|",
    ]
    for r in rows:
        base = r["dataset"].rsplit("-v", 1)[0]
        pub = PUBLISHED.get(r["algo"], {}).get(base)
        last = fmt(r["final_score"])
        final = ""
        if r.get("final_n_score") is not None:
            final = f"**{r['final_n_score']:.1f}**"
            if r.get("final_n_std") is not None:
                final += f" ± {r['final_n_std']:.1f}"
        if not r["done"]:
            at = r["final_step"]
            last += f" (at {at:,}, unfinished)" if at else "(unfinished, no evaluation yet)"
        multi = ""
        if r.get("multi_score") is not None:
            multi = f"**{r['multi_score']:.1f}**"
            if r.get("multi_std") is not None:
                multi += f" ± {r['multi_std']:.1f}"
        lines.append(
            f"| {r['dataset']} | {r['algo']} | {r['seed']} | {final} | "
            + (f"{multi} | " if mazes else "")
            + f"{last} "
            f"| {fmt(r['best_score'])} | {fmt(r.get('selected_score'))} | {fmt(pub)} |"
        )
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    _plot(rows, runs, out, args.name)
    print(f"wrote {out / args.name}.csv and {out / args.name}.md", flush=True)


def _plot(rows: list[dict], runs: Path, out: Path, name: str = "offline") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for dataset in sorted({r["dataset"] for r in rows}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            if r["dataset"] != dataset:
                continue
            run_dir = runs / dataset / f"{r['algo']}-s{r['seed']}"
            evals = training_evals(run_dir)
            ax.plot(
                [e[0] for e in evals],
                [e[1] for e in evals],
                marker="o",
                label=f"{r['algo']} s{r['seed']}",
            )
        ax.set(title=dataset, xlabel="gradient steps", ylabel="normalised score")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}_curves_{dataset}.png", dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    main()
