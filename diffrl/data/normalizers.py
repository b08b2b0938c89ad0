"""Normalisers as `nn.Module`s whose statistics are buffers.

Buffers put the statistics in every checkpoint's state_dict and move them with `.to(device)`,
so a run directory alone is enough to act (ARCHITECTURE.md, principle 4). To reload, build an
empty one of the same kind and dim (`make_normalizer(kind, None, dim)`) and `load_state_dict`.

`normalize` / `unnormalize` take torch tensors (any leading shape, last dim = dim; the result
is on the input's device) or numpy arrays (numpy comes back).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from diffrl.errors import ConfigError, DatasetError

Array = torch.Tensor | np.ndarray
KINDS = ("gaussian", "limits", "none")


def _fit_data(data: Any, dim: int | None = None) -> np.ndarray:
    """(N, dim) float64 copy of `data`, which must have at least one row."""
    arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    # (N,) is read as N one-dimensional rows; more leading axes are flattened into rows.
    arr = arr.astype(np.float64)
    arr = arr.reshape(-1, 1) if arr.ndim < 2 else arr.reshape(-1, arr.shape[-1])
    if arr.shape[0] == 0:
        raise DatasetError("cannot fit a normaliser to 0 rows")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"data has last dim {arr.shape[1]}, expected {dim}")
    return arr


class Normalizer(nn.Module):
    """Shared plumbing: subclasses implement `_forward(x, stats)` and `_inverse(x, stats)`
    on either numpy arrays or tensors, with `stats` the buffers converted to match x."""

    kind = ""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    def _stats(self, x: Array) -> dict[str, Array]:
        if isinstance(x, np.ndarray):
            dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
            return {k: b.detach().cpu().numpy().astype(dtype) for k, b in self.named_buffers()}
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return {k: b.to(device=x.device, dtype=dtype) for k, b in self.named_buffers()}

    def _check(self, x: Array) -> Array:
        if not isinstance(x, torch.Tensor | np.ndarray):
            x = np.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}({self.dim}) got shape {tuple(x.shape)}: last dim must "
                f"be {self.dim}"
            )
        if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        if isinstance(x, torch.Tensor) and not x.is_floating_point():
            x = x.float()
        return x

    def normalize(self, x: Array) -> Array:
        x = self._check(x)
        return self._forward(x, self._stats(x))

    def unnormalize(self, x: Array) -> Array:
        x = self._check(x)
        return self._inverse(x, self._stats(x))

    def forward(self, x: Array) -> Array:
        return self.normalize(x)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def _forward(self, x: Any, s: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _inverse(self, x: Any, s: dict[str, Any]) -> Any:
        raise NotImplementedError


class GaussianNormalizer(Normalizer):
    """x -> (x - mean) / std per dimension.

    A (near-)constant dimension (std < `eps`) gets std = 1: it maps to 0 on the data, and a
    value the environment produces off the data's constant stays on a sane scale instead of being
    multiplied by 1/eps.
    """

    kind = "gaussian"

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim)
        self.eps = eps
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("std", torch.ones(self.dim))

    @classmethod
    def fit(cls, data: Array, eps: float = 1e-6) -> GaussianNormalizer:
        """Mean and std of data (N, dim), computed in float64."""
        arr = _fit_data(data)
        norm = cls(arr.shape[1], eps=eps)
        norm.mean.copy_(torch.from_numpy(arr.mean(axis=0)))
        std = arr.std(axis=0)
        norm.std.copy_(torch.from_numpy(np.where(std < eps, 1.0, std)))
        return norm

    def _forward(self, x: Any, s: dict[str, Any]) -> Any:
        return (x - s["mean"]) / s["std"]

    def _inverse(self, x: Any, s: dict[str, Any]) -> Any:
        return x * s["std"] + s["mean"]


class LimitsNormalizer(Normalizer):
    """x -> [-1, 1] per dimension using the data's min (low) and max (high); a constant
    dimension (low == high) maps to 0 and back to its value."""

    kind = "limits"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.register_buffer("low", -torch.ones(self.dim))
        self.register_buffer("high", torch.ones(self.dim))

    @classmethod
    def fit(cls, data: Array) -> LimitsNormalizer:
        arr = _fit_data(data)
        norm = cls(arr.shape[1])
        norm.low.copy_(torch.from_numpy(arr.min(axis=0)))
        norm.high.copy_(torch.from_numpy(arr.max(axis=0)))
        return norm

    @staticmethod
    def _centre_half(s: dict[str, Any]) -> tuple[Any, Any]:
        return (s["high"] + s["low"]) / 2, (s["high"] - s["low"]) / 2

    def _forward(self, x: Any, s: dict[str, Any]) -> Any:
        centre, half = self._centre_half(s)
        # Scale by 1/half where half > 0 and by 0 elsewhere, so constant dims give 0, not NaN.
        if isinstance(x, np.ndarray):
            inv = np.divide(1.0, half, out=np.zeros_like(half), where=half > 0)
        else:
            inv = torch.where(half > 0, 1.0 / torch.where(half > 0, half, 1.0), 0.0)
        return (x - centre) * inv

    def _inverse(self, x: Any, s: dict[str, Any]) -> Any:
        centre, half = self._centre_half(s)
        return x * half + centre


class IdentityNormalizer(Normalizer):
    """No-op with the same interface (and an empty state_dict)."""

    kind = "none"

    @classmethod
    def fit(cls, data: Array) -> IdentityNormalizer:
        return cls(_fit_data(data).shape[1])

    def _forward(self, x: Any, s: dict[str, Any]) -> Any:
        return x

    def _inverse(self, x: Any, s: dict[str, Any]) -> Any:
        return x


_CLASSES: dict[str, type[Normalizer]] = {
    "gaussian": GaussianNormalizer,
    "limits": LimitsNormalizer,
    "none": IdentityNormalizer,
}


def to_unit_box(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Map actions from the box [low, high] affinely to [-1, 1] (a zero-width dim maps to -1)."""
    return 2.0 * (x - low) / (high - low).clamp_min(1e-6) - 1.0


def from_unit_box(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_unit_box`: [-1, 1] -> [low, high]."""
    return low + (x + 1.0) * 0.5 * (high - low)


def make_normalizer(kind: str, data: Array | None, dim: int) -> Normalizer:
    """A normaliser of `kind` ("gaussian", "limits" or "none") fitted to data (N, dim), or
    unfitted (to be filled by `load_state_dict`) when data is None."""
    if kind not in _CLASSES:
        raise ConfigError(f"unknown normalizer '{kind}' (valid: {', '.join(KINDS)})")
    cls = _CLASSES[kind]
    if data is None:
        return cls(dim)
    arr = _fit_data(data, dim)
    return cls.fit(arr)


def refit(normalizer: Normalizer, kind: str, data: Array) -> None:
    """Fit an agent's `normalizer` of `kind` to `data` (N, dim) in place: its statistics are
    buffers, so they land in the agent's state_dict and travel with every checkpoint."""
    data = np.asarray(data)
    normalizer.load_state_dict(make_normalizer(kind, data, int(data.shape[-1])).state_dict())
