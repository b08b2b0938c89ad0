"""FQL, flow Q-learning: a flow-matching behaviour policy distilled into a one-step policy that
also maximises Q.

Paper: S. Park, Q. Li, S. Levine, "Flow Q-Learning", ICML 2025 (arXiv 2502.02538).
Official code: github.com/seohongpark/fql (agents/fql.py, utils/networks.py; JAX).

One training step on a batch (s, a, r, s', d), actions in [-1, 1], one Adam step on the sum of
the critic and actor losses (as the official code):
  critic   y = r + gamma (1 - d) agg_i Q'_i(s', clip(mu(s', z'))), z' ~ N(0, I), agg the mean
           of the two target critics (`q_agg=min` the other choice); L_Q = mean_i (Q_i(s, a) - y)^2
  BC flow  x_t = (1 - t) z + t a, t ~ U[0, 1], z ~ N(0, I): L_BC = || v(s, x_t, t) - (a - z) ||^2
           (flow matching on the linear path, diffrl/diffusion/flow.py)
  distill  the target: the BC flow integrated from z by `flow_steps` Euler steps, clipped to
           [-1, 1], WITHOUT gradient; L_D = || mu(s, z) - target ||^2
  Q term   L_Q' = -mean_i Q_i(s, clip(mu(s, z))) (the critics held constant), times
           1 / stopgrad(mean |Q|) with `normalize_q_loss`
  actor    L_BC + alpha L_D + L_Q'          (alpha multiplies the DISTILLATION term)
  target   Polyak tau on the critics only
Acting: one call of the one-step policy, a = clip(mu(s, z)) with z ~ N(0, I), also when
evaluated (as the official code). `candidates` N > 1 (an acting-time key, not the official
rule, default 1) draws N such actions per state and takes the one the critics (aggregated by
`q_agg`) score highest, as IDQL and Diffusion-QL pick among their samples.

Networks (official): MLPs 512 x 4, GELU; the critics with LayerNorm after each hidden
activation, the actors without; the flow's time enters as the raw scalar t.

Where diffrl differs from the official code:
- Actions are mapped affinely from the dataset's bounds to [-1, 1] (the identity for D4RL), and
  dataset actions are clipped to +-(1 - 1e-5) as the official loader does; the critics see the
  mapped actions.
- The official code refuses D4RL locomotion, so it gives no alpha for it. diffrl's rule
  (stated, not tuned on the scores reported): the official default alpha = 10 everywhere, and on
  locomotion the official option `normalize_q_loss` on, so that the Q term's scale does not
  follow the return's (hopper's Q values are in the hundreds; the distillation term is of order
  one): the same normalisation Diffusion-QL's actor loss has.
- Locomotion presets: width 256 instead of 512, cut for the CPU (see `presets`).
- Evaluations follow the offline table's schedule (the official: 50 episodes every 100k steps).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.algos.base import TOY_BUDGET
from diffrl.config import TrainConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler, make_normalizer
from diffrl.data.normalizers import from_unit_box, refit, to_unit_box
from diffrl.diffusion.flow import FLOW_SAMPLERS, FlowPath, make_flow_sampler
from diffrl.nets.onednn import Linear
from diffrl.precision import Float32Linear


@dataclass(frozen=True)
class Config(TrainConfig):
    algo: str = doc("fql", "algorithm name")
    steps: int = doc(1_000_000, "gradient steps (official default 1M; D4RL commands 500k)", ge=1)
    lr: float = doc(3e-4, "Adam learning rate (one optimiser for actors and critics)", ge=0)
    discount: float = doc(0.99, "gamma", ge=0, le=1)
    tau: float = doc(0.005, "Polyak rate of the target critics", gt=0, le=1)
    alpha: float = doc(10.0, "weight of the distillation term in the actor loss", ge=0)
    flow_steps: int = doc(10, "Euler steps of the BC flow for the distillation target", ge=1)
    flow_sampler: str = doc(
        "euler",
        "ODE integrator of the distillation target: euler | midpoint",
        choices=FLOW_SAMPLERS,
    )
    q_agg: str = doc(
        "mean", "target over the two critics: mean (official) | min", choices=("mean", "min")
    )
    normalize_q_loss: bool = doc(
        False, "divide the Q term by stopgrad(mean |Q|) (official option; locomotion presets: on)"
    )
    hidden: int = doc(512, "width of every network's hidden layers", ge=1)
    n_layers: int = doc(4, "hidden layers of every network", ge=1)
    critic_layer_norm: bool = doc(True, "LayerNorm after each hidden activation of the critics")
    actor_layer_norm: bool = doc(False, "LayerNorm after each hidden activation of the actors")
    obs_norm: str = doc(
        "none",
        "observation normaliser: none | gaussian | limits",
        choices=("none", "gaussian", "limits"),
    )

    candidates: int = doc(
        1,
        "acting: one-step samples per state, the critics' best taken (1 = the official "
        "one-step acting)",
        ge=1,
    )

    RESUME_KEYS: ClassVar[frozenset[str]] = TrainConfig.RESUME_KEYS | {"candidates"}


def presets(dataset: str) -> dict[str, Any]:
    """Per-dataset settings; the rule for locomotion is stated in the header."""
    if dataset == "toy-bandit":
        # The bandit's budget and widths as Diffusion-QL's toy preset (batch 100, lr 1e-3,
        # width 128, 10k steps); alpha and the Q normalisation as the locomotion rule.
        return {
            "hidden": 128,
            "n_layers": 3,
            "lr": 1e-3,
            **TOY_BUDGET,
            "normalize_q_loss": True,
        }
    if dataset.startswith(("hopper", "halfcheetah", "walker2d")):
        # Cut for a 2-core CPU: width 256 instead of 512 (a quarter of the products). One
        # training step at hopper shapes took 160 ms at width 512 and 53 ms at 256 on one
        # thread here (`diffrl bench train --algo fql --threads 1`); 500k steps is the
        # official D4RL commands' budget. `--set hidden=512` is the official network.
        return {"normalize_q_loss": True, "steps": 500_000, "hidden": 256}
    return {}


def _mlp(in_dim: int, hidden: int, n_layers: int, out_dim: int, layer_norm: bool) -> nn.Sequential:
    """Linear -> GELU [-> LayerNorm] per hidden layer, then a float32 output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_layers):
        layers += [Linear(width, hidden), nn.GELU()]  # oneDNN's products (nets/onednn.py)
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        width = hidden
    layers.append(Float32Linear(width, out_dim))  # float32 under bf16 (diffrl/precision.py)
    return nn.Sequential(*layers)


