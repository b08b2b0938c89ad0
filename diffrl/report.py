"""`diffrl report DIR ...`: results tables with confidence intervals from run directories.

Reads every run under the given directories (a sweep's, or runs made by hand: any run directory
that has logged metrics, `diffrl.run.RunDir`), groups them by (dataset or environment,
algorithm label) and writes, following Agarwal et al. 2021 ("Deep RL at the edge of the
statistical precipice"):

- per dataset: the mean over seeds with a 95 % percentile-bootstrap interval (`bootstrap_ci`);
- across datasets (those with normalised scores, where every algorithm has the same number of
  seeds): the interquartile mean (IQM) and the mean with stratified-bootstrap 95 % intervals, and
  performance profiles, computed with the `rliable` package;
- learning curves: the mean over seeds at each evaluation, a shaded 95 % bootstrap interval.

OUT/NAME.md (tables, with the budget, the evaluation protocol and the number of seeds in the
header), OUT/NAME.csv (one row per run, then one per group), OUT/NAME_curves_SOURCE.png,
OUT/NAME_aggregate.png and OUT/NAME_profiles.png.

A run's score is its evaluation at its budget: the training evaluation logged at the last step,
or with `final_episodes` a separate evaluation of the checkpoint at the budget on that many
episodes (seeds from `eval_seed(seed, "final")`, none a training evaluation's), cached in the
run directory. A run short of its budget is listed as unfinished and left out of the
statistics.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffrl.errors import DiffrlError
from diffrl.fileio import atomic_write_json
from diffrl.run import EVAL_SEED_OFFSETS, RunDir, eval_seed

CONFIDENCE = 0.95


@dataclass
class RunResult:
    path: Path
    label: str  # the algorithm, with a sweep's swept settings (ALGO+KEY=VALUE)
    source: str  # dataset or environment id
    seed: int
    budget: int
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, score) in training
    score: float | None = None  # at the budget
    normalised: bool = False
    episodes: int | None = None  # per evaluation behind `score`

    @property
    def finished(self) -> bool:
        return self.score is not None


# ---------------------------------------------------------------------- statistics
def bootstrap_ci(
    values: np.ndarray, reps: int = 10_000, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values` (n,): resample n with replacement
    `reps` times. One value gives (v, v)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise DiffrlError("bootstrap_ci: no values")
    if values.size == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(reps, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries: the mean of the middle 50 % (rliable's
    `aggregate_iqm`, scipy's trim_mean with 25 % cut at each end)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(scores, dtype=float).ravel(), 0.25))


# ---------------------------------------------------------------------- runs
def _label(run_dir: Path, algo: str) -> str:
    """The sweep's label of the run (ALGO+KEY=VALUE), else its algorithm."""
    return str(RunDir(run_dir).trial().get("label") or algo)


def sweep_trials(paths: list[str | Path]) -> dict[Path, tuple[str, str]]:
    """Every trial of the sweeps at `paths` (a folder holding a sweep's trials.json): its run
    directory -> (trial name, state: pending, queued, running, done or failed)."""
    from diffrl.sweep import TRIALS_FILE

    out: dict[Path, tuple[str, str]] = {}
    for p in paths:
        path = Path(p) / TRIALS_FILE
        if not path.exists():
            continue
        try:
            states = json.loads(path.read_text())
            for name, s in states.items():
                # Where the trial's run is now: a sweep folder may have been moved or copied
                # since (its trial list keeps the paths of the day), and a trial's run lies at
                # SOURCE/LABEL-sSEED inside it.
                stored = Path(s["run_dir"])
                local = Path(p) / stored.parent.name / stored.name
                out[local.resolve()] = (name, str(s.get("state", "?")))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DiffrlError(f"{path}: not a sweep's trial list (malformed JSON)") from None
    return out


def find_runs(paths: list[str | Path], allow_none: bool = False) -> list[Path]:
    """Run directories at or under each path (`RunDir.is_run`), sorted."""
    found: set[Path] = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DiffrlError(f"{p}: no such directory")
        # os.walk follows symbolic links to run directories (rglob does not).
        for root, _, files in os.walk(p, followlinks=True):
            if RunDir.is_run(root, files):
                found.add(Path(root))
    if not found and not allow_none:
        raise DiffrlError(f"no run directories under {', '.join(map(str, paths))}")
    return sorted(found)


