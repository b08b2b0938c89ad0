"""`diffrl sweep`, `diffrl report` and `diffrl plot`: many runs, their tables and figures."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from diffrl.cli.common import (
    PRECISION_HELP,
    THREADS_HELP,
)
from diffrl.config import PRECISIONS
from diffrl.errors import DiffrlError


def cmd_sweep(args: argparse.Namespace) -> int:
    from diffrl.sweep import grid_from_args, run_sweep

    if args.resume and args.precision is not None:
        raise DiffrlError("--resume reuses the sweep's own grid; drop --precision")
    if args.resume:
        given = [f"--{k}" for k in ("algos", "datasets", "envs", "seeds", "steps", "set", "sweep")]
        given = [f for f in given if getattr(args, f[2:]) is not None] + (
            ["FILE"] if args.file else []
        )
        if given:
            raise DiffrlError(
                f"--resume reuses the sweep's own grid; drop {', '.join(given)} (or start a new "
                "sweep with --out)"
            )
        failed = run_sweep(
            args.resume,
            resume=True,
            address=args.address,
            progress=not args.no_progress,
            cpus=args.cpus,
        )
        return 1 if failed else 0
    if not args.out:
        raise DiffrlError("diffrl sweep needs --out DIR (where the trials' run directories go)")
    grid = grid_from_args(
        args.file,
        args.algos,
        args.datasets,
        args.envs,
        args.seeds,
        args.steps,
        args.set,
        args.sweep,
        args.threads,
        args.gpus,
        args.retries,
    )
    failed = run_sweep(
        args.out, grid, address=args.address, progress=not args.no_progress, cpus=args.cpus
    )
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from diffrl.report import write_report

    if args.final_episodes < 0:
        raise DiffrlError(f"--final-episodes must be >= 0, got {args.final_episodes}")
    if args.reps < 100:
        raise DiffrlError(f"--reps must be >= 100, got {args.reps}")
    command = ["diffrl", "report", *args.dirs]
    for flag, value, default in (
        ("--out", args.out, None),
        ("--name", args.name, "report"),
        ("--final-episodes", args.final_episodes, 0),
        ("--notes", args.notes, None),
    ):
        if value != default:
            command += [flag, str(value)]
    files = write_report(
        args.dirs,
        args.out,
        args.name,
        args.final_episodes,
        args.reps,
        notes=args.notes,
        command=shlex.join(command),
    )
    for path in files.values():
        print(path)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from diffrl.envs import non_gym_env
    from diffrl.plotting import plot_curves
    from diffrl.run import RunDir, load_agent, load_run

    run_dir = Path(args.run_dir)
    rows = RunDir(run_dir).metrics()
    if not rows:  # before any folder is made
        raise DiffrlError(f"{run_dir}: no metrics yet (has the run started?)")
    out_dir = Path(args.out) if args.out else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_curves(rows, str(run_dir), out_dir / "curves.png")]
    config, _, _ = load_run(run_dir)
    own = non_gym_env(config.env_id)  # diffrl's own environments draw what the agent does
    if own is not None:
        agent, config, _, step = load_agent(run_dir, "latest")
        written.append(own.plot_agent(agent, config, step, out_dir))
    for path in written:
        print(path)
    return 0


def add_parsers(sub: Any) -> None:
    """This group's commands on the `diffrl` parser's subparsers."""
    sw = sub.add_parser(
        "sweep",
        help="a grid of runs (algorithms x datasets x seeds x settings) on Ray",
        description="Run a grid of ordinary diffrl runs on Ray: a local instance by default, "
        "an existing cluster with --address. Each trial is a run directory under --out "
        "(OUT/SOURCE/ALGO[+KEY=VALUE...]-sSEED). Flags win over the TOML file's values. "
        'Needs the sweep extra: pip install -e ".[sweep]". docs/sweeps.md.',
    )
    sw.add_argument("file", nargs="?", help="TOML file with the grid (optional)")
    sw.add_argument("--algos", metavar="A,B", help="algorithms")
    sw.add_argument("--datasets", metavar="D1,D2", help="datasets (offline runs)")
    sw.add_argument("--envs", metavar="E1,E2", help="environments (online runs)")
    sw.add_argument("--seeds", metavar="0,1,2", help="seeds (default 0)")
    sw.add_argument("--steps", type=int, default=None, help="step budget of every trial")
    sw.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a config value for every trial"
    )
    sw.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2",
        help="a grid axis: one trial per value (repeatable: the product)",
    )
    sw.add_argument("--threads", type=int, default=None, help="CPU threads per trial (default 1)")
    sw.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)
    sw.add_argument("--gpus", type=float, default=None, help="GPUs per trial, e.g. 0.25")
    sw.add_argument(
        "--retries",
        type=int,
        default=None,
        help="times a trial whose worker died is retried from its checkpoint (default 3)",
    )
    sw.add_argument("--out", default=None, help="the sweep's directory")
    sw.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR")
    sw.add_argument(
        "--address", default=None, help="an existing Ray cluster (e.g. auto, or HOST:6379)"
    )
    sw.add_argument(
        "--cpus",
        type=int,
        default=None,
        help="CPUs the local Ray instance offers (default: every core); fewer leaves the rest "
        "of the machine to other work",
    )
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.set_defaults(func=cmd_sweep)

    rp = sub.add_parser(
        "report",
        help="tables with confidence intervals, and figures, from run directories",
        description="Read every run under the directories (a sweep's, or runs made by hand) "
        "and write NAME.md, NAME.csv and figures: per dataset the mean over seeds with a 95 % "
        "bootstrap interval; across datasets the IQM and mean with stratified-bootstrap "
        "intervals and performance profiles (rliable); learning curves with shaded intervals.",
    )
    rp.add_argument("dirs", nargs="+", help="run directories, or folders holding them")
    rp.add_argument("--out", default=None, help="output folder (default: the first DIR)")
    rp.add_argument("--name", default="report", help="file stem (default report)")
    rp.add_argument(
        "--final-episodes",
        type=int,
        default=0,
        help="score each run by a separate evaluation of its checkpoint at the budget on N "
        "episodes (cached in the run); default: its training evaluation at the budget",
    )
    rp.add_argument("--reps", type=int, default=10_000, help="bootstrap resamples")
    rp.add_argument(
        "--notes",
        default=None,
        help="a Markdown file put under the report's header (your reading of the results), "
        "so that regenerating the report keeps it",
    )
    rp.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    rp.set_defaults(func=cmd_report)

    pl = sub.add_parser("plot", help="learning curves (and toy action scatter) as PNG")
    pl.add_argument("run_dir", help="run directory")
    pl.add_argument("--out", default=None, help="output folder (default RUN_DIR/plots)")
    pl.set_defaults(func=cmd_plot)
