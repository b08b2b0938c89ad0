"""diffrl: diffusion models for decision making (offline RL, online RL, planning)."""

__version__ = "0.1.0"

from diffrl.runtime import passive_omp_default, tune_cpu_allocator  # noqa: E402

# Before torch loads OpenMP: sleeping, not spinning, worker threads, so that two trainings on one
# machine do not starve each other (diffrl/runtime.py). OMP_WAIT_POLICY set by the user wins.
passive_omp_default()

__all__ = ["__version__", "tune_cpu_allocator"]
