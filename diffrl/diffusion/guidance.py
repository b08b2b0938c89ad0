"""Guidance and conditioning operations applied between sampler steps.

All are out-of-place and differentiable, so they can sit inside a chain that is backpropagated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from diffrl.errors import ConfigError, DiffrlError


def cfg_mix(out_uncond: Tensor, out_cond: Tensor, w: float | Tensor) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): ``out_uncond + w (out_cond - out_uncond)``.

    w = 1 is the conditional model, w = 0 the unconditional one, w > 1 extrapolates.
    Works for eps or x0 outputs of any shape (B, ...).
    """
    return out_uncond + w * (out_cond - out_uncond)


def inpaint(x: Tensor, conditions: Mapping[int, Tensor], start: int = 0) -> Tensor:
    """Copy of trajectories x (B, H, D) with ``x[:, h, start:start + c_dim] = c`` per condition.

    Diffuser-style conditioning (Janner et al. 2022): known states (e.g. the current
    observation at h = 0) overwrite the sample after every denoising step.
    ``conditions`` maps a horizon index h (negative counts from the end) to c of shape
    (B, c_dim) or (c_dim,). The copy keeps gradients to x's other entries and to c.
    """
    if x.dim() != 3:
        raise ConfigError(f"inpaint expects trajectories of shape (B, H, D), got {tuple(x.shape)}")
    B, H, D = x.shape
    out = x.clone()  # write into a copy: x may be needed by autograd or by the caller
    for h, c in conditions.items():
        if not -H <= h < H:
            raise ConfigError(f"inpaint condition index {h} outside horizon {H}")
        if c.dim() not in (1, 2) or (c.dim() == 2 and c.shape[0] != B):
            raise ConfigError(
                f"inpaint condition at h={h} must have shape ({B}, c_dim) or (c_dim,), "
                f"got {tuple(c.shape)}"
            )
        c_dim = c.shape[-1]
        if start < 0 or start + c_dim > D:
            raise ConfigError(
                f"inpaint condition at h={h} spans dims [{start}, {start + c_dim}) outside D={D}"
            )
        out[:, h, start : start + c_dim] = c.to(dtype=x.dtype, device=x.device)
    return out


def gradient_step(
    x: Tensor, grad: Tensor, scale: float | Tensor, variance: float | Tensor
) -> Tensor:
    """Guidance nudge ``x + scale * variance * grad`` (Diffuser's value guidance, which scales
    the value gradient by the posterior variance of the step, DDPMSampler.variance(t))."""
    return x + scale * variance * grad


def waypoint_conditions(
    waypoints: Mapping[int, Tensor] | None,
    horizon: int,
    first: int,
    rows: Tensor,
    normalize: Callable[[Tensor], Tensor],
    who: str,
) -> dict[int, Tensor]:
    """Inpainting conditions for pinned waypoints, checked once for every planner.

    waypoints {h: (B, k)} in environment units, the first k state values at plan index h
    (negative counts from the end); `first` the first index a waypoint may take (the states
    before it are pinned already: the start, or Decision Diffuser's history); rows (B, D) a
    state batch of the plans' size and dtype; `normalize` maps full states (B, D) to the
    model's units. Returns {h mod H: (B, k)} normalised. A one-line DiffrlError naming the valid
    range for an index that would overwrite a pinned state or fall outside the plan.
    """
    out: dict[int, Tensor] = {}
    H, D = horizon, rows.shape[-1]
    for h, point in (waypoints or {}).items():
        if not -H < h < H or not first <= h % H <= H - 1:
            raise DiffrlError(
                f"{who}: waypoint index {h} must be inside the plan, {first} to {H - 1} or "
                f"-{H - first} to -1 (0{f' to {first - 1}' if first > 1 else ''} "
                f"{'is the start' if first == 1 else 'are the start and its history'})"
            )
        k = point.shape[-1]
        if not 0 < k <= D:
            raise DiffrlError(f"{who}: a waypoint has 1 to {D} values, got {k}")
        # Per-dimension normalisers: the first k columns of a state padded with zeros.
        full = torch.zeros_like(rows)
        full[:, :k] = point.to(rows.dtype).expand(rows.shape[0], -1)
        out[h % H] = normalize(full)[:, :k]
    return out
