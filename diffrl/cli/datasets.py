"""`diffrl datasets list | make | info`: the offline datasets."""

from __future__ import annotations

import argparse
from typing import Any

from diffrl.cli.common import (
    print_json,
)
from diffrl.errors import DiffrlError


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from diffrl.datasets import BUILTINS, builtin_path, data_root, transitions_on_disk

    rows = []
    for name, spec in BUILTINS.items():
        path = builtin_path(name)
        transitions: int | None = None
        if path.exists():
            try:
                transitions = transitions_on_disk(path)
            except Exception:  # listed as made, its size unknown; `datasets info` says why
                transitions = None
        rows.append(
            {
                "name": name,
                "made": path.exists(),
                "path": str(path),
                "transitions": transitions,
                "default_size": spec.default_size,
                "description": spec.description,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    print(f"built-in datasets (made under {data_root()}, set DIFFRL_DATA to move it):")
    print("  transitions: of the file on disk where made, else the recipe's default size")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        if r["made"]:
            mark = "made"
            size = f"{r['transitions']:>9,}" if r["transitions"] is not None else "unreadable"
        else:
            mark, size = "    ", f"{r['default_size']:>9,}"
        print(f"  {r['name']:<{width}}  {mark}  {size:>9}  {r['description']}")
    print("make one with `diffrl datasets make NAME`; any D4RL HDF5, .npz or Minari id also works")
    return 0


def cmd_datasets_make(args: argparse.Namespace) -> int:
    from diffrl.datasets import make_builtin, make_from_policy

    if args.env or args.policy:
        if not (args.env and args.policy) or args.name:
            raise DiffrlError(
                "usage: diffrl datasets make NAME, or diffrl datasets make --env ENV_ID "
                "--policy SNAPSHOT.zip|random"
            )
        size = args.size if args.size is not None else 1_000_000
        path = make_from_policy(
            args.env,
            args.policy,
            size=size,
            seed=args.seed,
            out=args.out,
            fmt=args.format,
            force=args.force,
        )
    elif not args.name:
        raise DiffrlError("diffrl datasets make: give a NAME (see `diffrl datasets list`)")
    else:
        path = make_builtin(
            args.name,
            size=args.size,
            seed=args.seed,
            out=args.out,
            fmt=args.format,
            force=args.force,
        )
    if args.json:
        print_json({"path": str(path)})
    else:
        print(f"wrote {path}")
    return 0


def cmd_datasets_info(args: argparse.Namespace) -> int:
    from diffrl.datasets import resolve
    from diffrl.envs import gym_id_for, known_maze, open_cells

    dataset = resolve(args.name, auto_make=False)
    stats = dataset.stats()
    meta = dataset.metadata
    info = {"name": meta.get("name", args.name), "source": meta.get("source"), **stats}
    # The environment runs evaluate in: the file's metadata `env_id`, else one known from a
    # D4RL-style name; said plainly when there is none.
    env_id = meta.get("env_id") or gym_id_for(str(meta.get("name", args.name))) or ""
    info["env_id"] = env_id or (
        "none (store it as the file's metadata 'env_id', or give runs --set env_id=ENV_ID; "
        "docs/datasets.md)"
    )
    for key in ("recipe", "seed", "size", "goal_arrivals", "arrivals_per_100k_steps", "eval_goal"):
        if key in meta:
            info[key] = meta[key]
    layout = None
    if env_id.startswith("PointMaze"):
        try:
            layout = known_maze(env_id)
        except DiffrlError as exc:  # the maze extra is missing: the rest still shows
            info["open_cells"] = f"unknown ({exc})"
    if layout is not None:
        # Where a goal or a plan's start may go: the open cells (each centre +- half a cell).
        info["open_cells"] = [list(c) for c in open_cells(layout)]
        info["cell_size"] = layout["cell"]
    if args.json:
        print_json(info)
        return 0
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        if key == "open_cells" and isinstance(value, list):
            value = " ".join(",".join(f"{v:g}" for v in c) for c in value) + " (x,y centres)"
        print(f"{key:>24}: {value}")
    return 0


def add_parsers(sub: Any) -> None:
    """This group's commands on the `diffrl` parser's subparsers."""
    ds = sub.add_parser("datasets", help="list, make and inspect offline datasets")
    ds_sub = ds.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND")
    d_list = ds_sub.add_parser("list", help="built-in datasets and whether they are made")
    d_list.add_argument("--json", action="store_true", help="print JSON")
    d_list.set_defaults(func=cmd_datasets_list)
    d_make = ds_sub.add_parser("make", help="make a built-in dataset (D4RL HDF5 layout)")
    d_make.add_argument("name", nargs="?", help="built-in dataset name (`diffrl datasets list`)")
    d_make.add_argument("--env", default=None, help="collect in this Gymnasium env instead")
    d_make.add_argument(
        "--policy", default=None, help="with --env: an SB3 SAC snapshot .zip, or 'random'"
    )
    d_make.add_argument("--size", type=int, default=None, help="transitions (default: recipe's)")
    d_make.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    d_make.add_argument("--out", default=None, help="write here instead of $DIFFRL_DATA/NAME.hdf5")
    d_make.add_argument(
        "--format",
        choices=["d4rl", "minari"],
        default="d4rl",
        help="d4rl: one HDF5 file (default); minari: a Minari dataset diffrl/ENV/LEVEL-vN "
        "under $MINARI_DATASETS_PATH (or --out as the Minari root)",
    )
    d_make.add_argument(
        "--force", action="store_true", help="replace a file that exists (else it is kept)"
    )
    d_make.add_argument("--json", action="store_true", help='print {"path": ...}')
    d_make.add_argument("--no-progress", action="store_true", help="no progress bars")
    d_make.set_defaults(func=cmd_datasets_make)
    d_info = ds_sub.add_parser("info", help="statistics of a dataset (name, file or Minari id)")
    d_info.add_argument("name", help="built-in name, D4RL .hdf5, .npz, or Minari id/path")
    d_info.add_argument("--json", action="store_true", help="print JSON")
    d_info.set_defaults(func=cmd_datasets_info)
    ds.set_defaults(func=lambda a: (ds.print_help(), 0)[1])
