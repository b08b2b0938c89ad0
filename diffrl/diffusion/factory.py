"""Pick a sampler by name: the vocabulary of `--sampler` (ddpm | ddim | dpm-solver)."""

from __future__ import annotations

from typing import Any

from diffrl.diffusion.ddim import DDIMSampler
from diffrl.diffusion.ddpm import DDPMSampler
from diffrl.diffusion.dpm_solver import DPMSolverSampler
from diffrl.diffusion.schedules import NoiseSchedule
from diffrl.errors import ConfigError

SAMPLERS = ("ddpm", "ddim", "dpm-solver")


def make_sampler(
    name: str,
    schedule: NoiseSchedule,
    num_steps: int = 0,
    prediction: str = "epsilon",
    clip_x0: Any = None,
    eta: float = 0.0,
) -> Any:
    """A sampler over `schedule`.

    `num_steps` 0 picks the default: all T steps for DDPM and DDIM, min(T - 1, 15) for
    DPM-Solver (its timestep spacing needs K < T; 15 is QGPO's choice). DDPM with K < T steps
    is ancestral sampling on K strided steps: DDIM with eta = 1, whose per-step variance is
    DDPM's posterior variance between the strided steps (Song et al. 2021, eq 16). `eta` is
    DDIM's noise scale (0 deterministic, 1 DDPM's variance); the other samplers ignore it.
    """
    T = schedule.num_steps
    default = min(T - 1, 15) if name == "dpm-solver" else T
    steps = num_steps or max(default, 1)
    if steps < 1 or steps > schedule.num_steps:
        raise ConfigError(
            f"sampling_steps must be in 1..{schedule.num_steps} (the diffusion steps), got {steps}"
        )
    if name == "ddpm":
        if steps < schedule.num_steps:
            return DDIMSampler(schedule, steps, eta=1.0, prediction=prediction, clip_x0=clip_x0)
        return DDPMSampler(schedule, prediction=prediction, clip_x0=clip_x0)
    if name == "ddim":
        return DDIMSampler(schedule, steps, eta=eta, prediction=prediction, clip_x0=clip_x0)
    if name == "dpm-solver":
        return DPMSolverSampler(schedule, steps, prediction=prediction, clip_x0=clip_x0)
    raise ConfigError(f"unknown sampler '{name}' (known: {', '.join(SAMPLERS)})")
