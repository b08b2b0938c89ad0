"""Planning-time objectives added to a planner's value guide (Diffuser, Janner et al. 2022, §3.3:
"guides added together").

A guide scores whole planned trajectories in the environment's units; the planner adds
``weight * grad score`` (times the posterior variance, as the value guide) to each plan at its
guided denoising steps, after the value guide's gradient. Nothing is retrained: a guide is given
when planning (`diffrl plan --avoid X,Y,R --via X,Y`, or `Run.plan(..., guides=[...])`).

A guide is any differentiable callable

    fn(states (B, H, obs_dim), actions (B, H, act_dim)) -> (B,) score to maximise

wrapped in :class:`Guide` with a weight. Two built-ins cover the paper's examples for 2-d
positions (the first two state dimensions, as in maze2d): :func:`avoid` (a disc to keep out of)
and :func:`via` (a point to pass through).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffrl.errors import DiffrlError

GuideFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Guide:
    """`fn(states, actions) -> (B,)` score to maximise, scaled by `weight` in the guided step."""

    fn: GuideFn
    weight: float = 1.0
    name: str = "guide"

    def __call__(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        score = self.fn(states, actions)
        if score.shape != states.shape[:1]:
            raise DiffrlError(
                f"guide {self.name}: must return one score per plan, shape "
                f"({states.shape[0]},), got {tuple(score.shape)}"
            )
        return self.weight * score


def _point(values: Sequence[float], n: int, what: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) != n:
        raise DiffrlError(f"{what} takes {n} numbers, got {len(values)}: {values}")
    return values


def avoid(center: Sequence[float], radius: float, weight: float = 1.0) -> Guide:
    """Keep the planned positions (state dims 0, 1) out of a disc:
    score = -sum_h relu(radius - |p_h - center|)^2."""
    cx, cy = _point(center, 2, "avoid: the centre")
    if radius <= 0:
        raise DiffrlError(f"avoid: the radius must be > 0, got {radius}")

    def fn(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        c = torch.tensor([cx, cy], dtype=states.dtype, device=states.device)
        dist = (states[..., :2] - c).norm(dim=-1)
        return -torch.relu(radius - dist).square().sum(dim=-1)

    return Guide(fn, weight, f"avoid({cx:g},{cy:g},{radius:g})")


def via(point: Sequence[float], weight: float = 1.0, temperature: float = 0.05) -> Guide:
    """Pass the planned positions (state dims 0, 1) through a point:
    score = T log sum_h exp(-|p_h - point|^2 / T), a soft -min_h |p_h - point|^2."""
    px, py = _point(point, 2, "via: the point")
    if temperature <= 0:
        raise DiffrlError(f"via: the temperature must be > 0, got {temperature}")

    def fn(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        p = torch.tensor([px, py], dtype=states.dtype, device=states.device)
        sq = (states[..., :2] - p).square().sum(dim=-1)
        return temperature * torch.logsumexp(-sq / temperature, dim=-1)

    return Guide(fn, weight, f"via({px:g},{py:g})")
