"""Does a trained critic know what the data's own returns say? Q(s, a) on dataset transitions
against their discounted Monte Carlo returns, grouped by how far each transition is from its
episode's end:

    DIFFRL_DATA=... python benchmarks/critic_vs_returns.py RUN_DIR [RUN_DIR ...] [--samples 3000]

Groups: transitions of episodes that end in a terminal (on locomotion, a fall), binned by steps
to that terminal, where the Monte Carlo return G_t = sum_k gamma^k r_{t+k} is exact; and
transitions at least `--margin` steps before a timeout, where the return cut by the timeout
misses at most gamma^margin of the value (0.05 at gamma 0.99, margin 300). A critic that
overestimates the transitions a few dozen steps before a fall does not see the fall coming.

For every run the rewards are mapped as that run trains on them (its reward scaling and bias),
and Q and G are printed in the dataset's reward units (divided by the run's reward scale), so
runs with different reward scalings share a column of returns. Works with any run whose agent
has `critic_target.q_min` (Diffusion-QL, QGPO, DIPO) or wraps d3rlpy (`algo.impl.predict_value`:
IQL, TD3+BC). Samples are drawn from a fixed seed: a second run prints the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrl.api import load, load_dataset
from diffrl.data.samplers import discounted_returns_to_go
from diffrl.errors import DiffrlError

FALL_BINS = ((0, 10), (10, 30), (30, 50), (50, 100), (100, 150), (150, None))


def reward_map(agent: Any, config: Any, data: Any) -> tuple[float, float]:
    """(scale, bias): the run trains on scale * r + bias."""
    bias = float(getattr(config, "reward_bias", 0.0))
    scale = getattr(agent, "reward_scale", None)
    if isinstance(scale, torch.Tensor):  # d3rlpy adapter: fitted scale saved with the weights
        return float(scale), bias
    if getattr(config, "reward_norm", "none") == "return_range":
        return data.return_range_scale(), bias
    return float(getattr(config, "reward_scale", 1.0)), bias


def critic_values(agent: Any, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """The run's critic on raw dataset (obs, action) pairs -> (B,) in the run's reward units."""
    o = agent.obs_normalizer.normalize(torch.as_tensor(obs, dtype=torch.float32))
    a = torch.as_tensor(act, dtype=torch.float32)
    with torch.no_grad():
        if hasattr(agent, "critic_target"):
            return agent.critic_target.q_min(o, a).reshape(-1).numpy()
        if hasattr(agent, "algo"):
            return agent.algo.impl.predict_value(o, agent._to_unit(a)).reshape(-1).numpy()
    raise AssertionError("checked in main()")


def sample_groups(data: Any, samples: int, margin: int) -> list[tuple[str, np.ndarray]]:
    """[(label, row indices)]: up to `samples` rows per group, drawn from a fixed seed."""
    starts, ends = data.episode_starts, data.episode_ends
    falls = data.terminals[ends - 1].astype(bool)
    to_end = np.zeros(len(data), dtype=np.int64)  # steps left to the episode's last row
    fell = np.zeros(len(data), dtype=bool)
    for s, e, f in zip(starts, ends, falls, strict=True):
        to_end[s:e] = np.arange(e - s - 1, -1, -1)
        fell[s:e] = f
    groups: list[tuple[str, np.ndarray]] = []
    for lo, hi in FALL_BINS:
        sel = fell & (to_end >= lo) & (to_end < (hi if hi is not None else 1 << 40))
        label = f"{lo}-{hi} steps before a fall" if hi else f">={lo} steps before a fall"
        groups.append((label, sel))
    groups.append((f">={margin} steps before a timeout", ~fell & (to_end >= margin)))
    rng = np.random.default_rng(0)
    return [
        (label, rng.choice(np.nonzero(sel)[0], min(samples, int(sel.sum())), replace=False))
        for label, sel in groups
        if sel.any()
    ]


def returns_for(agent: Any, config: Any, data: Any) -> tuple[np.ndarray, float]:
    """(G for every row in the run's reward units, the run's reward scale)."""
    scale, bias = reward_map(agent, config, data)
    r = data.rewards.astype(np.float64) * scale + bias
    return discounted_returns_to_go(r, data.episode_starts, config.discount), scale


def biases(
    agent: Any, data: Any, picks: list[tuple[str, np.ndarray]], g: np.ndarray, scale: float
) -> list[float]:
    """mean(Q - G) per group, in the dataset's reward units."""
    return [
        float((critic_values(agent, data.observations[i], data.actions[i]) - g[i]).mean() / scale)
        for _, i in picks
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories on the same dataset")
    ap.add_argument("--samples", type=int, default=3000, help="transitions per group")
    ap.add_argument("--margin", type=int, default=300, help="steps before a timeout, at least")
    args = ap.parse_args()

    try:
        runs = [load(r) for r in args.runs]
    except DiffrlError as e:
        raise SystemExit(f"error: {e}") from None
    for path, run in zip(args.runs, runs, strict=True):
        if not (hasattr(run.agent, "critic_target") or hasattr(run.agent, "algo")):
            raise SystemExit(f"error: {path}: {run.config.algo} has no critic to compare")
    names = {r.config.dataset for r in runs}
    if len(names) != 1:
        raise SystemExit(f"error: the runs are on different datasets: {sorted(names)}")
    gammas = {float(getattr(r.config, "discount", 0.99)) for r in runs}
    if len(gammas) != 1:
        raise SystemExit(f"error: the runs use different discounts: {sorted(gammas)}")
    gamma = gammas.pop()
    data = load_dataset(names.pop())
    starts, ends = data.episode_starts, data.episode_ends
    falls = data.terminals[ends - 1].astype(bool)
    picks = sample_groups(data, args.samples, args.margin)
    print(
        f"{runs[0].config.dataset}: gamma {gamma}, {len(starts)} episodes, "
        f"{int(falls.sum())} end in a terminal"
    )
    print(
        "Q and the Monte Carlo return G in the dataset's reward units (G as the first run maps "
        "rewards); bias = mean(Q - G) under each run's own mapping"
    )
    cols = [p.name for p in args.runs]  # run directories are named ALGO-sSEED
    if len(set(cols)) < len(cols):  # the same name in two sweeps: name the sweep too
        cols = [f"{p.parent.parent.name}/{p.name}" for p in args.runs]
    print("| group | n | G | " + " | ".join(f"{c} Q (bias)" for c in cols) + " |")
    print("| --- " * (3 + len(cols)) + "|")
    # Per run: G under its reward mapping (the fast vectorised recurrence takes a second).
    mapped = [returns_for(run.agent, run.config, data) for run in runs]
    for label, idx in picks:
        cells = []
        for run, (g_all, scale) in zip(runs, mapped, strict=True):
            g = g_all[idx] / scale
            q = critic_values(run.agent, data.observations[idx], data.actions[idx]) / scale
            cells.append(f"{q.mean():.1f} ({(q - g).mean():+.1f})")
        g_shown = (mapped[0][0][idx] / mapped[0][1]).mean()
        print(f"| {label} | {len(idx)} | {g_shown:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
