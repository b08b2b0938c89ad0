"""The `diffrl` command. Run `diffrl --help`, or `diffrl COMMAND --help`."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from diffrl.config import PRECISIONS
from diffrl.errors import DiffrlError


def _print_json(data: Any) -> None:
    print(json.dumps(_finite(data), indent=2, allow_nan=False))


# ----------------------------------------------------------------------------- datasets
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
        _print_json(rows)
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
        _print_json({"path": str(path)})
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
        _print_json(info)
        return 0
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        if key == "open_cells" and isinstance(value, list):
            value = " ".join(",".join(f"{v:g}" for v in c) for c in value) + " (x,y centres)"
        print(f"{key:>24}: {value}")
    return 0


# ----------------------------------------------------------------------------- train / eval
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
        print(f"final evaluation: {_summary_line(result)}", file=sys.stderr)
    print(str(run_dir))
    return 0


def _numbers(flag: str, text: str | None) -> list[float] | None:
    """'1.2,-0.8' -> [1.2, -0.8]; a one-line error for anything else."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise DiffrlError(f"{flag} takes numbers separated by commas, got {text!r}") from None


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
    start, goal = _numbers("--start", args.start), _numbers("--goal", args.goal)
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
                **({"in_walls": p["in_walls"]} if "in_walls" in p else {}),
            }
            for p in plans
        ]
    }
    if args.json:
        print(json.dumps(_finite(out)))
    else:
        best = plans[0]
        value = "" if best["value"] is None else f", value {_fmt(best['value'])}"
        if "in_walls" in best:
            value += f", {best['in_walls']} state(s) inside walls"
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
        out[h] = _numbers("--waypoint", values)
    return out


def _guide_points(args: argparse.Namespace) -> tuple[list[list[float]], list[list[float]]]:
    """`--avoid X,Y,R` and `--via X,Y` (repeatable), checked: (discs, points)."""
    discs, points = [], []
    for text in args.avoid or []:
        values = _numbers("--avoid", text)
        if len(values) != 3:
            raise DiffrlError(f"--avoid takes X,Y,RADIUS, got {text!r}")
        discs.append(values)
    for text in args.via or []:
        values = _numbers("--via", text)
        if len(values) != 2:
            raise DiffrlError(f"--via takes X,Y, got {text!r}")
        points.append(values)
    return discs, points


def _guides(discs: list[list[float]], points: list[list[float]], weight: float) -> list[Any]:
    """The guides of `--avoid` discs and `--via` points, each of weight `--guide-weight`."""
    from diffrl.guides import avoid, via

    return [avoid(d[:2], d[2], weight) for d in discs] + [via(p, weight) for p in points]


# Options whose values may begin with a minus sign (maze coordinates): `--start -1.2,-0.8`
# is rewritten to `--start=-1.2,-0.8`, which argparse would otherwise take for an option.
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


