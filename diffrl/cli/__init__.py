"""The `diffrl` command: one module per command group over the Python API (diffrl.api).
Run `diffrl --help`, or `diffrl COMMAND --help`."""

from __future__ import annotations

import argparse
import os
import sys

from diffrl.cli import behavior, datasets, info, plan, runs, sweeps
from diffrl.cli.common import Help
from diffrl.cli.plan import _join_signed
from diffrl.errors import DiffrlError

GROUPS = (datasets, runs, sweeps, behavior, info, plan)


def build_parser() -> argparse.ArgumentParser:
    import diffrl

    p = argparse.ArgumentParser(
        prog="diffrl",
        description="Diffusion models for decision making: datasets, training, evaluation.",
        formatter_class=Help,
    )
    p.add_argument("--version", action="version", version=f"diffrl {diffrl.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
    _help_everywhere(p)
    return p


def _help_everywhere(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's --help shows defaults, as the top-level one does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.formatter_class = Help
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
