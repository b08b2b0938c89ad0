"""The sampler contract and the generic reverse-diffusion loop.

Every sampler, discrete-time (DDPM, DDIM, DPM-Solver++ on a `NoiseSchedule`) or continuous-time
(DPM-Solver and DDIM on the VP-SDE), has `sample(model_fn, x_T, generator, after_step) -> x_0`
and `num_evals` (model calls per sample): that is all an algorithm uses, so a sampler is chosen
by name (:mod:`diffrl.diffusion.factory`) and a new one is a new file. The discrete samplers also
have `step` (one reverse step, the `StepSampler` protocol) for callers that drive the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import Tensor

from diffrl.diffusion.schedules import NoiseSchedule, SamplerStep, draw_noise


class Sampler(Protocol):
    """What every sampler offers.

    `model_fn(x, t)` returns the network's output at x (B, ...) and time t: a LongTensor (B,)
    of discrete steps for a `NoiseSchedule`'s samplers, a Python float in (0, 1] for the
    VP-SDE's. `after_step(x, t)`, if given, is applied after every update (and once to x_T):
    inpainting hooks in there. Differentiable; random draws only from `generator`.
    """

    num_evals: int

    def sample(
        self,
        model_fn: Callable[[Tensor, Any], Tensor],
        x_T: Tensor,
        generator: torch.Generator | None = None,
        after_step: Callable[[Tensor, Any], Tensor] | None = None,
    ) -> Tensor: ...


class StepSampler(Protocol):
    """What :func:`sample_loop` needs from a sampler (DDPM, DDIM and DPM-Solver++ qualify)."""

    schedule: NoiseSchedule
    timesteps: list[int]

    def step(
        self,
        model_output: Tensor,
        t: int,
        x_t: Tensor,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> SamplerStep: ...

    def predict_x0(self, model_output: Tensor, t: int, x_t: Tensor) -> Tensor: ...


def sample_loop(
    sampler: StepSampler,
    model_fn: Callable[[Tensor, Tensor], Tensor],
    x_T: Tensor,
    generator: torch.Generator | None = None,
    after_step: Callable[[Tensor, int], Tensor] | None = None,
    *,
    timesteps: Iterable[int] | None = None,
    before_step: Callable[[Tensor, int], Tensor] | None = None,
    noise_scale: float | None = None,
) -> Tensor:
    """Run the reverse chain from x_T (B, ...) and return x_0 (B, ...).

    For each t in ``timesteps`` (default ``sampler.timesteps``; a suffix of them starts part
    of the way, from a noised sample): ``x = before_step(x, t)`` if given (a guide's gradient
    steps, which act between the sampler's steps), ``out = model_fn(x, t_batch)`` with t_batch
    a LongTensor (B,) filled with t on x's device, then ``x = sampler.step(out, t, x,
    generator).prev_sample`` and, if given, ``x = after_step(x, t)``.

    ``noise_scale``, if given, draws each step's noise here, ``noise_scale * randn`` from
    ``generator`` at every step (t = 0 included, so the stream of draws is one per step), and
    hands it to the step: low-temperature sampling (Decision Diffuser, Ajay et al. 2023).

    ``after_step`` is also applied once to x_T before the first step, with
    t = ``sampler.schedule.num_steps`` (T, meaning "no step taken yet"), so inpainting
    conditions hold from the start, as in Diffuser. ``sampler.reset()`` is called first when the
    sampler has one. Nothing is wrapped in ``no_grad``: the result is differentiable w.r.t.
    the model's parameters, x_T and anything ``after_step`` uses.
    """
    reset = getattr(sampler, "reset", None)
    if callable(reset):
        reset()
    x = x_T
    if after_step is not None:
        x = after_step(x, sampler.schedule.num_steps)
    batch = x.shape[0]
    for t in sampler.timesteps if timesteps is None else timesteps:
        if before_step is not None:
            x = before_step(x, t)
        t_batch = torch.full((batch,), t, dtype=torch.long, device=x.device)
        out = model_fn(x, t_batch)
        if noise_scale is None:
            x = sampler.step(out, t, x, generator).prev_sample
        else:
            z = noise_scale * draw_noise(x, generator)
            x = sampler.step(out, t, x, noise=z).prev_sample
        if after_step is not None:
            x = after_step(x, t)
    return x


class StepSampling:
    """`sample` and `num_evals` for a discrete sampler, by :func:`sample_loop` over its steps."""

    timesteps: list[int]

    @property
    def num_evals(self) -> int:
        return len(self.timesteps)

    def sample(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        x_T: Tensor,
        generator: torch.Generator | None = None,
        after_step: Callable[[Tensor, int], Tensor] | None = None,
    ) -> Tensor:
        return sample_loop(self, model_fn, x_T, generator, after_step)  # type: ignore[arg-type]