class Agent(AgentBase):
    """BC flow v(s, x, t), one-step policy mu(s, z), two critics and their targets."""

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        c = config
        O, A = spec.obs_dim, spec.act_dim
        self.obs_normalizer = make_normalizer(c.obs_norm, None, O)
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32))
        self.bc_flow = _mlp(O + A + 1, c.hidden, c.n_layers, A, c.actor_layer_norm)
        self.onestep = _mlp(O + A, c.hidden, c.n_layers, A, c.actor_layer_norm)
        self.critics = nn.ModuleList(
            _mlp(O + A, c.hidden, c.n_layers, 1, c.critic_layer_norm) for _ in range(2)
        )
        self.critics_target = copy.deepcopy(self.critics).requires_grad_(False)
        self.critic_params = list(self.critics.parameters())
        self.target_params = list(self.critics_target.parameters())
        params = [*self.bc_flow.parameters(), *self.onestep.parameters(), *self.critic_params]
        self.optimizer = torch.optim.Adam(params, lr=c.lr)
        self.path = FlowPath()
        self.flow = make_flow_sampler(c.flow_sampler, c.flow_steps)

    # ------------------------------------------------------------------ data
    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        return TransitionSampler(dataset, device, obs_normalizer=self.obs_normalizer)

    # ------------------------------------------------------------------ networks
    def velocity(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The BC flow's velocity v(s, x_t, t) (B, A); t (B,) in [0, 1]."""
        return self.bc_flow(torch.cat([obs, x, t[:, None].to(x.dtype)], dim=-1))

    def one_step(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """mu(s, z) (B, A), in the unit box before clipping."""
        return self.onestep(torch.cat([obs, z], dim=-1))

    def flow_actions(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The BC flow integrated from z (t = 0) to t = 1, clipped to [-1, 1] (B, A)."""
        x = self.flow.sample(lambda x, t: self.velocity(obs, x, t), z)
        return x.clamp(-1.0, 1.0)

    def q_values(self, critics: nn.ModuleList, obs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(2, B, 1): both critics at unit-box actions x."""
        sa = torch.cat([obs, x], dim=-1)
        return torch.stack([q(sa) for q in critics])

    # ------------------------------------------------------------------ training
    def update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        obs = batch.obs
        # Dataset actions in the unit box, clipped as the official loader does.
        action = to_unit_box(batch.action, self.action_low, self.action_high)
        action = action.clamp(-1 + 1e-5, 1 - 1e-5)
        B, A = action.shape

        # Critic target from the one-step policy at s' (no gradient anywhere in it).
        with torch.no_grad():
            z_next = torch.randn(B, A, device=obs.device)
            next_x = self.one_step(batch.next_obs, z_next).clamp(-1.0, 1.0)
            next_q = self.q_values(self.critics_target, batch.next_obs, next_x)
            next_q = next_q.mean(0) if c.q_agg == "mean" else next_q.min(0).values
            target = batch.reward + c.discount * batch.not_done * next_q
        q = self.q_values(self.critics, obs, action)
        critic_loss = (q - target).square().mean()

        # BC flow: flow matching on the linear path from noise to the dataset action.
        bc_loss = self.path.loss(lambda x, t: self.velocity(obs, x, t), action)

        # Distillation onto the BC flow's own actions from the same noise, and the Q term.
        z = torch.randn(B, A, device=obs.device)
        with torch.no_grad():
            target_x = self.flow_actions(obs, z)
        mu = self.one_step(obs, z)
        distill_loss = (mu - target_x).square().mean()
        self.critics.requires_grad_(False)  # held constant in the actor's loss
        try:
            q_pi = self.q_values(self.critics, obs, mu.clamp(-1.0, 1.0)).mean(0)
        finally:
            self.critics.requires_grad_(True)
        q_loss = -q_pi.mean()
        if c.normalize_q_loss:
            q_loss = q_loss / q_pi.abs().mean().detach().clamp_min(1e-6)
        actor_loss = bc_loss + c.alpha * distill_loss + q_loss

        self.optimizer.zero_grad(set_to_none=True)
        (critic_loss + actor_loss).backward()
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.critic_params, c.tau)
        self.num_updates += 1
        return {
            "critic_loss": critic_loss.item(),
            "bc_flow_loss": bc_loss.item(),
            "distill_loss": distill_loss.item(),
            "q_loss": q_loss.item(),
            "q_mean": float(q_pi.detach().mean()),
        }

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): one call of the one-step policy from fresh noise (with
        `candidates` N > 1: N calls per state, the critics' best kept)."""
        c = self.config
        s = self.obs_normalizer.normalize(obs)
        B, N = s.shape[0], c.candidates
        if N > 1:
            s = s.repeat_interleave(N, dim=0)
        z = torch.randn((B * N, self.spec.act_dim), generator=generator, device=obs.device)
        x = self.one_step(s, z).clamp(-1.0, 1.0)
        if N > 1:
            q = self.q_values(self.critics, s, x)  # (2, B N, 1)
            q = (q.mean(0) if c.q_agg == "mean" else q.min(0).values).view(B, N)
            x = x.view(B, N, -1)[torch.arange(B, device=x.device), q.argmax(dim=1)]
        return from_unit_box(x, self.action_low, self.action_high)

    # ------------------------------------------------------------------ state
    def train_state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "num_updates": self.num_updates}

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])