def final_eval(
    run_dir: Path,
    step: int,
    episodes: int,
    multi_task: bool = False,
    chosen: dict[str, Any] | None = None,
) -> dict:
    """`episodes`-episode evaluation of the checkpoint at `step`, cached in the run directory;
    `multi_task`: a new goal each episode (the environment's own, `eval_goal=''`).

    A run that swept an acting-time key in its training evaluations (`eval_sweep`, e.g. QGPO's
    guidance scale) is evaluated at the value that its training evaluation at `step` chose
    (`chosen`, on other episodes), not at the best value on these episodes: choosing on the
    episodes that are reported would bias the score upwards."""
    from diffrl.evaluate import evaluate
    from diffrl.run import load_agent, load_run

    path = RunDir(run_dir).final_eval_file(episodes, multi_task)
    overrides: dict[str, Any] = {}
    sweep = str(load_run(run_dir)[0].eval_sweep or "")
    if sweep:
        key = sweep.partition("=")[0].strip()
        if chosen is None:
            chosen = _training_eval(run_dir, step)
        if not chosen or key not in chosen:
            raise DiffrlError(
                f"{run_dir}: its training evaluation at step {step:,} chose no {key} "
                "(eval_sweep); evaluate it with `diffrl eval --sweep` instead"
            )
        overrides = {key: chosen[key], "eval_sweep": ""}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("checkpoint_step") == step and all(
            cached.get(k) == v for k, v in overrides.items() if k != "eval_sweep"
        ):
            return cached
    agent, config, info, at = load_agent(run_dir, str(step), overrides=overrides)
    if multi_task:
        config = dataclasses.replace(config, eval_goal="")
    seed = eval_seed(config.seed, "final")
    device = next(agent.parameters()).device
    print(f"final evaluation of {run_dir} at step {at:,}: {episodes} episodes", flush=True)
    result = evaluate(
        agent, config, episodes, seed, device, info.get("dataset_metadata"), progress=True
    )
    out = {
        "checkpoint_step": at,
        "seed": seed,
        **{k: v for k, v in overrides.items() if k != "eval_sweep"},
        **result,
    }
    atomic_write_json(path, out)
    return out


def _training_eval(run_dir: Path, step: int) -> dict[str, Any]:
    """The training evaluation logged at `step` (keys without `eval/`); {} if none."""
    for m in RunDir(run_dir).metrics():
        if int(m["step"]) == step and any(k.startswith("eval/") for k in m):
            return {k.removeprefix("eval/"): v for k, v in m.items() if k.startswith("eval/")}
    return {}


def read_run(run_dir: Path, final_episodes: int = 0) -> RunResult:
    from diffrl.evaluate import eval_score

    config = RunDir(run_dir).raw_config()
    source = config.get("dataset") or config.get("env_id") or "?"
    budget = int(config.get("steps", 0))
    res = RunResult(
        run_dir, _label(run_dir, config["algo"]), source, int(config.get("seed", 0)), budget
    )
    at_budget: dict[str, Any] | None = None
    for m in RunDir(run_dir).metrics():
        result = {k.removeprefix("eval/"): v for k, v in m.items() if k.startswith("eval/")}
        score = eval_score(result)
        if score is None:
            continue
        res.evals.append((int(m["step"]), score))
        if int(m["step"]) == budget:
            at_budget = result
    if at_budget is None:
        return res
    if final_episodes:
        at_budget = final_eval(run_dir, budget, final_episodes, chosen=at_budget)
    res.score = eval_score(at_budget)
    res.normalised = isinstance(at_budget.get("normalized_score"), (int, float))
    res.episodes = at_budget.get("episodes")
    return res


def unfinished_line(r: RunResult, state_of: dict[Path, str]) -> str:
    """'diffusion-bc on toy-bandit, seed 0, pending: trained to step 1,200 of 3,000, last
    evaluated at step 1,000' (a sweep's trial state where the run is one of its trials)."""
    state = state_of.get(r.path.resolve())
    evaluated = max((s for s, _ in r.evals), default=None)
    return (
        f"{r.label} on {r.source}, seed {r.seed}"
        + (f", {state}" if state else "")
        + f": trained to step {RunDir(r.path).checkpoint_step():,} of {r.budget:,}, "
        + ("never evaluated" if evaluated is None else f"last evaluated at step {evaluated:,}")
    )


