"""Models that several algorithms share (an algorithm file holds only its paper's idea)."""

from diffrl.policies.diffusion_policy import DiffusionActor

__all__ = ["DiffusionActor"]
