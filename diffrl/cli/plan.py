"""`diffrl plan`: a planner's plans from a start toward a goal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from diffrl.cli.common import (
    fmt,
    parse_numbers,
)
from diffrl.errors import DiffrlError
from diffrl.fileio import finite


def cmd_plan(args: argparse.Namespace) -> int:
    import numpy as np

    from diffrl.api import load
    from diffrl.config import parse_set_args
    from diffrl.envs import maze_layout

    for flag, value in (("--horizon", args.horizon), ("--plans", args.plans)):
        if value is not None and value < 1:
            raise DiffrlError(f"{flag} must be >= 1, got {value}")
    run = load(args.run_dir, args.checkpoint, args.device)
    run.progress = True  # a bar over the denoising steps (unless --no-progress)
    settings = parse_set_args(args.set)
    config = run.config
    start, goal = parse_numbers("--start", args.start), parse_numbers("--goal", args.goal)
    if start is None:
        raise DiffrlError("--start is required: the state to plan from, e.g. --start 1.0,1.0")
    waypoints = _waypoints(args.waypoint)
    avoid, via = _guide_points(args)
    guides = _guides(avoid, via, args.guide_weight)
    # Run.plan checks the points (walls, sizes) and pads a maze start to a state at rest.
    plans = run.plan(
        start, goal, args.horizon, args.plans, args.seed, guides, waypoints, **settings
    )
    start = list(plans[0]["states"][0])
    layout = maze_layout(config.env_id) if config.env_id else None
    if args.out:
        from diffrl.plotting import plot_plans

        title = f"{config.algo}: {len(plans)} plan(s), horizon {len(plans[0]['states'])}"
        marks = [p for p in waypoints.values() if len(p) >= 2]
        path = plot_plans(plans, args.out, layout, start, goal, title, avoid, via, marks)
        print(str(path), file=sys.stderr)
    out = {
        "plans": [
            {
                "states": np.asarray(p["states"]).tolist(),
                "actions": np.asarray(p["actions"]).tolist(),
                "value": p["value"],
                **{k: p[k] for k in ("in_walls", "steps_through_walls") if k in p},
            }
            for p in plans
        ]
    }
    if args.json:
        print(json.dumps(finite(out)))
    else:
        best = plans[0]
        value = "" if best["value"] is None else f", value {fmt(best['value'])}"
        if "in_walls" in best:
            value += (
                f", {best['in_walls']} state(s) inside walls, "
                f"{best['steps_through_walls']} step(s) from one state to the next through a wall"
            )
        print(f"{len(plans)} plan(s) of {len(best['states'])} states{value}; first states:")
        for state in np.asarray(best["states"])[:5]:
            print("  " + " ".join(f"{v:.3f}" for v in state))
    return 0


def _waypoints(texts: list[str] | None) -> dict[int, list[float]]:
    """`--waypoint H:X,Y` (repeatable): the first state values pinned at plan index H."""
    out: dict[int, list[float]] = {}
    for text in texts or []:
        index, sep, values = text.partition(":")
        try:
            h = int(index)
        except ValueError:
            h = None
        if not sep or h is None:
            raise DiffrlError(f"--waypoint takes INDEX:X,Y (e.g. 40:1,-1), got {text!r}")
        out[h] = parse_numbers("--waypoint", values)
    return out


def _guide_points(args: argparse.Namespace) -> tuple[list[list[float]], list[list[float]]]:
    """`--avoid X,Y,R` and `--via X,Y` (repeatable), checked: (discs, points)."""
    discs, points = [], []
    for text in args.avoid or []:
        values = parse_numbers("--avoid", text)
        if len(values) != 3:
            raise DiffrlError(f"--avoid takes X,Y,RADIUS, got {text!r}")
        discs.append(values)
    for text in args.via or []:
        values = parse_numbers("--via", text)
        if len(values) != 2:
            raise DiffrlError(f"--via takes X,Y, got {text!r}")
        points.append(values)
    return discs, points


def _guides(discs: list[list[float]], points: list[list[float]], weight: float) -> list[Any]:
    """The guides of `--avoid` discs and `--via` points, each of weight `--guide-weight`."""
    from diffrl.guides import avoid, via

    return [avoid(d[:2], d[2], weight) for d in discs] + [via(p, weight) for p in points]


_SIGNED_OPTIONS = ("--start", "--goal", "--avoid", "--via", "--waypoint")


def _join_signed(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _SIGNED_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def add_parsers(sub: Any) -> None:
    """This group's commands on the `diffrl` parser's subparsers."""

    pl = sub.add_parser(
        "plan", help="plan trajectories from a start toward a goal with a planner's run"
    )
    pl.add_argument("run_dir", help="run directory of a planning algorithm")
    pl.add_argument("--start", help="start state, e.g. 1.0,1.0 (a maze position: at rest)")
    pl.add_argument("--goal", default=None, help="goal, e.g. -1.2,-0.8 (maze: x,y)")
    pl.add_argument("--horizon", type=int, default=None, help="plan length (default: trained)")
    pl.add_argument("--plans", type=int, default=None, help="plans to sample (default: config)")
    pl.add_argument("--seed", type=int, default=0, help="sampling seed")
    pl.add_argument("--checkpoint", default="latest", help="latest | best | STEP")
    pl.add_argument("--device", default=None, help="auto | cpu | cuda")
    pl.add_argument("--set", action="append", metavar="KEY=VALUE", help="planning-time keys")
    pl.add_argument(
        "--avoid",
        action="append",
        metavar="X,Y,R",
        help="guide: keep planned positions out of this disc (repeatable)",
    )
    pl.add_argument(
        "--via", action="append", metavar="X,Y", help="guide: pass through this point (repeatable)"
    )
    pl.add_argument(
        "--guide-weight", type=float, default=1.0, help="weight of --avoid / --via guides"
    )
    pl.add_argument(
        "--waypoint",
        action="append",
        metavar="H:X,Y",
        help="pin the plan's state at index H (negative: from the end) to X,Y,... (repeatable)",
    )
    pl.add_argument("--out", default=None, help="draw the plans (over the maze) to this PNG")
    pl.add_argument("--json", action="store_true", help='print {"plans": [...]}')
    pl.add_argument("--no-progress", action="store_true", help="no progress bars")
    pl.set_defaults(func=cmd_plan)
