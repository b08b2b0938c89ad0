"""Pick a sampler by name: the vocabulary of `--sampler` (ddpm | ddim | dpm-solver).

One name means one method on either kind of model: a discrete `NoiseSchedule` (DDPM's T
steps; Diffusion-BC/QL, the planners) or the continuous-time `VPSDE` (QGPO). Each sampler is
its own file; this module only maps (name, kind of model) to its class.
"""

from __future__ import annotations

from typing import Any

from diffrl.config import SAMPLERS
from diffrl.diffusion.ddim import DDIMSampler
from diffrl.diffusion.ddpm import DDPMSampler
from diffrl.diffusion.dpm_solver import DPMSolverSampler
from diffrl.diffusion.schedules import NoiseSchedule
from diffrl.diffusion.vpsde import VPSDE, VPSDEDPMSolver
from diffrl.diffusion.vpsde_ddim import VPSDEDDIMSampler
from diffrl.errors import ConfigError

__all__ = ["SAMPLERS", "default_steps", "make_sampler"]

# Default model evaluations on the VP-SDE (no T there): DPM-Solver's 15 is QGPO's choice.
VPSDE_DEFAULT_STEPS = {"ddpm": 100, "ddim": 50, "dpm-solver": 15}


def default_steps(name: str, schedule: NoiseSchedule | VPSDE) -> int:
    """What `sampling_steps` = 0 means for sampler `name` on `schedule`."""
    if isinstance(schedule, VPSDE):
        return VPSDE_DEFAULT_STEPS[name]
    T = schedule.num_steps
    return max(min(T - 1, 15), 1) if name == "dpm-solver" else T


def make_sampler(
    name: str,
    schedule: NoiseSchedule | VPSDE,
    num_steps: int = 0,
    prediction: str = "epsilon",
    clip_x0: Any = None,
    eta: float = 0.0,
    **solver: Any,
) -> Any:
    """A sampler over `schedule` (see `diffrl.diffusion.loop.Sampler` for the contract).

    `num_steps` 0 picks `default_steps`: all T steps for DDPM and DDIM, min(T - 1, 15) for
    DPM-Solver++ (its timestep spacing needs K < T); on the VP-SDE 100 / 50 / 15. DDPM with
    K < T steps is ancestral sampling on K strided steps: DDIM with eta = 1, whose per-step
    variance is DDPM's posterior variance between the strided steps (Song et al. 2021, eq 16);
    on the VP-SDE likewise DDIM with eta = 1 on a uniform time grid. `eta` is DDIM's noise
    scale (0 deterministic, 1 DDPM's variance); the other samplers ignore it. `solver` holds the
    VP-SDE DPM-Solver's options (order, method, skip, t_end; t_end is DDIM's too there).
    """
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{name}' (known: {', '.join(SAMPLERS)})")
    steps = num_steps or default_steps(name, schedule)
    if isinstance(schedule, VPSDE):
        if prediction != "epsilon":
            raise ConfigError("samplers on the VP-SDE take a noise-prediction model")
        if steps < 1:
            raise ConfigError(f"sampling_steps must be >= 1, got {steps}")
        t_end = solver.get("t_end", 1e-3)
        if name == "dpm-solver":
            return VPSDEDPMSolver(schedule, steps, clip_x0=clip_x0, **solver)
        return VPSDEDDIMSampler(
            schedule, steps, eta=1.0 if name == "ddpm" else eta, t_end=t_end, clip_x0=clip_x0
        )
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
    return DPMSolverSampler(schedule, steps, prediction=prediction, clip_x0=clip_x0)
