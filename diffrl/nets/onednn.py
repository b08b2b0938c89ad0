"""Matrix products through oneDNN, where PyTorch's float32 route is slow.

PyTorch sends a float32 `addmm` on a CPU to MKL's sgemm. On the AMD EPYC (Zen 5) machine this
library is developed on, that kernel runs at about half the chip's AVX-512 rate, while oneDNN
(PyTorch's other CPU library, the one behind its convolutions) runs at the full rate.
Measured 2026-12-08, one thread, float32, x (M, K) @ W (K, N):

| M, K, N | addmm (MKL) | oneDNN, weight packed once |
| --- | --- | --- |
| 256, 256, 256 | 349 us (96 GFLOP/s) | 174 us (193 GFLOP/s) |
| 64, 1024, 1024 | 1617 us (83) | 637 us (211) |
| 4, 1024, 1024 | 242 us (35) | 74 us (113) |
| 1, 256, 256 | 7 us | 21 us |

(`python benchmarks/onednn_products.py` prints this table for the machine it runs on.) oneDNN
pays ~15 us more per call, so it wins from a few thousand multiply-adds per call up; below
`MIN_MACS` the plain product is used.

Two entry points:

- `linear` / `Linear` (an `nn.Linear` with the same state dict): the trained layers of every
  MLP (Diffusion-QL's denoiser and critics, QGPO's score and energy nets, FQL, the planners'
  embeddings and inverse dynamics). Forward and both gradients are oneDNN products, wrapped as
  the custom op ``diffrl::onednn_linear`` so torch.compile calls it as one opaque kernel.
  Used from `LINEAR_MIN_ROWS` rows (a training batch); one action's few rows take addmm.
- `ConstantProduct`: a matrix that no gradient flows into, the planner's convolutions applied
  as matrices (diffrl/nets/unet.py), built once per weight version. It packs the matrix into
  oneDNN's blocked layout once; the input gradient (for the value guide's d V / d x) is the
  same kind of product with the matrix as its weight.

Float32 on a CPU only; elsewhere (bfloat16 under autocast, CUDA, a PyTorch without oneDNN, or
``DIFFRL_ONEDNN=0``) it is `F.linear` / `torch.addmm`, which reach oneDNN for bfloat16 already.
Nothing numerical changes beyond float32 rounding (the sums run in another order).
"""

from __future__ import annotations

import os
import platform

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula

__all__ = ["ConstantProduct", "Linear", "linear", "onednn_available"]

#: Below this many multiply-adds per call (M K N) the plain product is faster (per-call cost).
MIN_MACS = 1 << 18

#: `linear` (a trained layer, its weight not packed) uses oneDNN from this many rows and this
#: many multiply-adds a call: oneDNN re-lays the weight out on each call, so one action's rows
#: (1-50) and small layers are faster through addmm. Forward + backward on one thread (us,
#: F.linear against oneDNN): 256 x 256 x 256 1331 / 778, 64 x 256 x 256 392 / 325, 256 x 256 x
#: 32 252 / 237, 64 x 128 x 128 144 / 191, 64 x 32 x 128 66 / 128; forward alone at 256 x 256,
#: 8 rows 22 / 52, 64 rows 103 / 88.
LINEAR_MIN_ROWS = 64
LINEAR_MIN_MACS = 1 << 22

_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_REORDER = getattr(getattr(torch.ops, "mkldnn", None), "_reorder_linear_weight", None)


# Checked once: an x86-64 CPU build of torch with oneDNN's linear op (the only kind measured).
_BUILT = (
    platform.machine().lower() in ("x86_64", "amd64")
    and _LINEAR is not None
    and _REORDER is not None
    and torch.backends.mkldnn.is_available()
)


def onednn_available() -> bool:
    """True where float32 products may go through oneDNN: an x86-64 CPU build of torch with it,
    not switched off by ``DIFFRL_ONEDNN=0``."""
    return _BUILT and os.environ.get("DIFFRL_ONEDNN", "1") != "0"


