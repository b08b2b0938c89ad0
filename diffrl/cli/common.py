"""What every command group shares: printing, number parsing, help text."""

from __future__ import annotations

import argparse
import json
from typing import Any

from diffrl.errors import DiffrlError
from diffrl.fileio import finite


def print_json(data: Any) -> None:
    print(json.dumps(finite(data), indent=2, allow_nan=False))


def fmt(value: Any) -> str:
    """Numbers to a precision a person reads: 4 significant digits, no float noise."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def summary_line(summary: dict[str, Any]) -> str:
    """The scalars of an evaluation summary on one line."""
    return ", ".join(f"{k} {fmt(v)}" for k, v in summary.items() if not isinstance(v, (list, dict)))


def parse_numbers(flag: str, text: str | None) -> list[float] | None:
    """'1.2,-0.8' -> [1.2, -0.8]; a one-line error for anything else."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise DiffrlError(f"{flag} takes numbers separated by commas, got {text!r}") from None


class Help(argparse.ArgumentDefaultsHelpFormatter):
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
