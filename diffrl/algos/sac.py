"""SAC: soft actor-critic with a tanh-Gaussian policy and a learned entropy temperature, the
online baseline DIPO is compared with.

Paper: T. Haarnoja, A. Zhou, K. Hartikainen, G. Tucker, S. Ha, J. Tan, V. Kumar, H. Zhu,
A. Gupta, P. Abbeel, S. Levine, "Soft Actor-Critic Algorithms and Applications" (arXiv
1812.05905), Algorithm 1 with automatic temperature (section 5). Settings and update order:
stable-baselines3's SAC (sb3/sac/sac.py), its defaults.

Why written here and not stable-baselines3's own loop: the comparison with DIPO is of
algorithms, so both run in diffrl's loop with the same replay buffer, environment stepper,
warm-up, evaluation (10 episodes, deterministic actions), checkpoints and resume; wall-clock per
environment step then differs only by the algorithms' own work.

One update on a batch (s, a, r, s', not_done), actions in [-1, 1]:
  temperature  L_alpha = -log alpha (log pi(a~|s) + target_entropy) averaged, a~ ~ pi(.|s);
               target_entropy = -act_dim; alpha starts at 1
  critic       y = r + gamma not_done (min(Q'_1, Q'_2)(s', a') - alpha log pi(a'|s')),
               a' ~ pi(.|s') (the current actor); L_Q = 1/2 sum_i ||Q_i(s, a) - y||^2
  actor        L_pi = E[alpha log pi(a~|s) - min(Q_1, Q_2)(s, a~)] (reparameterised)
  target       Polyak tau 0.005 on the critic, every update
Policy: u ~ N(mu(s), sigma(s)), a = tanh(u), log pi(a|s) = log N(u) - sum log(1 - tanh(u)^2
+ 1e-6); log sigma clamped to [-20, 2]. Acting evaluated: tanh(mu(s)); exploring: a sample.
Networks: actor 2 x 256 ReLU with two heads; twin critics 2 x 256 ReLU each; Adam 3e-4 for all.

Where diffrl differs from stable-baselines3: the warm-up of uniform random actions is the
run's `warmup_steps` (SB3's learning_starts is 100; the presets take DIPO's, so both see the
same random data first); evaluation is diffrl's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.config import TrainConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler
from diffrl.data.normalizers import from_unit_box, to_unit_box
from diffrl.nets import TwinQ, mlp
from diffrl.precision import Float32Linear

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass(frozen=True)
class Config(TrainConfig):
    algo: str = doc("sac", "algorithm name")
    steps: int = doc(990_000, "updates (one per environment step after the warm-up)", ge=1)
    batch_size: int = doc(256, "transitions per update", ge=1)
    warmup_steps: int = doc(10_000, "environment steps with uniform random actions first", ge=0)
    eval_every: int = doc(10_000, "evaluate every N updates", ge=0)
    save_every: int = doc(10_000, "checkpoint every N updates (and at every evaluation)", ge=1)
    actor_lr: float = doc(3e-4, "actor Adam learning rate", ge=0)
    critic_lr: float = doc(3e-4, "critic Adam learning rate", ge=0)
    alpha_lr: float = doc(3e-4, "temperature Adam learning rate", ge=0)
    init_alpha: float = doc(1.0, "initial entropy temperature", gt=0)
    target_entropy: float = doc(0.0, "entropy target (0 = -act_dim)")
    discount: float = doc(0.99, "gamma", ge=0, le=1)
    tau: float = doc(0.005, "Polyak rate of the critic target", gt=0, le=1)
    hidden: int = doc(256, "width of the hidden layers", ge=1)
    n_layers: int = doc(2, "hidden layers of the actor and of each critic", ge=1)


def presets(env_id: str) -> dict[str, Any]:
    """DIPO's warm-up and evaluation schedule for the same environment, so that runs of the two
    compare at equal environment steps."""
    from diffrl.algos import dipo

    shared = ("steps", "warmup_steps", "eval_every", "save_every", "eval_episodes")
    return {k: v for k, v in dipo.presets(env_id).items() if k in shared}


class TanhGaussianActor(nn.Module):
    """obs (B, obs_dim) -> (mean, log_std) (B, A) of the pre-tanh Gaussian."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_layers: int) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, [hidden] * (n_layers - 1), hidden, nn.ReLU, nn.ReLU)
        # Output layers: float32 under bf16 (diffrl/precision.py).
        self.mu = Float32Linear(hidden, act_dim)
        self.log_std = Float32Linear(hidden, act_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample a = tanh(u) in (-1, 1) (B, A) and log pi(a|s) (B, 1)."""
        mu, log_std = self(obs)
        std = log_std.exp()
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        u = mu + std * eps
        a = torch.tanh(u)
        # log N(u; mu, std) - sum log(1 - tanh(u)^2 + 1e-6) (the change of variables)
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, True)
        log_prob = log_prob - torch.log1p(-a.pow(2) + 1e-6).sum(-1, keepdim=True)
        return a, log_prob


class Agent(AgentBase):
    """SAC: tanh-Gaussian actor, TwinQ + target, learned temperature."""

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        c = config
        self.actor = TanhGaussianActor(spec.obs_dim, spec.act_dim, c.hidden, c.n_layers)
        self.critic = TwinQ(spec.obs_dim, spec.act_dim, c.hidden, c.n_layers, nn.ReLU)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_alpha)))
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32))
        self.target_entropy = c.target_entropy or -float(spec.act_dim)
        self.critic_params = list(self.critic.parameters())
        self.critic_target_params = list(self.critic_target.parameters())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=c.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.alpha_lr)
        self.num_updates = 0

    # ------------------------------------------------------------------ data
    def fit_normalizers(self, dataset: Any) -> None:
        pass

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        return TransitionSampler(dataset, device)

    # ------------------------------------------------------------------ training
    def update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        action = to_unit_box(batch.action, self.action_low, self.action_high)

        # Temperature (SB3's order: first, from the current actor's samples).
        a_new, log_prob = self.actor.sample(batch.obs)
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        alpha = self.log_alpha.detach().exp()

        # Critic: the soft target from the current actor's next actions.
        with torch.no_grad():
            a_next, logp_next = self.actor.sample(batch.next_obs)
            q1_t, q2_t = self.critic_target(batch.next_obs, a_next)
            soft = torch.minimum(q1_t, q2_t) - alpha * logp_next
            target = batch.reward + c.discount * batch.not_done * soft
        q1, q2 = self.critic(batch.obs, action)
        critic_loss = 0.5 * (F.mse_loss(q1, target) + F.mse_loss(q2, target))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Actor: alpha log pi - min Q at its own reparameterised sample (the critic frozen:
        # no weight gradients for it).
        self.critic.requires_grad_(False)
        try:
            q1_pi, q2_pi = self.critic(batch.obs, a_new)
        finally:
            self.critic.requires_grad_(True)
        actor_loss = (alpha * log_prob - torch.minimum(q1_pi, q2_pi)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(self.critic_target_params, self.critic_params, c.tau)
        self.num_updates += 1
        return {
            "loss": actor_loss.item(),
            "critic_loss": critic_loss.item(),
            "alpha": float(alpha),
            "entropy": -log_prob.mean().item(),
            "q": q1.mean().item(),
        }

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): the deterministic policy tanh(mu(s))."""
        mu, _ = self.actor(obs)
        return from_unit_box(torch.tanh(mu), self.action_low, self.action_high)

    @torch.no_grad()
    def explore(
        self,
        obs: torch.Tensor,
        goal: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): a sample of the stochastic policy."""
        a, _ = self.actor.sample(obs, generator)
        return from_unit_box(a, self.action_low, self.action_high)

    # ------------------------------------------------------------------ state
    def train_state_dict(self) -> dict[str, Any]:
        return {
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.num_updates = int(state["num_updates"])
