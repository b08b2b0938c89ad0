"""Pictures of a run: learning curves, and for the toy bandit sampled actions over the data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffrl.errors import DiffrlError  # noqa: E402


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise DiffrlError(f"{path}: no metrics yet (has the run started?)")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_curves(run_dir: str | Path, out: str | Path) -> Path:
    """One panel per logged scalar (training and evaluation), against the step."""
    rows = read_metrics(run_dir)
    keys: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key in ("step", "eval/samples", "eval/episodes"):  # constants, not curves
                continue
            if isinstance(value, (int, float)) and key not in keys:
                keys.append(key)
    if not keys:
        raise DiffrlError(f"{run_dir}: metrics.jsonl holds no scalars to plot")
    cols = min(3, len(keys))
    nrows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.2 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_toy_actions(
    data_actions: np.ndarray | None,
    panels: list[tuple[str, np.ndarray]],
    out: str | Path,
    radius: float | None = None,
    centres: list[tuple[float, float]] | None = None,
) -> Path:
    """Scatter sampled 2-d actions (one panel each) over the behaviour data (grey)."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, (title, actions) in zip(axes.flat, panels, strict=True):
        if data_actions is not None:
            ax.scatter(data_actions[:, 0], data_actions[:, 1], s=4, c="0.75", alpha=0.4, lw=0)
        ax.scatter(actions[:, 0], actions[:, 1], s=5, alpha=0.5, lw=0, c="C0")
        for c in centres or []:
            if radius:
                ax.add_patch(plt.Circle(c, radius, fill=False, ls="--", lw=0.8, color="C3"))
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.15, 1.15)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
