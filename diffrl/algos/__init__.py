"""Algorithm registry and the small contract every algorithm file fulfils.

An algorithm module defines:
- `Config`: a frozen dataclass extending `diffrl.config.TrainConfig`;
- `presets(dataset: str) -> dict`: per-dataset overrides of `Config`'s defaults;
- `Agent(config, spec)`: an `nn.Module` (weights and normalisers in its state_dict) with
  `fit_normalizers(dataset)`, `batch_sampler(dataset, device)`, `update(batch) -> dict[str, float]`,
  `act(obs (B, obs_dim) tensor, generator) -> (B, act_dim) tensor` in the environment's units,
  and `train_state_dict()` / `load_train_state_dict(state)` for optimisers and counters.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch

from diffrl.errors import ConfigError

ALGOS: dict[str, str] = {
    "diffusion-bc": "diffrl.algos.diffusion_bc",
    "diffusion-ql": "diffrl.algos.diffusion_ql",
    "gaussian-bc": "diffrl.algos.gaussian_bc",
    "qgpo": "diffrl.algos.qgpo",
    # Baselines through d3rlpy (optional: see diffrl/algos/_d3rlpy.py)
    "td3bc": "diffrl.algos.td3bc",
    "iql": "diffrl.algos.iql",
    "bc": "diffrl.algos.bc",
}


@dataclass(frozen=True)
class DataSpec:
    """What an agent must know about its data to be built (saved in every run directory)."""

    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]

    @classmethod
    def from_dataset(cls, dataset: Any) -> DataSpec:
        low, high = dataset.action_bounds()
        return cls(
            obs_dim=int(dataset.obs_dim),
            act_dim=int(dataset.act_dim),
            action_low=tuple(float(x) for x in np.asarray(low).reshape(-1)),
            action_high=tuple(float(x) for x in np.asarray(high).reshape(-1)),
        )


class BatchSampler(Protocol):
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Any: ...


class Agent(Protocol):
    config: Any

    def fit_normalizers(self, dataset: Any) -> None: ...
    def batch_sampler(self, dataset: Any, device: torch.device) -> BatchSampler: ...
    def update(self, batch: Any) -> dict[str, float]: ...
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def train_state_dict(self) -> dict[str, Any]: ...
    def load_train_state_dict(self, state: dict[str, Any]) -> None: ...


def get_algo(name: str) -> ModuleType:
    """The algorithm module for `name`, or a ConfigError listing the known names."""
    if name not in ALGOS:
        raise ConfigError(f"unknown algorithm '{name}' (known: {', '.join(ALGOS)})")
    return importlib.import_module(ALGOS[name])
