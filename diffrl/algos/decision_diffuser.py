"""Decision Diffuser: return-conditioned state-sequence diffusion with classifier-free guidance.

Paper: A. Ajay, Y. Du, A. Gupta, J. Tenenbaum, T. Jaakkola, P. Agrawal, "Is Conditional
Generative Modeling all you need for Decision-Making?", ICLR 2023 (arXiv 2211.15657).
Official code: github.com/anuragajay/decision-diffuser (code/diffuser/models/diffusion.py,
GaussianInvDynDiffusion; code/config/locomotion_config.py; code/scripts/evaluate_inv_parallel.py).

A plan is H normalised STATES (no actions), diffused by a temporal U-Net whose embedding is the
time embedding concatenated with an embedding of the return y (diffrl.nets.TemporalUnet,
cond_dim 1); actions come from an inverse-dynamics MLP a_t = f(s_t, s_{t+1}):
    training   L = 1/2 (E || w * (eps - eps_theta(x_t, t, y or null)) ||^2 + E || f(s_t, s_t+1)
               - a_t ||^2), x_t's conditioned states (the current one, and the K before it with
               `history` K) overwritten by their true values and weighted 0 in the loss; y
               dropped (the null embedding) with probability `cond_dropout` (0.25); one Adam
               for both; EMA of both networks
    return     y = the discounted return from the window's first step to the END OF ITS EPISODE
               (discount 0.99, -100 added to the last reward of a terminating episode) divided
               by `returns_scale`
    planning   x_T ~ temperature * N(0, I); at every step eps = eps(x, null) + w (eps(x, y*) -
               eps(x, null)) (Ho & Salimans 2022) with y* = `target_return`, the sampler's step
               with its noise times `temperature`, re-pinning the known states; the action is
               f(s_t, plan[K + 1]), and the agent replans every step (receding horizon)

Paper against released code (REFERENCES.md); diffrl's default is the released code's, the
other is a setting:
    diffusion steps 200 (paper 100: diffusion_steps=100); target return 0.9 with returns / 400
    on hopper (paper 1.0); guidance weight 1.2 (paper 1.2-1.8); history conditioning: the
    current state only (paper K = 20 past states: history=20); low temperature: noise std x 0.5
    (paper variance x 0.5: temperature=0.707); inverse dynamics 2 x 256 ReLU (paper 2 x 512:
    inv_hidden=512); training 1M steps at batch 32 x 2 (paper 2M at 32).

Cut for a CPU (the defaults): the released network (width 128, horizon 100: about 59M
parameters) needs about 3 GFLOP per state sequence per pass, so one training step at batch 64
is minutes of CPU time and one DDPM decision (200 steps, two passes each) tens of seconds.
diffrl's default is width 32 and horizon 32 (CleanDiffuser's DD horizon), the size of
Diffuser's locomotion U-Net, so the two planners compare at the same budget;
`--set dim=128 --set horizon=100` is the released network. The locomotion presets train 100k
steps and evaluate at the fast planner (FAST), as Diffuser's do.

Where diffrl differs from the released code:
- Normaliser: min-max limits to [-1, 1] (`obs_norm=limits`) with the x0 estimate clipped to
  [-1, 1], as the released clip_denoised; the released code maps each dimension through its
  empirical CDF (CDFNormalizer), which diffrl does not have.
- The inverse-dynamics loss skips transitions into the padding past an episode's end (the
  released code fits those too).
- `returns_scale=0` (the default outside the presets) scales by the dataset's largest
  discounted return-to-go, so target_return 1.0 is the best return in the data; the released
  hopper config's 400 is in the hopper presets. The scale lives in the checkpoint.
- Classifier-free guidance evaluates the conditional and null passes as one batch of 2B (the
  released code makes two calls); w = 1 and w = 0 skip the pass they do not need.
- Warm-started replanning (`warm_start`, as Diffuser's), DDIM (`sampler=ddim`), goal pinning
  (`goal_inpaint`, maze2d) and history conditioning are diffrl's additions or the paper's.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from diffrl.algos import DataSpec
from diffrl.config import SamplingConfig, doc
from diffrl.data import TrajectoryBatch, TrajectorySampler, make_normalizer
from diffrl.data.normalizers import refit
from diffrl.data.samplers import discounted_returns_to_go
from diffrl.diffusion import cfg_mix, inpaint, make_schedule, q_sample, waypoint_conditions
from diffrl.diffusion.factory import make_sampler
from diffrl.envs import known_maze, walls_hit
from diffrl.errors import ConfigError, DiffrlError
from diffrl.guides import Guide
from diffrl.nets.unet import TemporalUnet
from diffrl.precision import Float32Linear
from diffrl.progress import denoising


@dataclass(frozen=True)
class Config(SamplingConfig):
    algo: str = doc("decision-diffuser", "algorithm name")
    steps: int = doc(1_000_000, "gradient steps (released: 1M at batch 32 x 2; paper 2M)", ge=1)
    batch_size: int = doc(64, "windows per step (released: 32 x 2 accumulation)", ge=1)
    lr: float = doc(2e-4, "Adam learning rate (diffusion model and inverse dynamics)", ge=0)
    horizon: int = doc(32, "H, states per plan (released 100; cut for the CPU, see header)", ge=2)
    diffusion_steps: int = doc(200, "T (released 200, paper 100)", ge=1)
    dim: int = doc(32, "U-Net base width (released 128; cut for the CPU, see header)", ge=8)
    dim_mults: tuple[int, ...] = doc((1, 4, 8), "U-Net width multipliers per resolution")
    inv_hidden: int = doc(256, "inverse-dynamics MLP width, 2 layers (paper 512)", ge=1)
    ema_decay: float = doc(0.995, "EMA decay of the planning networks", ge=0, le=1)
    ema_every: int = doc(10, "update the EMA every N steps", ge=1)
    ema_start: int = doc(2000, "copy the weights into the EMA before this step", ge=0)
    obs_norm: str = doc(
        "limits",
        "normaliser of states and actions: limits (to [-1, 1]) | gaussian",
        choices=("gaussian", "limits"),
    )
    discount: float = doc(0.99, "discount of the return condition", ge=0, le=1)
    termination_penalty: float = doc(-100.0, "added to the last reward of terminating episodes")
    returns_scale: float = doc(
        0.0,
        "the return condition is the discounted return / this (released hopper: 400); 0 = the "
        "dataset's largest discounted return-to-go, so target_return 1.0 is the data's best",
        ge=0,
    )
    cond_dropout: float = doc(0.25, "probability of the null condition in training", ge=0, le=1)
    history: int = doc(
        0, "K past states pinned before the current one (released 0, paper 20)", ge=0
    )
    condition_end: bool = doc(False, "training windows pinned at their last state too (maze2d)")
    pad: bool = doc(True, "windows may run past an episode's end into padding")
    # Planning-time keys.
    clip_x0: bool = doc(True, "clamp each x0 estimate to [-1, 1] (the released clip_denoised)")
    target_return: float = doc(
        0.9, "the return asked for, in units of returns_scale (released 0.9, paper 1.0)"
    )
    guidance_weight: float = doc(1.2, "classifier-free guidance weight w (1 = no guidance)")
    temperature: float = doc(
        0.5, "std multiplier of the initial and per-step noise (released 0.5; 1 = none)", ge=0
    )
    plan_horizon: int = doc(0, "planning horizon (0 = the training horizon)", ge=0)
    n_plans: int = doc(
        1, "plans sampled per decision (released: 1); the first is executed unless ranked", ge=1
    )
    rank_walls: bool = doc(
        True,
        "with a known maze map (PointMaze), the plan with the fewest states inside walls is "
        "executed (a diffrl addition, as in Diffuser's planner)",
    )
    warm_start: float = doc(
        0.0,
        "replan from the previous plan noised to this fraction of T (0 = from noise)",
        ge=0,
        le=1,
    )
    replan_every: int = doc(1, "environment steps between plans", ge=1)
    goal_inpaint: bool = doc(False, "pin the episode's goal (x, y, 0, 0) at the plan's last state")

    RESUME_KEYS: ClassVar[frozenset[str]] = SamplingConfig.RESUME_KEYS | {
        "target_return",
        "guidance_weight",
        "temperature",
        "plan_horizon",
        "n_plans",
        "rank_walls",
        "warm_start",
        "replan_every",
        "goal_inpaint",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("target_return", "guidance_weight"):
            if not np.isfinite(getattr(self, key)):
                raise ConfigError(
                    f"config key '{key}' must be a finite number, got {getattr(self, key)}"
                )
        factor = 2 ** (len(self.dim_mults) - 1)
        for key in ("horizon", "plan_horizon"):
            value = getattr(self, key)
            if value and value % factor:
                raise ConfigError(
                    f"config key '{key}' must be a multiple of the U-Net's down-sampling factor "
                    f"{factor} (dim_mults {list(self.dim_mults)}), got {value}"
                )
        for key in ("horizon", "plan_horizon"):
            value = getattr(self, key)
            if value and self.history + 2 > value:
                raise ConfigError(
                    f"config key 'history' ({self.history}) must leave room in the plan: a "
                    f"{key} of {value} holds at most {value - 2} past states"
                )


# `diffrl bench act --fast`: a few DDIM steps, each replan warm-started from the last plan.
FAST: dict[str, Any] = {"sampler": "ddim", "sampling_steps": 5, "warm_start": 0.5}


# Locomotion cut for a 2-core CPU: 100k steps at batch 64 (released 1M at 32 x 2), evaluations
# planned at the fast settings (a DDPM decision at T = 200 with guidance is 400 U-Net passes).
LOCOMOTION: dict[str, Any] = {
    "steps": 100_000,
    "eval_every": 20_000,
    "eval_episodes": 5,
    "save_every": 2_000,
    **FAST,
}


def presets(dataset: str) -> dict[str, Any]:
    """Per-dataset settings from the released config, cut where this CPU needs it (stated)."""
    if dataset.startswith("maze2d-"):
        # No released maze config: Diffuser's maze2d preset (its horizons and diffusion steps,
        # the CPU cut, the goal pinned at the plan's end, its number of plans), with the
        # actions from the inverse dynamics toward the plan's next state instead of Diffuser's
        # controller, and the return scaled by the data's best.
        from diffrl.algos import diffuser

        shared = (
            "horizon diffusion_steps dim batch_size steps condition_end pad goal_inpaint "
            "replan_every eval_goal eval_every eval_episodes save_every n_plans"
        ).split()
        base = diffuser.presets(dataset)
        return {**{k: base[k] for k in shared}, "returns_scale": 0.0}
    if dataset.startswith("hopper"):
        # The released (hopper-medium-expert) config: returns / 400, target 0.9, w 1.2. Every
        # hopper-medium episode falls: its best return-to-go is 326 (0.81 in these units), so
        # the released 0.9 asks for a return the data never shows; its preset asks for 0.8.
        target = 0.8 if dataset.startswith("hopper-medium-v") else 0.9
        return {
            **LOCOMOTION,
            "returns_scale": 400.0,
            "target_return": target,
            "guidance_weight": 1.2,
        }
    if dataset.startswith("halfcheetah"):
        # No released config: the return scaled by the data's best (target 1.0 = the best).
        # Warm-started replanning off: on halfcheetah-medium (checkpoint 40k, w 0) the return
        # was -148 with it and 2,457 without at 5 DDIM steps, 849 and 2,992 at 20 steps (3-5
        # episodes each). Hopper keeps it (hopper-medium-expert scores 99.3 with it).
        # Target 0.6: on halfcheetah-medium at 100k (10 episodes from seed 20000, w 1.2) the
        # target 0.4 / 0.5 / 0.6 / 0.7 / 0.8 / 0.9 / 1.0 scored 26.9 / 31.7 / 29.9 / 26.8 /
        # 26.7 / 21.5 / 5.5; 0.6 is the middle of the flat band (docs/results/planners.md).
        return {**LOCOMOTION, "returns_scale": 0.0, "warm_start": 0.0, "target_return": 0.6}
    if dataset.startswith("walker2d"):
        return {**LOCOMOTION, "returns_scale": 0.0}
    return {}


class Agent(nn.Module):
    """State-sequence diffusion model (+ EMA), inverse dynamics (+ EMA) and the planner."""

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.config, self.spec = config, spec
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim
        c = config
        self.obs_normalizer = make_normalizer(c.obs_norm, None, spec.obs_dim)
        self.act_normalizer = make_normalizer(c.obs_norm, None, spec.act_dim)
        self.model = TemporalUnet(c.horizon, spec.obs_dim, c.dim, c.dim_mults, cond_dim=1)
        self.inv = nn.Sequential(
            nn.Linear(2 * spec.obs_dim, c.inv_hidden),
            nn.ReLU(),
            nn.Linear(c.inv_hidden, c.inv_hidden),
            nn.ReLU(),
            Float32Linear(c.inv_hidden, spec.act_dim),  # float32 under bf16 (diffrl/precision.py)
        )
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.ema_inv = copy.deepcopy(self.inv).requires_grad_(False)
        self.schedule = make_schedule("cosine", c.diffusion_steps)
        params = [*self.model.parameters(), *self.inv.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=c.lr)
        self.sampler = make_sampler(
            c.sampler,
            self.schedule,
            c.sampling_steps,
            prediction="epsilon",
            clip_x0=1.0 if c.clip_x0 else None,
            eta=c.ddim_eta,
        )
        self.model.check_horizon(self.plan_horizon)
        # The return's scale is fitted with the normalisers and travels with the checkpoint.
        self.register_buffer("returns_scale", torch.tensor(float(c.returns_scale or 1.0)))
        weights = torch.ones(c.horizon, spec.obs_dim)
        weights[: c.history + 1] = 0.0  # pinned states: nothing to learn (released: h = 0)
        if c.condition_end:
            weights[-1] = 0.0
        self.register_buffer("loss_weights", weights, persistent=False)
        self.num_updates = 0
        # Per-episode state (Episodic): the last K + 1 states (normalised), the current plan
        # and its age.
        self._hist: torch.Tensor | None = None  # (B, K + 1, O)
        self._plans: torch.Tensor | None = None  # (B, H, O)
        self._age: np.ndarray | None = None

    @property
    def plan_horizon(self) -> int:
        return self.config.plan_horizon or self.config.horizon

    # ------------------------------------------------------------------ data
    def _penalised(self, dataset: Any) -> Any:
        rewards = dataset.rewards.astype(np.float32).copy()
        rewards[dataset.terminals] += self.config.termination_penalty
        return dataclasses.replace(dataset, rewards=rewards)

    def fit_normalizers(self, dataset: Any) -> None:
        c = self.config
        refit(self.obs_normalizer, c.obs_norm, dataset.observations)
        refit(self.act_normalizer, c.obs_norm, dataset.actions)
        scale = c.returns_scale or (float(np.abs(self.returns_to_go(dataset)).max()) or 1.0)
        self.returns_scale.fill_(scale)

    def returns_to_go(self, dataset: Any) -> np.ndarray:
        """(N,) the discounted return from each step to its episode's end, termination penalty
        included: the return condition y before it is divided by `returns_scale`."""
        data = self._penalised(dataset)
        return discounted_returns_to_go(data.rewards, data.episode_starts, self.config.discount)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TrajectorySampler:
        c = self.config
        return TrajectorySampler(
            self._penalised(dataset),
            c.horizon,
            device,
            obs_normalizer=self.obs_normalizer,
            action_normalizer=self.act_normalizer,
            discount=c.discount,
            pad=c.pad,
        )

    def conditions(self, states: torch.Tensor) -> dict[int, torch.Tensor]:
        """The states pinned in training: the first K + 1 (and the last with condition_end)."""
        cond = {h: states[:, h] for h in range(self.config.history + 1)}
        if self.config.condition_end:
            cond[states.shape[1] - 1] = states[:, -1]
        return cond

    # ------------------------------------------------------------------ training
    def update(self, batch: TrajectoryBatch) -> dict[str, float]:
        c = self.config
        x0 = batch.observations  # (B, H, O) normalised
        B = x0.shape[0]
        y = batch.returns / self.returns_scale  # (B, 1)
        t = torch.randint(0, c.diffusion_steps, (B,), device=x0.device)
        noise = torch.randn_like(x0)
        cond = self.conditions(x0)
        x_t = inpaint(q_sample(self.schedule, x0, t, noise), cond)
        drop = (torch.rand(B, device=x0.device) < c.cond_dropout).float()
        eps = self.model(x_t, t, y, drop)
        diffusion_loss = ((eps - noise) ** 2 * self.loss_weights).mean()
        # Inverse dynamics on the window's real transitions (the next state not padding).
        pairs = torch.cat([x0[:, :-1], x0[:, 1:]], dim=-1)
        real = batch.mask[:, 1:]
        err = ((self.inv(pairs) - batch.actions[:, :-1]) ** 2).mean(-1)
        inv_loss = (err * real).sum() / real.sum().clamp(min=1.0)
        loss = 0.5 * (diffusion_loss + inv_loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        self._update_ema()
        return {
            "loss": loss.item(),
            "diffusion_loss": diffusion_loss.item(),
            "inv_loss": inv_loss.item(),
        }

    def _update_ema(self) -> None:
        c = self.config
        pairs = ((self.ema, self.model), (self.ema_inv, self.inv))
        if self.num_updates < c.ema_start:
            for ema, net in pairs:
                ema.load_state_dict(net.state_dict())
        elif self.num_updates % c.ema_every == 0:
            for ema, net in pairs:
                for e, p in zip(ema.parameters(), net.parameters(), strict=True):
                    e.lerp_(p, 1.0 - c.ema_decay)

    # ------------------------------------------------------------------ planning
    def eps(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Classifier-free guided noise estimate (B, H, O): eps(x, null) + w (eps(x, y) -
        eps(x, null)); one batched pass of 2B, or one of B where w is 1 or 0."""
        w = self.config.guidance_weight
        if w == 1.0:
            return self.ema(x, t, y)
        if w == 0.0:
            return self.ema(x, t, None)
        B = x.shape[0]
        drop = torch.cat([torch.zeros(B, device=x.device), torch.ones(B, device=x.device)])
        out = self.ema(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y]), drop)
        return cfg_mix(out[B:], out[:B], w)

    @torch.no_grad()
    def plan(
        self,
        known: torch.Tensor,
        goal: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        warm: torch.Tensor | None = None,
        horizon: int | None = None,
        waypoints: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Plans (B, H, O), normalised, from the known states `known` (B, K + 1, O) normalised
        (the last is the current one), pinned at h = 0..K; goal (B, obs_dim or 2) in
        environment units pinned at h = H - 1 when `goal_inpaint`; warm (B, H, O) a previous
        plan to start from; waypoints {h: (B, k)} in environment units."""
        c = self.config
        H = horizon or self.plan_horizon
        self.model.check_horizon(H)
        B, O = known.shape[0], self.obs_dim
        cond = {h: known[:, h] for h in range(known.shape[1])}
        if goal is not None and c.goal_inpaint:
            cond[H - 1] = self.obs_normalizer.normalize(self._goal_state(goal, known.shape[0]))
        rows = torch.zeros(B, O, device=known.device)
        first = known.shape[1]  # the history and the current state are pinned before it
        norm = self.obs_normalizer.normalize
        cond.update(waypoint_conditions(waypoints, H, first, rows, norm, "decision-diffuser"))
        y = torch.full((B, 1), float(c.target_return), device=known.device)
        timesteps = self.sampler.timesteps
        noise_scale = c.temperature
        if warm is not None and c.warm_start > 0:
            k = max(1, round(c.warm_start * len(timesteps)))
            timesteps = timesteps[-k:]
            t0 = torch.full((B,), timesteps[0], device=known.device, dtype=torch.long)
            z = torch.randn((B, H, O), generator=generator, device=known.device)
            x = q_sample(self.schedule, warm, t0, noise_scale * z)
        else:
            x = noise_scale * torch.randn((B, H, O), generator=generator, device=known.device)
        x = inpaint(x, cond)
        for t in denoising(timesteps):
            t_batch = torch.full((B,), t, device=known.device, dtype=torch.long)
            eps = self.eps(x, t_batch, y)
            z = noise_scale * torch.randn(x.shape, generator=generator, device=x.device)
            x = inpaint(self.sampler.step(eps, t, x, noise=z).prev_sample, cond)
        return x

    def rank(self, plans: torch.Tensor) -> torch.Tensor:
        """plans (B, N, H, O) normalised, reordered: in a PointMaze with `rank_walls`, fewest
        states inside walls first (stable: sampling order among equals); else as sampled."""
        if not self.config.rank_walls or plans.shape[1] < 2 or self.maze is None:
            return plans
        walls = walls_hit(self.maze, self.obs_normalizer.unnormalize(plans)[..., :2])
        order = walls.argsort(dim=1, stable=True)
        return torch.gather(plans, 1, order[:, :, None, None].expand_as(plans))

    @property
    def maze(self) -> dict[str, Any] | None:
        """The maze's grid (`diffrl.envs.known_maze`) for a PointMaze run, else None."""
        return known_maze(self.config.env_id or "")

    def _goal_state(self, goal: torch.Tensor, rows: int) -> torch.Tensor:
        """A goal as a full state: (x, y) with zero velocity (maze2d), or a full state."""
        goal = goal.repeat_interleave(rows // goal.shape[0], dim=0)
        if goal.shape[1] == self.obs_dim:
            return goal
        state = torch.zeros(goal.shape[0], self.obs_dim, device=goal.device, dtype=goal.dtype)
        state[:, : goal.shape[1]] = goal
        return state

    def actions_between(self, states: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """a = f(s, s') in environment units; states, nxt (..., O) normalised."""
        a = self.ema_inv(torch.cat([states, nxt], dim=-1))
        return self.act_normalizer.unnormalize(a)

    @torch.no_grad()
    def plans(
        self,
        start: np.ndarray,
        goal: np.ndarray | None = None,
        horizon: int | None = None,
        n_plans: int | None = None,
        generator: torch.Generator | None = None,
        guides: Sequence[Guide] = (),
        waypoints: Mapping[int, Sequence[float]] | None = None,
    ) -> list[dict[str, Any]]:
        """`n_plans` (default: the config's) plans from `start` (Planner, `diffrl plan`), in
        environment units, fewest states in walls first in a maze, the pinned states as given;
        actions by the inverse dynamics; value None (Decision Diffuser has no value: it is
        asked for `target_return`)."""
        if guides:
            raise DiffrlError(
                "decision-diffuser: planning-time guides need a value function; steer it with "
                "--set target_return=R and --set guidance_weight=W"
            )
        device = self.loss_weights.device
        start = np.asarray(start, np.float32).reshape(-1)
        if start.shape != (self.obs_dim,):
            raise DiffrlError(
                f"decision-diffuser: the start state needs {self.obs_dim} values, got {start.size}"
            )
        n = n_plans or self.config.n_plans
        obs = torch.as_tensor(start, device=device)[None].expand(n, -1)
        known = self.obs_normalizer.normalize(obs)[:, None].expand(-1, self.config.history + 1, -1)
        goal_t = None
        if goal is not None:
            goal = np.asarray(goal, np.float32).reshape(-1)
            if not 0 < goal.size <= self.obs_dim:
                raise DiffrlError(
                    f"decision-diffuser: a goal has 1 to {self.obs_dim} values, got {goal.size}"
                )
            goal_t = torch.as_tensor(goal, device=device)[None].expand(n, -1)
        points = {
            int(h): torch.as_tensor(np.asarray(v, np.float32).reshape(1, -1), device=device).expand(
                n, -1
            )
            for h, v in (waypoints or {}).items()
        }
        x = self.rank(self.plan(known, goal_t, generator, horizon=horizon, waypoints=points)[None])[
            0
        ]
        actions = self.actions_between(x[:, :-1], x[:, 1:])
        actions = torch.cat([actions, actions[:, -1:]], dim=1)  # the last state has no next
        states = self.obs_normalizer.unnormalize(x).cpu().numpy().astype(np.float64)
        states[:, : self.config.history + 1] = start
        if goal_t is not None and self.config.goal_inpaint:
            states[:, -1] = self._goal_state(goal_t[:1], 1)[0].cpu().numpy()
        for h, point in points.items():
            states[:, h, : point.shape[1]] = point[0].cpu().numpy()
        acts = actions.cpu().numpy().astype(np.float64)
        walls = None
        if self.maze is not None:
            walls = walls_hit(self.maze, torch.as_tensor(states[..., :2])).tolist()
        return [
            {
                "states": states[i],
                "actions": acts[i],
                "value": None,
                **({} if walls is None else {"in_walls": int(walls[i])}),
            }
            for i in range(n)
        ]

    # ------------------------------------------------------------------ acting (Episodic)
    def reset_episodes(self, carry: np.ndarray) -> None:
        carry = np.asarray(carry)
        if self._hist is None or self._age is None:
            self._hist, self._plans, self._age = None, None, None
            return
        keep = torch.as_tensor(np.maximum(carry, 0), device=self._hist.device)
        self._hist = self._hist[keep]
        if self._plans is not None:
            self._plans = self._plans[keep]
        self._age = np.where(carry >= 0, self._age[np.maximum(carry, 0)], -1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.act_goal(obs, None, generator)

    @torch.no_grad()
    def act_goal(
        self, obs: torch.Tensor, goal: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): the known states updated, a replan where due (every
        `replan_every` steps, and at an episode's start), then f(s_t, the plan's next state)."""
        c = self.config
        B, K = obs.shape[0], c.history
        s = self.obs_normalizer.normalize(obs)
        if self._hist is None or self._hist.shape[0] != B or self._age is None:
            self._hist, self._plans, self._age = None, None, np.full(B, -1)
        new = torch.as_tensor(self._age < 0, device=obs.device)
        if self._hist is None:
            self._hist = s[:, None].repeat(1, K + 1, 1)
        else:
            # Shift in the current state; a new episode's history is its first state repeated.
            shifted = torch.cat([self._hist[:, 1:], s[:, None]], dim=1)
            self._hist = torch.where(new[:, None, None], s[:, None].expand_as(shifted), shifted)
        due = (self._age < 0) | (self._age >= c.replan_every)
        if due.any():
            idx = torch.as_tensor(np.flatnonzero(due), device=obs.device)
            warm = None
            if self._plans is not None and c.warm_start > 0 and (self._age[due] >= 0).all():
                prev = self._plans[idx]
                shift = int(min(c.replan_every, prev.shape[1] - 1))
                warm = torch.cat([prev[:, shift:], prev[:, -1:].expand(-1, shift, -1)], dim=1)
            n = c.n_plans
            plans = self.plan(
                self._hist[idx].repeat_interleave(n, dim=0),
                None if goal is None else goal[idx].repeat_interleave(n, dim=0),
                generator,
                warm=None if warm is None else warm.repeat_interleave(n, dim=0),
            )
            plans = self.rank(plans.view(len(idx), n, *plans.shape[1:]))[:, 0]
            if self._plans is None:
                self._plans = torch.zeros(B, *plans.shape[1:], device=obs.device)
            self._plans[idx] = plans
            self._age[due] = 0
        age = torch.as_tensor(self._age, device=obs.device)
        H = self._plans.shape[1]  # type: ignore[union-attr]
        rows = torch.arange(B, device=obs.device)
        nxt = self._plans[rows, (K + 1 + age).clamp(max=H - 1)]  # type: ignore[index]
        action = self.actions_between(s, nxt)
        self._age += 1
        low = torch.tensor(self.spec.action_low, device=obs.device, dtype=action.dtype)
        high = torch.tensor(self.spec.action_high, device=obs.device, dtype=action.dtype)
        return torch.maximum(torch.minimum(action, high), low)

    # ------------------------------------------------------------------ state
    def train_state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.num_updates}

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["updates"])
