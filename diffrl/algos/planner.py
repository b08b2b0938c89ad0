"""The receding-horizon planner that both trajectory planners are (Diffuser, Decision Diffuser).

A planning agent diffuses whole plans (B, H, D) of H columns, the states at columns
``[state_start, state_start + obs_dim)`` (Diffuser: [action, state] columns; Decision Diffuser:
states only). Everything that is planning rather than a paper's idea lives here, once:

- the config keys of a trajectory planner (`PlannerConfig`),
- training windows and their pinned states, the termination penalty, the EMA,
- the conditions of a plan (the current state and the `history` before it, a goal at the end,
  waypoints), checked once (:func:`diffrl.diffusion.waypoint_conditions`),
- the warm start (the previous plan shifted and noised part-way),
- the reverse chain, through the sampler family's own loop
  (:func:`diffrl.diffusion.sample_loop`) with inpainting after every step,
- several plans per decision and their ranking (by value where there is one, then fewest
  states inside a known maze's walls),
- plans on request (`diffrl plan`), the per-episode plan buffer, replanning, the action clamp.

What a planner supplies, and nothing else:

    denoise(x, t)            the model's output at planning time (an EMA net, a guided mix)
    guidance(cond, guides)   a step to take before each sampler step (Diffuser's value guide)
    plan_values(x)           a score per plan to rank by (Diffuser's value), or None
    plan_actions(x)          the actions along whole plans, for `diffrl plan`
    plan_action(plans, ...)  the action to execute now (the plan's own, a controller's, or
                             inverse dynamics toward the plan's next state)
    noise_scale              None (the sampler draws its noise) or a temperature
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.config import SamplingConfig, doc
from diffrl.data import TrajectorySampler, make_normalizer
from diffrl.data.normalizers import refit
from diffrl.diffusion import inpaint, make_schedule, q_sample, sample_loop, waypoint_conditions
from diffrl.diffusion.factory import make_sampler
from diffrl.envs import known_maze, walls_crossed, walls_hit
from diffrl.errors import ConfigError, DiffrlError
from diffrl.guides import Guide
from diffrl.progress import denoising

Step = Callable[[torch.Tensor, int], torch.Tensor]

# How the planners' locomotion presets evaluate: an episode is up to 1,000 decisions, so few
# episodes, at the planners' fast settings (their FAST).
LOCOMOTION_EVAL: dict[str, Any] = {"eval_every": 20_000, "eval_episodes": 5, "save_every": 2_000}


@dataclass(frozen=True)
class PlannerConfig(SamplingConfig):
    """The keys every trajectory planner shares; a planner redeclares a field to change its
    default or its help."""

    horizon: int = doc(32, "H, plan length in training", ge=2)
    diffusion_steps: int = doc(20, "T, diffusion steps", ge=1)
    dim: int = doc(32, "U-Net base width", ge=8)
    dim_mults: tuple[int, ...] = doc((1, 2, 4, 8), "U-Net width multipliers per resolution")
    ema_decay: float = doc(0.995, "EMA decay of the planning model", ge=0, le=1)
    ema_every: int = doc(10, "update the EMA every N steps", ge=1)
    ema_start: int = doc(2000, "copy the weights into the EMA before this step", ge=0)
    obs_norm: str = doc(
        "gaussian",
        "normaliser of states and actions: gaussian | limits (to [-1, 1])",
        choices=("gaussian", "limits"),
    )
    discount: float = doc(0.99, "discount of the return to the episode's end", ge=0, le=1)
    termination_penalty: float = doc(-100.0, "added to the last reward of terminating episodes")
    condition_end: bool = doc(False, "training windows pinned at their last state too (maze2d)")
    pad: bool = doc(
        True, "windows may run past an episode's end into padding (locomotion; maze2d: off)"
    )
    # Planning-time keys.
    plan_horizon: int = doc(0, "planning horizon (0 = the training horizon)", ge=0)
    n_plans: int = doc(1, "plans sampled per decision; the best is executed", ge=1)
    rank_walls: bool = doc(
        True,
        "with a known maze map (PointMaze), plans with fewer states inside walls rank first "
        "(a diffrl addition: the official maze2d planner samples one plan)",
    )
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
    goal_inpaint: bool = doc(False, "pin the episode's goal (x, y, 0, 0) at the plan's last state")

    RESUME_KEYS: ClassVar[frozenset[str]] = SamplingConfig.RESUME_KEYS | {
        "plan_horizon",
        "n_plans",
        "rank_walls",
        "warm_start",
        "replan_every",
        "shrink_horizon",
        "goal_inpaint",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        factor = 2 ** (len(self.dim_mults) - 1)
        for key in ("horizon", "plan_horizon"):
            value = getattr(self, key)
            if value and value % factor:
                raise ConfigError(
                    f"config key '{key}' must be a multiple of the U-Net's down-sampling factor "
                    f"{factor} (dim_mults {list(self.dim_mults)}), got {value}"
                )


def update_ema(pairs: Sequence[tuple[nn.Module, nn.Module]], step: int, c: PlannerConfig) -> None:
    """EMA of each (ema, net) pair: a copy before `ema_start`, then every `ema_every` steps
    ema <- ema + (1 - decay) (net - ema), as the official trainers."""
    with torch.no_grad():
        if step < c.ema_start:
            for ema, net in pairs:
                ema.load_state_dict(net.state_dict())
        elif step % c.ema_every == 0:
            for ema, net in pairs:
                for e, p in zip(ema.parameters(), net.parameters(), strict=True):
                    e.lerp_(p, 1.0 - c.ema_decay)


class TrajectoryPlanner(AgentBase):
    """The shared planner; a subclass builds `model` (a TemporalUnet) and `ema`, then supplies
    the members listed in the module's docstring."""

    name: ClassVar[str] = "planner"  # in error messages
    guide_hint: ClassVar[str] = ""  # what to use instead of a guide, said when one is refused
    config: PlannerConfig
    model: nn.Module
    ema: nn.Module
    noise_scale: float | None = None

    def __init__(
        self, config: PlannerConfig, spec: DataSpec, state_start: int, prediction: str
    ) -> None:
        """Normalisers, noise schedule, the planning sampler and the per-episode state.

        state_start: the column of a plan's first state value; prediction: what the network
        predicts ("x0" or "epsilon")."""
        super().__init__(config, spec)
        c = config
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim
        self.state_start = state_start
        self.history = 0  # past states pinned before the current one (Decision Diffuser: K)
        self.obs_normalizer = make_normalizer(c.obs_norm, None, spec.obs_dim)
        self.act_normalizer = make_normalizer(c.obs_norm, None, spec.act_dim)
        self.schedule = make_schedule("cosine", c.diffusion_steps)
        # The planner's sampler; fail here, before a run starts, on a bad name or step count.
        self.sampler = make_sampler(
            c.sampler,
            self.schedule,
            c.sampling_steps,
            prediction=prediction,
            clip_x0=1.0 if c.clip_x0 else None,
            eta=c.ddim_eta,
        )
        # Per-episode state: the last K + 1 states seen (environment units), each row's plan
        # (normalised), its age in steps and its own horizon.
        self._hist: torch.Tensor | None = None  # (B, K + 1, O)
        self._plans: torch.Tensor | None = None  # (B, H, D)
        self._age: np.ndarray | None = None
        self._horizon: np.ndarray | None = None

    @property
    def plan_horizon(self) -> int:
        return self.config.plan_horizon or self.config.horizon

    # ------------------------------------------------------------------ data
    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)
        refit(self.act_normalizer, self.config.obs_norm, dataset.actions)

    def penalised(self, dataset: Any) -> Any:
        """The dataset with `termination_penalty` added to the last reward of terminating
        episodes (the return targets of both planners' official code)."""
        rewards = dataset.rewards.astype(np.float32).copy()
        rewards[dataset.terminals] += self.config.termination_penalty
        return dataclasses.replace(dataset, rewards=rewards)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TrajectorySampler:
        c = self.config
        return TrajectorySampler(
            self.penalised(dataset),
            c.horizon,
            device,
            obs_normalizer=self.obs_normalizer,
            action_normalizer=self.act_normalizer,
            discount=c.discount,
            pad=c.pad,
        )

    def conditions(self, x0: torch.Tensor) -> dict[int, torch.Tensor]:
        """The states pinned in training windows x0 (B, H, D): the first K + 1 (the current
        state and its history), and the last with `condition_end` (maze2d)."""
        s = self.state_start
        cond = {h: x0[:, h, s:] for h in range(self.history + 1)}
        if self.config.condition_end:
            cond[x0.shape[1] - 1] = x0[:, -1, s:]
        return cond

    def states_of(self, plans: torch.Tensor) -> torch.Tensor:
        """Normalised plans (..., H, D) -> their states (..., H, obs_dim) in environment units."""
        s = self.state_start
        return self.obs_normalizer.unnormalize(plans[..., s : s + self.obs_dim])

    # ------------------------------------------------------------------ what a planner supplies
    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model's output at planning time for plans x (B, H, D) at steps t (B,)."""
        raise NotImplementedError

    def guidance(
        self,
        cond: dict[int, torch.Tensor],
        guides: tuple[Guide, ...],
        timesteps: list[int],
        horizon: int,
    ) -> Step | None:
        """A step (x, t) -> x taken before each sampler step of `timesteps` on plans of
        `horizon`, or None (no guide); cond {h: (B, obs_dim)} the pinned states, normalised."""
        if guides:
            raise DiffrlError(
                f"{self.name}: planning-time guides need a value function{self.guide_hint}"
            )
        del cond, timesteps, horizon  # a planner without a guide needs none of them
        return None

    def plan_values(self, x: torch.Tensor) -> torch.Tensor | None:
        """A score (B,) per finished plan x (B, H, D) to rank by, highest first, or None."""
        return None

    def plan_actions(self, x: torch.Tensor) -> torch.Tensor:
        """The actions (..., H, act_dim) in environment units along plans x (..., H, D)."""
        raise NotImplementedError

    def plan_action(
        self, plans: torch.Tensor, age: torch.Tensor, obs: torch.Tensor
    ) -> torch.Tensor:
        """The action (B, act_dim) to take now: plans (B, H, D) made `age` (B,) steps ago, obs
        (B, obs_dim) the current states, both environment units out."""
        raise NotImplementedError

    def planning(self) -> contextlib.AbstractContextManager[None]:
        """A context the reverse chain runs in (Diffuser freezes its value's weights)."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ planning
    @property
    def maze(self) -> dict[str, Any] | None:
        """The maze's grid (`diffrl.envs.known_maze`) for a PointMaze run, else None."""
        return known_maze(self.config.env_id or "")

    def goal_state(self, goal: torch.Tensor, rows: int) -> torch.Tensor:
        """A goal (B, k) as full states (rows, obs_dim), each goal repeated rows // B times:
        (x, y) with zero velocity (maze2d), or a full state."""
        goal = goal.repeat_interleave(rows // goal.shape[0], dim=0)
        if goal.shape[1] == self.obs_dim:
            return goal
        state = torch.zeros(rows, self.obs_dim, device=goal.device, dtype=goal.dtype)
        state[:, : goal.shape[1]] = goal
        return state

    def plan(
        self,
        known: torch.Tensor,
        goal: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        warm: torch.Tensor | None = None,
        horizon: int | None = None,
        n_plans: int | None = None,
        guides: Sequence[Guide] = (),
        waypoints: Mapping[int, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Plans for B starts: (B, N, H, D) normalised, best first, and their values (B, N)
        (None where the planner has no value).

        known (B, obs_dim), the current states, or (B, K + 1, obs_dim) with the K before them,
        in environment units, pinned at h = 0..K; goal (B, obs_dim or 2) pinned at h = H - 1
        when `goal_inpaint`; warm (B, H, D) a previous plan to start from (noised to
        `warm_start` x T); guides: objectives added to a value guide (diffrl.guides);
        waypoints {h: (B, k)} the first k state values pinned at index h (negative from the
        end), in environment units.
        """
        c, K, O = self.config, self.history, self.obs_dim
        H = horizon or self.plan_horizon
        N = n_plans or c.n_plans
        self.model.check_horizon(H)
        if known.dim() != 3 and (known.dim() != 2 or known.shape[1] != O):
            raise DiffrlError(
                f"{self.name}: states have {O} dimensions, got shape {tuple(known.shape)}"
            )
        if known.dim() == 2:
            known = known[:, None].expand(-1, K + 1, -1)
        if known.shape[1:] != (K + 1, O):
            raise DiffrlError(
                f"{self.name}: the known states are the current one and the {K} before it, "
                f"({K + 1}, {O}) per plan, got shape {tuple(known.shape)}"
            )
        B, D = known.shape[0], self.model_width
        rows = known.repeat_interleave(N, dim=0)
        norm = self.obs_normalizer.normalize
        cond = {h: norm(rows[:, h]) for h in range(K + 1)}
        if goal is not None and c.goal_inpaint:
            cond[H - 1] = norm(self.goal_state(goal, B * N).to(rows.dtype))
        points = {h: p.repeat_interleave(N, dim=0) for h, p in (waypoints or {}).items()}
        cond.update(waypoint_conditions(points, H, K + 1, rows[:, -1], norm, self.name))
        timesteps = self.sampler.timesteps
        x = torch.randn((B * N, H, D), generator=generator, device=known.device)
        if self.noise_scale is not None:
            x = self.noise_scale * x
        if warm is not None and c.warm_start > 0:
            # Start part-way: the previous plan noised to the step nearest warm_start x T.
            k = max(1, round(c.warm_start * len(timesteps)))
            timesteps = timesteps[-k:]
            t0 = torch.full((B * N,), timesteps[0], device=known.device, dtype=torch.long)
            x = q_sample(self.schedule, warm.repeat_interleave(N, dim=0), t0, x)
        s = self.state_start
        step = self.guidance(cond, tuple(guides), timesteps, H)
        with self.planning():
            x = sample_loop(
                self.sampler,  # type: ignore[arg-type]
                self.denoise,
                x,
                generator,
                lambda x, t: inpaint(x, cond, start=s),
                timesteps=denoising(timesteps),
                before_step=step,
                noise_scale=self.noise_scale,
            )
        values = self.plan_values(x)
        x = x.view(B, N, H, D)
        order = torch.arange(N, device=x.device).expand(B, N)
        if values is not None:
            values = values.view(B, N)
            order = values.argsort(dim=1, descending=True)
        if c.rank_walls and N > 1 and self.maze is not None:
            # Feasible first: a stable sort by the count of states in walls keeps the value
            # order among plans with equal counts.
            walls = walls_hit(self.maze, self.states_of(x)[..., :2])
            walls = torch.gather(walls, 1, order)
            order = torch.gather(order, 1, walls.argsort(dim=1, stable=True))
        x = torch.gather(x, 1, order[:, :, None, None].expand_as(x))
        return x, None if values is None else torch.gather(values, 1, order)

    @property
    def model_width(self) -> int:
        """D, the columns of a plan."""
        return self.state_start + self.obs_dim

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
        """`diffrl plan` (the Planner capability): plans from one start state toward a goal,
        best first, in environment units, the pinned start, goal and waypoint values written
        back exactly as given; `guides` are added to a value guide (diffrl.guides);
        `waypoints` {h: the first k state values} are pinned at index h."""
        device = next(self.model.parameters()).device
        start = np.asarray(start, np.float32).reshape(-1)
        if start.shape != (self.obs_dim,):
            raise DiffrlError(
                f"{self.name}: the start state needs {self.obs_dim} values, got {start.size}"
            )
        obs = torch.as_tensor(start, device=device)[None]
        goal_t = None
        if goal is not None:
            goal = np.asarray(goal, np.float32).reshape(-1)
            if not 0 < goal.size <= self.obs_dim:
                raise DiffrlError(
                    f"{self.name}: a goal has 1 to {self.obs_dim} values, got {goal.size}"
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
        states = self.states_of(x)[0].cpu().numpy().astype(np.float64)
        actions = self.plan_actions(x[0]).cpu().numpy().astype(np.float64)
        states[:, : self.history + 1] = start
        if goal_t is not None and self.config.goal_inpaint:
            states[:, -1] = self.goal_state(goal_t, 1)[0].cpu().numpy()
        for h, point in points.items():
            states[:, h, : point.shape[1]] = point[0].cpu().numpy()
        walls: dict[str, list[int]] = {}
        if self.maze is not None:
            xy = torch.as_tensor(states[..., :2])
            walls = {
                "in_walls": walls_hit(self.maze, xy).tolist(),
                "steps_through_walls": walls_crossed(self.maze, xy).tolist(),
            }
        return [
            {
                "states": states[i],
                "actions": actions[i],
                "value": None if values is None else float(values[0, i]),
                **{key: int(counts[i]) for key, counts in walls.items()},
            }
            for i in range(states.shape[0])
        ]

    # ------------------------------------------------------------------ acting (per episode)
    def reset_episodes(self, carry: np.ndarray) -> None:
        carry = np.asarray(carry)
        if self._hist is None or self._age is None:
            self._hist, self._plans, self._age, self._horizon = None, None, None, None
            return
        rows = np.maximum(carry, 0)
        keep = torch.as_tensor(rows, device=self._hist.device)
        self._hist = self._hist[keep]
        if self._plans is not None:
            self._plans = self._plans[keep]
        self._age = np.where(carry >= 0, self._age[rows], -1)
        if self._horizon is not None:
            self._horizon = self._horizon[rows]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.act_goal(obs, None, generator)

    @torch.no_grad()
    def act_goal(
        self, obs: torch.Tensor, goal: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): the known states updated, a replan where due (every
        `replan_every` steps of an episode, and at its start), then the planner's action."""
        c, B, K = self.config, obs.shape[0], self.history
        if self._hist is None or self._hist.shape[0] != B or self._age is None:
            self._hist, self._plans, self._age, self._horizon = None, None, np.full(B, -1), None
        if self._hist is None:
            self._hist = obs[:, None].repeat(1, K + 1, 1)
        else:
            # Shift in the current state; a new episode's history is its first state repeated.
            new = torch.as_tensor(self._age < 0, device=obs.device)
            shifted = torch.cat([self._hist[:, 1:], obs[:, None]], dim=1)
            self._hist = torch.where(new[:, None, None], obs[:, None].expand_as(shifted), shifted)
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
                self._hist[idx],
                None if goal is None else goal[idx],
                generator,
                warm=warm,
                horizon=int(h),
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
            self._horizon[rows] = int(h)  # type: ignore[index]
        age = torch.as_tensor(self._age, device=obs.device)
        action = self.plan_action(self._plans, age, obs)  # type: ignore[arg-type]
        self._age += 1
        low = torch.tensor(self.spec.action_low, device=obs.device, dtype=action.dtype)
        high = torch.tensor(self.spec.action_high, device=obs.device, dtype=action.dtype)
        return torch.maximum(torch.minimum(action, high), low)


@contextlib.contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
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
