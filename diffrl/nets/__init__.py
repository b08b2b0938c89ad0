"""Networks (nn.Modules only, no training logic).

- embeddings: :class:`SinusoidalPosEmb`, :class:`GaussianFourierEmbedding`
- mlp: :func:`mlp`, :class:`DiffusionMLP` (Diffusion-QL's denoiser)
- critics: :class:`TwinQ`, :class:`ValueMLP`
- unet: :class:`TemporalUnet` (Diffuser / Decision Diffuser), :class:`ValueUnet` (value guide)
"""

from diffrl.nets.critics import TwinQ, ValueMLP
from diffrl.nets.embeddings import GaussianFourierEmbedding, SinusoidalPosEmb
from diffrl.nets.mlp import DiffusionMLP, mlp
from diffrl.nets.unet import (
    Conv1dBlock,
    ResidualTemporalBlock,
    TemporalUnet,
    ValueUnet,
)

__all__ = [
    "Conv1dBlock",
    "DiffusionMLP",
    "GaussianFourierEmbedding",
    "ResidualTemporalBlock",
    "SinusoidalPosEmb",
    "TemporalUnet",
    "TwinQ",
    "ValueMLP",
    "ValueUnet",
    "mlp",
]
