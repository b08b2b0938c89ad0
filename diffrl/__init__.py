"""diffrl: diffusion models for decision making (offline RL, online RL, planning).

The Python API (`diffrl/api.py`): `load_dataset`, `make_config`, `fit` (train a config),
`resume`, `load` (a `Run` that acts, evaluates and sweeps acting-time keys). Imported on first
use, so that
`import diffrl` stays light and bounds OpenMP's spin before torch loads.
"""

__version__ = "0.1.0"

from diffrl.runtime import short_spin_default, tune_cpu_allocator  # noqa: E402

# Before torch loads OpenMP: worker threads spin briefly between operations, then sleep
# (diffrl/runtime.py). OMP_WAIT_POLICY or GOMP_SPINCOUNT set by the user wins.
short_spin_default()

_API = ("load_dataset", "make_config", "fit", "resume", "load", "Run")

__all__ = ["__version__", "tune_cpu_allocator", *_API]


def __getattr__(name: str):
    if name in _API:
        from diffrl import api

        return getattr(api, name)
    raise AttributeError(f"module 'diffrl' has no attribute '{name}'")