def _fmt(value: Any) -> str:
    """Numbers to a precision a person reads: 4 significant digits, no float noise."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _summary_line(summary: dict[str, Any]) -> str:
    """The scalars of an evaluation summary on one line."""
    return ", ".join(
        f"{k} {_fmt(v)}" for k, v in summary.items() if not isinstance(v, (list, dict))
    )


def _finite(data: Any) -> Any:
    """NaN and infinities -> None, so printed JSON is valid JSON."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def cmd_eval(args: argparse.Namespace) -> int:
    from diffrl.api import load
    from diffrl.config import parse_set_args
    from diffrl.run import RunDir

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
    config, episodes, seed = run.settings(**overrides)
    if args.episodes is not None:
        episodes = args.episodes
    if args.seed is not None:
        seed = args.seed
    out: dict[str, Any] = run.record(config, seed, overrides)
    if args.sweep:
        key, sep, values = args.sweep.partition("=")
        if not sep:
            raise DiffrlError(f"--sweep is KEY=V1,V2,...; got {args.sweep!r}")
        rows = run.sweep(key.strip(), values.split(","), episodes, seed, **overrides)
        out["sweep"] = {"key": key.strip(), "results": rows}
    else:
        out.update(run.evaluate(episodes, seed, **overrides))
    out = _finite(out)
    RunDir(args.run_dir).write_eval(out)
    if args.json:
        _print_json(out)
        return 0
    for key, value in out.items():
        if key in ("returns", "sweep"):
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            print(f"{key:>22}:")  # a sweep: one line per value
            for name, row in value.items():
                print(f"{name:>22}  {_summary_line(row)}")
            continue
        print(f"{key:>22}: {_fmt(value)}")
    if "sweep" in out:
        print(f"{'sweep of ' + out['sweep']['key']:>22}:")
        for row in out["sweep"]["results"]:
            summary = {k: v for k, v in row.items() if k != "value"}
            print(f"{_fmt(row['value']):>22}  {_summary_line(summary)}")
    if args.seed is None:
        from diffrl.run import eval_seed

        print(
            f"(episodes seeded from {seed:,}; the evaluations during training used seeds from "
            f"{eval_seed(config.seed, 'training'):,}, so their score for this checkpoint differs "
            "by sampling noise; --seed S chooses)",
            file=sys.stderr,
        )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from diffrl.sweep import grid_from_args, run_sweep

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
        _print_json(out)
    else:
        print(f"{out['env_id']}: {out['steps_done']:,} steps, {out['seconds'] / 3600:.2f} h")
        print(f"{'step':>9} {'det_mean':>9} {'stoch_mean':>10}")
        for row in out["snapshots"]:
            print(f"{int(row['step']):>9} {row['det_mean']:>9.1f} {row['stoch_mean']:>10.1f}")
    return 0


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
        _print_json(to_dict(config))
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
    from diffrl.bench import bench_act, bench_train
    from diffrl.config import parse_set_args
    from diffrl.run import resolve_device

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
        _print_json(out)
    else:
        where = f"{out['device']}, {out['threads']} threads ({out['thread_policy']})"
        print(f"{args.algo} {args.what}: {line} ({where}, {out['precision']})")
    return 0


# ----------------------------------------------------------------------------- parser
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default (where it has one that says something)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


THREADS_HELP = (
    "torch threads, pinned (default: follow the machine's load, every core while nothing "
    "else runs and fewer while other processes work; docs/performance.md)"
)
PRECISION_HELP = (
    "matrix products in fp32 or bf16 (float32 weights, optimiser, losses and output layers); "
    "the same as --set precision=P (default: the config's, fp32)"
)


def build_parser() -> argparse.ArgumentParser:
    import diffrl

    p = argparse.ArgumentParser(
        prog="diffrl",
        description="Diffusion models for decision making: datasets, training, evaluation.",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"diffrl {diffrl.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

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

    cf = sub.add_parser("config", help="show an algorithm's config keys and resolved values")
    cf.add_argument("algo", help="algorithm")
    cf.add_argument("--dataset", default=None, help="apply this dataset's preset")
    cf.add_argument("--env", default=None, help="an online run's preset for this environment")
    cf.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    cf.add_argument("--json", action="store_true", help="print JSON")
    cf.set_defaults(func=cmd_config)

    from diffrl.config import BENCH_DEFAULT

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

    be = sub.add_parser("bench", help="speed of training steps or acting, on synthetic data")
    be.add_argument(
        "what",
        choices=["train", "act", "plan"],
        help="train: steps/s; act: ms per action; plan: ms per plan (planners)",
    )
    be.add_argument("--algo", default=BENCH_DEFAULT, help=f"algorithm (default {BENCH_DEFAULT})")
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
    _help_everywhere(p)
    return p


def _help_everywhere(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's --help shows defaults, as the top-level one does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.formatter_class = _Help
                _help_everywhere(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_signed(list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from diffrl import progress
    from diffrl.runtime import set_threads, tune_cpu_allocator

    tune_cpu_allocator()  # fewer page faults per training step (diffrl/runtime.py)
    try:
        if getattr(args, "precision", None) is not None:
            if getattr(args, "resume", None) and args.func is cmd_sweep:
                raise DiffrlError("--resume reuses the sweep's own grid; drop --precision")
            args.set = [*(args.set or []), f"precision={args.precision}"]
        if getattr(args, "threads", None) is not None:
            set_threads(args.threads)
        # --no-progress: every bar of the command, dataset building's too (then as before).
        with progress.enabled_as(not getattr(args, "no_progress", False)):
            return int(args.func(args) or 0)
    except DiffrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `diffrl ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
