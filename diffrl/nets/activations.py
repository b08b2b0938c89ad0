"""Mish (Misra 2019), computed with one exponential instead of three transcendentals.

    mish(x) = x * tanh(softplus(x)) = x * n / (n + 2),   n = e^x (e^x + 2)

because tanh(log(1 + e^x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1). The derivative, from the
same e^x, is tanh_sp + x * sigmoid(x) * (1 - tanh_sp^2) with tanh_sp = n / (n + 2) and
sigmoid(x) = e^x / (1 + e^x). x is clamped at 20 inside the exponential (tanh(softplus(20)) is 1
in float32), so nothing overflows. This is the same function as `torch.nn.functional.mish`
(agreement within 3e-7 absolute on N(0, 1) inputs, tested), not an approximation.

Why: in Diffusion-QL's 256-wide MLPs on a CPU, PyTorch's native Mish (exp, log1p and tanh,
elementwise) costs about as much as the matrix products. Compiled by `torch.compile` into one
fused loop per direction, the one-exponential form is about 3x faster forward (measured in
docs/performance.md). Where `torch.compile` is unavailable or fails (no C++ compiler, an
unsupported device), the native op is used instead, with one warning.

`set_fast_mish(False)` (or DIFFRL_FAST_MISH=0) switches to the native op everywhere.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

_CLAMP = 20.0


def _mish_forward(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x.clamp(max=_CLAMP))
    n = e * (e + 2.0)
    return x * n / (n + 2.0)


def _mish_forward_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mish(x), mish'(x)) from one exponential; the slope is saved for the backward pass."""
    e = torch.exp(x.clamp(max=_CLAMP))
    n = e * (e + 2.0)
    tanh_sp = n / (n + 2.0)
    sigmoid = e / (1.0 + e)
    return x * tanh_sp, tanh_sp + x * sigmoid * (1.0 - tanh_sp * tanh_sp)


# The same two functions in place on fresh intermediates, for eager use (mish_eager): fewer
# allocations and passes there. The compiled path keeps the functional forms above: inductor's
# forward kernel for the in-place form measured 12 % slower at (256, 256).
def _mish_forward_inplace(x: torch.Tensor) -> torch.Tensor:
    e = x.clamp(max=_CLAMP).exp_()
    n = e.add(2.0).mul_(e)
    return n.div_(n.add(2.0)).mul_(x)


def _mish_forward_and_slope_inplace(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = x.clamp(max=_CLAMP).exp_()
    tanh_sp = e.add(2.0).mul_(e)
    tanh_sp.div_(tanh_sp.add(2.0))
    sigmoid = e.div_(e.add(1.0))
    slope = tanh_sp.square().neg_().add_(1.0).mul_(sigmoid).mul_(x).add_(tanh_sp)
    return tanh_sp.mul_(x), slope


class _State:
    enabled: bool = os.environ.get("DIFFRL_FAST_MISH", "1") != "0"
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    forward_and_slope: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    failed: bool = False


def set_fast_mish(enabled: bool) -> None:
    """Use the compiled one-exponential Mish (True, the default) or PyTorch's native op."""
    _State.enabled = bool(enabled)


def fast_mish_enabled() -> bool:
    return _State.enabled and not _State.failed


def _compiled() -> bool:
    if _State.forward is None:
        # dynamic=None: the first shape gets a static kernel, a second one kernel for every
        # size (the same speed on this element-wise loop: 45-47 us at (256, 256) either way).
        # Shape-specialised kernels recompiled for each batch size an evaluation passes through
        # (episodes ending one by one, times IDQL's 64 candidates): 1-3 s each, then dynamo's
        # recompile limit and a warning.
        _State.forward = torch.compile(_mish_forward, dynamic=None)
        _State.forward_and_slope = torch.compile(_mish_forward_and_slope, dynamic=None)
    return True


class _FastMish(torch.autograd.Function):
    """Mish with the slope from `forward_and_slope` (compiled or eager) saved for backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: torch.Tensor, forward_and_slope: Callable
    ) -> torch.Tensor:
        # With a backward pass to come, the slope costs one multiply-add more here and turns
        # the backward into a single product (no second exponential).
        y, slope = forward_and_slope(x)
        ctx.save_for_backward(slope)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (slope,) = ctx.saved_tensors
        return grad * slope, None


# At or below this many elements the native op's single call beats the seven in-place ones
# (1,024 elements: 4.5 against 10.1 us forward, 24.5 against 43.8 us with backward, 2 cores);
# above it the one-exponential form wins (16,384: 57 against 28 us).
_NATIVE_BELOW = 2048


def mish_eager(x: torch.Tensor) -> torch.Tensor:
    """Mish without torch.compile: the one-exponential form op by op, in place.

    For networks whose activations come in many shapes (the temporal U-Net: one per width and
    length), where a shape-specialised compiled kernel would recompile per shape. About 3.5x
    faster than the native op forward and 1.7x forward + backward at (64, 32, 32) on one core.
    """
    if (
        not _State.enabled
        or x.device.type != "cpu"
        or x.numel() <= _NATIVE_BELOW
        or torch.compiler.is_compiling()
    ):
        return F.mish(x)
    if x.requires_grad and torch.is_grad_enabled():
        return _FastMish.apply(x, _mish_forward_and_slope_inplace)
    return _mish_forward_inplace(x)


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish, (any shape) -> (same shape); differentiable once (no double backward)."""
    if torch.compiler.is_compiling():
        # Inside a graph being compiled: plain ops, which inductor fuses with their neighbours.
        return _mish_forward(x) if _State.enabled else F.mish(x)
    if not (_State.enabled and not _State.failed) or x.device.type != "cpu":
        # On CUDA the native kernel is already fused and memory-bound.
        return F.mish(x)
    try:
        _compiled()
        if x.requires_grad and torch.is_grad_enabled():
            return _FastMish.apply(x, _State.forward_and_slope)
        return _State.forward(x)  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - any compile/runtime failure falls back
        _State.failed = True
        warnings.warn(
            f"diffrl: compiled Mish unavailable ({type(exc).__name__}: {str(exc)[:120]}); "
            "using torch's native Mish (slower on CPU)",
            RuntimeWarning,
            stacklevel=2,
        )
        return F.mish(x)


class Mish(nn.Module):
    """Drop-in for `nn.Mish` using :func:`mish` (no parameters: state_dicts are unchanged);
    `compiled=False` uses :func:`mish_eager`."""

    def __init__(self, compiled: bool = True) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x) if self.compiled else mish_eager(x)
