"""The state-conditioned diffusion policy: a DDPM over actions, conditioned on the state.

Shared by Diffusion-BC (trained by L_bc alone), Diffusion-QL (L_bc plus the Q term, through the
differentiable chain) and, next, DIPO (L_bc on Q-improved actions). Ho et al. 2020 for the
chain; Wang et al. 2023 (Diffusion-QL) for the network and the action clipping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from diffrl.data.normalizers import from_unit_box, to_unit_box
from diffrl.diffusion import extract, make_schedule, q_sample
from diffrl.diffusion.factory import make_sampler
from diffrl.nets import DiffusionMLP

if TYPE_CHECKING:  # the spec's type only: policies sit below the algorithms
    from diffrl.algos import DataSpec


class DiffusionActor(nn.Module):
    """A state-conditioned DDPM over actions: `loss` for training, `sample` for acting.

    Works in a normalised action space x in [-1, 1]^A; `sample` returns environment units.
    `sample` is differentiable (Diffusion-QL backpropagates through it); wrap it in
    torch.no_grad() when only acting.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: tuple[float, ...],
        action_high: tuple[float, ...],
        hidden: int = 256,
        n_layers: int = 3,
        t_dim: int = 16,
        diffusion_steps: int = 5,
        beta_schedule: str = "vp",
        t_hidden: int = 0,
    ) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.denoiser = DiffusionMLP(
            obs_dim, act_dim, hidden=hidden, n_layers=n_layers, t_dim=t_dim, t_hidden=t_hidden
        )
        self.schedule = make_schedule(beta_schedule, diffusion_steps)
        self.register_buffer("action_low", torch.tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(action_high, dtype=torch.float32))
        self._schedules: dict[tuple, Any] = {}
        self._samplers: dict[Any, Any] = {}
        # The paper's chain (`ddpm_chain`); made here, not on first use, so that a compiled
        # graph calling the chain never has to build it (its float tables come from .tolist()).
        self._ddpm = make_sampler("ddpm", self.schedule, 0, clip_x0=1.0)
        self._ddpm_unclipped = make_sampler("ddpm", self.schedule, 0)

    @classmethod
    def from_config(cls, config: Any, spec: DataSpec, t_hidden: int = 0) -> DiffusionActor:
        """The actor described by a config's hidden / n_layers / t_dim / diffusion_steps /
        beta_schedule keys for the data in `spec`; `t_hidden` the time embedding's hidden
        width (0: none, as Diffusion-QL's)."""
        return cls(
            spec.obs_dim,
            spec.act_dim,
            spec.action_low,
            spec.action_high,
            hidden=config.hidden,
            n_layers=config.n_layers,
            t_dim=config.t_dim,
            diffusion_steps=config.diffusion_steps,
            beta_schedule=config.beta_schedule,
            t_hidden=t_hidden,
        )

    def _schedule_for(self, x: torch.Tensor):
        key = (x.device, x.dtype)
        if key not in self._schedules:
            self._schedules[key] = self.schedule.to(x.device, x.dtype)
        return self._schedules[key]

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return to_unit_box(action, self.action_low, self.action_high)

    def unnormalize_action(self, x: torch.Tensor) -> torch.Tensor:
        return from_unit_box(x, self.action_low, self.action_high)

    def loss(
        self,
        action: torch.Tensor,
        obs: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_bc: the epsilon-prediction loss (Ho et al. 2020, eq. 14) on dataset actions (B, A).

        t (B,) long and noise (B, A) are drawn here unless given (`draw_loss_noise` draws them
        in the same order, so a caller can make the draws outside a compiled graph).
        """
        x0 = self.normalize_action(action)
        if t is None or noise is None:
            t, noise = self.draw_loss_noise(x0)
        x_t = q_sample(self._schedule_for(x0), x0, t, noise)
        return F.mse_loss(self.denoiser(x_t, t, obs), noise)

    def loss_and_estimate(
        self, action: torch.Tensor, obs: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_bc, the clean action estimated from the same noised action) (B, A), the estimate
        a0_hat = clip(sqrt(1 / abar_t) a_t - sqrt(1 / abar_t - 1) eps_theta(a_t, t, s)) in
        [-1, 1] (DDPM eq. 15 inverted): EDP's action approximation (Kang et al. 2023, eq. 6),
        one network call, no sampling chain. Differentiable through eps_theta."""
        x0 = self.normalize_action(action)
        schedule = self._schedule_for(x0)
        x_t = q_sample(schedule, x0, t, noise)
        eps = self.denoiser(x_t, t, obs)
        estimate = (
            extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
            - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps
        )
        return F.mse_loss(eps, noise), estimate.clamp(-1.0, 1.0)

    def draw_loss_noise(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t (B,) uniform over the T steps, noise (B, A) standard normal) for `loss`.

        Also makes the schedule's copy for `like`'s device and dtype now, outside any compiled
        graph that calls `loss` (making it inside one would force a recompilation).
        """
        self._schedule_for(like)
        t = torch.randint(0, self.schedule.num_steps, (like.shape[0],), device=like.device)
        return t, torch.randn(like.shape[0], self.act_dim, device=like.device, dtype=like.dtype)

    def sample(
        self,
        obs: torch.Tensor,
        sampler: str = "ddpm",
        sampling_steps: int = 0,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        clip_x0: bool = True,
    ) -> torch.Tensor:
        """Actions (B, A) in environment units for observations (B, obs_dim).

        `eta` is DDIM's noise scale (sampler 'ddim' only); `clip_x0` clamps every x0 estimate
        to [-1, 1] (the paper's sampler does). The result is clamped to the action box.
        """
        T = self.schedule.num_steps
        if sampler == "ddpm" and sampling_steps in (0, T):
            noise = self.chain_noise(obs.shape[0], generator, obs)
            x0 = self.ddpm_chain(obs, noise, clip_x0)
            return self.unnormalize_action(x0.clamp(-1.0, 1.0))
        key = (sampler, sampling_steps, eta, clip_x0)
        if key not in self._samplers:
            self._samplers[key] = make_sampler(
                sampler,
                self.schedule,
                sampling_steps,
                prediction="epsilon",
                clip_x0=1.0 if clip_x0 else None,
                eta=eta,
            )
        x_T = torch.randn(
            (obs.shape[0], self.act_dim), generator=generator, device=obs.device, dtype=obs.dtype
        )
        x0 = self._samplers[key].sample(
            lambda x, t: self.denoiser(x, t, obs), x_T, generator=generator
        )
        return self.unnormalize_action(x0.clamp(-1.0, 1.0))

    def chain_noise(
        self, batch: int, generator: torch.Generator | None, like: torch.Tensor
    ) -> torch.Tensor:
        """(T, B, A) standard normal draws for `ddpm_chain` (`DDPMSampler.chain_noise`)."""
        return self._ddpm.chain_noise((batch, self.act_dim), generator, like.device, like.dtype)

    def ddpm_chain(
        self, obs: torch.Tensor, noise: torch.Tensor, clip_x0: bool = True
    ) -> torch.Tensor:
        """The paper's sampler, DDPM over all T steps with x0 clipped to [-1, 1] (unless
        `clip_x0` is False): x_T -> x_0
        (B, A), by the sampler's own tight loop (`DDPMSampler.chain`), with the denoiser's
        step-invariant terms computed once (`DiffusionMLP.condition`). Differentiable; no random
        draws inside (noise from `chain_noise`), so it can be compiled as one graph.
        """
        ddpm = self._ddpm if clip_x0 else self._ddpm_unclipped
        return ddpm.chain(self.denoiser.condition(obs, ddpm.timesteps), noise)
