"""`diffrl train`, `diffrl branch` and `diffrl eval`: a run directory's life."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diffrl.cli.common import (
    PRECISION_HELP,
    THREADS_HELP,
    fmt,
    print_json,
    summary_line,
)
from diffrl.config import PRECISIONS
from diffrl.errors import DiffrlError


def cmd_train(args: argparse.Namespace) -> int:
    from diffrl.config import parse_set_args
    from diffrl.run import load_run, make_config, start_run
    from diffrl.train import TrainingInterrupted, train

    overrides: dict[str, Any] = parse_set_args(args.set)
    for key in ("steps", "seed", "device"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.env is not None:
        overrides["env_id"] = args.env
    try:
        if args.resume:
            if args.algo or args.dataset:
                raise DiffrlError("--resume takes the run directory only (its config is reused)")
            config, _, _ = load_run(args.resume)
            source = config.dataset or f"{config.env_id}, online"
            print(f"resuming {args.resume} ({config.algo} on {source})", file=sys.stderr)
            run_dir = Path(args.resume)
            result = train(run_dir, resume=True, progress=not args.no_progress, overrides=overrides)
        else:
            if not args.algo or not (args.dataset or args.env):
                raise DiffrlError(
                    "usage: diffrl train ALGO --dataset NAME_OR_PATH [--env ENV_ID], "
                    "diffrl train ALGO --env ENV_ID (online), or diffrl train --resume DIR"
                )
            config = make_config(args.algo, args.dataset or "", overrides)
            run_dir, dataset = start_run(config, args.run_dir)
            print(f"run directory: {run_dir}", file=sys.stderr)
            result = train(run_dir, dataset=dataset, progress=not args.no_progress)
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        print(str(exc.run_dir))
        return 128 + exc.signum
    if result:
        print(f"final evaluation: {summary_line(result)}", file=sys.stderr)
    print(str(run_dir))
    return 0


def cmd_branch(args: argparse.Namespace) -> int:
    from diffrl.config import parse_set_args
    from diffrl.run import branch_run

    overrides = parse_set_args(args.set)
    step = branch_run(args.src, args.dst, args.checkpoint, overrides)
    changed = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "no changes"
    print(f"{args.dst}: from {args.src} at step {step:,} ({changed})", file=sys.stderr)
    print(f"continue it with: diffrl train --resume {args.dst}", file=sys.stderr)
    print(str(args.dst))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from diffrl.api import load
    from diffrl.config import parse_set_args

    for flag, value in (("--episodes", args.episodes), ("--sampling-steps", args.sampling_steps)):
        if value is not None and value < 1:
            raise DiffrlError(f"{flag} must be >= 1, got {value}")
    overrides: dict[str, Any] = parse_set_args(args.set)
    if args.sampler is not None:
        overrides["sampler"] = args.sampler
    if args.sampling_steps is not None:
        overrides["sampling_steps"] = args.sampling_steps
    run = load(args.run_dir, args.checkpoint, args.device)
    run.progress = True  # shown unless --no-progress turned every bar off
    sweep = None
    if args.sweep:
        key, sep, values = args.sweep.partition("=")
        if not sep:
            raise DiffrlError(f"--sweep is KEY=V1,V2,...; got {args.sweep!r}")
        sweep = (key.strip(), values.split(","))
    out = run.evaluation(args.episodes, args.seed, sweep, **overrides)
    if args.json:
        print_json(out)
        return 0
    for key, value in out.items():
        if key in ("returns", "sweep"):
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            print(f"{key:>22}:")  # a sweep: one line per value
            for name, row in value.items():
                print(f"{name:>22}  {summary_line(row)}")
            continue
        print(f"{key:>22}: {fmt(value)}")
    if "sweep" in out:
        print(f"{'sweep of ' + out['sweep']['key']:>22}:")
        for row in out["sweep"]["results"]:
            summary = {k: v for k, v in row.items() if k != "value"}
            print(f"{fmt(row['value']):>22}  {summary_line(summary)}")
    if args.seed is None:
        from diffrl.run import eval_seed

        print(
            f"(episodes seeded from {out['seed']:,}; the evaluations during training used seeds "
            f"from {eval_seed(run.config.seed, 'training'):,}, so their score for this checkpoint "
            "differs by sampling noise; --seed S chooses)",
            file=sys.stderr,
        )
    return 0


def add_parsers(sub: Any) -> None:
    """This group's commands on the `diffrl` parser's subparsers."""
    tr = sub.add_parser("train", help="train an algorithm on a dataset (or resume a run)")
    tr.add_argument("algo", nargs="?", help="algorithm (see `diffrl algos`)")
    tr.add_argument("--dataset", help="built-in dataset name, file path or Minari id")
    tr.add_argument(
        "--env",
        default=None,
        metavar="ENV_ID",
        help="Gymnasium id: without --dataset, learn online in it (replay buffer); with "
        "--dataset, evaluate in it (same as --set env_id=ENV_ID)",
    )
    tr.add_argument("--steps", type=int, default=None, help="total gradient steps")
    tr.add_argument("--seed", type=int, default=None, help="seed")
    tr.add_argument("--run-dir", default=None, help="run directory (default runs/ALGO/...)")
    tr.add_argument("--device", default=None, help="auto | cpu | cuda")
    tr.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    tr.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its newest intact checkpoint; --steps, --device and --set "
        "may change what leaves the model as it is (env_id, eval_*, save_every, ...)",
    )
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    tr.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)
    tr.set_defaults(func=cmd_train)

    br = sub.add_parser(
        "branch",
        help="start a new run from another run's checkpoint, with changed settings after it",
        description="Copy SRC's checkpoint, its history up to it and its caches into DST, with "
        "SRC's config changed by --set; `diffrl train --resume DST` trains on from there. SRC "
        "is not changed. The steps up to the checkpoint stay as SRC ran them, so use it where "
        "they are the same under the new settings (e.g. a first training stage when only a "
        "later one changes).",
    )
    br.add_argument("src", help="the run to branch from")
    br.add_argument("dst", help="the new run directory (must not exist, or be empty)")
    br.add_argument(
        "--checkpoint",
        default="latest",
        help="latest | best | selected | STEP (default latest)",
    )
    br.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="change a config key (repeatable)"
    )
    br.set_defaults(func=cmd_branch)

    ev = sub.add_parser("eval", help="evaluate a run's checkpoint; writes RUN_DIR/eval.json")
    ev.add_argument("run_dir", help="run directory")
    ev.add_argument(
        "--episodes", type=int, default=None, help="rollout episodes (default: the run's)"
    )
    ev.add_argument("--sampler", choices=["ddpm", "ddim", "dpm-solver"], default=None)
    ev.add_argument("--sampling-steps", type=int, default=None, help="denoising steps")
    ev.add_argument(
        "--checkpoint",
        default="latest",
        help="latest | best (highest evaluation) | selected (the algorithm's offline rule) | STEP",
    )
    ev.add_argument("--seed", type=int, default=None, help="evaluation seed")
    ev.add_argument("--device", default=None, help="auto | cpu | cuda")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    ev.add_argument(
        "--sweep",
        metavar="KEY=V1,V2,...",
        default=None,
        help="evaluate at each value of one acting-time key (e.g. guidance_scale=0,3 or "
        "sampling_steps=5,50) on the same episodes; every value reported, none chosen",
    )
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")
    ev.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    ev.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)
    ev.set_defaults(func=cmd_eval)