def _pack(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """`weight` (N, K) in oneDNN's layout for products with `rows` input rows."""
    return _REORDER(weight.contiguous(), rows)  # type: ignore[misc]


class _Product(torch.autograd.Function):
    """y = x @ W^T + b with W constant: the gradient reaches x only (d x = d y @ W)."""

    @staticmethod
    def forward(ctx, x, packed, matrix, bias):  # type: ignore[override]
        ctx.matrix = matrix
        return _LINEAR(x, packed, bias, "none", [], "")  # type: ignore[misc]

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        # d x = d y W: oneDNN's x W^T with the (K, N) matrix itself as its (out, in) weight.
        grad_x = _LINEAR(grad.contiguous(), ctx.matrix, None, "none", [], "")  # type: ignore[misc]
        return grad_x, None, None, None


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _LINEAR(x, weight, bias, "none", [], "")  # type: ignore[misc]


def _product_fake(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


# An operator of its own, so that torch.compile calls oneDNN as one opaque kernel: inductor's
# lowering of mkldnn's linear wants the weight frozen into the graph as a constant (inference
# only). Defined with torch.library.Library rather than `custom_op`, whose Python wrapper cost
# 13 us a call more (64 x 64, one thread: 36 against 23 us).
_LIB = torch.library.Library("diffrl", "DEF")
_LIB.define("onednn_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
_LIB.impl("onednn_linear", _product, "CPU")
torch.library.register_fake("diffrl::onednn_linear", _product_fake, lib=_LIB)
_op = torch.ops.diffrl.onednn_linear.default


def _setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad, product=None):  # type: ignore[no-untyped-def]
    """d x = d y W (W^T, a view, as oneDNN's (out, in) weight), d W = d y^T x, d b = sum d y;
    through the custom op (traceable by torch.compile) unless `product` is given."""
    product = product or _op
    x, weight = ctx.saved_tensors
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = product(grad, weight.t(), None)
    if ctx.needs_input_grad[1]:
        grad_w = product(grad.t(), x.t(), None)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = grad.sum(0)
    return grad_x, grad_w, grad_b


torch.library.register_autograd("diffrl::onednn_linear", _backward, setup_context=_setup, lib=_LIB)


class _EagerLinear(torch.autograd.Function):
    """The same op and gradients outside torch.compile, where a custom op's Python dispatch
    costs more per call (64 x 64, one thread: 52 against 26 us forward, 342 against 240 us
    forward and backward)."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        _setup(ctx, (x, weight, bias), None)
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _backward(ctx, grad, _product)


def _flops(x_shape, weight_shape, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    """For torch.utils.flop_counter: the same count as the addmm it replaces, 2 M K N."""
    return 2 * x_shape[0] * x_shape[1] * weight_shape[0]


register_flop_formula(torch.ops.diffrl.onednn_linear)(_flops)
if _LINEAR is not None:  # the eager route calls oneDNN's op directly
    register_flop_formula(torch.ops.mkldnn._linear_pointwise)(_flops)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for x (B, in) and weight (out, in), through oneDNN where it
    is faster (float32 on a CPU, both widths >= 32, B >= `LINEAR_MIN_ROWS`, B in out >=
    `LINEAR_MIN_MACS`, no autocast)."""
    out_dim, in_dim = weight.shape
    if (
        x.dim() == 2
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and min(in_dim, out_dim) >= 32
        and x.shape[0] >= LINEAR_MIN_ROWS
        and x.shape[0] * in_dim * out_dim >= LINEAR_MIN_MACS
        and not torch.is_autocast_enabled("cpu")
        and onednn_available()
    ):
        if torch.compiler.is_compiling():
            return _op(x, weight, bias)
        return _EagerLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` whose float32 CPU products go through oneDNN (`linear`); the same
    parameters and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class ConstantProduct:
    """x (M, K) -> x @ matrix + bias for a `matrix` (K, N) and `bias` (N,) that get no gradient.

    Built once per matrix; `rows` is the M it will mostly see (oneDNN's packing is chosen for
    it; any M works). `min_macs` overrides `MIN_MACS` (0: oneDNN at any size, to time it).
    """

    def __init__(
        self,
        matrix: torch.Tensor,
        bias: torch.Tensor | None,
        rows: int,
        min_macs: int | None = None,
    ) -> None:
        self.matrix, self.bias = matrix.detach(), None if bias is None else bias.detach()
        k, n = matrix.shape
        self.onednn = (
            onednn_available()
            and matrix.device.type == "cpu"
            and matrix.dtype == torch.float32
            and rows * k * n >= (MIN_MACS if min_macs is None else min_macs)
        )
        if self.onednn:
            # Packed once (N, K): y = x W^T. The input gradient uses the (K, N) matrix as it is:
            # a second packed copy would add the matrix's size again to what a plan streams
            # from memory (the fast preset's networks and matrices already exceed the cache).
            self._packed = _pack(self.matrix.t(), rows)
            self._bias = None if self.bias is None else self.bias.contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            return _Product.apply(x, self._packed, self.matrix, self._bias)
        if self.bias is None:
            return x @ self.matrix
        return torch.addmm(self.bias, x, self.matrix)
