"""Offline data: the episode dataset, file readers/writers, batch samplers and normalisers."""

from diffrl.data.dataset import OfflineDataset, concatenate
from diffrl.data.io import (
    load_d4rl_hdf5,
    load_minari,
    load_npz,
    load_path,
    minari_root,
    write_d4rl_hdf5,
    write_npz,
)
from diffrl.data.normalizers import (
    GaussianNormalizer,
    IdentityNormalizer,
    LimitsNormalizer,
    Normalizer,
    make_normalizer,
)
from diffrl.data.samplers import (
    TrajectoryBatch,
    TrajectorySampler,
    TransitionBatch,
    TransitionSampler,
    discounted_returns_to_go,
)

__all__ = [
    "GaussianNormalizer",
    "IdentityNormalizer",
    "LimitsNormalizer",
    "Normalizer",
    "OfflineDataset",
    "TrajectoryBatch",
    "TrajectorySampler",
    "TransitionBatch",
    "TransitionSampler",
    "concatenate",
    "discounted_returns_to_go",
    "load_d4rl_hdf5",
    "load_minari",
    "load_npz",
    "load_path",
    "make_normalizer",
    "minari_root",
    "write_d4rl_hdf5",
    "write_npz",
]
