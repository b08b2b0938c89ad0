"""`diffrl config`, `diffrl algos` and `diffrl bench`: what an algorithm is and how fast it runs."""

from __future__ import annotations

import argparse
from typing import Any

from diffrl.cli.common import (
    PRECISION_HELP,
    THREADS_HELP,
    print_json,
)
from diffrl.config import PRECISIONS
from diffrl.errors import DiffrlError


def cmd_config(args: argparse.Namespace) -> int:
    from diffrl.config import field_help, parse_set_args, to_dict
    from diffrl.run import make_config

    if args.dataset and args.env:
        raise DiffrlError("--dataset and --env name two presets; give one")
    overrides = parse_set_args(args.set)
    if args.env:
        overrides["env_id"] = args.env  # an online run's preset, as `train ALGO --env` has
    config = make_config(args.algo, args.dataset or "", overrides)
    if args.json:
        print_json(to_dict(config))
        return 0
    values = to_dict(config)
    preset = args.dataset or (f"{args.env}, online" if args.env else "")
    print(f"{args.algo} config" + (f" with the '{preset}' preset" if preset else ""))
    for name, tp, _default, help_ in field_help(type(config)):
        print(f"  {name:<18} {tp:<6} = {values[name]!r:<12} {help_}")
    return 0


def cmd_algos(args: argparse.Namespace) -> int:
    from diffrl.algos import ALGOS, get_algo

    for name in ALGOS:
        doc = (get_algo(name).__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<14} {doc}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from diffrl.algos import BENCH_DEFAULT
    from diffrl.bench import bench_act, bench_train
    from diffrl.config import parse_set_args
    from diffrl.run import resolve_device

    args.algo = args.algo or BENCH_DEFAULT
    overrides = parse_set_args(args.set)
    device = resolve_device(args.device)
    if args.what == "train":
        out = bench_train(
            args.algo,
            args.obs_dim,
            args.act_dim,
            args.batch_size,
            args.seconds,
            device,
            overrides,
            fast=args.fast,
        )
        if "stages" in out:
            line = ", ".join(
                f"{name} {v['steps_per_second']:.2f} steps/s (batch {v['batch_size']})"
                if "steps_per_second" in v
                else f"{name} {v['states_per_second']:.1f} states/s"
                for name, v in out["stages"].items()
            )
        else:
            line = f"{out['steps_per_second']:.2f} steps/s"
    elif args.what == "plan":
        from diffrl.bench import bench_plan

        for flag, key in (("sampling_steps", "sampling_steps"), ("guide_steps", "guide_steps")):
            if getattr(args, flag) is not None:
                overrides[key] = getattr(args, flag)
        out = bench_plan(
            args.algo,
            args.obs_dim,
            args.act_dim,
            args.horizon,
            args.plans,
            args.seconds,
            device,
            overrides,
            fast=args.fast,
        )
        line = (
            f"{out['ms_per_plan']:.1f} ms per plan from noise "
            f"({out['plans_per_second']:.2f} plans/s); {out['ms_per_decision']:.1f} ms per "
            f"decision while acting ({out['decisions_per_second']:.2f}/s)"
        )
    else:
        out = bench_act(
            args.algo, args.obs_dim, args.act_dim, args.seconds, device, overrides, fast=args.fast
        )
        line = f"{out['ms_per_action']:.3f} ms per action"
    if args.json:
        print_json(out)
    else:
        where = f"{out['device']}, {out['threads']} threads ({out['thread_policy']})"
        print(f"{args.algo} {args.what}: {line} ({where}, {out['precision']})")
    return 0


def add_parsers(sub: Any) -> None:
    """This group's commands on the `diffrl` parser's subparsers."""
    cf = sub.add_parser("config", help="show an algorithm's config keys and resolved values")
    cf.add_argument("algo", help="algorithm")
    cf.add_argument("--dataset", default=None, help="apply this dataset's preset")
    cf.add_argument("--env", default=None, help="an online run's preset for this environment")
    cf.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    cf.add_argument("--json", action="store_true", help="print JSON")
    cf.set_defaults(func=cmd_config)

    be = sub.add_parser("bench", help="speed of training steps or acting, on synthetic data")
    be.add_argument(
        "what",
        choices=["train", "act", "plan"],
        help="train: steps/s; act: ms per action; plan: ms per plan (planners)",
    )
    be.add_argument(
        "--algo",
        default=None,
        help="algorithm (default: Diffusion-QL's, whose speed the performance page tracks)",
    )
    be.add_argument("--obs-dim", type=int, default=11, help="observation size (default 11)")
    be.add_argument("--act-dim", type=int, default=3, help="action size (default 3)")
    be.add_argument("--batch-size", type=int, default=256, help="train: batch (default 256)")
    be.add_argument("--seconds", type=float, default=20.0, help="measuring time (default 20)")
    be.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    be.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config")
    be.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    be.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)
    be.add_argument("--horizon", type=int, default=None, help="plan: horizon (default: config)")
    be.add_argument("--plans", type=int, default=None, help="plan: plans per decision")
    be.add_argument("--sampling-steps", type=int, default=None, help="plan: denoising steps")
    be.add_argument("--guide-steps", type=int, default=None, help="plan: guide steps per step")
    be.add_argument("--fast", action="store_true", help="the algorithm's fastest preset (FAST)")
    be.add_argument("--json", action="store_true", help="print JSON")
    be.set_defaults(func=cmd_bench)

    al = sub.add_parser("algos", help="list the algorithms")
    al.set_defaults(func=cmd_algos)
