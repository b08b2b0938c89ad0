"""`diffrl behavior train | fork | import | info`: SAC behaviour policies for making datasets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from diffrl.cli.common import (
    print_json,
)
from diffrl.errors import DiffrlError


def cmd_behavior_train(args: argparse.Namespace) -> int:
    from diffrl.behavior import BehaviorConfig, BehaviorTrainer, read_state

    if args.resume:
        if args.env_id or args.run_dir:
            raise DiffrlError("--resume takes the run directory only (its config is reused)")
        if not (Path(args.resume) / "state.json").exists():
            raise DiffrlError(f"{args.resume}: no behaviour run here to resume")
        args.env_id = read_state(args.resume)["config"]["env_id"]
        args.run_dir = args.resume
    elif not args.env_id:
        raise DiffrlError("usage: diffrl behavior train ENV_ID (or --resume DIR)")
    run_dir = Path(args.run_dir or Path("runs") / "behavior" / f"{args.env_id}-s{args.seed}")
    for flag, value in (
        ("--learning-rate", args.learning_rate),
        ("--snapshot-every", args.snapshot_every),
    ):
        if value is not None and value <= 0:
            raise DiffrlError(f"{flag} must be > 0, got {value}")
    exists = (run_dir / "state.json").exists()
    # Options left out keep the run's own values on resume (SB3's defaults for a new run).
    base = BehaviorConfig(**read_state(run_dir)["config"]) if exists else BehaviorConfig("")
    config = BehaviorConfig(
        env_id=args.env_id,
        seed=args.seed,
        steps=(base.steps if exists else 1_000_000) if args.steps is None else args.steps,
        snapshot_every=base.snapshot_every if args.snapshot_every is None else args.snapshot_every,
        eval_episodes=args.eval_episodes,
        learning_rate=base.learning_rate if args.learning_rate is None else args.learning_rate,
    )
    print(f"{'resuming' if exists else 'run directory:'} {run_dir}", file=sys.stderr)
    state = BehaviorTrainer(run_dir, config).train(progress=not args.no_progress)
    last = state["snapshots"][-1] if state["snapshots"] else {}
    print(
        json.dumps({"run_dir": str(run_dir), "steps": state["steps_done"], "last_snapshot": last})
    )
    return 0


def cmd_behavior_import(args: argparse.Namespace) -> int:
    from diffrl.behavior import import_run

    path = import_run(args.source, args.run_dir, up_to=args.up_to, env_id=args.env_id)
    print(str(path))
    return 0


def cmd_behavior_fork(args: argparse.Namespace) -> int:
    from diffrl.behavior import fork_run

    print(str(fork_run(args.source, args.run_dir, args.step, seed=args.seed)))
    return 0


def cmd_behavior_info(args: argparse.Namespace) -> int:
    from diffrl.behavior import read_evals, read_state

    state = read_state(args.run_dir)
    out = {
        "env_id": state["config"]["env_id"],
        "steps_done": state["steps_done"],
        "seconds": state["seconds"],
        "snapshots": read_evals(args.run_dir),
    }
    if args.json:
        print_json(out)
    else:
        print(f"{out['env_id']}: {out['steps_done']:,} steps, {out['seconds'] / 3600:.2f} h")
        print(f"{'step':>9} {'det_mean':>9} {'stoch_mean':>10}")
        for row in out["snapshots"]:
            print(f"{int(row['step']):>9} {row['det_mean']:>9.1f} {row['stoch_mean']:>10.1f}")
    return 0


def add_parsers(sub: Any) -> None:
    """This group's commands on the `diffrl` parser's subparsers."""
    bh = sub.add_parser("behavior", help="train behaviour policies (SAC) for making datasets")
    bh_sub = bh.add_subparsers(dest="behavior_command", metavar="SUBCOMMAND")
    b_train = bh_sub.add_parser("train", help="train (or resume) SAC on a Gymnasium env")
    b_train.add_argument("env_id", nargs="?", help="Gymnasium id, e.g. Hopper-v5")
    b_train.add_argument(
        "--resume", metavar="DIR", default=None, help="continue the behaviour run in DIR"
    )
    b_train.add_argument(
        "--steps", type=int, default=None, help="total env steps (default 1000000, or the run's)"
    )
    b_train.add_argument("--seed", type=int, default=0)
    b_train.add_argument("--run-dir", default=None, help="default runs/behavior/ENV-sSEED")
    b_train.add_argument(
        "--snapshot-every", type=int, default=None, help="default 20000, or the run's own"
    )
    b_train.add_argument("--eval-episodes", type=int, default=5)
    b_train.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="SAC's learning rate (default 3e-4, or the run's own); may change on resume",
    )
    b_train.add_argument("--no-progress", action="store_true")
    b_train.set_defaults(func=cmd_behavior_train)
    b_fork = bh_sub.add_parser(
        "fork", help="start a new run from one snapshot of a run (e.g. to fine-tune it)"
    )
    b_fork.add_argument("source", help="a behaviour run directory")
    b_fork.add_argument("run_dir", help="the new run directory")
    b_fork.add_argument("--step", type=int, required=True, help="the snapshot's step")
    b_fork.add_argument("--seed", type=int, default=None, help="default: the source's seed + 1")
    b_fork.set_defaults(func=cmd_behavior_fork)
    b_imp = bh_sub.add_parser(
        "import",
        help="continue an SB3 run (shared/behavior layout)",
        description="Copy an SB3 SAC run (step_XXXXXXX.zip, evals.csv, transitions.npz) into a "
        "behaviour run directory that `diffrl behavior train` continues. SB3's own SAC.load "
        "unpickles part of each zip (spaces, schedules), which can run code from a file someone "
        "else made; diffrl never does: it reads only the weights and optimiser states "
        "(torch.load with weights_only=True) and the plain-JSON counters and hyperparameters.",
    )
    b_imp.add_argument("source", help="folder with step_XXXXXXX.zip, evals.csv, transitions.npz")
    b_imp.add_argument("--run-dir", required=True)
    b_imp.add_argument("--up-to", type=int, default=None, help="last snapshot step to take")
    b_imp.add_argument("--env-id", default=None, help="default: the source folder's name")
    b_imp.set_defaults(func=cmd_behavior_import)
    b_info = bh_sub.add_parser("info", help="snapshots and their measured returns")
    b_info.add_argument("run_dir")
    b_info.add_argument("--json", action="store_true")
    b_info.set_defaults(func=cmd_behavior_info)
    bh.set_defaults(func=lambda a: (bh.print_help(), 0)[1])
