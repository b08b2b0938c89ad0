"""DIPO: an online actor-critic whose actor is a diffusion policy trained on Q-improved actions.

Paper: L. Yang, Z. Huang, F. Lei, Y. Zhong, Y. Yang, C. Fang, S. Wen, B. Zhou, Z. Lin, "Policy
Representation via Diffusion Probability Model for Reinforcement Learning" (arXiv 2305.13122),
Algorithm 1. Official code: github.com/BellmanTimeHut/DIPO (agent/DiPo.py, agent/diffusion.py,
agent/model.py, main.py; per-environment settings in its README).

Per environment step (after `warmup_steps` uniform-random steps) one update on a batch of B
transitions (s, a, r, s', not_done) and their rows' diffusion-memory actions a* (a column of the
replay buffer that starts as the executed action):
  critic   y = r + gamma not_done min(Q'_1, Q'_2)(s', a'),  a' from the TARGET diffusion actor
           with the full sampling noise;  L_Q = ||Q_1(s, a) - y||^2 + ||Q_2(s, a) - y||^2;
           Adam (eps 1e-5); gradient-norm clip `grad_clip`
  action   a* <- a* ascended on min(Q_1, Q_2)(s, a*) by `action_steps` Adam steps (lr
  gradient `action_lr`, eps 1e-5, a fresh optimiser per update), the gradient of the whole (B, A)
           tensor clipped to the norm act_dim x `action_grad_ratio` before each step and a*
           clamped to [-1, 1] after it; the result WRITTEN BACK into the diffusion memory
  actor    L = E ||eps - eps_theta(sqrt(abar_t) a* + sqrt(1 - abar_t) eps, t, s)||^2 (the
           plain denoising loss on the improved actions); Adam (eps 1e-5); the same clip
  targets  Polyak tau 0.005: the critic's every update, the actor's every `actor_target_every`
Acting: DDPM over `diffusion_steps` (cosine schedule, x0 clipped to [-1, 1]); exploring, with the
full per-step noise; evaluated, with the per-step noise off (the chain still starts from
N(0, I)). Actions live in [-1, 1] inside the agent (the critic sees them there too) and are
mapped affinely to the environment's bounds.

Where diffrl differs from the official code:
- Time-limit truncations bootstrap (Gymnasium's terminated / truncated: the replay buffer's
  not_done is 0 only at terminations). The official code sets mask = 0 on every `done`, time
  limits included; `truncated_terminal=true` reproduces that.
- One batch per update: the diffusion memory is a column of the replay buffer, and the
  action-gradient step improves the rows of the critic's batch. The official code draws a second,
  independent batch from a separate diffusion memory that holds the same rows; both draws are
  uniform over the same transitions.
- Linear layers start from a normal with std 1 / (2 sqrt(fan_in)), truncated at 2 std, and zero
  biases. The official init means to truncate, but its loop rebinds a local name, so its weights
  are the untruncated normal.
- Speed, same maths: the action-gradient steps differentiate the critic by a written-out
  backward pass (Mish's slope from its one exponential; no autograd graph, no weight
  gradients, the state's part of the first layer once per update) and the Adam steps on the
  actions are written out on tensors (both tested against the official loop with autograd and
  torch.optim.Adam); the denoiser's state and time terms are computed once per chain
  (`DiffusionMLP.condition`); the target chain runs without autograd; on the CPU the target
  (chain + target critic) and the whole action-gradient loop each run as one compiled graph
  (`compile`, as Diffusion-QL's: a first run compiles them for up to a few minutes at the
  official sizes, cached for later runs).
- `action_gradient_start` (off by default, not in the paper) holds the action-gradient steps
  back for that many updates, so that the critic first learns from the collected actions; the
  actor trains on them unchanged meanwhile (docs/results/online.md, the four-goals result).
- `target_sampling_steps` (the fast preset) draws the target's next actions with DDIM in that
  many steps instead of the full-noise DDPM chain; `sampler` / `sampling_steps` do the same for
  acting. Off by default.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.algos._compile import CompiledGraphs
from diffrl.config import SamplingConfig, doc
from diffrl.data import TransitionBatch
from diffrl.data.online import ReplayBuffer
from diffrl.diffusion.factory import make_sampler
from diffrl.errors import DiffrlError
from diffrl.nets import TwinQ
from diffrl.nets.activations import Mish, _mish_forward_and_slope
from diffrl.nets.onednn import linear
from diffrl.policies import DiffusionActor


@dataclass(frozen=True)
class Config(SamplingConfig):
    algo: str = doc("dipo", "algorithm name")
    steps: int = doc(990_000, "updates (one per environment step after the warm-up)", ge=1)
    batch_size: int = doc(256, "transitions per update", ge=1)
    warmup_steps: int = doc(10_000, "environment steps with uniform random actions first", ge=0)
    eval_every: int = doc(10_000, "evaluate every N updates", ge=0)
    eval_episodes: int = doc(10, "episodes per evaluation", ge=1)
    save_every: int = doc(10_000, "checkpoint every N updates (and at every evaluation)", ge=1)
    actor_lr: float = doc(3e-4, "diffusion actor Adam learning rate", ge=0)
    critic_lr: float = doc(3e-4, "critic Adam learning rate", ge=0)
    grad_clip: float = doc(2.0, "max gradient norm of actor and critic (0 = off)", ge=0)
    action_lr: float = doc(0.03, "Adam learning rate of the action-gradient steps", ge=0)
    action_steps: int = doc(20, "action-gradient steps per update", ge=0)
    action_gradient_start: int = doc(
        0,
        "updates before the action-gradient steps begin (the critic learns from the collected "
        "actions first; 0 = from the first update, official)",
        ge=0,
    )
    action_grad_ratio: float = doc(
        0.1, "the actions' gradient norm is clipped to act_dim x this (0 = off)", ge=0
    )
    discount: float = doc(0.99, "gamma", ge=0, le=1)
    tau: float = doc(0.005, "Polyak rate of both targets", gt=0, le=1)
    actor_target_every: int = doc(1, "update the actor target every N updates", ge=1)
    hidden: int = doc(256, "width of the denoiser's and the critics' hidden layers", ge=1)
    n_layers: int = doc(3, "hidden layers of the denoiser and of each critic", ge=1)
    t_dim: int = doc(32, "size of the time embedding", ge=1)
    t_hidden: int = doc(256, "width of the time embedding's hidden layer", ge=1)
    diffusion_steps: int = doc(100, "T, the number of diffusion steps", ge=1)
    beta_schedule: str = doc(
        "cosine", "noise schedule: vp | linear | cosine", choices=("vp", "linear", "cosine")
    )
    explore_noise: float = doc(
        1.0, "scale of the per-step sampling noise when exploring (official noise_ratio)", ge=0
    )
    target_sampling_steps: int = doc(
        0, "next actions for the critic's target by DDIM in this many steps (0 = full DDPM)", ge=0
    )
    compile: bool = doc(
        True,
        "torch.compile on CPU: the target chain and the action-gradient steps, each one graph "
        "(eager if compiling fails)",
    )

    RESUME_KEYS: ClassVar[frozenset[str]] = SamplingConfig.RESUME_KEYS | {
        "explore_noise",
    }


# Official README, per environment (MuJoCo v3 there; the v5 environments here):
# (actor-critic gradient clip, action-gradient norm ratio, action-gradient steps, actor target
# every N updates).
_OFFICIAL = {
    "Hopper": (1.0, 0.3, 20, 1),
    "Walker2d": (2.0, 0.08, 20, 1),
    "Ant": (0.8, 0.1, 20, 1),
    "HalfCheetah": (2.0, 0.08, 40, 2),
    "Humanoid": (2.0, 0.1, 20, 1),
}

# The fast preset (`diffrl bench train --fast`; for a run, the same keys with --set): Diffusion-
# QL's short chain (T = 5, vp schedule) and 2 action-gradient steps instead of 20. Measured here
# (quiet, 2 threads, Hopper-v5 through the online loop): 58.5 environment steps per second
# against SAC's 166, 2.85x SAC's wall-clock per step; 100 steps and 20 action steps run at 9.5
# updates/s. Its return cost: docs/results/online.md.
FAST: dict[str, Any] = {"diffusion_steps": 5, "beta_schedule": "vp", "action_steps": 2}


def presets(env_id: str) -> dict[str, Any]:
    """Per-environment settings: the official table for the MuJoCo tasks; a small preset for
    Pendulum-v1 that learns in minutes (stated)."""
    name = env_id.split("-v")[0]
    if name in _OFFICIAL:
        clip, ratio, steps, every = _OFFICIAL[name]
        return {
            "grad_clip": clip,
            "action_grad_ratio": ratio,
            "action_steps": steps,
            "actor_target_every": every,
        }
    if name == "Pendulum":
        # Not in the paper: 200-step episodes, 1-d actions. A short warm-up and chain, and
        # frequent evaluations, so that a run shows its learning curve in minutes here.
        return {
            "steps": 15_000,
            "warmup_steps": 1_000,
            "eval_every": 2_500,
            "save_every": 2_500,
            "diffusion_steps": 10,
            "action_steps": 10,
        }
    if name == "diffrl/FourGoals":
        # One-step, four equal goals (diffrl.toy_envs): the multimodality demonstration. SAC
        # shares the budget (sac.presets); its temperature needs ~15k updates to fall from 1
        # to ~0.01 at lr 3e-4, so the budget is 20k, though DIPO is done in about 3k.
        return {
            "steps": 20_000,
            "warmup_steps": 1_000,
            "eval_every": 5_000,
            "save_every": 5_000,
            "diffusion_steps": 10,
            "action_steps": 10,
        }
    return {}


def _init_linear(module: nn.Module) -> None:
    """Normal(0, 1 / (2 sqrt(fan_in))) truncated at 2 std, zero bias (official init_weights)."""
    if isinstance(module, nn.Linear):
        std = 1.0 / (2.0 * math.sqrt(module.in_features))
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(module.bias)


class ActionAdam:
    """torch.optim.Adam's update (betas 0.9 / 0.999, no weight decay) on a tensor of actions,
    written out: a fresh optimiser per update, as the official code makes one each time."""

    def __init__(self, lr: float, eps: float = 1e-5, betas: tuple[float, float] = (0.9, 0.999)):
        self.lr, self.eps, self.b1, self.b2 = lr, eps, betas[0], betas[1]

    def run(
        self,
        x: torch.Tensor,
        grad_of: Any,
        steps: int,
        max_norm: float,
        low: float = -1.0,
        high: float = 1.0,
    ) -> torch.Tensor:
        """`steps` descent steps on x (B, A) with gradients grad_of(x); before each, the
        gradient's global norm is clipped to max_norm (clip_grad_norm_'s rule, if > 0);
        after each, x is clamped to [low, high]. Returns the new x."""
        m = torch.zeros_like(x)
        v = torch.zeros_like(x)
        for k in range(1, steps + 1):
            g = grad_of(x)
            if max_norm > 0:
                coef = max_norm / (torch.linalg.vector_norm(g) + 1e-6)
                g = g * coef.clamp(max=1.0)
            m.lerp_(g, 1.0 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
            bias1 = 1.0 - self.b1**k
            bias2 = 1.0 - self.b2**k
            denom = (v.sqrt() / math.sqrt(bias2)).add_(self.eps)
            x = torch.addcdiv(x, m, denom, value=-self.lr / bias1).clamp_(low, high)
        return x


class Agent(AgentBase):
    """DIPO: DiffusionActor + target copy, TwinQ + target copy, and the diffusion memory (a
    column of the online replay buffer)."""

    replay_columns = {"best_action": "action"}

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        c = config
        self.actor = DiffusionActor.from_config(c, spec, t_hidden=c.t_hidden)
        self.critic = TwinQ(spec.obs_dim, spec.act_dim, c.hidden, c.n_layers)
        self.actor.apply(_init_linear)
        self.critic.apply(_init_linear)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_params = list(self.actor.parameters())
        self.critic_params = list(self.critic.parameters())
        self.actor_target_params = list(self.actor_target.parameters())
        self.critic_target_params = list(self.critic_target.parameters())
        self.actor_opt = torch.optim.Adam(self.actor_params, lr=c.actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=c.critic_lr, eps=1e-5)
        self.action_adam = ActionAdam(c.action_lr)
        # Check the acting and target samplers now (a bad --set fails before the first step).
        if c.sampler != "ddpm" or c.sampling_steps not in (0, c.diffusion_steps):
            make_sampler(c.sampler, self.actor.schedule, c.sampling_steps, eta=c.ddim_eta)
        if c.target_sampling_steps > c.diffusion_steps:
            raise DiffrlError(
                f"target_sampling_steps ({c.target_sampling_steps}) must be at most "
                f"diffusion_steps ({c.diffusion_steps})"
            )
        self.buffer: ReplayBuffer | None = None
        self.num_updates = 0
        self.graphs = CompiledGraphs("dipo", c.compile)

    # ------------------------------------------------------------------ data
    def fit_normalizers(self, dataset: Any) -> None:
        pass  # no observation normalisation (official); actions map from the spec's bounds

    def attach_buffer(self, buffer: ReplayBuffer) -> None:
        """The replay buffer whose `best_action` column is the diffusion memory."""
        self.buffer = buffer

    def batch_sampler(self, dataset: Any, device: torch.device) -> ReplayBuffer:
        """Batches from a fixed dataset (benchmarks, or starting from offline data): a replay
        buffer holding it, with the diffusion memory attached."""
        buffer = ReplayBuffer.from_dataset(dataset, device, columns=self.replay_columns)
        self.attach_buffer(buffer)
        return buffer

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def _next_actions(self, next_obs: torch.Tensor) -> torch.Tensor:
        """a' ~ the target actor with the full sampling noise, in [-1, 1]. (B, A)."""
        c = self.config
        if c.target_sampling_steps and c.target_sampling_steps != c.diffusion_steps:
            x0 = self.actor_target.sample(next_obs, "ddim", c.target_sampling_steps, eta=1.0)
            return self.actor_target.normalize_action(x0)
        noise = self.actor_target.chain_noise(next_obs.shape[0], None, next_obs)
        return self.actor_target.ddpm_chain(next_obs, noise).clamp(-1.0, 1.0)

    def _target_graph(
        self,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        not_done: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """y from the full-noise DDPM chain of the target actor (noise (T, B, A) drawn
        outside, so that the chain and the critic target compile as one graph)."""
        x0 = self.actor_target.ddpm_chain(next_obs, noise).clamp(-1.0, 1.0)
        q1, q2 = self.critic_target(next_obs, x0)
        return reward + self.config.discount * not_done * torch.minimum(q1, q2)

    @torch.no_grad()
    def critic_target_value(self, batch: TransitionBatch) -> torch.Tensor:
        """y = r + gamma not_done min(Q'_1, Q'_2)(s', a'), a' from the target actor (B, 1);
        not_done is 0 only where the episode terminated (see truncated_terminal)."""
        c = self.config
        if c.target_sampling_steps and c.target_sampling_steps != c.diffusion_steps:
            q1, q2 = self.critic_target(batch.next_obs, self._next_actions(batch.next_obs))
            return batch.reward + c.discount * batch.not_done * torch.minimum(q1, q2)
        noise = self.actor_target.chain_noise(batch.next_obs.shape[0], None, batch.next_obs)
        args = (batch.next_obs, batch.reward, batch.not_done, noise)
        return self.graphs.run("target", self._target_graph, *args)

    def _min_q_grad(self, obs: torch.Tensor) -> Any:
        """grad_of(a) = d/da of -min(Q_1, Q_2)(s, a) row by row, (B, A), for fixed states.

        For diffrl's TwinQ (Linear + Mish layers) the backward pass is written out: each
        Mish's slope comes with its value (one exponential, `_mish_forward_and_slope`) and the
        gradient runs back through the weights to the action's columns of the first layer; the
        state's part of the first layer is computed once. No autograd graph, no weight
        gradients (the critic is a constant here). Any other critic goes through autograd."""
        act_dim = self.spec.act_dim
        if not self._written_out_backward():

            def autograd_of(a: torch.Tensor) -> torch.Tensor:
                with torch.enable_grad():
                    a = a.detach().requires_grad_(True)
                    q1, q2 = self.critic(obs, a)
                    return torch.autograd.grad(-torch.minimum(q1, q2).sum(), a)[0]

            return autograd_of

        heads = []
        for net in (self.critic.q1_model, self.critic.q2_model):
            layers = [(m.weight, m.bias) for m in net if isinstance(m, nn.Linear)]
            w0, b0 = layers[0]
            # TwinQ's input is cat([obs, action]): the action's columns are the last ones.
            h_s = F.linear(obs, w0[:, :-act_dim], b0)
            heads.append((layers, h_s, w0[:, -act_dim:]))

        def manual_of(a: torch.Tensor) -> torch.Tensor:
            out = []
            for layers, h_s, w_a in heads:
                z = torch.addmm(h_s, a, w_a.t())
                slopes = []
                for weight, bias in layers[1:]:
                    m, slope = _mish_forward_and_slope(z)
                    slopes.append(slope)
                    z = linear(m, weight, bias)
                g = layers[-1][0] * slopes[-1]  # dq/dz of the last hidden layer, (B, H)
                for (weight, _), slope in zip(
                    reversed(layers[1:-1]), reversed(slopes[:-1]), strict=True
                ):
                    g = linear(g, weight.t(), None) * slope  # g @ W, through oneDNN
                out.append((z, g @ w_a))  # (q (B, 1), dq/da (B, A))
            (q1, g1), (q2, g2) = out
            # The gradient of the smaller head, in the actions' dtype (under bf16 the products
            # above are bfloat16; the Adam steps on the actions stay float32).
            return -torch.where(q1 <= q2, g1, g2).to(a.dtype)

        return manual_of

    def _written_out_backward(self) -> bool:
        """Whether the critic is a TwinQ of Linear and Mish layers (the written-out backward)."""
        if not isinstance(self.critic, TwinQ):
            return False
        nets = (self.critic.q1_model, self.critic.q2_model)
        return all(isinstance(m, (nn.Linear, Mish)) for net in nets for m in net)

    def _improve_graph(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        c = self.config
        max_norm = self.spec.act_dim * c.action_grad_ratio
        return self.action_adam.run(actions, self._min_q_grad(obs), c.action_steps, max_norm)

    @torch.no_grad()
    def improve_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The action-gradient step: `action_steps` Adam steps of ascent on min(Q_1, Q_2)(s, a)
        from `actions` (B, A) in [-1, 1], gradient-norm clipped and clamped. (B, A).

        On the CPU the whole loop (every step's forward and backward through both critics and
        the Adam update) runs as one compiled graph."""
        if not self._written_out_backward():
            return self._improve_graph(obs, actions)
        return self.graphs.run("improve", self._improve_graph, obs, actions)

    # ------------------------------------------------------------------ training
    def update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        if batch.extra is None or "best_action" not in batch.extra or batch.index is None:
            raise DiffrlError(
                "dipo trains from a replay buffer with its diffusion memory (online runs, or "
                "Agent.batch_sampler): the batch has no 'best_action' column"
            )
        metrics: dict[str, float] = {}
        action = self.actor.normalize_action(batch.action)

        # Critic: y = r + gamma not_done min(Q'_1, Q'_2)(s', a'), a' from the target actor.
        target = self.critic_target_value(batch)
        q1, q2 = self.critic(batch.obs, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        if c.grad_clip > 0:
            metrics["critic_grad_norm"] = float(
                nn.utils.clip_grad_norm_(self.critic_params, c.grad_clip)
            )
        self.critic_opt.step()

        # Action gradient on the diffusion memory's actions, written back (after the critic's
        # step, as in the official order).
        best = self.actor.normalize_action(batch.extra["best_action"])
        if self.num_updates < c.action_gradient_start:
            improved = best  # the critic's warm-up: the memory's actions as collected
        else:
            improved = self.improve_actions(batch.obs, best).detach()
        if self.buffer is not None and improved is not best:
            self.buffer.columns["best_action"][batch.index] = self.actor.unnormalize_action(
                improved
            )

        # Actor: the denoising loss on the improved actions.
        actor_loss = self.actor.loss(self.actor.unnormalize_action(improved), batch.obs)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        if c.grad_clip > 0:
            metrics["actor_grad_norm"] = float(
                nn.utils.clip_grad_norm_(self.actor_params, c.grad_clip)
            )
        self.actor_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(self.critic_target_params, self.critic_params, c.tau)
            if self.num_updates % c.actor_target_every == 0:
                torch._foreach_lerp_(self.actor_target_params, self.actor_params, c.tau)
        self.num_updates += 1
        metrics.update(
            loss=actor_loss.item(),
            critic_loss=critic_loss.item(),
            q=q1.mean().item(),
            action_shift=(improved - best).abs().mean().item(),
        )
        return metrics

    # ------------------------------------------------------------------ acting
    def _sample(
        self, obs: torch.Tensor, noise_scale: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        c = self.config
        if c.sampler == "ddpm" and c.sampling_steps in (0, c.diffusion_steps):
            noise = self.actor.chain_noise(obs.shape[0], generator, obs)
            noise[1:] *= noise_scale  # the per-step noise (x_T = noise[0] stays N(0, I))
            x0 = self.actor.ddpm_chain(obs, noise).clamp(-1.0, 1.0)
            return self.actor.unnormalize_action(x0)
        # DDIM: eta = the exploration noise (1 = DDPM's variance) or, evaluated, ddim_eta.
        eta = noise_scale if noise_scale > 0 else c.ddim_eta
        return self.actor.sample(obs, c.sampler, c.sampling_steps, generator, eta=eta)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): the evaluation policy (per-step noise off)."""
        return self._sample(obs, 0.0, generator)

    @torch.no_grad()
    def explore(
        self,
        obs: torch.Tensor,
        goal: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): the exploration policy (the full per-step noise)."""
        return self._sample(obs, self.config.explore_noise, generator)

    def compiles(self, device: torch.device) -> bool:
        return self.graphs.enabled and device.type == "cpu"

    # ------------------------------------------------------------------ state
    def train_state_dict(self) -> dict[str, Any]:
        return {
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.num_updates = int(state["num_updates"])
