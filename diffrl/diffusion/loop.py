"""The generic reverse-diffusion loop (samplers by name: :mod:`diffrl.diffusion.factory`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from diffrl.diffusion.schedules import NoiseSchedule, SamplerStep


class Sampler(Protocol):
    """What :func:`sample_loop` needs from a sampler (DDPM, DDIM and DPM-Solver all qualify)."""

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
    sampler: Sampler,
    model_fn: Callable[[Tensor, Tensor], Tensor],
    x_T: Tensor,
    generator: torch.Generator | None = None,
    after_step: Callable[[Tensor, int], Tensor] | None = None,
) -> Tensor:
    """Run the whole reverse chain from x_T (B, ...) and return x_0 (B, ...).

    For each t in ``sampler.timesteps``: ``out = model_fn(x, t_batch)`` with t_batch a
    LongTensor (B,) filled with t on x's device, then ``x = sampler.step(out, t, x,
    generator).prev_sample`` and, if given, ``x = after_step(x, t)``.

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
    for t in sampler.timesteps:
        t_batch = torch.full((batch,), t, dtype=torch.long, device=x.device)
        out = model_fn(x, t_batch)
        x = sampler.step(out, t, x, generator).prev_sample
        if after_step is not None:
            x = after_step(x, t)
    return x
