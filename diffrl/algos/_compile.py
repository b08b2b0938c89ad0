"""torch.compile for an agent's graphs, with a one-time eager fallback."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


class CompiledGraphs:
    """`run(name, fn, *args)` = fn(*args), through torch.compile when enabled and the first
    tensor argument is on the CPU (on CUDA the eager kernels are not the bottleneck). On any
    compile failure it warns once and runs eagerly from then on (eager re-raises real errors).

    Graphs may be differentiated: their backward graph is compiled together with the forward
    (not lazily at the first `backward()`), so a compile failure shows up here, in the forward
    call, where it can still fall back to eager before any gradient or optimiser step.
    """

    def __init__(self, owner: str, enabled: bool) -> None:
        self.owner = owner
        self.enabled = enabled
        self.failed = False
        self._compiled: dict[str, Callable[..., Any]] = {}

    def active(self, device: torch.device) -> bool:
        """Whether `run` compiles for tensors on `device`."""
        return self.enabled and not self.failed and device.type == "cpu"

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self.active(args[0].device):
            compiled = self._compiled.get(name)
            if compiled is None:
                compiled = self._compiled[name] = torch.compile(fn)
            try:
                if torch.is_grad_enabled():
                    with torch._functorch.config.patch(force_non_lazy_backward_lowering=True):
                        return compiled(*args)
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