# ---------------------------------------------------------------------- the report
def tied_with_best(cells: dict[Any, tuple[float, float, float]]) -> set[Any]:
    """Keys to mark in bold among {key: (point, low, high)}: the best point, and every key whose
    interval overlaps the best one's (with one seed the interval is the point itself)."""
    _, best_low, best_high = max(cells.values())
    return {k for k, (_, lo, hi) in cells.items() if lo <= best_high and best_low <= hi}


def _fmt(x: float) -> str:
    """One decimal for scores on a 0-100 scale; three significant digits for small ones (the toy
    bandit's mean reward)."""
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


@dataclass
class Statistics:
    """What a report says, before any file is written: the runs, their groups by (source,
    label), one row per group (mean and bootstrap interval over seeds), and the aggregate
    across the normalised datasets (rliable) with the notes on what it left out."""

    runs: list[RunResult]
    groups: dict[tuple[str, str], list[RunResult]]
    rows: list[dict[str, Any]]
    norm_sources: list[str] = field(default_factory=list)
    score_dict: dict[str, np.ndarray] = field(default_factory=dict)
    aggregate: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[RunResult]:
        return [r for r in self.runs if r.finished]

    @property
    def unfinished(self) -> list[RunResult]:
        return [r for r in self.runs if not r.finished]


