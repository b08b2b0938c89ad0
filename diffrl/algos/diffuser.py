"""Diffuser: planning by diffusing whole trajectories, steered by a value guide or inpainting.

Paper: M. Janner, Y. Du, J. B. Tenenbaum, S. Levine, "Planning with Diffusion for Flexible
Behavior Synthesis", ICML 2022 (arXiv 2205.09991).
Official code: github.com/jannerm/diffuser (branch main: locomotion; branch maze2d: mazes).

A trajectory is H columns [action, observation] (actions first, as the official arrays), each
normalised, diffused as one sample by a temporal U-Net (diffrl.nets.TemporalUnet):
    training   L = E_{t, eps} || w * (x0 - f_theta(x_t, t)) ||^2, with x_t's (and the output's)
               conditioned states overwritten by their true values (the official code does
               both), the first action's columns weighted by `action_weight`; EMA of the weights
    value      V_phi(x_t, t) -> the discounted return from the window's first step to the END OF
               ITS EPISODE (discount 0.997, -100 added to the last reward of an episode that
               terminates), trained on noised windows (random t), as the official value function
    planning   `n_plans` samples per state: x_T ~ N(0, I), inpaint the current state at h = 0
               (maze2d: the goal (x, y, 0, 0) at h = H - 1 too); at each step t, `guide_steps`
               nudges x <- x + guide_scale * Var_t * grad_x V(x, t) (posterior variance;
               none for the last `t_stopgrad` steps), re-inpainting after each, then the
               sampler's step; the plans are ranked by V and the best one's first action is
               executed (locomotion: replan every step; maze2d: one plan per episode, followed
               by the official controller a = (next_xy - xy) + (next_v - v)).
Planning-time keys (config fields, `diffrl eval --set / --sweep`, `diffrl plan`): n_plans,
guide_scale, guide_steps, t_stopgrad, plan_horizon (any multiple of the U-Net's down-sampling
factor; value guidance needs the value's own horizon), sampler and sampling_steps (ddpm, ddim),
warm_start, replan_every, controller.

Where diffrl differs from the official code:
- Gradient of the value with respect to the plan only: the value network's weights are frozen
  while planning, so no weight gradients are computed (the official guide computes them).
- Warm start (`warm_start` > 0, the paper's proposal, not in the released code): a replan
  starts from the previous plan shifted by one step, noised to step warm_start * T and
  denoised from there, instead of from pure noise.
- Both models are trained in one run, one after the other: the value stage (`value_steps`),
  then the trajectory model's (the official code trains them as two runs).
- The value head averages over time (`value_head=pool`), so value guidance works at any
  planning horizon; the official head flattens the time axis and breaks at other horizons
  (issue #74): `value_head=flatten` is that one.
- `value_noise=false` trains the value on clean windows instead (the seed notes' question:
  does the guide need noised training?).
- maze2d datasets here are one PointMaze run cut into D4RL's segments (diffrl.datasets.maze),
  not D4RL's file re-cut where the agent leaves the goal; training windows are conditioned on
  their first and last states as in the official maze2d branch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffrl.algos import DataSpec
from diffrl.config import SamplingConfig, doc
from diffrl.data import TrajectoryBatch, TrajectorySampler, make_normalizer
from diffrl.data.normalizers import refit
from diffrl.diffusion import inpaint, make_schedule, q_sample, waypoint_conditions
from diffrl.diffusion.factory import make_sampler
from diffrl.envs import known_maze, walls_hit
from diffrl.errors import ConfigError, DiffrlError
from diffrl.guides import Guide
from diffrl.nets.unet import TemporalUnet, ValueUnet
from diffrl.progress import denoising


@dataclass(frozen=True)
class Config(SamplingConfig):
    algo: str = doc("diffuser", "algorithm name")
    steps: int = doc(1_200_000, "total gradient steps: value stage + diffusion stage", ge=1)
    value_steps: int = doc(200_000, "steps of the value stage (0 = no value guide)", ge=0)
    batch_size: int = doc(64, "windows per diffusion step (official: 32 x 2 accumulation)", ge=1)
    value_batch_size: int = doc(64, "windows per value step", ge=1)
    lr: float = doc(2e-4, "Adam learning rate of the trajectory model", ge=0)
    value_lr: float = doc(2e-4, "Adam learning rate of the value function", ge=0)
    horizon: int = doc(32, "H, trajectory length in training", ge=1)
    diffusion_steps: int = doc(20, "T, diffusion steps (official locomotion 20, paper 100)", ge=1)
    dim: int = doc(32, "U-Net base width", ge=8)
    dim_mults: tuple[int, ...] = doc((1, 2, 4, 8), "U-Net width multipliers per resolution")
    action_weight: float = doc(10.0, "loss weight of the first action's columns", ge=0)
    prediction: str = doc(
        "x0", "the network predicts x0 (official) or epsilon", choices=("x0", "epsilon")
    )
    ema_decay: float = doc(0.995, "EMA decay of the planning model", ge=0, le=1)
    ema_every: int = doc(10, "update the EMA every N steps", ge=1)
    ema_start: int = doc(2000, "copy the weights into the EMA before this step", ge=0)
    obs_norm: str = doc(
        "gaussian",
        "normaliser of states and actions: gaussian | limits",
        choices=("gaussian", "limits"),
    )
    discount: float = doc(0.997, "discount of the value target", ge=0, le=1)
    value_head: str = doc(
        "pool",
        "value head: pool (average over time: any planning horizon) | flatten (official: the "
        "training horizon only)",
        choices=("pool", "flatten"),
    )
    value_noise: bool = doc(
        True, "train the value on noised windows (official); false: on clean ones (t = 0)"
    )
    termination_penalty: float = doc(-100.0, "added to the last reward of terminating episodes")
    condition_end: bool = doc(False, "training windows pinned at their last state too (maze2d)")
    pad: bool = doc(
        True, "windows may run past an episode's end into padding (locomotion; maze2d: off)"
    )
    # Planning-time keys.
    sampler: str = doc("ddpm", "sampler used to plan: ddpm | ddim", choices=("ddpm", "ddim"))
    clip_x0: bool = doc(False, "clamp each x0 estimate to [-1, 1] (maze2d: on, limits normaliser)")
    n_plans: int = doc(64, "plans sampled per decision; the best by value is executed", ge=1)
    rank_walls: bool = doc(
        True,
        "with a known maze map (PointMaze), plans with fewer states inside walls rank first, "
        "then by value (a diffrl addition: the official maze2d planner samples one plan)",
    )
    guide_scale: float = doc(0.1, "value-guide scale (x Var_t); 0 = no guide", ge=0)
    guide_steps: int = doc(2, "value-gradient steps per denoising step", ge=0)
    t_stopgrad: int = doc(2, "no guidance for the last N denoising steps", ge=0)
    guide_target: str = doc(
        "xt",
        "where guides (diffrl.guides) score a plan: xt, the noisy plan (as the value does) | x0, "
        "the model's estimate of the clean plan (one U-Net pass more per guide step)",
        choices=("xt", "x0"),
    )
    plan_horizon: int = doc(0, "planning horizon (0 = the training horizon)", ge=0)
    warm_start: float = doc(
        0.0,
        "replan from the previous plan noised to this fraction of T (0 = from noise)",
        ge=0,
        le=1,
    )
    replan_every: int = doc(1, "environment steps between plans", ge=1)
    shrink_horizon: bool = doc(
        False,
        "replan with the previous plan's remaining horizon (rounded down to the U-Net's factor), "
        "so a goal pinned at the plan's end keeps its arrival time; off: every plan is full length",
    )
    controller: str = doc(
        "none",
        "execute: none (the plan's actions) | maze (follow the plan's states: official maze2d)",
        choices=("none", "maze"),
    )
    goal_inpaint: bool = doc(False, "pin the episode's goal (x, y, 0, 0) at the plan's last state")

    RESUME_KEYS: ClassVar[frozenset[str]] = SamplingConfig.RESUME_KEYS | {
        "n_plans",
        "rank_walls",
        "guide_scale",
        "guide_steps",
        "t_stopgrad",
        "guide_target",
        "plan_horizon",
        "warm_start",
        "replan_every",
        "shrink_horizon",
        "controller",
        "goal_inpaint",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value_steps > self.steps:
            raise ConfigError(f"need value_steps <= steps, got {self.value_steps}, {self.steps}")
        factor = 2 ** (len(self.dim_mults) - 1)
        for key in ("horizon", "plan_horizon"):
            value = getattr(self, key)
            if value and value % factor:
                raise ConfigError(
                    f"config key '{key}' must be a multiple of the U-Net's down-sampling factor "
                    f"{factor} (dim_mults {list(self.dim_mults)}), got {value}"
                )


# `diffrl bench plan --fast`: few plans, four DDIM steps, one guide step, and each replan while
# acting warm-started from the previous plan noised half-way (two of the four steps).
FAST: dict[str, Any] = {
    "n_plans": 4,
    "sampler": "ddim",
    "sampling_steps": 4,
    "guide_steps": 1,
    "t_stopgrad": 1,
    "warm_start": 0.5,
}


def presets(dataset: str) -> dict[str, Any]:
    """Per-dataset settings from the official configs, cut where this CPU needs it (stated)."""
    if dataset.startswith("maze2d-"):
        # Official maze2d branch: H / T umaze 128 / 64, medium 256 / 256, large 384 / 256;
        # dim_mults (1, 4, 8), limits normaliser, clip_denoised, action weight 1, no value
        # guide; one plan per episode followed by the controller. Cut for a 2-core CPU (the
        # official U-Net at H 128 trains at about 2.7 steps/s here): width 16 instead of 32,
        # batch 32 instead of 32 x 2, and 40k steps instead of 2M. umaze reached its score at
        # 20k steps (docs/results/diffuser_maze_umaze.md); `--set dim=32 --set batch_size=64
        # --set steps=2000000` is the official recipe.
        horizon, steps_t = {"umaze": (128, 64), "medium": (256, 256), "large": (384, 256)}.get(
            dataset.split("-")[1], (128, 64)
        )
        return {
            "horizon": horizon,
            "diffusion_steps": steps_t,
            "dim_mults": (1, 4, 8),
            "obs_norm": "limits",
            "clip_x0": True,
            "action_weight": 1.0,
            "value_steps": 0,
            "dim": 16,
            "batch_size": 32,
            "steps": 40_000,
            "condition_end": True,
            "pad": False,
            # Several plans, the first with the fewest states inside walls executed (rank_walls,
            # a diffrl addition; official: one plan, `--set n_plans=1`). The cut models' single
            # plans enter a wall often (umaze 16 of 20 draws, medium 3 of 20); ranked, none of
            # 20 did with umaze 16 and medium 4 (docs/results/diffuser.md, "Plans inside walls").
            "n_plans": 16 if "umaze" in dataset else 4,
            "guide_scale": 0.0,
            "controller": "maze",
            "goal_inpaint": True,
            "replan_every": 1_000_000,
            # With --set replan_every=N: replans keep the goal's arrival time (measured on
            # umaze: every 10 steps 120.8 with, -9.5 without; docs/results/diffuser.md).
            "shrink_horizon": True,
            "eval_goal": "dataset",
            "eval_every": 10_000,
            "eval_episodes": 10,
            "save_every": 2_000,
        }
    if dataset.startswith(("hopper", "halfcheetah", "walker2d")):
        return {**LOCOMOTION, **_locomotion_official(dataset)}
    return {}


# Locomotion cut for a 2-core CPU. Training: 20k value steps then 100k trajectory-model steps
# (official: 200k + 1M at batch 32 x 2), about 4 hours on one thread here (value 15 steps/s,
# trajectory model 8.7). Evaluation: an episode is up to 1,000 decisions, and a decision at
# the official planning settings (64 plans, 20 steps, 2 guide steps) takes about 1.1 s here,
# 18 minutes an episode; so the preset's evaluations plan at the fast settings (FAST, 20 ms a
# decision) and the official ones are `--set n_plans=64 sampler=ddpm guide_steps=2
# t_stopgrad=N warm_start=0` at evaluation (docs/algorithms/diffuser.md).
LOCOMOTION: dict[str, Any] = {
    "steps": 120_000,
    "value_steps": 20_000,
    "eval_every": 20_000,
    "eval_episodes": 5,
    "save_every": 2_000,
    **FAST,
}


def _locomotion_official(dataset: str) -> dict[str, Any]:
    """The official per-dataset guide settings that survive the fast planner (t_stopgrad is
    the FAST one: the official 4 of 20 steps would leave 4 DDIM steps unguided)."""
    if dataset.startswith("halfcheetah"):
        # Official: H 4, dim_mults (1, 4, 8), scale 1e-3, and linear attention in the U-Net,
        # which diffrl's TemporalUnet does not have (not yet measured what it costs).
        return {"horizon": 4, "dim_mults": (1, 4, 8), "guide_scale": 1e-3}
    if dataset.startswith("hopper-medium-expert"):
        return {"guide_scale": 1e-4}
    return {}


@contextlib.contextmanager
def _frozen(module: nn.Module | None) -> Iterator[None]:
    """Parameters of `module` without requires_grad inside the block, restored after."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class Agent(nn.Module):
    """Trajectory model (+ EMA), value function and the receding-horizon planner."""

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.config, self.spec = config, spec
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim
        c = config
        d = spec.obs_dim + spec.act_dim
        self.obs_normalizer = make_normalizer(c.obs_norm, None, spec.obs_dim)
        self.act_normalizer = make_normalizer(c.obs_norm, None, spec.act_dim)
        self.model = TemporalUnet(c.horizon, d, c.dim, c.dim_mults)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.value = (
            ValueUnet(c.horizon, d, c.dim, c.dim_mults, pooled=c.value_head == "pool")
            if c.value_steps
            else None
        )
        self.schedule = make_schedule("cosine", c.diffusion_steps)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        self.value_opt = (
            torch.optim.Adam(self.value.parameters(), lr=c.value_lr) if self.value else None
        )
        # The planner's sampler; fail here, before a run starts, on a bad name or step count.
        self.sampler = make_sampler(
            c.sampler,
            self.schedule,
            c.sampling_steps,
            prediction=c.prediction,
            clip_x0=1.0 if c.clip_x0 else None,
            eta=c.ddim_eta,
        )
        self.model.check_horizon(self.plan_horizon)
        weights = torch.ones(c.horizon, d)
        weights[0, : spec.act_dim] = c.action_weight
        self.register_buffer("loss_weights", weights, persistent=False)
        self.num_updates = 0
        self._batches: dict[str, TrajectorySampler] = {}
        # Per-episode planner state (Episodic): the current plan of each row and its age.
        self._plans: torch.Tensor | None = None  # (B, H, D) normalised
        self._age: np.ndarray | None = None
        self._horizon: np.ndarray | None = None  # (B,) the current plan's own horizon

    @property
    def plan_horizon(self) -> int:
        return self.config.plan_horizon or self.config.horizon

    # ------------------------------------------------------------------ stages and data
    def stages(self) -> list[tuple[str, int, int]]:
        # The value first: it is the shorter, fixed stage, and `--resume --steps N` then
        # lengthens the trajectory model's training.
        c = self.config
        out = [("value", c.value_steps, c.value_batch_size)] if c.value_steps else []
        return [*out, ("diffusion", c.steps - c.value_steps, c.batch_size)]

    def begin_stage(
        self,
        name: str,
        run_dir: Any = None,
        progress: bool = True,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        pass  # nothing to prepare: the stage follows from the update count

    @property
    def in_value_stage(self) -> bool:
        return self.num_updates < self.config.value_steps

    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)
        refit(self.act_normalizer, self.config.obs_norm, dataset.actions)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TrajectorySampler:
        c = self.config
        # Value targets: the return to the episode's end with the termination penalty.
        rewards = dataset.rewards.astype(np.float32).copy()
        rewards[dataset.terminals] += c.termination_penalty
        with_penalty = dataclasses.replace(dataset, rewards=rewards)
        return TrajectorySampler(
            with_penalty,
            c.horizon,
            device,
            obs_normalizer=self.obs_normalizer,
            action_normalizer=self.act_normalizer,
            discount=c.discount,
            pad=c.pad,
        )

    # ------------------------------------------------------------------ training
    def trajectories(self, batch: TrajectoryBatch) -> torch.Tensor:
        """(B, H, A + O): normalised [action, observation] columns."""
        return torch.cat([batch.actions, batch.observations], dim=-1)

    def conditions(self, x0: torch.Tensor) -> dict[int, torch.Tensor]:
        """The states pinned in training: the first (and, for maze2d, the last)."""
        a = self.act_dim
        cond = {0: x0[:, 0, a:]}
        if self.config.condition_end:
            cond[x0.shape[1] - 1] = x0[:, -1, a:]
        return cond

    def update(self, batch: TrajectoryBatch) -> dict[str, float]:
        value_stage = self.in_value_stage
        self.num_updates += 1
        return self._value_update(batch) if value_stage else self._diffusion_update(batch)

    def _diffusion_update(self, batch: TrajectoryBatch) -> dict[str, float]:
        c = self.config
        x0 = self.trajectories(batch)
        cond = self.conditions(x0)
        t = torch.randint(0, c.diffusion_steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = inpaint(q_sample(self.schedule, x0, t, noise), cond, start=self.act_dim)
        out = inpaint(self.model(x_t, t), cond, start=self.act_dim)
        target = x0 if c.prediction == "x0" else noise
        loss = ((out - target) ** 2 * self.loss_weights).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._update_ema()
        return {"loss": loss.item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        c = self.config
        if self.num_updates - c.value_steps < c.ema_start:
            self.ema.load_state_dict(self.model.state_dict())
        elif (self.num_updates - c.value_steps) % c.ema_every == 0:
            for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                e.lerp_(p, 1.0 - c.ema_decay)

    def _value_update(self, batch: TrajectoryBatch) -> dict[str, float]:
        x0 = self.trajectories(batch)
        if self.config.value_noise:
            t = torch.randint(0, self.config.diffusion_steps, (x0.shape[0],), device=x0.device)
            x_t = q_sample(self.schedule, x0, t, torch.randn_like(x0))
        else:  # the seed's question: a value of clean trajectories, asked about noisy ones
            t = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
            x_t = x0
        loss = F.mse_loss(self.value(x_t, t), batch.returns)
        self.value_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.value_opt.step()
        return {"value_loss": loss.item()}

    # ------------------------------------------------------------------ planning
    def _values(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """V(x_t, t) (B,); a value trained on clean windows (value_noise=false) knows no t
        and is asked about x_t as if it were clean (t = 0), the seed notes' question 2."""
        if not self.config.value_noise:
            t = torch.zeros_like(t)
        return self.value(x, t)[:, 0]

    def guided(self) -> bool:
        c = self.config
        return self.value is not None and c.guide_scale > 0 and c.guide_steps > 0

    def plan(
        self,
        obs: torch.Tensor,
        goal: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        warm: torch.Tensor | None = None,
        horizon: int | None = None,
        n_plans: int | None = None,
        guides: Sequence[Guide] = (),
        waypoints: Mapping[int, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Plans for B states: (B, N, H, A + O) normalised, best first, and their values
        (B, N) (None without a value function).

        obs (B, obs_dim) in environment units, pinned at h = 0; goal (B, obs_dim or 2), pinned
        at h = H - 1 with zero velocity when `goal_inpaint` (maze2d); warm (B, H, D) a previous
        plan to start from (noised to `warm_start` x T); guides: objectives added to the value
        guide (diffrl.guides), scored in environment units; waypoints: {h: (B, k)} the first k
        state dims pinned at index h (negative from the end), in environment units.
        """
        c = self.config
        H = horizon or self.plan_horizon
        N = n_plans or c.n_plans
        self.model.check_horizon(H)
        B, a, d = obs.shape[0], self.act_dim, self.act_dim + self.obs_dim
        if obs.shape[1:] != (self.obs_dim,):
            raise DiffrlError(
                f"diffuser: states have {self.obs_dim} dimensions, got shape {tuple(obs.shape)}"
            )
        guided = self.guided()
        if guides and c.guide_steps < 1:
            raise DiffrlError("diffuser: guides need guide_steps >= 1 (set guide_steps=1 or more)")
        if guided and not self.value.pooled and H != self.value.horizon:
            raise DiffrlError(
                f"diffuser: the value guide was trained at horizon {self.value.horizon}; plan at "
                f"it, or set guide_scale=0 to plan at horizon {H} unguided"
            )
        rows = obs.repeat_interleave(N, dim=0)
        cond = {0: self.obs_normalizer.normalize(rows)}
        if goal is not None and c.goal_inpaint:
            cond[H - 1] = self.obs_normalizer.normalize(self._goal_state(goal, rows))
        points = {h: p.repeat_interleave(N, dim=0) for h, p in (waypoints or {}).items()}
        norm = self.obs_normalizer.normalize
        cond.update(waypoint_conditions(points, H, 1, rows, norm, "diffuser"))
        timesteps = self.sampler.timesteps
        if warm is not None and c.warm_start > 0:
            # Start part-way: the previous plan noised to the step nearest warm_start x T.
            k = max(1, round(c.warm_start * len(timesteps)))
            timesteps = timesteps[-k:]
            t0 = torch.full((B * N,), timesteps[0], device=obs.device, dtype=torch.long)
            x = q_sample(
                self.schedule,
                warm.repeat_interleave(N, dim=0),
                t0,
                torch.randn((B * N, H, d), generator=generator, device=obs.device),
            )
        else:
            x = torch.randn((B * N, H, d), generator=generator, device=obs.device)
        x = inpaint(x, cond, start=a)
        schedule = self.schedule.to(obs.device, obs.dtype)
        # The guide needs d value / d x only: frozen weights keep their gradients out of the
        # graph and let the value net's short convolutions run as dense products (nets.unet).
        with _frozen(self.value):
            x = self._denoise(x, cond, timesteps, schedule, guided, tuple(guides), generator)
        x = x.view(B, N, H, d)
        values = None
        order = torch.arange(N, device=x.device).expand(B, N)
        if self.value is not None and (self.value.pooled or H == self.value.horizon):
            with torch.no_grad():
                zero = torch.zeros(B * N, device=obs.device, dtype=torch.long)
                values = self._values(x.view(B * N, H, d), zero).view(B, N)
            order = values.argsort(dim=1, descending=True)
        if c.rank_walls and N > 1 and self.maze is not None:
            # Feasible first: a stable sort by the count of states in walls keeps the value
            # order among plans with equal counts.
            walls = walls_hit(self.maze, self.unnormalize(x)[0][..., :2])
            walls = torch.gather(walls, 1, order)
            order = torch.gather(order, 1, walls.argsort(dim=1, stable=True))
        x = torch.gather(x, 1, order[:, :, None, None].expand_as(x))
        return x, None if values is None else torch.gather(values, 1, order)

    @property
    def maze(self) -> dict[str, Any] | None:
        """The maze's grid (`diffrl.envs.known_maze`) for a PointMaze run, else None."""
        return known_maze(self.config.env_id or "")

    def _denoise(
        self,
        x: torch.Tensor,
        cond: dict[int, torch.Tensor],
        timesteps: list[int],
        schedule: Any,
        guided: bool,
        guides: tuple[Guide, ...],
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The reverse chain from x (B, H, D) over `timesteps`: at each step `guide_steps`
        gradient steps x += Var_t grad J (not in the last `t_stopgrad` steps), then the
        sampler's step; the pinned states are written back after every change.

        J = guide_scale V(x, t) (if `guided`) + sum of the guides' weighted scores of x in
        environment units (Janner et al. 2022, eq. 3 and §3.3)."""
        c, a = self.config, self.act_dim
        n_steps = len(timesteps)
        for k, t in enumerate(denoising(timesteps)):
            t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            if (guided or guides) and n_steps - k > c.t_stopgrad:
                # Var_t as the official guide: exp(posterior_log_variance_clipped[t])
                var = float(schedule.posterior_log_variance_clipped[t].exp())
                for _ in range(c.guide_steps):
                    with torch.enable_grad():
                        xg = x.detach().requires_grad_(True)
                        objective = self._objective(xg, t_batch, guided, guides, cond)
                        # An objective that does not depend on the plan moves nothing.
                        grad = (
                            torch.autograd.grad(objective, xg)[0]
                            if objective.requires_grad
                            else torch.zeros_like(xg)
                        )
                    x = inpaint(x + var * grad, cond, start=a)
            with torch.no_grad():
                out = self.ema(x, t_batch)
            x = inpaint(self.sampler.step(out, t, x, generator).prev_sample, cond, start=a)
        return x

    def _objective(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        guided: bool,
        guides: tuple[Guide, ...],
        cond: dict[int, torch.Tensor],
    ) -> torch.Tensor:
        """J summed over the batch (each plan's term depends on its own rows only). Guides score
        x itself or (guide_target x0) the model's x0 estimate, differentiated through the
        network (its weights are frozen)."""
        total = x.new_zeros(())
        if guided:
            total = total + self.config.guide_scale * self._values(x, t).sum()
        if guides:
            scored = x
            if self.config.guide_target == "x0":
                step = int(t[0])
                x0 = self.sampler.predict_x0(self.ema(x, t), step, x, clip=False)
                scored = inpaint(x0, cond, start=self.act_dim)
            states, actions = self.unnormalize(scored)
            for guide in guides:
                total = total + guide(states, actions).sum()
        return total

    def _goal_state(self, goal: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """A goal as a full state: (x, y) with zero velocity (maze2d), or a full state."""
        n = rows.shape[0] // goal.shape[0]
        goal = goal.repeat_interleave(n, dim=0).to(rows.dtype)
        if goal.shape[1] == self.obs_dim:
            return goal
        state = torch.zeros_like(rows)
        state[:, : goal.shape[1]] = goal
        return state

    def unnormalize(self, plans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised plans (..., H, A + O) -> (states, actions) in environment units."""
        a = self.act_dim
        return (
            self.obs_normalizer.unnormalize(plans[..., a:]),
            self.act_normalizer.unnormalize(plans[..., :a]),
        )

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
        """`diffrl plan`: plans from one start state toward a goal, best first, in environment
        units; the pinned start, goal and waypoint values are written back exactly as given;
        `guides` are added to the value guide (diffrl.guides); `waypoints` {h: the first k
        state values} are pinned at index h."""
        device = self.loss_weights.device
        start = np.asarray(start, np.float32).reshape(-1)
        if start.shape != (self.obs_dim,):
            raise DiffrlError(
                f"diffuser: the start state needs {self.obs_dim} values, got {start.size}"
            )
        obs = torch.as_tensor(start, device=device)[None]
        goal_t = None
        if goal is not None:
            goal = np.asarray(goal, np.float32).reshape(-1)
            if not 0 < goal.size <= self.obs_dim:
                raise DiffrlError(
                    f"diffuser: a goal has 1 to {self.obs_dim} values, got {goal.size}"
                )
            goal_t = torch.as_tensor(goal, device=device)[None]
        points = {
            int(h): torch.as_tensor(np.asarray(v, np.float32).reshape(1, -1), device=device)
            for h, v in (waypoints or {}).items()
        }
        x, values = self.plan(
            obs,
            goal_t,
            generator,
            horizon=horizon,
            n_plans=n_plans,
            guides=guides,
            waypoints=points,
        )
        states, actions = (t[0].cpu().numpy().astype(np.float64) for t in self.unnormalize(x))
        states[:, 0] = start
        if goal_t is not None and self.config.goal_inpaint:
            states[:, -1] = self._goal_state(goal_t, obs)[0].cpu().numpy()
        for h, point in points.items():
            states[:, h, : point.shape[1]] = point[0].cpu().numpy()
        walls = None
        if self.maze is not None:
            walls = walls_hit(self.maze, torch.as_tensor(states[..., :2])).tolist()
        return [
            {
                "states": states[i],
                "actions": actions[i],
                "value": None if values is None else float(values[0, i]),
                **({} if walls is None else {"in_walls": int(walls[i])}),
            }
            for i in range(states.shape[0])
        ]

    # ------------------------------------------------------------------ acting (Episodic)
    def reset_episodes(self, carry: np.ndarray) -> None:
        carry = np.asarray(carry)
        if self._plans is None or self._age is None:
            self._plans, self._age = None, None
            return
        keep = torch.as_tensor(np.maximum(carry, 0), device=self._plans.device)
        self._plans = self._plans[keep]
        self._age = np.where(carry >= 0, self._age[np.maximum(carry, 0)], -1)
        if self._horizon is not None:
            self._horizon = self._horizon[np.maximum(carry, 0)]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.act_goal(obs, None, generator)

    @torch.no_grad()
    def act_goal(
        self, obs: torch.Tensor, goal: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): replan where due (every `replan_every` steps of an
        episode, and at its start), then the plan's action or the maze controller's."""
        c = self.config
        B = obs.shape[0]
        if self._plans is None or self._plans.shape[0] != B or self._age is None:
            self._plans, self._age, self._horizon = None, np.full(B, -1), None
        due = (self._age < 0) | (self._age >= c.replan_every)
        horizons = np.full(B, self.plan_horizon)
        if c.shrink_horizon and self._horizon is not None:
            # A goal pinned at the plan's last state is reached at its end: a full-length
            # replan would push the arrival H steps away again every time (the maze agent
            # then never arrives). Keep the remaining length instead; below one U-Net
            # factor, follow the plan there is.
            factor = self.model.downsample_factor
            left = (self._horizon - self._age) // factor * factor
            continuing = self._age >= 0
            horizons = np.where(continuing, left, horizons)
            due &= ~continuing | (left >= factor)
        for h in np.unique(horizons[due]):
            rows = due & (horizons == h)
            idx = torch.as_tensor(np.flatnonzero(rows), device=obs.device)
            warm = None
            if self._plans is not None and c.warm_start > 0 and (self._age[rows] >= 0).all():
                prev = self._plans[idx]
                # Shifted by the steps taken since it was made; the last state repeated.
                shift = int(min(c.replan_every, prev.shape[1] - 1))
                warm = torch.cat([prev[:, shift:], prev[:, -1:].expand(-1, shift, -1)], dim=1)
                warm = warm[:, : int(h)]
            plans, _ = self.plan(
                obs[idx], None if goal is None else goal[idx], generator, warm=warm, horizon=int(h)
            )
            best = plans[:, 0]
            if self._plans is None:
                self._plans = torch.zeros(B, self.plan_horizon, best.shape[-1], device=obs.device)
                self._horizon = np.full(B, self.plan_horizon)
            # Shorter plans are held at their last state to the buffer's length.
            pad = self._plans.shape[1] - best.shape[1]
            if pad > 0:
                best = torch.cat([best, best[:, -1:].expand(-1, pad, -1)], dim=1)
            self._plans[idx] = best[:, : self._plans.shape[1]]
            self._age[rows] = 0
            self._horizon[rows] = int(h)
        age = torch.as_tensor(self._age, device=obs.device)
        rows = torch.arange(B, device=obs.device)
        if c.controller == "maze":
            states, _ = self.unnormalize(self._plans)
            H = states.shape[1]
            nxt = states[rows, (age + 1).clamp(max=H - 1)]
            half = self.obs_dim // 2
            # Official maze2d controller: (next_xy - xy) + (next_v - v).
            action = (nxt[:, :half] - obs[:, :half]) + (nxt[:, half:] - obs[:, half:])
        else:
            _, actions = self.unnormalize(self._plans)
            action = actions[rows, age.clamp(max=actions.shape[1] - 1)]
        self._age += 1
        low = torch.tensor(self.spec.action_low, device=obs.device, dtype=action.dtype)
        high = torch.tensor(self.spec.action_high, device=obs.device, dtype=action.dtype)
        return torch.maximum(torch.minimum(action, high), low)

    # ------------------------------------------------------------------ state
    def train_state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "updates": self.num_updates,
        }
        if self.value_opt is not None:
            state["value_opt"] = self.value_opt.state_dict()
        return state

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.value_opt is not None and "value_opt" in state:
            self.value_opt.load_state_dict(state["value_opt"])
        self.num_updates = int(state["updates"])
