"""diffrl: diffusion models for decision making (offline RL, online RL, planning)."""

__version__ = "0.1.0"

from diffrl.runtime import tune_cpu_allocator  # noqa: E402

__all__ = ["__version__", "tune_cpu_allocator"]