def statistics(runs: list[RunResult], reps: int) -> Statistics:
    """Per dataset: each (source, label)'s mean and percentile-bootstrap interval over seeds.
    Across datasets: IQM and mean with stratified-bootstrap intervals (rliable), over the
    normalised datasets that every algorithm ran on, for the algorithms with the same number of
    finished seeds on each of them (rliable's (runs, tasks) matrix)."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in runs:
        if r.finished:
            groups.setdefault((r.source, r.label), []).append(r)
    rows: list[dict[str, Any]] = []
    for (source, label), rs in sorted(groups.items()):
        scores = np.array([r.score for r in rs], dtype=float)
        lo, hi = bootstrap_ci(scores, reps=reps)
        rows.append(
            {
                "source": source,
                "algo": label,
                "seeds": len(rs),
                "mean": float(scores.mean()),
                "ci_low": lo,
                "ci_high": hi,
                "budget": rs[0].budget,
                "normalised": rs[0].normalised,
            }
        )
    stats = Statistics(runs, groups, rows)
    done = stats.done
    norm_all = sorted({r.source for r in done if r.normalised})
    norm_labels = sorted({r.label for r in done if r.normalised})
    stats.norm_sources = [s for s in norm_all if all((s, lb) in groups for lb in norm_labels)]
    if set(stats.norm_sources) != set(norm_all):
        stats.notes.append(
            "Datasets left out of the aggregate (not every algorithm ran on them): "
            f"{', '.join(sorted(set(norm_all) - set(stats.norm_sources)))}."
        )
    if stats.norm_sources:
        counts = {lb: [len(groups[(s, lb)]) for s in stats.norm_sources] for lb in norm_labels}
        eligible = [lb for lb, c in counts.items() if len(set(c)) == 1]
        left = sorted(set(norm_labels) - set(eligible))
        if left:
            stats.notes.append(
                "Algorithms left out of the aggregate (not the same number of finished seeds "
                f"on every dataset): {', '.join(left)}."
            )
        for label in eligible:
            # (runs, tasks): run i of each task is its i-th seed in seed order.
            cols = [sorted(groups[(s, label)], key=lambda r: r.seed) for s in stats.norm_sources]
            stats.score_dict[label] = np.array(
                [[c[i].score for c in cols] for i in range(len(cols[0]))]
            )
        if stats.score_dict:
            stats.aggregate = _rliable_aggregate(stats.score_dict, reps)
    return stats


def write_csv(path: Path, stats: Statistics) -> Path:
    """One row per run, then one per (dataset, algorithm), then one per aggregate metric."""
    fields = [
        "kind",
        "source",
        "algo",
        "seed",
        "seeds",
        "score",
        "mean",
        "ci_low",
        "ci_high",
        "budget",
        "path",
    ]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in sorted(stats.runs, key=lambda r: (r.source, r.label, r.seed)):
            w.writerow(
                {
                    "kind": "run",
                    "source": r.source,
                    "algo": r.label,
                    "seed": r.seed,
                    "score": r.score,
                    "budget": r.budget,
                    "path": str(r.path),
                }
            )
        for row in stats.rows:
            w.writerow(
                {
                    "kind": "dataset",
                    "source": row["source"],
                    "algo": row["algo"],
                    "seeds": row["seeds"],
                    "mean": row["mean"],
                    "ci_low": row["ci_low"],
                    "ci_high": row["ci_high"],
                    "budget": row["budget"],
                }
            )
        for label, metrics in stats.aggregate.items():
            for metric, (point, lo, hi) in metrics.items():
                w.writerow(
                    {
                        "kind": metric,
                        "source": "+".join(stats.norm_sources),
                        "algo": label,
                        "seeds": len(stats.score_dict[label]),
                        "mean": point,
                        "ci_low": lo,
                        "ci_high": hi,
                    }
                )
    return path


def curve_figures(runs: list[RunResult], out: Path, name: str, reps: int) -> dict[str, Path]:
    """Per source: each label's mean over seeds at each evaluation, with its 95 % bootstrap
    interval (a band; error bars and marks where evaluations are few)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffrl.plotting import steps_axis

    labels = sorted({r.label for r in runs})
    figures: dict[str, Path] = {}
    for source in sorted({r.source for r in runs}):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for i, label in enumerate(labels):
            rs = [r for r in runs if r.source == source and r.label == label and r.evals]
            if not rs:
                continue
            steps = sorted({s for r in rs for s, _ in r.evals})
            means, los, his, xs = [], [], [], []
            for step in steps:
                vals = np.array([v for r in rs for s, v in r.evals if s == step])
                lo, hi = bootstrap_ci(vals, reps=min(reps, 2000))
                xs.append(step)
                means.append(vals.mean())
                los.append(lo)
                his.append(hi)
            # Marks where evaluations are few (a single one is a point, not an empty line);
            # the interval as error bars there, as a band otherwise.
            few = len(xs) < 4
            ax.plot(
                xs,
                means,
                color=f"C{i}",
                marker="o" if few else None,
                ms=5,
                label=f"{label} ({len(rs)} seed{'s' if len(rs) != 1 else ''})",
            )
            if few:
                err = [np.subtract(means, los), np.subtract(his, means)]
                ax.errorbar(xs, means, yerr=err, color=f"C{i}", fmt="none", capsize=4)
            else:
                ax.fill_between(xs, los, his, color=f"C{i}", alpha=0.2)
        ax.set_xlabel("step")
        steps_axis(ax.xaxis)
        normalised = any(r.normalised for r in runs if r.source == source)
        ax.set_ylabel("normalised score" if normalised else "score (return or reward)")
        ax.set_title(f"{source}: mean over seeds, 95 % bootstrap interval")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{name}_curves_{source.replace('/', '_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        figures[f"curves {source}"] = path
    return figures


def _budget_list(by_label: dict[str, list[int]]) -> str:
    return ", ".join(f"{lb} {' and '.join(f'{b:,}' for b in bs)}" for lb, bs in by_label.items())


def page(
    stats: Statistics,
    trials: dict[Path, tuple[str, str]],
    figures: dict[str, Path],
    final_episodes: int,
    reps: int,
    notes_text: str,
    command: str | None,
) -> str:
    """The Markdown page: the header (budget, protocol, seeds, command, notes), the per-dataset
    table, the aggregate table, the unfinished trials (a sweep's, started or not), figures."""
    runs, done, groups, rows = stats.runs, stats.done, stats.groups, stats.rows
    # Budgets per dataset (datasets are often run at different budgets), then per algorithm.
    by_source: dict[str, dict[str, list[int]]] = {}
    for source, label, b in sorted({(r.source, r.label, r.budget) for r in runs}):
        by_source.setdefault(source, {}).setdefault(label, []).append(b)
    seeds = sorted({len(rs) for rs in groups.values()})
    episodes = sorted({r.episodes for r in done if r.episodes is not None})
    protocol = (
        f"a separate evaluation of the checkpoint at the budget on {final_episodes} episodes "
        f"(seeds from {EVAL_SEED_OFFSETS['final']:,} + the run's seed; a run that sweeps an "
        "acting-time setting in training, such as QGPO's guidance scale, acts at the value its "
        "training evaluation at the budget chose)"
        if final_episodes
        else "the training evaluation at the budget"
        + (f" ({', '.join(map(str, episodes))} episodes)" if episodes else "")
    )
    # Every trial of a sweep that has no finished run: started or not, with its state.
    state_of = {path: state for path, (_, state) in trials.items()}
    found = {r.path.resolve() for r in runs}
    not_started = sorted((t, state) for path, (t, state) in trials.items() if path not in found)
    unfinished = stats.unfinished
    n_unfinished = len(unfinished) + len(not_started)
    lines = [
        f"# Results: {len(done)} finished run{'s' if len(done) != 1 else ''}"
        + (f", {n_unfinished} unfinished" if n_unfinished else ""),
        "",
        "- Budget (steps): "
        + (
            _budget_list(next(iter(by_source.values())))
            if len(by_source) == 1
            else "; ".join(f"{src}: {_budget_list(bl)}" for src, bl in by_source.items())
        )
        + ".",
        f"- Score of a run: {protocol}; normalised (D4RL reference returns) where the data has "
        "references, else the mean return or reward.",
        f"- Seeds per algorithm and dataset: {', '.join(map(str, seeds)) or 'none finished'}. "
        f"Intervals: 95 % percentile bootstrap over seeds ({reps:,} resamples); with one seed "
        "there is none.",
    ]
    if command:
        lines.append(f"- Made by: `{command}`.")
    lines.append("")
    if notes_text:
        lines += [notes_text, ""]
    lines += [
        "## Per dataset",
        "",
        "Bold: each dataset's best mean, and every mean whose interval overlaps the best one's "
        "(against the best, no ordering is supported for those).",
        "",
        "| dataset | algorithm | seeds | mean | 95 % interval | scores by seed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    tied: set[tuple[str, str]] = set()
    for source in {r["source"] for r in rows}:
        tied |= tied_with_best(
            {
                (r["source"], r["algo"]): (r["mean"], r["ci_low"], r["ci_high"])
                for r in rows
                if r["source"] == source
            }
        )
    for row in rows:
        rs = sorted(groups[(row["source"], row["algo"])], key=lambda r: r.seed)
        ci = (
            f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if row["seeds"] > 1 else "(one seed)"
        )
        by_seed = ", ".join(_fmt(r.score) for r in rs)
        mean = _fmt(row["mean"])
        if (row["source"], row["algo"]) in tied:
            mean = f"**{mean}**"
        lines.append(
            f"| {row['source']} | {row['algo']} | {row['seeds']} | {mean} | {ci} | {by_seed} |"
        )
    if stats.aggregate:
        lines += [
            "",
            f"## Across datasets ({', '.join(stats.norm_sources)})",
            "",
            " ".join(
                [
                    "Interquartile mean (IQM) and mean of the normalised scores over all runs and "
                    f"datasets, with 95 % stratified-bootstrap intervals (rliable, {reps:,} "
                    "resamples). Bold: the best IQM, and every IQM whose interval overlaps the "
                    "best one's.",
                    *stats.notes,
                ]
            ),
            "",
            "| algorithm | runs per dataset | IQM | IQM 95 % interval | mean "
            "| mean 95 % interval |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        tied_iqm = tied_with_best({label: m["IQM"] for label, m in stats.aggregate.items()})
        for label, m in stats.aggregate.items():
            (iq, iq_lo, iq_hi), (mn, mnl, mnh) = m["IQM"], m["mean"]
            cell = f"**{iq:.1f}**" if label in tied_iqm else f"{iq:.1f}"
            lines.append(
                f"| {label} | {len(stats.score_dict[label])} | {cell} | [{iq_lo:.1f}, {iq_hi:.1f}] "
                f"| {mn:.1f} | [{mnl:.1f}, {mnh:.1f}] |"
            )
    elif stats.notes:
        lines += ["", " ".join(stats.notes)]
    if n_unfinished:
        lines += ["", "Unfinished (left out):", ""]
        lines += [f"- {unfinished_line(r, state_of)} (`{r.path}`)" for r in unfinished]
        from diffrl.sweep import trial_words

        lines += [f"- {trial_words(t)}, {state}: not started" for t, state in not_started]
    lines += [""]
    lines += [f"![{k}]({p.name})" for k, p in figures.items()]
    lines += [""]
    return "\n".join(lines)


def write_report(
    paths: list[str | Path],
    out: str | Path | None = None,
    name: str = "report",
    final_episodes: int = 0,
    reps: int = 10_000,
    notes: str | Path | None = None,
    command: str | None = None,
) -> dict[str, Path]:
    """Read the runs under `paths` and write the report files; return their paths.

    `notes`: a Markdown file whose text goes under the header (a reading of the results kept
    beside the tables it reads, so regenerating the report keeps it); `command`: the command
    that made the report, quoted in the header."""
    notes_text = ""
    if notes is not None:
        try:
            notes_text = Path(notes).read_text().strip()
        except OSError as exc:
            raise DiffrlError(f"--notes {notes}: cannot read it ({exc.strerror})") from None
    # A sweep's grid lists trials that have no run directory yet (never started).
    trials = sweep_trials(paths)
    runs = [read_run(p, final_episodes) for p in find_runs(paths, allow_none=bool(trials))]
    out = Path(out) if out is not None else Path(paths[0])
    out.mkdir(parents=True, exist_ok=True)
    stats = statistics(runs, reps)
    csv_path = write_csv(out / f"{name}.csv", stats)
    figures = curve_figures(runs, out, name, reps)
    if stats.aggregate:
        figures.update(_aggregate_figures(stats.score_dict, stats.aggregate, out, name, reps))
    md_path = out / f"{name}.md"
    md_path.write_text(page(stats, trials, figures, final_episodes, reps, notes_text, command))
    return {"md": md_path, "csv": csv_path, **figures}


def _rliable_aggregate(
    score_dict: dict[str, np.ndarray], reps: int
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{label: {"IQM": (point, lo, hi), "mean": (...)}} from rliable's stratified bootstrap."""
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        raise DiffrlError(
            'the aggregate needs rliable: pip install -e ".[sweep]" (or pip install rliable)'
        ) from None

    def func(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    points, cis = rly.get_interval_estimates(score_dict, func, reps=reps)
    return {
        label: {
            "IQM": (float(points[label][0]), float(cis[label][0, 0]), float(cis[label][1, 0])),
            "mean": (float(points[label][1]), float(cis[label][0, 1]), float(cis[label][1, 1])),
        }
        for label in score_dict
    }


def _aggregate_figures(
    score_dict: dict[str, np.ndarray],
    aggregate: dict[str, dict[str, tuple[float, float, float]]],
    out: Path,
    name: str,
    reps: int,
) -> dict[str, Path]:
    import matplotlib.pyplot as plt
    from rliable import library as rly

    labels = list(aggregate)
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.6 * len(labels) + 1.6), squeeze=False)
    for ax, metric in zip(axes[0], ("IQM", "mean"), strict=True):
        for i, label in enumerate(labels):
            point, lo, hi = aggregate[label][metric]
            ax.barh(i, hi - lo, left=lo, height=0.6, color=f"C{i}", alpha=0.6)
            ax.plot([point, point], [i - 0.3, i + 0.3], color="k")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel(f"{metric} of normalised scores")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("95 % stratified-bootstrap intervals")
    fig.tight_layout()
    agg_path = out / f"{name}_aggregate.png"
    fig.savefig(agg_path, dpi=120)
    plt.close(fig)

    # Performance profiles: the fraction of runs scoring above tau, with intervals.
    top = max(float(np.max(v)) for v in score_dict.values())
    taus = np.linspace(
        min(0.0, min(float(np.min(v)) for v in score_dict.values())), max(top, 1.0), 81
    )
    dists, dist_cis = rly.create_performance_profile(score_dict, taus, reps=min(reps, 2000))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, label in enumerate(labels):
        ax.plot(taus, dists[label], color=f"C{i}", label=label)
        ax.fill_between(taus, dist_cis[label][0], dist_cis[label][1], color=f"C{i}", alpha=0.2)
    ax.set_xlabel("normalised score tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_title("Performance profiles (95 % intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    prof_path = out / f"{name}_profiles.png"
    fig.savefig(prof_path, dpi=120)
    plt.close(fig)
    return {"aggregate": agg_path, "performance profiles": prof_path}
