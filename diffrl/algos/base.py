"""The base class of every agent: the algorithm contract as members with defaults.

The shared modules (the training loop, evaluation, `diffrl bench`, the Python API) call every
member below on every agent, unconditionally; an algorithm overrides the ones its paper needs
and inherits the rest. Nothing is probed: an agent without stages has one stage, one without a
selection rule keeps no `selected` checkpoint, exploring is acting, and so on. The one
capability a user may ask of an agent that it may not have is planning whole trajectories
(`diffrl plan`): that is the `Planner` protocol in `diffrl.algos`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from diffrl.algos import BatchSampler, BenchWork, DataSpec


# The toy bandit's budget, Diffusion-QL's toy preset (10k steps at batch 100, evaluations
# every 5k): the algorithms that learn from Q on the toy train at it, so the seeded toy table
# compares them at one budget.
TOY_BUDGET: dict[str, int] = {
    "steps": 10_000,
    "batch_size": 100,
    "eval_every": 5_000,
    "save_every": 2_500,
    "log_every": 200,
}


class AgentBase(nn.Module):
    """What every algorithm's agent has. Weights and normalisers live in its state_dict.

    Required (no default): `fit_normalizers`, `batch_sampler`, `update`, `act`,
    `train_state_dict`, `load_train_state_dict`.
    """

    # An offline checkpoint-selection metric that `update` reports (Diffusion-QL's BC loss):
    # the evaluation whose window mean of it ranks `selection_rank`-th smallest (0 = smallest)
    # is kept as the `selected` checkpoint. None: no `selected` checkpoint.
    selection_metric: ClassVar[str | None] = None
    # Values kept per replay-buffer row beside the transitions, {name: the transition key each
    # starts as} (DIPO's diffusion memory of Q-improved actions); the loop builds the buffer
    # with them and hands it to `attach_buffer`. Batches then carry them in `extra`.
    replay_columns: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any, spec: DataSpec) -> None:
        super().__init__()
        self.config, self.spec = config, spec
        # `update` calls so far; phase switches (EMA start, stages) read it, and `diffrl bench`
        # sets it to time a phase's steady state.
        self.num_updates = 0
        self.selection_rank = 0

    # ------------------------------------------------------------------ required
    def fit_normalizers(self, dataset: Any) -> None:
        """Fit the normalisers to an offline dataset (not called in online runs)."""
        raise NotImplementedError

    def batch_sampler(self, dataset: Any, device: torch.device) -> BatchSampler:
        raise NotImplementedError

    def update(self, batch: Any) -> dict[str, float]:
        """One gradient step on a batch; returns the losses to log."""
        raise NotImplementedError

    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs (B, obs_dim) -> actions (B, act_dim) in the environment's units."""
        raise NotImplementedError

    def train_state_dict(self) -> dict[str, Any]:
        """Optimisers, schedulers, counters: plain types and tensors only (saved without pickle)."""
        raise NotImplementedError

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ training, with defaults
    def stages(self) -> list[tuple[str, int, int]]:
        """[(name, steps, batch_size), ...] in order; their steps add up to `config.steps`
        (QGPO: behaviour model, then critic and energy model). Default: one stage."""
        return [("train", self.config.steps, self.config.batch_size)]

    def begin_stage(
        self,
        name: str,
        run_dir: Any = None,
        progress: bool = True,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Work before a stage's first step (QGPO: generating support actions). Long work polls
        `stop()` and returns early, its progress saved, once it says True (SIGINT/SIGTERM)."""

    def attach_buffer(self, buffer: Any) -> None:
        """The replay buffer of an online run, built with `replay_columns`."""

    def compiles(self, device: torch.device) -> bool:
        """Whether training compiles graphs with torch.compile on `device` (the loop says so
        before a first run's slow first steps)."""
        return False

    # ------------------------------------------------------------------ acting, with defaults
    def act_goal(
        self, obs: torch.Tensor, goal: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Actions toward each row's goal (B, goal_dim), or None where the environment has none;
        evaluation, online collection and the API call this. Default: the goal is not used."""
        return self.act(obs, generator)

    def explore(
        self,
        obs: torch.Tensor,
        goal: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Actions while collecting data online (DIPO: with the full sampling noise, none when
        evaluated). Default: as evaluated."""
        return self.act_goal(obs, goal, generator)

    def reset_episodes(self, carry: np.ndarray) -> None:
        """Called before an `act` whose batch differs from the last one: the new batch has
        len(carry) rows, and row i continues the last batch's row carry[i], or is a new episode
        where carry[i] = -1 (the agent forgets what it kept for it: a planner's plan).
        Default: nothing is kept between calls."""

    def inert_keys(self) -> frozenset[str]:
        """Acting-time keys whose value does not change how the agent acts now (QGPO's guidance
        scale before its energy model is trained), so an evaluation sweep over one runs once."""
        return frozenset()

    # ------------------------------------------------------------------ `diffrl bench`
    def bench_work(self, name: str, sampler: Any) -> BenchWork | None:
        """The work before stage `name`, described for `diffrl bench` to time, or None."""
        return None

    def act_as_trained(self) -> None:
        """Act as a fully trained agent would (QGPO: with energy guidance on)."""
