"""Guidance and conditioning operations applied between sampler steps.

All are out-of-place and differentiable, so they can sit inside a chain that is backpropagated.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from diffrl.errors import ConfigError


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
