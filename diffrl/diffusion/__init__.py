"""Diffusion maths: noise schedules and the VP-SDE, samplers (DDPM, DDIM, DPM-Solver(++)),
guidance, the loop.

No RL here. Samplers work on any tensor shape with batch first ((B, A) actions, (B, H, D)
trajectories), in float32 or float64, on any device, and stay differentiable.
"""

from diffrl.diffusion.ddim import DDIMSampler
from diffrl.diffusion.ddpm import DDPMSampler
from diffrl.diffusion.dpm_solver import DPMSolverSampler
from diffrl.diffusion.guidance import cfg_mix, gradient_step, inpaint, waypoint_conditions
from diffrl.diffusion.loop import Sampler, StepSampler, sample_loop
from diffrl.diffusion.schedules import (
    PREDICTIONS,
    SCHEDULES,
    ClipSpec,
    NoiseSchedule,
    SamplerStep,
    extract,
    make_schedule,
    q_sample,
    schedule_from_betas,
)

__all__ = [
    "PREDICTIONS",
    "SCHEDULES",
    "ClipSpec",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverSampler",
    "NoiseSchedule",
    "Sampler",
    "StepSampler",
    "SamplerStep",
    "cfg_mix",
    "extract",
    "gradient_step",
    "inpaint",
    "waypoint_conditions",
    "make_schedule",
    "q_sample",
    "sample_loop",
    "schedule_from_betas",
]
