"""Mixed precision: matrix products in bfloat16, everything that accumulates in float32.

`precision: fp32 | bf16` (a config key of every algorithm; `--precision` on `train`, `eval`,
`bench` and `sweep`). With bf16, the places that run an agent (the training loop, evaluation,
`diffrl bench`, the Python API) enter `precision_scope`, a `torch.autocast` region: matrix
products and convolutions take bfloat16 operands and accumulate in float32 (AVX-512 BF16 or
AMX on a CPU through oneDNN, tensor cores on a CUDA GPU); element-wise work follows its inputs.

What stays float32, and why:
- weights, gradients and optimiser state (autocast casts a copy of each weight per product; the
  update itself is float32, so small steps are not rounded away);
- every network's output layer (`Float32Linear`, `linear_fp32`): a Q-value of 300 in bfloat16
  is 300 +- 1, coarser than the TD errors it is trained on; a predicted noise in bfloat16 loses
  the last two digits the sampler adds up over its steps;
- normalisers, losses, targets and sampler arithmetic: they act on those float32 outputs and
  on float32 data, so they run in float32 without being told.

Who pays: `docs/performance.md` ("bf16") measures where bf16 helps on this CPU and where it does
not; the run's stored config records the precision it trained with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from diffrl.config import PRECISIONS
from diffrl.errors import ConfigError


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` has a fast bfloat16 matrix-product path."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        # oneDNN's test for AVX-512 BF16 / AMX (a slow emulated path would be no gain).
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(torch.backends.mkldnn.is_available() and check is not None and check())
    return False


def check_precision(precision: str, device: torch.device | str, algo: str = "") -> None:
    """Raise a one-line ConfigError where `precision` cannot run on `device`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {' | '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return
    device = torch.device(device)
    if not bf16_supported(device):
        what = "CPU (no AVX-512 BF16 or AMX)" if device.type == "cpu" else str(device)
        raise ConfigError(
            f"precision bf16: this {what} has no bfloat16 matrix-product path; use --precision fp32"
        )


@contextlib.contextmanager
def precision_scope(precision: str, device: torch.device | str) -> Iterator[None]:
    """Run the block's matrix products at `precision` (bf16: a `torch.autocast` region)."""
    if precision != "bf16":
        yield
        return
    device = torch.device(device)
    # No cast cache: autocast keeps the bf16 copy of each weight until the outermost region
    # exits, and this region spans a whole training loop, so a cached copy would be the
    # weights of the first step forever while the float32 master weights move on (measured:
    # Diffusion-BC on the toy bandit learned nothing, every sample at the box's edge).
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
        yield


def linear_fp32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear in the weights' dtype even inside an autocast region (an output layer)."""
    if not torch.is_autocast_enabled(x.device.type):
        return F.linear(x, weight, bias)  # no context to leave: eager calls stay cheap
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.linear(x.to(weight.dtype), weight, bias)


class Float32Linear(nn.Linear):
    """An nn.Linear that stays in its weights' dtype under autocast: a network's output layer.

    The same parameters and state-dict keys as nn.Linear, so checkpoints load either way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_fp32(x, self.weight, self.bias)
