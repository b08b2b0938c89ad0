"""Embeddings of the diffusion time t.

- :class:`SinusoidalPosEmb`: the fixed sinusoidal embedding of discrete steps used by Diffuser
  (jannerm/diffuser ``models/helpers.py``) and Diffusion-QL (``agents/helpers.py``), i.e. the
  transformer position encoding with the frequencies spread over ``half - 1`` intervals.
- :class:`GaussianFourierEmbedding`: random Fourier features of continuous time t in [0, 1]
  (Song et al. 2021, score SDE; used by QGPO / CEP for its VP-SDE behaviour model).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffrl.errors import ConfigError


def _as_batch(t: torch.Tensor) -> torch.Tensor:
    """Return t as a floating (B,) tensor; a 0-d t becomes (1,) so it broadcasts later."""
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ConfigError(f"time t must have shape (B,), got {tuple(t.shape)}")
    # Integer step indices (DDPM) and float times (SDE, DDIM) are both accepted.
    return t if t.is_floating_point() else t.float()


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal embedding of the diffusion step.

    emb(t) = [sin(t f_0), ..., sin(t f_{h-1}), cos(t f_0), ..., cos(t f_{h-1})],
    f_k = exp(-log(10000) k / (h - 1)), h = dim // 2.

    Parameters
    ----------
    dim : even embedding size, at least 4 (``h - 1`` must be positive).

    Shapes
    ------
    t : (B,) float or long  ->  (B, dim)
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ConfigError(f"time-embedding dim {dim} must be an even number >= 4")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = _as_batch(t)
        half = self.dim // 2
        # Built on the fly (not a buffer) so that state_dicts stay those of the originals.
        k = torch.arange(half, device=t.device, dtype=t.dtype)
        freqs = torch.exp(k * (-math.log(10000.0) / (half - 1)))
        arg = t[:, None] * freqs[None, :]  # (B, half)
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class GaussianFourierEmbedding(nn.Module):
    """Gaussian random Fourier features of continuous time.

    emb(t) = [sin(2 pi t W), cos(2 pi t W)], W ~ N(0, scale^2) of size dim // 2, drawn once at
    construction and kept fixed. W is a buffer: it is saved in the state_dict (a reloaded model
    must see the same features) but it is not a parameter, so optimisers never touch it.

    Parameters
    ----------
    dim : even embedding size.
    scale : standard deviation of the frequencies (30 in score-SDE and QGPO).

    Shapes
    ------
    t : (B,) float, usually in [0, 1]  ->  (B, dim)
    """

    W: torch.Tensor

    def __init__(self, dim: int, scale: float = 30.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ConfigError(f"time-embedding dim {dim} must be an even number >= 2")
        self.dim = dim
        self.scale = scale
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = _as_batch(t).to(self.W.dtype)
        arg = 2 * math.pi * t[:, None] * self.W[None, :]  # (B, dim // 2)
        return torch.cat((arg.sin(), arg.cos()), dim=-1)
