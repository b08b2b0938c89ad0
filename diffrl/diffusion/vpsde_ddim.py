"""DDIM (Song et al. 2021, eqs 12 and 16) on the continuous-time VP-SDE, and with eta = 1
DDPM's ancestral sampling between the grid's times.

On a grid 1 = t_0 > t_1 > ... > t_K = t_end uniform in t (QGPO's DPM-Solver grid), with
alpha, sigma the VP-SDE's marginal coefficients (abar = alpha^2) and s -> t one step:

    x0  = (x_s - sigma_s eps) / alpha_s            (clamped if asked)
    eps'= (x_s - alpha_s x0) / sigma_s              (the noise consistent with the clamped x0)
    sig = eta * (sigma_t / sigma_s) * sqrt(1 - alpha_s^2 / alpha_t^2)     (eq 16)
    x_t = alpha_t x0 + sqrt(sigma_t^2 - sig^2) eps' + sig z

With eta = 0 this is first-order DPM-Solver in data-prediction form on the same grid (Lu et
al. 2022a, section 4.1: DDIM is DPM-Solver-1; tested, clamped or not). With eta = 1 the step's
variance is the posterior variance of q(x_t | x_s, x0), i.e. DDPM's ancestral step between the
two times.

Unlike diffusers' discrete DDIM (diffrl.diffusion.ddim), which keeps the unclamped eps for the
direction term, the direction here is re-derived from the clamped x0. With guidance added to
eps (QGPO's energy guidance), the unclamped direction carries the guidance past the clamp and
undoes it: on the toy bandit at guidance scale 3 it sent 80 % of the samples to the wrong mode
(measured), where this form keeps 95 % on the best one, as DPM-Solver does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffrl.diffusion.schedules import draw_noise
from diffrl.diffusion.vpsde import VPSDE, EpsFn, clip_bounds, time_grid
from diffrl.errors import ConfigError


class VPSDEDDIMSampler:
    """x_T -> x at t_end in `num_steps` DDIM steps on the VP-SDE (sampler contract).

    Args:
        sde: the VP-SDE the model was trained on.
        num_steps: K model evaluations.
        eta: 0 deterministic, 1 DDPM's ancestral variance (one draw per step from `generator`).
        t_end: the last grid time (QGPO's 1e-3).
        clip_x0: clamp the x0 estimate to [-c, c] or (low, high).
    """

    def __init__(
        self,
        sde: VPSDE,
        num_steps: int,
        eta: float = 0.0,
        t_end: float = 1e-3,
        clip_x0: Any = None,
    ) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ConfigError(f"DDIM needs at least 1 step, got {num_steps!r}")
        if not 0 <= eta <= 1:  # also rejects NaN
            raise ConfigError(f"DDIM eta must be in [0, 1], got {eta!r}")
        if not 0.0 < t_end < 1.0:
            raise ConfigError(f"DDIM on the VP-SDE needs 0 < t_end < 1, got {t_end}")
        self.sde, self.num_steps, self.eta, self.t_end = sde, num_steps, float(eta), float(t_end)
        self.clip_x0 = clip_bounds(clip_x0)
        ts = time_grid(sde, num_steps, 1.0, self.t_end, "time_uniform")
        # Per-step coefficients as Python floats: (s, alpha_s, sigma_s, alpha_t, dir, sig).
        self._steps: list[tuple[float, float, float, float, float, float]] = []
        for s, t in zip(ts[:-1], ts[1:], strict=True):
            a_s, sg_s, a_t, sg_t = sde.alpha(s), sde.sigma(s), sde.alpha(t), sde.sigma(t)
            sig = self.eta * (sg_t / sg_s) * math.sqrt(max(1.0 - (a_s / a_t) ** 2, 0.0))
            direction = math.sqrt(max(sg_t * sg_t - sig * sig, 0.0))
            self._steps.append((s, a_s, sg_s, a_t, direction, sig))
        self.times = ts

    @property
    def num_evals(self) -> int:
        return self.num_steps

    def sample(
        self,
        model_fn: EpsFn,
        x_T: Tensor,
        generator: torch.Generator | None = None,
        after_step: Callable[[Tensor, float], Tensor] | None = None,
    ) -> Tensor:
        x = x_T if after_step is None else after_step(x_T, self.times[0])
        for k, (s, a_s, sg_s, a_t, direction, sig) in enumerate(self._steps):
            eps = model_fn(x, s)
            x0 = (x - sg_s * eps) / a_s
            if self.clip_x0 is not None:
                x0 = x0.clamp(*self.clip_x0)
                eps = (x - a_s * x0) / sg_s
            x = a_t * x0 + direction * eps
            if sig > 0:
                x = x + sig * draw_noise(x, generator)
            if after_step is not None:
                x = after_step(x, self.times[k + 1])
        return x
