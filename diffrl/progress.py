"""Progress bars: one switch for the process (`--no-progress`), and bars for long work that has
no loop of its own to show (a planner's reverse chain, when a person waits for its plans).

Every bar diffrl draws is a `bar(...)` (tqdm, on stderr): `--no-progress` turns them all off,
dataset building included. The denoising steps of a plan show a bar only inside
`denoising_shown()` (what `diffrl plan` uses): an agent acting in an episode replans every few
steps and must not draw a bar each time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_enabled = True
_denoising = False
LOG_SECONDS = 30.0  # how often a bar redraws in a log file


def set_enabled(on: bool) -> None:
    """Turn every progress bar of this process on or off (the CLI's `--no-progress`)."""
    global _enabled
    _enabled = bool(on)


def enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def enabled_as(on: bool) -> Iterator[None]:
    """Bars on or off within the block, then as they were."""
    before = _enabled
    set_enabled(on)
    try:
        yield
    finally:
        set_enabled(before)


def bar(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm bar that `--no-progress` hides (its own `disable=` still applies). Written to a
    file rather than a terminal (a background job's log) it redraws every LOG_SECONDS, not ten
    times a second, unless TQDM_MININTERVAL says otherwise."""
    kwargs["disable"] = bool(kwargs.get("disable", False)) or not _enabled
    if "TQDM_MININTERVAL" not in os.environ and not _to_terminal(kwargs.get("file")):
        kwargs.setdefault("mininterval", LOG_SECONDS)
    return tqdm(*args, **kwargs)


def _to_terminal(stream: Any) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def denoising_shown(on: bool = True) -> Iterator[None]:
    """Within the block, `denoising(...)` loops draw a bar (when bars are enabled)."""
    global _denoising
    before, _denoising = _denoising, bool(on)
    try:
        yield
    finally:
        _denoising = before


def denoising(steps: Iterable[T], desc: str = "denoise") -> Iterable[T]:
    """`steps` as they are, or under a bar inside `denoising_shown()`."""
    if not (_denoising and _enabled):
        return steps
    steps = list(steps)
    return tqdm(steps, desc=desc, unit="step", leave=False)
