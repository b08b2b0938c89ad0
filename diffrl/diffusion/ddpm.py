"""Ancestral DDPM sampling (Ho et al. 2020, Alg. 2) over all T steps.

Matches diffusers' ``DDPMScheduler`` with ``variance_type="fixed_small"`` (sigma_t^2 =
beta_tilde_t, DDPM eq 7) and ``clip_sample`` / ``clip_sample_range`` mapped to ``clip_x0``,
including its random draw order. Differentiable end to end (Diffusion-QL backpropagates a
loss on the final action through every step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
    extract,
    resolve_noise,
)


class DDPMSampler(StepSampling):
    """x_T -> x_0 in T ancestral steps: x_{t-1} = mu_tilde(x0_hat, x_t) + sigma_t z.

    Args:
        schedule: the training noise schedule (T steps).
        prediction: ``"epsilon"`` (model predicts the noise) or ``"x0"`` (the clean sample).
        clip_x0: clamp the x0 estimate to [-c, c] or [lo, hi] before forming the mean.
    """

    def __init__(
        self, schedule: NoiseSchedule, prediction: str = "epsilon", clip_x0: ClipSpec = None
    ) -> None:
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        self._clip = _ClipCache(clip_x0)
        self.clip_x0 = self._clip.spec
        T = schedule.num_steps
        self.timesteps: list[int] = list(range(T - 1, -1, -1))
        # Per-step scalars as Python floats (computed in float64): multiplying by a float keeps
        # x's dtype and device and needs no host/device sync.
        s = schedule
        self._recip = s.sqrt_recip_alphas_cumprod.tolist()
        self._recipm1 = s.sqrt_recipm1_alphas_cumprod.tolist()
        self._coef1 = s.posterior_mean_coef1.tolist()
        self._coef2 = s.posterior_mean_coef2.tolist()
        self._logvar = s.posterior_log_variance_clipped.tolist()
        self._std = [0.0] + [math.exp(0.5 * v) for v in self._logvar[1:]]

    def predict_x0(self, model_output: Tensor, t: int, x_t: Tensor, clip: bool = True) -> Tensor:
        """x0 estimate (DDPM eq 15 inverted: x0 = x_t / sqrt(abar) - sqrt(1/abar - 1) eps).

        model_output, x_t: (B, ...). Clipped with ``clip_x0`` unless ``clip=False``.
        """
        t = check_timestep(t, self.schedule.num_steps, "DDPMSampler")
        if self.prediction == "epsilon":
            x0 = self._recip[t] * x_t - self._recipm1[t] * model_output
        else:
            x0 = model_output
        return self._clip(x0) if clip else x0

    def posterior_mean(self, x0: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        """Mean of q(x_{t-1} | x_t, x0) (DDPM eqs 6/7): coef1_t x0 + coef2_t x_t.

        t: an int, or a LongTensor (B,) of per-sample timesteps.
        """
        if isinstance(t, Tensor) and t.numel() > 1:
            s = self.schedule.to(x_t.device, x_t.dtype)
            return (
                extract(s.posterior_mean_coef1, t, x_t.shape) * x0
                + extract(s.posterior_mean_coef2, t, x_t.shape) * x_t
            )
        t = check_timestep(t, self.schedule.num_steps, "DDPMSampler")
        return self._coef1[t] * x0 + self._coef2[t] * x_t

    def variance(self, t: int) -> float:
        """exp(posterior_log_variance_clipped[t]): beta_tilde_t clamped to >= 1e-20 (~0 at t = 0).

        This is the factor Diffuser's value guidance scales its gradient by.
        """
        t = check_timestep(t, self.schedule.num_steps, "DDPMSampler")
        return math.exp(self._logvar[t])

    def std(self, t: int) -> float:
        """Standard deviation of the noise actually added at step t (0 at t = 0)."""
        t = check_timestep(t, self.schedule.num_steps, "DDPMSampler")
        return 0.0 if t == 0 else math.exp(0.5 * self._logvar[t])

    def step(
        self,
        model_output: Tensor,
        t: int,
        x_t: Tensor,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> SamplerStep:
        """One ancestral step x_t -> x_{t-1} (DDPM Alg. 2, line 4).

        model_output, x_t: (B, ...). Noise (one ``torch.randn`` of x's shape, from
        ``generator``, or the explicit ``noise``) is drawn only when t > 0, as diffusers does.
        """
        t = check_timestep(t, self.schedule.num_steps, "DDPMSampler")
        x0 = self.predict_x0(model_output, t, x_t)
        mean = self.posterior_mean(x0, x_t, t)
        if t == 0:
            # The last step returns the mean: the posterior variance at t = 0 is zero.
            return SamplerStep(prev_sample=mean, x0=x0, mean=mean, std=0.0)
        std = self.std(t)
        z = resolve_noise(x_t, generator, noise)
        return SamplerStep(prev_sample=mean + std * z, x0=x0, mean=mean, std=std)

    # ------------------------------------------------------------------ the whole chain at once
    def chain_noise(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> Tensor:
        """(T, *shape) standard normal draws for `chain`: x_T, then z for t = T-1 .. 1.

        Drawn one block at a time in the order `sample` draws them, so `chain` fed with these
        gives what `sample` gives for the same generator state.
        """
        return torch.stack(
            [
                torch.randn(shape, generator=generator, device=device, dtype=dtype)
                for _ in range(self.schedule.num_steps)
            ]
        )

    def chain(self, model_at: Callable[[Tensor, int], Tensor], noise: Tensor) -> Tensor:
        """All T ancestral steps as one tight loop: x_T = noise[0] -> x_0 (B, ...).

        `model_at(x, k)` is the model's output at the k-th step (t = timesteps[k]), so a
        caller can compute step-invariant terms once (a state's embedding) and index per-step
        ones by k. noise: (T, B, ...) from `chain_noise`. The same arithmetic as `step`
        (tested to agree) with the per-step coefficients as Python floats and no random draws
        or checks inside: differentiable, and compilable as one graph.
        """
        x = noise[0]
        for k, t in enumerate(self.timesteps):
            out = model_at(x, k)
            if self.prediction == "epsilon":
                # x0 = x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps (DDPM eq 15), clipped
                x0 = self._clip(torch.add(self._recip[t] * x, out, alpha=-self._recipm1[t]))
            else:
                x0 = self._clip(out)
            # posterior mean coef1 x0 + coef2 x_t (DDPM eq 7), plus sigma_t z for t > 0
            mean = torch.add(self._coef1[t] * x0, x, alpha=self._coef2[t])
            x = torch.add(mean, noise[k + 1], alpha=self._std[t]) if t > 0 else mean
        return x
