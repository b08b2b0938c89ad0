"""DDIM sampling (Song et al. 2021, eqs 12 and 16) on a strided subset of the T steps.

Matches diffusers' ``DDIMScheduler`` with its defaults ``timestep_spacing="leading"``,
``steps_offset=0``, ``set_alpha_to_one=True`` and ``use_clipped_model_output=False``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffrl.diffusion.loop import StepSampling
from diffrl.diffusion.schedules import (
    ClipSpec,
    NoiseSchedule,
    SamplerStep,
    _ClipCache,
    check_prediction,
    check_timestep,
    resolve_noise,
)
from diffrl.errors import ConfigError


class DDIMSampler(StepSampling):
    """x_T -> x_0 in ``num_steps`` = K DDIM steps; ``eta`` = 0 is deterministic.

    Timesteps are ``[i * (T // K) for i in range(K)]`` in descending order and each step goes
    from t to t - T // K, with alpha_bar = 1 below t = 0 (so the last step lands on x0).

    Args:
        schedule: the training noise schedule (T steps).
        num_steps: K, 1 <= K <= T.
        eta: noise scale; sigma_t = eta * sqrt((1 - abar_prev)/(1 - abar_t)) *
            sqrt(1 - abar_t/abar_prev) (eq 16). eta = 1 gives DDPM's posterior variance.
        prediction: ``"epsilon"`` or ``"x0"``.
        clip_x0: clamp the x0 estimate to [-c, c] or [lo, hi]. The noise direction keeps the
            unclipped eps (for ``"x0"``, eps is derived from the unclipped model output),
            as diffusers does.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int,
        eta: float = 0.0,
        prediction: str = "epsilon",
        clip_x0: ClipSpec = None,
    ) -> None:
        T = schedule.num_steps
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= T:
            raise ConfigError(f"DDIM num_steps must be an integer in [1, {T}], got {num_steps!r}")
        if not eta >= 0:  # also rejects NaN
            raise ConfigError(f"DDIM eta must be >= 0, got {eta!r}")
        self.schedule = schedule
        self.num_steps = num_steps
        self.eta = float(eta)
        self.prediction = check_prediction(prediction)
        self._clip = _ClipCache(clip_x0)
        self.clip_x0 = self._clip.spec
        self.step_ratio = T // num_steps
        self.timesteps: list[int] = [i * self.step_ratio for i in range(num_steps)][::-1]

        abar = schedule.alphas_cumprod.tolist()
        self._sqrt_abar = [math.sqrt(a) for a in abar]
        self._sqrt_1m_abar = [math.sqrt(1.0 - a) for a in abar]
        # Per-step scalars (float64) for the step t -> t - step_ratio, indexed by t.
        self._sigma: dict[int, float] = {}
        self._sqrt_abar_prev: dict[int, float] = {}
        self._dir_coef: dict[int, float] = {}
        for t in range(T):
            a_t = abar[t]
            prev = t - self.step_ratio
            a_prev = abar[prev] if prev >= 0 else 1.0  # set_alpha_to_one=True
            sigma = self.eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
            dir_var = 1.0 - a_prev - sigma**2
            if dir_var < -1e-12:
                raise ConfigError(
                    f"DDIM eta={eta} too large: 1 - abar_prev - sigma^2 < 0 at t={t}; use eta <= 1"
                )
            self._sigma[t] = sigma
            self._sqrt_abar_prev[t] = math.sqrt(a_prev)
            self._dir_coef[t] = math.sqrt(max(dir_var, 0.0))  # max(): rounding at eta = 1

    def _x0_eps(self, model_output: Tensor, t: int, x_t: Tensor) -> tuple[Tensor, Tensor]:
        # Eq 12's "predicted x0" and the eps paired with it, both before clipping.
        if self.prediction == "epsilon":
            eps = model_output
            x0 = (x_t - self._sqrt_1m_abar[t] * eps) / self._sqrt_abar[t]
        else:
            x0 = model_output
            eps = (x_t - self._sqrt_abar[t] * x0) / self._sqrt_1m_abar[t]
        return x0, eps

    def predict_x0(self, model_output: Tensor, t: int, x_t: Tensor, clip: bool = True) -> Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (eq 12), clipped unless clip=False."""
        t = check_timestep(t, self.schedule.num_steps, "DDIMSampler")
        x0, _ = self._x0_eps(model_output, t, x_t)
        return self._clip(x0) if clip else x0

    def std(self, t: int) -> float:
        """sigma_t of eq 16 for the step leaving t (0 when eta = 0)."""
        return self._sigma[check_timestep(t, self.schedule.num_steps, "DDIMSampler")]

    def step(
        self,
        model_output: Tensor,
        t: int,
        x_t: Tensor,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> SamplerStep:
        """One DDIM step (eq 12): x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps
        + sigma z.

        model_output, x_t: (B, ...). When eta > 0 one ``torch.randn`` is drawn at every step
        (even the last, where sigma = 0), matching diffusers' draw order.
        """
        t = check_timestep(t, self.schedule.num_steps, "DDIMSampler")
        x0, eps = self._x0_eps(model_output, t, x_t)
        x0 = self._clip(x0)
        mean = self._sqrt_abar_prev[t] * x0 + self._dir_coef[t] * eps
        sigma = self._sigma[t]
        if self.eta > 0:
            z = resolve_noise(x_t, generator, noise)
            return SamplerStep(prev_sample=mean + sigma * z, x0=x0, mean=mean, std=sigma)
        return SamplerStep(prev_sample=mean, x0=x0, mean=mean, std=0.0)
