"""Diffusion-QL: a diffusion policy regularised by its own denoising loss and steered by twin Q.

Paper: Z. Wang, J. J. Hunt, M. Zhou, "Diffusion Policies as an Expressive Policy Class for Offline
Reinforcement Learning", ICLR 2023 (arXiv 2208.06193), Algorithm 1.
Official code: github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL (agents/ql_diffusion.py,
agents/diffusion.py, agents/model.py, main.py for the per-dataset settings;
toy_experiments/ql_diffusion.py for the bandit).

One training step on a batch (s, a, r, s', d):
  critic   y = r + gamma (1 - d) min_i Q'_i(s', a'),  a' ~ pi_ema(. | s')         (paper eq. 4)
           with max_q_backup: 10 a' per s', max over them per head, then min over heads;
           L_Q = ||Q_1(s, a) - y||^2 + ||Q_2(s, a) - y||^2; Adam; grad-norm clip.
  actor    L = L_bc + eta * L_q                                                  (paper eq. 3)
           L_bc = E ||eps - eps_theta(sqrt(abar_t) a + sqrt(1 - abar_t) eps, t, s)||^2
           L_q = -mean Q_i(s, a_new) / mean |Q_j(s, a_new)|  (the denominator detached),
           (i, j) = (1, 2) or (2, 1) at random each step, a_new ~ pi_theta(. | s) sampled WITH
           gradients through all T denoising steps; Adam; grad-norm clip.
  targets  EMA actor: decay 0.995 every 5 steps from step 1000; critic target: Polyak tau 0.005.
Acting: 50 candidate actions from pi_theta for the state, one drawn with probability
softmax(min_i Q'_i(s, a)) over the candidates (the target critic, not an argmax).
Checkpoint selection (both recorded by the training loop in the run directory): the best
evaluation ("online" in the official code) and the evaluation whose mean BC loss since the
previous evaluation ranks `select_top_k`-th smallest ("offline"; the official top_k per dataset).

Where diffrl differs from the official code (the algorithm and its arithmetic are the same):
- Speed, same maths: the denoiser's state and time terms are computed once per sampling chain
  (`DiffusionMLP.condition`); Mish is evaluated with one exponential by a compiled kernel
  (`diffrl.nets.activations`); the target's next actions are sampled without building an
  autograd graph; on the CPU the critic loss and (for T <= 10) the actor loss run as compiled
  graphs with their backward passes, the random draws made outside them in the eager order; the
  critic's weights are frozen while the actor loss is built, so no backward pass computes their
  (unused) gradients; EMA and Polyak updates are fused `_foreach_lerp_` calls; the CLI tunes
  glibc's allocator (`diffrl.runtime`). See docs/performance.md.
- Learning-rate decay (`lr_decay`, off by default): cosine over `steps`, stepped every gradient
  step. The official scheduler has T_max = 2000 epochs but is stepped once per 50-epoch round, so
  over a whole run it decays the learning rate by only 0.4 %.
- Actions are mapped affinely from the dataset's bounds to [-1, 1] inside the diffusion model
  (the identity for D4RL locomotion), so any Box action space works; the critic sees
  environment units, as in the official code.
- Optional observation normalisation (`obs_norm`) and reward scale/bias; off, as the official
  code for locomotion (reward_tune "no").
- The official toy script trains 1000 epochs of 100 steps with lr 3e-4 and evaluates once; our
  toy preset is stated in `presets` with its measured effect.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.algos._compile import CompiledGraphs
from diffrl.algos.base import TOY_BUDGET
from diffrl.config import SamplingConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler, make_normalizer
from diffrl.data.normalizers import refit
from diffrl.diffusion.factory import make_sampler
from diffrl.nets import TwinQ
from diffrl.policies import DiffusionActor

# Longest chain (T) whose actor loss is compiled with its backward pass (see `update`).
COMPILED_LOSS_MAX_STEPS = 10


def _eager(name: str, fn: Any, *args: Any) -> Any:
    return fn(*args)


@dataclass(frozen=True)
class Config(SamplingConfig):
    algo: str = doc("diffusion-ql", "algorithm name")
    steps: int = doc(2_000_000, "total gradient steps (the paper: 2000 epochs x 1000)", ge=1)
    eval_every: int = doc(50_000, "evaluate every N steps (official: every 50 epochs)", ge=0)
    save_every: int = doc(10_000, "checkpoint every N steps (and at every evaluation)", ge=1)
    actor_lr: float = doc(3e-4, "actor Adam learning rate", ge=0)
    critic_lr: float = doc(3e-4, "critic Adam learning rate (3e-4 in every official setting)", ge=0)
    lr_decay: bool = doc(False, "cosine-anneal both learning rates to 0 over `steps`")
    eta: float = doc(1.0, "weight of the Q term in the actor loss", ge=0)
    grad_clip: float = doc(1.0, "max gradient norm for actor and critic (0 = off)", ge=0)
    max_q_backup: bool = doc(False, "target from the max over `backup_samples` next actions")
    backup_samples: int = doc(10, "next actions per state for max_q_backup", ge=1)
    discount: float = doc(0.99, "gamma", ge=0, le=1)
    tau: float = doc(0.005, "Polyak rate of the critic target", gt=0, le=1)
    ema_decay: float = doc(0.995, "decay of the EMA actor used for next actions", ge=0, le=1)
    ema_start: int = doc(1000, "first step at which the EMA actor is updated", ge=0)
    ema_every: int = doc(5, "update the EMA actor every N steps", ge=1)
    hidden: int = doc(256, "width of the denoiser's and the critics' hidden layers", ge=1)
    n_layers: int = doc(3, "hidden layers of the denoiser and of each critic", ge=1)
    t_dim: int = doc(16, "size of the time embedding", ge=1)
    diffusion_steps: int = doc(5, "T, the number of diffusion steps", ge=1)
    beta_schedule: str = doc(
        "vp", "noise schedule: vp | linear | cosine", choices=("vp", "linear", "cosine")
    )
    q_action: str = doc(
        "chain",
        "the action the Q term is taken at: chain (sampled through all T steps, the paper) | "
        "approx (EDP: estimated from the BC term's own noised action, one network call)",
        choices=("chain", "approx"),
    )
    candidates: int = doc(50, "candidate actions per state when acting (1 = a single sample)", ge=1)
    sampling_steps: int = doc(0, "denoising steps when acting (0 = all T)", ge=0)
    compile: bool = doc(
        True,
        "torch.compile on CPU: targets, acting, critic loss, and the actor loss for T <= 10 "
        "(eager if compiling fails)",
    )
    select_top_k: int = doc(
        1, "offline selection: the evaluation with the k-th smallest BC loss", ge=0
    )
    obs_norm: str = doc(
        "none",
        "observation normaliser: none | gaussian | limits",
        choices=("none", "gaussian", "limits"),
    )
    reward_scale: float = doc(1.0, "rewards become reward_scale * r + reward_bias")
    reward_bias: float = doc(0.0, "see reward_scale")

    # Before 0.2 the actor's learning rate was `lr` (one name per concept: actor_lr, critic_lr).
    LEGACY_KEYS: ClassVar[dict[str, Any]] = {"lr": lambda v: {"actor_lr": v}}
    # Acting-time keys: `--resume --set` may change them (they leave the model as it is).
    RESUME_KEYS: ClassVar[frozenset[str]] = SamplingConfig.RESUME_KEYS | {
        "candidates",
        "select_top_k",
    }


# Official main.py: eta, gradient-norm clip and offline-selection top_k per D4RL task (all with
# lr 3e-4, no max_q_backup, 2000 epochs). Our datasets are made here, not D4RL's: the settings
# are the official ones for the same task and level.
_LOCOMOTION = {
    "halfcheetah-medium": (1.0, 9.0, 1),
    "hopper-medium": (1.0, 9.0, 2),
    "walker2d-medium": (1.0, 1.0, 1),
    "halfcheetah-medium-replay": (1.0, 2.0, 0),
    "hopper-medium-replay": (1.0, 4.0, 2),
    "walker2d-medium-replay": (1.0, 4.0, 1),
    "halfcheetah-medium-expert": (1.0, 7.0, 0),
    "hopper-medium-expert": (1.0, 5.0, 2),
    "walker2d-medium-expert": (1.0, 5.0, 1),
}


def presets(dataset: str) -> dict[str, Any]:
    """Per-dataset settings: the official ones, or stated where they differ."""
    if dataset == "toy-bandit":
        # Official toy script (toy_experiments/ql_diffusion.py): T 50, vp, width 128, t_dim 4,
        # eta 2.5, batch 100. Learning rate as Diffusion-BC's toy preset; 10k steps: measured
        # here (seed 0), 90 % of samples on right_bottom (reward 4.5) at 10k steps. Early on
        # the Q term pushes samples to the corner (1, -1); the BC term then pulls them onto
        # the mode.
        return {
            "diffusion_steps": 50,
            "hidden": 128,
            "t_dim": 4,
            "eta": 2.5,
            "grad_clip": 0.0,
            "actor_lr": 1e-3,
            "critic_lr": 1e-3,
            **TOY_BUDGET,
        }
    base = dataset.rsplit("-v", 1)[0] if "-v" in dataset else dataset
    if base in _LOCOMOTION:
        eta, clip, top_k = _LOCOMOTION[base]
        return {"eta": eta, "grad_clip": clip, "select_top_k": top_k}
    return {}


class Agent(AgentBase):
    """Diffusion-QL: DiffusionActor + EMA copy + TwinQ + target TwinQ."""

    selection_metric = "bc_loss"  # the training loop's offline checkpoint selection

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.selection_rank = config.select_top_k
        self.obs_normalizer = make_normalizer(config.obs_norm, None, spec.obs_dim)
        self.actor = DiffusionActor.from_config(config, spec)
        make_sampler(
            config.sampler, self.actor.schedule, config.sampling_steps, eta=config.ddim_eta
        )
        # The official EMA model starts as a copy and is left untouched until `ema_start`.
        self.ema_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = TwinQ(spec.obs_dim, spec.act_dim, config.hidden, config.n_layers)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_params = list(self.actor.parameters())
        self.critic_params = list(self.critic.parameters())
        # Parameter objects survive .to(device), so these lists stay valid; built once here
        # rather than on every update.
        self.ema_params = list(self.ema_actor.parameters())
        self.critic_target_params = list(self.critic_target.parameters())
        # fused: one kernel per step for all parameters (the same Adam update).
        self.actor_opt = torch.optim.Adam(self.actor_params, lr=config.actor_lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=config.critic_lr, fused=True)
        self.schedulers = (
            [
                torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
                for opt in (self.actor_opt, self.critic_opt)
            ]
            if config.lr_decay
            else []
        )
        self.num_updates = 0
        self.graphs = CompiledGraphs("diffusion-ql", config.compile)

    # ------------------------------------------------------------------ data
    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        return TransitionSampler(
            dataset,
            device,
            obs_normalizer=self.obs_normalizer,
            reward_scale=self.config.reward_scale,
            reward_bias=self.config.reward_bias,
        )

    # ------------------------------------------------------------------ compiled pieces
    def _target_graph(
        self,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        not_done: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        c = self.config
        n = c.backup_samples if c.max_q_backup else 1
        if n > 1:
            next_obs = next_obs.repeat_interleave(n, dim=0)
        x0 = self.ema_actor.ddpm_chain(next_obs, noise).clamp(-1.0, 1.0)
        q1, q2 = self.critic_target(next_obs, self.ema_actor.unnormalize_action(x0))
        if n > 1:
            q1 = q1.view(-1, n).amax(dim=1, keepdim=True)
            q2 = q2.view(-1, n).amax(dim=1, keepdim=True)
        return reward + not_done * c.discount * torch.minimum(q1, q2)

    def _act_graph(self, obs_rep: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        actions = self.actor.unnormalize_action(self.actor.ddpm_chain(obs_rep, noise).clamp(-1, 1))
        return actions, self.critic_target.q_min(obs_rep, actions)

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def _target(self, batch: TransitionBatch) -> torch.Tensor:
        """y = r + gamma (1 - d) min(Q'_1, Q'_2)(s', a'), a' from the EMA actor. (B, 1).

        With max_q_backup: `backup_samples` a' per s', max over them per head, min over heads.
        """
        c = self.config
        rows = batch.next_obs.shape[0] * (c.backup_samples if c.max_q_backup else 1)
        noise = self.ema_actor.chain_noise(rows, None, batch.next_obs)
        return self.graphs.run(
            "target", self._target_graph, batch.next_obs, batch.reward, batch.not_done, noise
        )

    def _critic_loss(
        self, obs: torch.Tensor, action: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """L_Q = ||Q_1(s, a) - y||^2 + ||Q_2(s, a) - y||^2 (paper eq. 4); y (B, 1) is fixed."""
        q1, q2 = self.critic(obs, action)
        return F.mse_loss(q1, target) + F.mse_loss(q2, target)

    def _actor_loss(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        bc_noise: torch.Tensor,
        chain_noise: torch.Tensor,
        use_q1: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L_bc + eta L_q, L_bc, L_q) (paper eq. 3), with gradients through the whole chain.

        t, bc_noise: the draws of L_bc; chain_noise (T, B, A): the draws of a_new's chain;
        use_q1: which head is maximised (the other, detached, normalises it).
        """
        bc_loss = self.actor.loss(action, obs, t, bc_noise)
        x0 = self.actor.ddpm_chain(obs, chain_noise).clamp(-1.0, 1.0)
        q1_new, q2_new = self.critic(obs, self.actor.unnormalize_action(x0))
        if use_q1:
            q_loss = -q1_new.mean() / q2_new.abs().mean().detach()
        else:
            q_loss = -q2_new.mean() / q1_new.abs().mean().detach()
        return bc_loss + self.config.eta * q_loss, bc_loss, q_loss

    def _actor_loss_approx(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor,
        bc_noise: torch.Tensor,
        use_q1: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same loss with EDP's action approximation (Kang et al. 2023): a_new is the
        clean action estimated from L_bc's own noised action (`loss_and_estimate`), so the Q
        term costs one critic pass and no sampling chain."""
        bc_loss, x0 = self.actor.loss_and_estimate(action, obs, t, bc_noise)
        q1_new, q2_new = self.critic(obs, self.actor.unnormalize_action(x0))
        if use_q1:
            q_loss = -q1_new.mean() / q2_new.abs().mean().detach()
        else:
            q_loss = -q2_new.mean() / q1_new.abs().mean().detach()
        return bc_loss + self.config.eta * q_loss, bc_loss, q_loss

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        metrics: dict[str, float] = {}

        # Critic (paper eq. 4). On the CPU the loss and its backward pass run as compiled graphs
        # (fewer, fused operations; same arithmetic: docs/performance.md).
        target = self._target(batch)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss = self.graphs.run(
            "critic_loss", self._critic_loss, batch.obs, batch.action, target
        )
        critic_loss.backward()
        if c.grad_clip > 0:
            metrics["critic_grad_norm"] = float(
                nn.utils.clip_grad_norm_(self.critic_params, c.grad_clip)
            )
        self.critic_opt.step()

        # Actor (paper eq. 3): L_bc + eta * L_q through the whole reverse chain. The random draws
        # are made here, in the order of the eager code, and passed into the graph.
        t, bc_noise = self.actor.draw_loss_noise(batch.action)
        approx = c.q_action == "approx"
        chain_noise = None
        if not approx:
            chain_noise = self.actor.chain_noise(batch.obs.shape[0], None, batch.obs)
        use_q1 = random.random() > 0.5
        self.actor_opt.zero_grad(set_to_none=True)
        # The critic is a constant here: with its weights not requiring gradients, no backward
        # pass (eager or compiled) computes weight gradients that would only be discarded.
        self.critic.requires_grad_(False)
        try:
            # Compiling this graph unrolls the chain and its backward pass: under a minute at
            # T = 5 (cold cache), over 2.5 minutes at the toy's T = 50. Longer chains run eagerly.
            if approx:  # one network call: compiled at any T
                actor_loss, bc_loss, q_loss = self.graphs.run(
                    "actor_loss_approx",
                    self._actor_loss_approx,
                    batch.obs,
                    batch.action,
                    t,
                    bc_noise,
                    use_q1,
                )
            else:
                run = self.graphs.run if c.diffusion_steps <= COMPILED_LOSS_MAX_STEPS else _eager
                actor_loss, bc_loss, q_loss = run(
                    "actor_loss",
                    self._actor_loss,
                    batch.obs,
                    batch.action,
                    t,
                    bc_noise,
                    chain_noise,
                    use_q1,
                )
        finally:
            self.critic.requires_grad_(True)
        actor_loss.backward()
        if c.grad_clip > 0:
            metrics["actor_grad_norm"] = float(
                nn.utils.clip_grad_norm_(self.actor_params, c.grad_clip)
            )
        self.actor_opt.step()

        # Targets: EMA actor (every ema_every steps from ema_start) and Polyak critic.
        with torch.no_grad():
            if self.num_updates % c.ema_every == 0 and self.num_updates >= c.ema_start:
                torch._foreach_lerp_(self.ema_params, self.actor_params, 1.0 - c.ema_decay)
            torch._foreach_lerp_(self.critic_target_params, self.critic_params, c.tau)
        self.num_updates += 1
        for scheduler in self.schedulers:
            scheduler.step()

        metrics.update(
            loss=actor_loss.item(),
            bc_loss=bc_loss.item(),
            q_loss=q_loss.item(),
            critic_loss=critic_loss.item(),
            target_q=target.mean().item(),
        )
        return metrics

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): `candidates` samples per state, one drawn by softmax(Q)."""
        c = self.config
        obs = self.obs_normalizer.normalize(obs)
        n = c.candidates
        if n == 1:
            return self.actor.sample(
                obs, c.sampler, c.sampling_steps, generator, eta=c.ddim_eta, clip_x0=c.clip_x0
            )
        batch = obs.shape[0]
        rep = obs.repeat_interleave(n, dim=0)  # (B * n, obs_dim)
        if c.sampler == "ddpm" and c.sampling_steps in (0, c.diffusion_steps) and c.clip_x0:
            noise = self.actor.chain_noise(rep.shape[0], generator, rep)
            actions, q = self.graphs.run("act", self._act_graph, rep, noise)
        else:
            actions = self.actor.sample(
                rep, c.sampler, c.sampling_steps, generator, eta=c.ddim_eta, clip_x0=c.clip_x0
            )
            q = self.critic_target.q_min(rep, actions)
        idx = torch.multinomial(F.softmax(q.view(batch, n), dim=1), 1, generator=generator)
        return actions.view(batch, n, -1)[torch.arange(batch, device=obs.device), idx[:, 0]]

    def compiles(self, device: torch.device) -> bool:
        return self.graphs.enabled and device.type == "cpu"

    # ------------------------------------------------------------------ state
    def train_state_dict(self) -> dict[str, Any]:
        return {
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "num_updates": self.num_updates,
        }

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        for scheduler, s in zip(self.schedulers, state.get("schedulers", []), strict=False):
            scheduler.load_state_dict(s)
        self.num_updates = int(state["num_updates"])
