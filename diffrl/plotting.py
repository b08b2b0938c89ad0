"""Pictures of a run: learning curves, and for the toy bandit sampled actions over the data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffrl.errors import DiffrlError  # noqa: E402

# y-axis labels with units for the metrics every run logs; others are labelled by their name.
_UNITS = {
    "steps_per_second": "gradient steps / s",
    "normalized_score": "normalised score (0 random, 100 expert)",
    "return_mean": "episode return",
    "reward_mean": "mean reward",
    "length_mean": "episode length (steps)",
    "mode_fractions": "fraction of samples",
}
_CONSTANTS = ("eval/samples", "eval/episodes")


def _panel_of(key: str) -> tuple[str, str | None]:
    """(panel, line label) for a metric key, so related curves share one panel with a legend.

    `eval/by_guidance_scale/3/return_mean` -> ('eval/return_mean by guidance_scale', '3');
    `eval/mode_fractions/left_up` -> ('eval/mode_fractions', 'left_up'); others stand alone.
    """
    parts = key.split("/")
    for i, part in enumerate(parts[:-2]):
        if part.startswith("by_"):
            rest = "/".join(parts[:i] + parts[i + 2 :])
            return f"{rest} by {part[3:]}", parts[i + 1]
    if len(parts) >= 3:
        return "/".join(parts[:-1]), parts[-1]
    return key, None


def steps_axis(axis: Any) -> None:
    """At most five ticks, written short (12.5k, 1M): long step numbers ran together."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    axis.set_major_formatter(FuncFormatter(lambda v, _: short_count(v)))


def short_count(v: float) -> str:
    """12500 -> '12.5k', 1000000 -> '1M', 300 -> '300'."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.4g}{suffix}"
    return f"{v:.4g}"


def plot_curves(rows: list[dict[str, Any]], name: str, out: str | Path) -> Path:
    """Learning curves against the gradient step from a run's logged records (`RunDir.metrics`),
    titled `name`: one panel per metric, related curves (a sweep's values, a distribution's
    parts) together in one panel with a legend."""
    if not rows:
        raise DiffrlError(f"{name}: no metrics yet (has the run started?)")
    panels: dict[str, dict[str | None, list[tuple[float, float]]]] = {}
    for row in rows:
        for key, value in row.items():
            if key == "step" or key in _CONSTANTS or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                panel, label = _panel_of(key)
                panels.setdefault(panel, {}).setdefault(label, []).append((row["step"], value))
    if not panels:
        raise DiffrlError(f"{name}: its metrics hold no scalars to plot")
    # Evaluation panels first: they are what a reader looks for.
    order = sorted(panels, key=lambda k: (not k.startswith("eval/"), list(panels).index(k)))
    cols = min(3, len(order))
    nrows = (len(order) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.8 * cols, 3.4 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, order, strict=False):
        lines = panels[panel]
        for label, pts in lines.items():
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, label=label)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("gradient step")
        steps_axis(ax.xaxis)
        path = panel.split(" by ")[0].split("/")
        unit = next((_UNITS[p] for p in reversed(path) if p in _UNITS), path[-1])
        ax.set_ylabel(unit, fontsize=9)
        if len(lines) > 1:
            by = panel.split(" by ")[1] if " by " in panel else None
            ax.legend(fontsize=7, title=by, title_fontsize=7, ncol=2 if len(lines) > 5 else 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(order) :]:
        ax.axis("off")
    fig.suptitle(f"{Path(name).name}: learning curves", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
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
    """Scatter sampled 2-d actions (one panel each) over the behaviour data (grey), with the
    reward modes drawn as dashed circles; axes are the two action coordinates."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 4.6), squeeze=False)
    for ax, (title, actions) in zip(axes.flat, panels, strict=True):
        if data_actions is not None:
            ax.scatter(
                data_actions[:, 0],
                data_actions[:, 1],
                s=4,
                c="0.75",
                alpha=0.4,
                lw=0,
                label="behaviour data",
            )
        ax.scatter(
            actions[:, 0], actions[:, 1], s=5, alpha=0.5, lw=0, c="C0", label="policy samples"
        )
        for i, c in enumerate(centres or []):
            if radius:
                ax.add_patch(
                    plt.Circle(
                        c,
                        radius,
                        fill=False,
                        ls="--",
                        lw=0.8,
                        color="C3",
                        label=f"mode (radius {radius:g})" if i == 0 else None,
                    )
                )
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.15, 1.15)
        ax.set_aspect("equal")
        ax.set_xlabel("action[0]")
        ax.set_ylabel("action[1]")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="center", markerscale=2, framealpha=0.8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_plans(
    plans: list[dict[str, Any]],
    out: str | Path,
    layout: dict[str, Any] | None = None,
    start: Any = None,
    goal: Any = None,
    title: str = "",
    avoid: Sequence[Sequence[float]] = (),
    via: Sequence[Sequence[float]] = (),
    waypoints: Sequence[Sequence[float]] = (),
) -> Path:
    """Planned paths (their states' first two dimensions) over a maze's walls, with the start
    and the goal; the first plan (ranked best, the one an agent would follow) drawn boldest.
    States are the marks; the thin lines only join consecutive states (a line may cut a wall's
    corner where two states in open cells are far apart: walls are checked on states). `avoid`
    discs (x, y, r) and `via` points (x, y) of planning-time guides, and pinned `waypoints`
    (x, y), are drawn too."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    if layout is not None:
        half = layout["cell"] / 2
        for r, row in enumerate(layout["map"]):
            for c, wall in enumerate(row):
                if wall:
                    cx, cy = layout["centres"][r, c]
                    ax.add_patch(
                        plt.Rectangle((cx - half, cy - half), 2 * half, 2 * half, color="0.25")
                    )
        xs, ys = layout["centres"][..., 0], layout["centres"][..., 1]
        ax.set_xlim(xs.min() - half, xs.max() + half)
        ax.set_ylim(ys.min() - half, ys.max() + half)
    cmap = plt.get_cmap("viridis")
    for i, plan in reversed(list(enumerate(plans))):
        xy = np.asarray(plan["states"])[:, :2]
        first = i == 0
        color = "tab:red" if first else cmap(i / max(len(plans) - 1, 1))
        ax.plot(xy[:, 0], xy[:, 1], "-", color=color, lw=0.8, alpha=0.5 if first else 0.35)
        ax.plot(
            xy[:, 0],
            xy[:, 1],
            "o",
            color=color,
            ms=3.0 if first else 1.5,
            alpha=1.0 if first else 0.6,
            label="best plan (ranked first): its states" if first else None,
        )
    for i, (x, y, r) in enumerate(avoid):
        ax.add_patch(
            plt.Circle(
                (x, y), r, color="tab:orange", alpha=0.35, label=None if i else "avoid (guide)"
            )
        )
    for i, (x, y) in enumerate(via):
        ax.plot(x, y, "D", color="tab:blue", mec="k", ms=9, label=None if i else "via (guide)")
    for i, point in enumerate(waypoints):
        ax.plot(
            point[0],
            point[1],
            "P",
            color="tab:purple",
            mec="k",
            ms=11,
            label=None if i else "waypoint (pinned)",
        )
    if start is not None:
        ax.plot(start[0], start[1], "s", color="tab:green", ms=11, label="start")
    if goal is not None:
        ax.plot(goal[0], goal[1], "*", color="gold", mec="k", ms=16, label="goal")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or f"{len(plans)} plan(s)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
