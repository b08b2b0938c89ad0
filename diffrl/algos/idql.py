"""IDQL: implicit Q-learning's critic and value, a diffusion behaviour model, and acting by
choosing among the behaviour model's samples with the critic.

Paper: P. Hansen-Estruch, I. Kostrikov, M. Janner, J. G. Kuba, S. Levine, "IDQL: Implicit
Q-Learning as an Actor-Critic Method with Diffusion Policies", 2023 (arXiv 2304.10573).
Official code: github.com/philippe-eecs/IDQL (jaxrl5/agents/ddpm_iql_simple/ddpm_iql_learner.py,
the live learner; JAX).

One training step on a batch (s, a, r, s', d), in the official order (behaviour model, V, Q):
  behaviour  L_bc = E || eps - eps_theta(sqrt(abar_t) a + sqrt(1 - abar_t) eps, t, s) ||^2, the
             shared state-conditioned DDPM (diffrl/policies: Diffusion-BC's); an EMA copy
             (rate 1 - `ema_decay` = 0.001, every step) acts
  value      L_V = E |tau - 1(u < 0)| u^2, u = min_i Q'_i(s, a) - V(s)      (expectile tau)
  critic     L_Q = sum_i E (Q_i(s, a) - (r + gamma (1 - d) V(s')))^2, V the value just updated
  target     Polyak `tau_target` on the critics
The behaviour model never sees Q, so training costs what Diffusion-BC's does plus IQL's critics.

Acting (`act_rule`, an acting-time key like `candidates`):
  argmax     `candidates` samples from the EMA behaviour model (DDPM, x0 clipped), the one with
             the largest min_i Q'_i(s, a) executed: the released code's rule
  expectile  the paper's expectile-weighted resampling: one of the samples drawn with
             probability proportional to tau where Q(s, a) > V(s) and 1 - tau elsewhere (found
             only in an older, unused learner of the official code)
N and the rule are not chosen per dataset from scores: every preset acts as the released code's
training evaluations do (N = 64, argmax); `diffrl eval --sweep candidates=16,64,256` and
`--sweep act_rule=argmax,expectile` compare the others.

Where diffrl differs from the official code:
- The behaviour model is the shared state-conditioned diffusion policy (Diffusion-BC's MLP, 3 x
  256 Mish, 16-d sinusoidal time embedding) instead of the official residual network (learnable
  Fourier features, 3 residual blocks of LayerNorm, dropout and width 1024): the same model as
  Diffusion-BC and Diffusion-QL, so the offline table compares acting rules on one behaviour
  model, at a quarter of the official network's cost per step on this CPU. T = 5 and the "vp"
  schedule are the official ones. Its loss is the mean over action dimensions (the official:
  the sum, a factor of A on the learning rate).
- Adam for every network at 3e-4 (official: the behaviour model's AdamW with a cosine decay
  over the run; `lr_decay` turns the cosine on); batch 256 (official 512).
- Rewards scaled by 1000 / (max - min episode return) on locomotion, as the official code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.algos.base import TOY_BUDGET
from diffrl.config import SamplingConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler, make_normalizer
from diffrl.data.normalizers import refit
from diffrl.diffusion.factory import make_sampler
from diffrl.nets import TwinQ, mlp
from diffrl.policies import DiffusionActor


@dataclass(frozen=True)
class Config(SamplingConfig):
    algo: str = doc("idql", "algorithm name")
    steps: int = doc(3_000_000, "gradient steps (official 3M)", ge=1)
    lr: float = doc(3e-4, "Adam learning rate of every network", ge=0)
    lr_decay: bool = doc(False, "cosine-anneal the behaviour model's learning rate over `steps`")
    expectile: float = doc(
        0.7, "tau of the value's expectile loss (official 0.7; antmaze 0.9)", gt=0, le=1
    )
    discount: float = doc(0.99, "gamma", ge=0, le=1)
    tau_target: float = doc(0.005, "Polyak rate of the target critics", gt=0, le=1)
    ema_decay: float = doc(0.999, "decay of the EMA behaviour model that acts", ge=0, le=1)
    hidden: int = doc(256, "width of the denoiser's hidden layers", ge=1)
    n_layers: int = doc(3, "hidden layers of the denoiser", ge=1)
    t_dim: int = doc(16, "size of the time embedding", ge=1)
    diffusion_steps: int = doc(5, "T, the number of diffusion steps", ge=1)
    beta_schedule: str = doc(
        "vp", "noise schedule: vp | linear | cosine", choices=("vp", "linear", "cosine")
    )
    critic_hidden: int = doc(256, "width of the critics and the value (2 hidden layers)", ge=1)
    candidates: int = doc(64, "N, behaviour samples per state when acting", ge=1)
    act_rule: str = doc(
        "argmax",
        "acting: argmax (released code: the sample with the largest min Q) | expectile (the "
        "paper's expectile-weighted resampling)",
        choices=("argmax", "expectile"),
    )
    reward_norm: str = doc(
        "return_range",
        "rewards: return_range (r * 1000 / (max - min episode return), official locomotion) | none",
        choices=("return_range", "none"),
    )
    obs_norm: str = doc(
        "none",
        "observation normaliser: none | gaussian | limits",
        choices=("none", "gaussian", "limits"),
    )

    RESUME_KEYS: ClassVar[frozenset[str]] = SamplingConfig.RESUME_KEYS | {
        "candidates",
        "act_rule",
    }


def presets(dataset: str) -> dict[str, Any]:
    """Per-dataset settings: the official ones unless stated."""
    if dataset == "toy-bandit":
        # The behaviour model of Diffusion-BC's toy preset (T 50, width 128, t_dim 4, batch
        # 100, lr 1e-3) at Diffusion-QL's toy budget (10k steps); the bandit's rewards as they
        # are (one step: Q = r).
        return {
            "diffusion_steps": 50,
            "hidden": 128,
            "t_dim": 4,
            "lr": 1e-3,
            **TOY_BUDGET,
            "reward_norm": "none",
        }
    return {"eval_every": 50_000, "save_every": 10_000}


class Agent(AgentBase):
    """The behaviour DDPM (+ EMA), twin critics (+ targets) and the value."""

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        c = config
        O, A = spec.obs_dim, spec.act_dim
        self.obs_normalizer = make_normalizer(c.obs_norm, None, O)
        self.actor = DiffusionActor.from_config(c, spec)
        make_sampler(c.sampler, self.actor.schedule, c.sampling_steps, eta=c.ddim_eta)
        self.ema_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = TwinQ(O, A, c.critic_hidden, 2, activation=nn.ReLU)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # The official value: LayerNorm on the input, then MLP(256, 256) ReLU.
        self.value = nn.Sequential(nn.LayerNorm(O), mlp(O, [c.critic_hidden] * 2, 1, nn.ReLU))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=c.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr)
        self.lr_scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, T_max=c.steps)
            if c.lr_decay
            else None
        )
        self.actor_params = list(self.actor.parameters())
        self.ema_params = list(self.ema_actor.parameters())
        self.critic_params = list(self.critic.parameters())
        self.target_params = list(self.critic_target.parameters())
        # The reward scale is fitted with the normalisers (a buffer: it travels with the run).
        self.register_buffer("reward_scale", torch.tensor(1.0))

    # ------------------------------------------------------------------ data
    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)
        scale = dataset.return_range_scale() if self.config.reward_norm == "return_range" else 1.0
        self.reward_scale.fill_(scale)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        return TransitionSampler(
            dataset,
            device,
            obs_normalizer=self.obs_normalizer,
            reward_scale=float(self.reward_scale),
        )

    # ------------------------------------------------------------------ training
    def update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        obs, action = batch.obs, batch.action

        # Behaviour model: the denoising loss alone (it never sees Q); its EMA acts.
        bc_loss = self.actor.loss(action, obs)
        self.actor_opt.zero_grad(set_to_none=True)
        bc_loss.backward()
        self.actor_opt.step()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()

        # Value: the expectile of the target critics' min over the dataset's actions.
        with torch.no_grad():
            q_target = self.critic_target.q_min(obs, action)
        u = q_target - self.value(obs)
        weight = torch.where(u < 0, 1.0 - c.expectile, c.expectile)
        value_loss = (weight * u.square()).mean()
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        # Critics: one-step targets through the value just updated.
        with torch.no_grad():
            y = batch.reward + c.discount * batch.not_done * self.value(batch.next_obs)
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.actor_params, 1.0 - c.ema_decay)
            torch._foreach_lerp_(self.target_params, self.critic_params, c.tau_target)
        self.num_updates += 1
        return {
            "bc_loss": bc_loss.item(),
            "value_loss": value_loss.item(),
            "critic_loss": critic_loss.item(),
            "q_mean": float(q1.detach().mean()),
        }

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): N behaviour samples per state, one chosen by the
        critic (`act_rule`)."""
        c = self.config
        s = self.obs_normalizer.normalize(obs)
        B, N = s.shape[0], c.candidates
        rep = s.repeat_interleave(N, dim=0)
        actions = self.ema_actor.sample(
            rep, c.sampler, c.sampling_steps, generator, eta=c.ddim_eta, clip_x0=c.clip_x0
        )
        q = self.critic_target.q_min(rep, actions).view(B, N)
        if c.act_rule == "argmax":
            pick = q.argmax(dim=1)
        else:
            v = self.value(s)  # (B, 1)
            weights = torch.where(q > v, c.expectile, 1.0 - c.expectile)
            pick = torch.multinomial(weights, 1, generator=generator)[:, 0]
        return actions.view(B, N, -1)[torch.arange(B, device=s.device), pick]

    # ------------------------------------------------------------------ state
    def train_state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "actor_opt": self.actor_opt.state_dict(),
            "value_opt": self.value_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "num_updates": self.num_updates,
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        return state

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.value_opt.load_state_dict(state["value_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.num_updates = int(state["num_updates"])
