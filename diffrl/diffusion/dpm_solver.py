"""DPM-Solver++(2M): multistep second-order solver of the diffusion ODE in data-prediction form.

Lu et al. 2022 ("DPM-Solver++"), Alg. 2. Matches diffusers' ``DPMSolverMultistepScheduler(
algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
timestep_spacing="linspace", lower_order_final=True, final_sigmas_type="zero")``:

* timesteps ``np.linspace(0, T-1, K+1).round()[::-1][:-1]``, then a final sigma of 0;
* alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t);
* step 0 is first order (no previous x0 yet); the last step goes to sigma = 0 and is first
  order, which reduces to returning the current x0 estimate. diffusers' extra "lower order
  when K < 15" rule only changes anything for order 3, so with order 2 it never triggers;
* ``clip_x0`` clamps each x0 estimate before the update, which is what diffusers'
  ``thresholding=True, sample_max_value=1.0`` does for clip 1.

diffusers runs these updates in float32 even for float64 inputs; this implementation keeps
x's dtype (coefficients are computed in float64).
"""

from __future__ import annotations

import math

import numpy as np
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
)
from diffrl.errors import ConfigError


class DPMSolverSampler(StepSampling):
    """Deterministic K-step DPM-Solver++(2M) sampler. Stateful: keeps the previous x0 estimate.

    Steps must visit ``timesteps`` in order. Calling ``step`` at ``timesteps[0]`` starts a new
    chain (dropping any state); the state is also cleared after the last step and by
    :meth:`reset`.

    Args:
        schedule: the training noise schedule (T steps).
        num_steps: K, 1 <= K < T (more would repeat timesteps).
        prediction: ``"epsilon"`` or ``"x0"``.
        clip_x0: clamp the x0 estimate to [-c, c] or [lo, hi].
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int,
        prediction: str = "epsilon",
        clip_x0: ClipSpec = None,
    ) -> None:
        T = schedule.num_steps
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps < T:
            raise ConfigError(
                f"DPM-Solver num_steps must be an integer in [1, {T - 1}] for T={T}, "
                f"got {num_steps!r}"
            )
        self.schedule = schedule
        self.num_steps = num_steps
        self.prediction = check_prediction(prediction)
        self._clip = _ClipCache(clip_x0)
        self.clip_x0 = self._clip.spec
        ts = np.linspace(0, T - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
        self.timesteps: list[int] = [int(t) for t in ts]
        if len(set(self.timesteps)) != num_steps:  # cannot happen for K < T; kept as a guard
            raise ConfigError(f"DPM-Solver num_steps={num_steps} repeats timesteps for T={T}")

        abar = schedule.alphas_cumprod.tolist()
        self._alpha = [math.sqrt(a) for a in abar]
        self._sigma = [math.sqrt(1.0 - a) for a in abar]
        # lambda (half log-SNR) at each visited timestep; the final target has sigma = 0.
        self._lambda = [math.log(self._alpha[t]) - math.log(self._sigma[t]) for t in self.timesteps]
        self.reset()

    def reset(self) -> None:
        """Forget the previous x0 estimate and start again at ``timesteps[0]``."""
        self._index = 0
        self._prev_x0: Tensor | None = None

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(alpha_t, sigma_t) = (sqrt(abar_t), sqrt(1 - abar_t)) so x_t = alpha_t x0 + sigma_t eps.

        Lets guidance convert between eps and score: score = -eps / sigma_t.
        """
        t = check_timestep(t, self.schedule.num_steps, "DPMSolverSampler")
        return self._alpha[t], self._sigma[t]

    def predict_x0(self, model_output: Tensor, t: int, x_t: Tensor, clip: bool = True) -> Tensor:
        """Data prediction x0 = (x_t - sigma_t eps) / alpha_t, clipped unless clip=False."""
        t = check_timestep(t, self.schedule.num_steps, "DPMSolverSampler")
        if self.prediction == "epsilon":
            x0 = (x_t - self._sigma[t] * model_output) / self._alpha[t]
        else:
            x0 = model_output
        return self._clip(x0) if clip else x0

    def step(
        self,
        model_output: Tensor,
        t: int,
        x_t: Tensor,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> SamplerStep:
        """One DPM-Solver++ step from ``timesteps[i]`` to the next one (sigma = 0 after the last).

        model_output, x_t: (B, ...). ``generator`` and ``noise`` are accepted for a uniform
        sampler interface and ignored: the solver is deterministic.
        """
        t = check_timestep(t, self.schedule.num_steps, "DPMSolverSampler")
        if t == self.timesteps[0]:
            self.reset()  # a new chain always starts at the first timestep
        i = self._index
        if i >= self.num_steps or t != self.timesteps[i]:
            expected = self.timesteps[i] if i < self.num_steps else self.timesteps[0]
            raise ConfigError(
                f"DPMSolverSampler.step got t={t} but expected t={expected} "
                f"(timesteps must be visited in order; call reset() to restart)"
            )
        x0 = self.predict_x0(model_output, t, x_t)
        prev_x0 = self._prev_x0
        last = i == self.num_steps - 1
        if last:
            # First-order update into sigma = 0: sigma_next / sigma_s = 0 and
            # alpha_next (1 - exp(-inf)) = 1, so x_next is exactly x0. Written out to avoid inf.
            x_next = x0
            self.reset()  # drop the reference to the graph of the finished chain
        else:
            t_next = self.timesteps[i + 1]
            alpha_n, sigma_n = self._alpha[t_next], self._sigma[t_next]
            lam_s, lam_n = self._lambda[i], self._lambda[i + 1]
            h = lam_n - lam_s
            ratio = sigma_n / self._sigma[t]
            phi = alpha_n * math.expm1(-h)  # alpha_next (e^{-h} - 1), expm1 for accuracy
            if prev_x0 is None:
                # DPM-Solver++(1), i.e. DDIM (Alg. 2's first step).
                x_next = ratio * x_t - phi * x0
            else:
                # Alg. 2 (midpoint form): D = (1 + 1/(2 r)) x0_i - 1/(2 r) x0_{i-1}, with
                # r = h_{i-1} / h_i; written as diffusers does, D0 + 0.5 * D1.
                r0 = (lam_s - self._lambda[i - 1]) / h
                d1 = (x0 - prev_x0) / r0
                x_next = ratio * x_t - phi * x0 - 0.5 * phi * d1
            self._prev_x0 = x0
            self._index = i + 1
        return SamplerStep(prev_sample=x_next, x0=x0, mean=x_next, std=0.0)
