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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from diffrl.algos import DataSpec
from diffrl.algos.planner import (
    LOCOMOTION_EVAL,
    PlannerConfig,
    TrajectoryPlanner,
    frozen,
    update_ema,
)
from diffrl.config import doc
from diffrl.data import TrajectoryBatch
from diffrl.diffusion import inpaint, q_sample
from diffrl.errors import ConfigError, DiffrlError
from diffrl.guides import Guide
from diffrl.nets.unet import TemporalUnet, ValueUnet


@dataclass(frozen=True)
class Config(PlannerConfig):
    algo: str = doc("diffuser", "algorithm name")
    steps: int = doc(1_200_000, "total gradient steps: value stage + diffusion stage", ge=1)
    value_steps: int = doc(200_000, "steps of the value stage (0 = no value guide)", ge=0)
    batch_size: int = doc(64, "windows per diffusion step (official: 32 x 2 accumulation)", ge=1)
    value_batch_size: int = doc(64, "windows per value step", ge=1)
    lr: float = doc(2e-4, "Adam learning rate of the trajectory model", ge=0)
    value_lr: float = doc(2e-4, "Adam learning rate of the value function", ge=0)
    diffusion_steps: int = doc(20, "T, diffusion steps (official locomotion 20, paper 100)", ge=1)
    action_weight: float = doc(10.0, "loss weight of the first action's columns", ge=0)
    prediction: str = doc(
        "x0", "the network predicts x0 (official) or epsilon", choices=("x0", "epsilon")
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
    # Planning-time keys.
    sampler: str = doc("ddpm", "sampler used to plan: ddpm | ddim", choices=("ddpm", "ddim"))
    clip_x0: bool = doc(False, "clamp each x0 estimate to [-1, 1] (maze2d: on, limits normaliser)")
    n_plans: int = doc(64, "plans sampled per decision; the best by value is executed", ge=1)
    guide_scale: float = doc(0.1, "value-guide scale (x Var_t); 0 = no guide", ge=0)
    guide_steps: int = doc(2, "value-gradient steps per denoising step", ge=0)
    t_stopgrad: int = doc(2, "no guidance for the last N denoising steps", ge=0)
    guide_target: str = doc(
        "xt",
        "where guides (diffrl.guides) score a plan: xt, the noisy plan (as the value does) | x0, "
        "the model's estimate of the clean plan (one U-Net pass more per guide step)",
        choices=("xt", "x0"),
    )
    controller: str = doc(
        "none",
        "execute: none (the plan's actions) | maze (follow the plan's states: official maze2d)",
        choices=("none", "maze"),
    )

    RESUME_KEYS: ClassVar[frozenset[str]] = PlannerConfig.RESUME_KEYS | {
        "guide_scale",
        "guide_steps",
        "t_stopgrad",
        "guide_target",
        "controller",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value_steps > self.steps:
            raise ConfigError(f"need value_steps <= steps, got {self.value_steps}, {self.steps}")


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
    **LOCOMOTION_EVAL,
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


class Agent(TrajectoryPlanner):
    """Trajectory model (+ EMA) and value function; plans by the shared receding-horizon
    planner (diffrl/algos/planner.py) with the value guide and the plan-to-action rule below."""

    name = "diffuser"

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec, state_start=spec.act_dim, prediction=config.prediction)
        c = config
        d = spec.obs_dim + spec.act_dim
        self.model = TemporalUnet(c.horizon, d, c.dim, c.dim_mults)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.value = (
            ValueUnet(c.horizon, d, c.dim, c.dim_mults, pooled=c.value_head == "pool")
            if c.value_steps
            else None
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        self.value_opt = (
            torch.optim.Adam(self.value.parameters(), lr=c.value_lr) if self.value else None
        )
        self.model.check_horizon(self.plan_horizon)
        weights = torch.ones(c.horizon, d)
        weights[0, : spec.act_dim] = c.action_weight
        self.register_buffer("loss_weights", weights, persistent=False)
        self.num_updates = 0

    # ------------------------------------------------------------------ stages
    def stages(self) -> list[tuple[str, int, int]]:
        # The value first: it is the shorter, fixed stage, and `--resume --steps N` then
        # lengthens the trajectory model's training.
        c = self.config
        out = [("value", c.value_steps, c.value_batch_size)] if c.value_steps else []
        return [*out, ("diffusion", c.steps - c.value_steps, c.batch_size)]

    @property
    def in_value_stage(self) -> bool:
        return self.num_updates < self.config.value_steps

    # ------------------------------------------------------------------ training
    def trajectories(self, batch: TrajectoryBatch) -> torch.Tensor:
        """(B, H, A + O): normalised [action, observation] columns."""
        return torch.cat([batch.actions, batch.observations], dim=-1)

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
        update_ema([(self.ema, self.model)], self.num_updates - c.value_steps, c)
        return {"loss": loss.item()}

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

    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.ema(x, t)

    def planning(self) -> contextlib.AbstractContextManager[None]:
        # The guide needs d value / d x only: frozen weights keep their gradients out of the
        # graph and let the value net's short convolutions run as dense products (nets.unet).
        return frozen(self.value)

    def guidance(
        self,
        cond: dict[int, torch.Tensor],
        guides: tuple[Guide, ...],
        timesteps: list[int],
        horizon: int,
    ) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
        """At each step t but the last `t_stopgrad`, `guide_steps` gradient steps
        x += Var_t grad J, the pinned states written back after each, with J = guide_scale
        V(x, t) (if guided) + the guides' weighted scores of x in environment units (Janner
        et al. 2022, eq. 3 and §3.3)."""
        c, a = self.config, self.act_dim
        guided = self.guided()
        if guides and c.guide_steps < 1:
            raise DiffrlError("diffuser: guides need guide_steps >= 1 (set guide_steps=1 or more)")
        if guided and not self.value.pooled and horizon != self.value.horizon:
            raise DiffrlError(
                f"diffuser: the value guide was trained at horizon {self.value.horizon}; plan at "
                f"it, or set guide_scale=0 to plan at horizon {horizon} unguided"
            )
        if not (guided or guides):
            return None
        steered = set(timesteps[: max(0, len(timesteps) - c.t_stopgrad)])
        # Var_t as the official guide: exp(posterior_log_variance_clipped[t]), in float32.
        schedule = self.schedule.to(self.loss_weights.device, torch.float32)
        log_var = schedule.posterior_log_variance_clipped

        def step(x: torch.Tensor, t: int) -> torch.Tensor:
            if t not in steered:
                return x
            var = float(log_var[t].exp())
            t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
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
            return x

        return step

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

    def plan_values(self, x: torch.Tensor) -> torch.Tensor | None:
        """V(plan, 0), the finished plans' values (a flatten head: at its horizon only)."""
        if self.value is None or not (self.value.pooled or x.shape[1] == self.value.horizon):
            return None
        with torch.no_grad():
            return self._values(x, torch.zeros(x.shape[0], device=x.device, dtype=torch.long))

    def unnormalize(self, plans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised plans (..., H, A + O) -> (states, actions) in environment units."""
        return self.states_of(plans), self.plan_actions(plans)

    def plan_actions(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_normalizer.unnormalize(x[..., : self.act_dim])

    def plan_action(
        self, plans: torch.Tensor, age: torch.Tensor, obs: torch.Tensor
    ) -> torch.Tensor:
        """The plan's action at its age, or (controller maze) the official maze2d controller
        toward the plan's next state: a = (next_xy - xy) + (next_v - v)."""
        rows = torch.arange(plans.shape[0], device=plans.device)
        if self.config.controller == "maze":
            states = self.states_of(plans)
            nxt = states[rows, (age + 1).clamp(max=states.shape[1] - 1)]
            half = self.obs_dim // 2
            return (nxt[:, :half] - obs[:, :half]) + (nxt[:, half:] - obs[:, half:])
        actions = self.plan_actions(plans)
        return actions[rows, age.clamp(max=actions.shape[1] - 1)]

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
