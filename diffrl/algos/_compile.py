"""torch.compile for an agent's gradient-free graphs, with a one-time eager fallback."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


class CompiledGraphs:
    """`run(name, fn, *args)` = fn(*args), through torch.compile when enabled and the first
    tensor argument is on the CPU (on CUDA the eager kernels are not the bottleneck). On any
    compile failure it warns once and runs eagerly from then on (eager re-raises real errors).
    """

    def __init__(self, owner: str, enabled: bool) -> None:
        self.owner = owner
        self.enabled = enabled
        self.failed = False
        self._compiled: dict[str, Callable[..., Any]] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self.enabled and not self.failed and args[0].device.type == "cpu":
            compiled = self._compiled.get(name)
            if compiled is None:
                compiled = self._compiled[name] = torch.compile(fn)
            try:
                return compiled(*args)
            except Exception as exc:  # noqa: BLE001 - fall back to eager
                self.failed = True
                warnings.warn(
                    f"{self.owner}: torch.compile failed ({type(exc).__name__}: "
                    f"{str(exc)[:160]}); running eagerly",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return fn(*args)
