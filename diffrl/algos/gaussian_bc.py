"""Gaussian BC: maximum-likelihood behaviour cloning with a diagonal Gaussian policy.

The classic unimodal baseline the Diffusion-QL paper contrasts with (its "BC-MLE" toy panel,
official code toy_experiments/bc_mle.py): pi(a | s) = N(mu_theta(s), diag sigma_theta(s)^2),
trained by minimising -log pi(a | s) on dataset pairs. On multimodal data the maximum-likelihood
Gaussian covers all modes at once and puts most of its mass between them.

Where diffrl differs: actions are mapped from the dataset's bounds to [-1, 1] (identity for
D4RL); log sigma is clamped to [-5, 2]; acting returns the mean by default (`stochastic_actions`
samples instead, as the paper's toy figure does) and clips to the action bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.config import TrainConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler, make_normalizer
from diffrl.data.normalizers import refit
from diffrl.nets import mlp


@dataclass(frozen=True)
class Config(TrainConfig):
    algo: str = doc("gaussian-bc", "algorithm name")
    lr: float = doc(3e-4, "Adam learning rate", ge=0)
    hidden: int = doc(256, "width of the hidden layers", ge=1)
    n_layers: int = doc(3, "hidden layers", ge=1)
    stochastic_actions: bool = doc(False, "act by sampling the Gaussian (else its mean)")
    obs_norm: str = doc(
        "none",
        "observation normaliser: none | gaussian | limits",
        choices=("none", "gaussian", "limits"),
    )


def presets(dataset: str) -> dict[str, Any]:
    if dataset == "toy-bandit":
        return {
            # The same budget and optimiser as Diffusion-BC's toy preset.
            "hidden": 128,
            "batch_size": 100,
            "lr": 1e-3,
            "steps": 30_000,
            "eval_every": 10_000,
            "save_every": 5_000,
            "log_every": 200,
            "stochastic_actions": True,
        }
    return {"steps": 1_000_000, "eval_every": 50_000, "save_every": 10_000}


class GaussianActor(nn.Module):
    """obs (B, obs_dim) -> mean, log_std (B, A), in the normalised action space."""

    LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_layers: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim, [hidden] * n_layers, 2 * act_dim, activation=nn.Mish)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)


class Agent(AgentBase):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.obs_normalizer = make_normalizer(config.obs_norm, None, spec.obs_dim)
        self.actor = GaussianActor(spec.obs_dim, spec.act_dim, config.hidden, config.n_layers)
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32))
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.lr)

    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        return TransitionSampler(dataset, device, obs_normalizer=self.obs_normalizer)

    def _to_unit(self, action: torch.Tensor) -> torch.Tensor:
        span = (self.action_high - self.action_low).clamp_min(1e-6)
        return 2.0 * (action - self.action_low) / span - 1.0

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        mean, log_std = self.actor(batch.obs)
        dist = torch.distributions.Normal(mean, log_std.exp())
        loss = -dist.log_prob(self._to_unit(batch.action)).sum(-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "std_mean": float(log_std.detach().exp().mean())}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, log_std = self.actor(self.obs_normalizer.normalize(obs))
        x = mean
        if self.config.stochastic_actions:
            noise = torch.randn(
                mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
            )
            x = mean + log_std.exp() * noise
        x = x.clamp(-1.0, 1.0)
        return self.action_low + (x + 1.0) * 0.5 * (self.action_high - self.action_low)

    def train_state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
