"""Diffusion-BC: behaviour cloning with a state-conditioned DDPM over actions.

Paper: Z. Wang, J. J. Hunt, M. Zhou, "Diffusion Policies as an Expressive Policy Class for Offline
Reinforcement Learning", ICLR 2023 (arXiv 2208.06193), the "Diffusion-BC" baseline of its
section 4 and the actor of Diffusion-QL.
Official code: github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL
(agents/bc_diffusion.py, agents/diffusion.py, agents/model.py; toy_experiments/ for the bandit).

The policy pi(a | s) is the reverse chain of a DDPM over actions (Ho et al. 2020):
    training   L_bc = E_{t, eps} || eps - eps_theta(sqrt(abar_t) a + sqrt(1-abar_t) eps, t, s) ||^2
    acting     a_T ~ N(0, I), a_{t-1} ~ p_theta(a_{t-1} | a_t, s), x0 estimate clipped to bounds.
Defaults from the paper: T = 5, "vp" schedule, MLP 3 x 256 Mish with a 16-d time embedding,
Adam 3e-4, batch 256. The toy preset follows the official toy script's model (T = 50, width
128, time embedding 4, batch 100) with a faster learning rate (see `presets`).

Where diffrl differs from the official code:
- Actions are mapped affinely from the dataset's action bounds to [-1, 1] before diffusion and
  back after; for D4RL locomotion (bounds +-1) this is the identity, as in the official code.
- The sampler can be swapped at evaluation time (`--sampler ddim|dpm-solver --sampling-steps K`);
  the default is the paper's DDPM ancestral sampler over all T steps.
- Optional Gaussian observation normalisation (`obs_norm`); off by default, as in the paper.
- Toy preset: lr 1e-3 for 30k steps instead of the toy script's 3e-4 for 100k (see `presets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.config import SamplingConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler, make_normalizer
from diffrl.data.normalizers import refit
from diffrl.diffusion.factory import make_sampler
from diffrl.policies import DiffusionActor


@dataclass(frozen=True)
class Config(SamplingConfig):
    algo: str = doc("diffusion-bc", "algorithm name")
    lr: float = doc(3e-4, "Adam learning rate", ge=0)
    lr_decay: bool = doc(False, "cosine-anneal the learning rate to 0 over `steps`")
    grad_clip: float = doc(0.0, "clip the gradient norm to this value (0 = off)", ge=0)
    hidden: int = doc(256, "width of the denoiser's hidden layers", ge=1)
    n_layers: int = doc(3, "hidden layers of the denoiser", ge=1)
    t_dim: int = doc(16, "size of the time embedding", ge=1)
    diffusion_steps: int = doc(5, "T, the number of diffusion steps", ge=1)
    beta_schedule: str = doc(
        "vp", "noise schedule: vp | linear | cosine", choices=("vp", "linear", "cosine")
    )
    sampling_steps: int = doc(0, "denoising steps when acting (0 = all T)", ge=0)
    obs_norm: str = doc(
        "none",
        "observation normaliser: none | gaussian | limits",
        choices=("none", "gaussian", "limits"),
    )

    # Acting-time keys: `--resume --set` may change them (they leave the model as it is).
    RESUME_KEYS: ClassVar[frozenset[str]] = SamplingConfig.RESUME_KEYS


def presets(dataset: str) -> dict[str, Any]:
    """Per-dataset defaults (the paper's unless stated)."""
    if dataset == "toy-bandit":
        # Official toy script: T 50, vp, width 128, t_dim 4, batch 100, lr 3e-4 for 100k steps.
        # We keep its model and take lr 1e-3 for 30k steps: on 3 seeds that reaches < 2 %
        # off-mode samples in ~50 s on 2 CPU cores, where lr 3e-4 needed ~100k steps and still
        # swung between 1 % and 7 % off-mode from one evaluation to the next (measured here).
        return {
            "diffusion_steps": 50,
            "hidden": 128,
            "t_dim": 4,
            "batch_size": 100,
            "lr": 1e-3,
            "steps": 30_000,
            "eval_every": 10_000,
            "save_every": 5_000,
            "log_every": 200,
        }
    return {"steps": 1_000_000, "eval_every": 50_000, "save_every": 10_000}


class Agent(AgentBase):
    """Diffusion-BC: the DiffusionActor trained by L_bc alone."""

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.obs_normalizer = make_normalizer(config.obs_norm, None, spec.obs_dim)
        self.actor = DiffusionActor.from_config(config, spec)
        # Fail now, not at the first evaluation, on a bad sampler name or step count.
        make_sampler(
            config.sampler, self.actor.schedule, config.sampling_steps, eta=config.ddim_eta
        )
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.lr_scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.steps)
            if config.lr_decay
            else None
        )

    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        return TransitionSampler(dataset, device, obs_normalizer=self.obs_normalizer)

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        loss = self.actor.loss(batch.action, batch.obs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics = {"loss": loss.item()}
        if self.config.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(self.actor.parameters(), self.config.grad_clip)
            metrics["grad_norm"] = float(norm)
        self.optimizer.step()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        return metrics

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One action per observation: (B, obs_dim) -> (B, act_dim)."""
        obs = self.obs_normalizer.normalize(obs)
        c = self.config
        return self.actor.sample(
            obs, c.sampler, c.sampling_steps, generator, eta=c.ddim_eta, clip_x0=c.clip_x0
        )

    def train_state_dict(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        return state

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
