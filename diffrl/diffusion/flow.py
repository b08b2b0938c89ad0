"""Flow matching on the linear path (Lipman et al. 2023; Liu et al. 2023, rectified flow), and
its ODE samplers: Euler and midpoint.

The path from noise x_0 ~ N(0, I) at t = 0 to data x_1 at t = 1 (FQL's convention, Park et al.
2025):
    x_t = (1 - t) x_0 + t x_1,       the velocity target  u_t = x_1 - x_0,
and a network v(x_t, t) regressed onto u_t with t ~ U[0, 1]. Sampling integrates dx/dt = v(x, t)
from t = 0 to 1. The samplers keep the contract of every sampler (`sample(model_fn, x_T,
generator, after_step)` and `num_evals`, diffrl/diffusion/loop.py) with t handed to `model_fn`
as a float tensor (B,) in [0, 1); they draw nothing (the ODE is deterministic) and stay
differentiable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffrl.errors import ConfigError

FLOW_SAMPLERS = ("euler", "midpoint")


class FlowPath:
    """The linear interpolation path and its velocity target; no parameters."""

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """x_t = (1 - t) x0 + t x1; x0, x1 (B, ...), t (B,)."""
        t = t.reshape(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
        return (1.0 - t) * x0 + t * x1

    def velocity(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The conditional velocity target u_t = x1 - x0 (constant along the path)."""
        return x1 - x0

    def sample_time(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        """t ~ U[0, 1), one per sample (B,)."""
        return torch.rand(batch, generator=generator, device=device)

    def loss(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        x1: Tensor,
        x0: Tensor | None = None,
        t: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The flow-matching loss E || v(x_t, t) - (x1 - x0) ||^2, mean over all entries;
        x0 and t drawn here unless given."""
        if x0 is None:
            x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        if t is None:
            t = self.sample_time(x1.shape[0], generator, x1.device)
        x_t = self.interpolate(x0, x1, t)
        return (model_fn(x_t, t.to(x1.dtype)) - self.velocity(x0, x1)).square().mean()


class _FlowSampler:
    """Fixed-step ODE integration of dx/dt = v(x, t) from t = 0 to 1 in `num_steps` steps."""

    evals_per_step = 1

    def __init__(self, num_steps: int) -> None:
        if num_steps < 1:
            raise ConfigError(f"sampling_steps must be >= 1, got {num_steps}")
        self.num_steps = int(num_steps)

    @property
    def num_evals(self) -> int:
        return self.num_steps * self.evals_per_step

    def step(self, model_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: float, dt: float):
        raise NotImplementedError

    def sample(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        x_T: Tensor,
        generator: torch.Generator | None = None,
        after_step: Callable[[Tensor, float], Tensor] | None = None,
    ) -> Tensor:
        """x_T (B, ...) is the noise at t = 0; returns the sample at t = 1. `after_step(x, t)`
        is applied once first (t = 0) and after every step (t its new time)."""
        x = x_T if after_step is None else after_step(x_T, 0.0)
        dt = 1.0 / self.num_steps
        for k in range(self.num_steps):
            x = self.step(model_fn, x, k * dt, dt)
            if after_step is not None:
                x = after_step(x, (k + 1) * dt)
        return x


def _times(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)


class FlowEulerSampler(_FlowSampler):
    """Euler's method, x <- x + dt v(x, t) (FQL's target: 10 steps). Error O(1 / K)."""

    def step(self, model_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: float, dt: float):
        return x + dt * model_fn(x, _times(x, t))


class FlowMidpointSampler(_FlowSampler):
    """The explicit midpoint method, x <- x + dt v(x + dt/2 v(x, t), t + dt/2): two model
    calls a step, error O(1 / K^2)."""

    evals_per_step = 2

    def step(self, model_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: float, dt: float):
        half = x + 0.5 * dt * model_fn(x, _times(x, t))
        return x + dt * model_fn(half, _times(x, t + 0.5 * dt))


def make_flow_sampler(name: str, num_steps: int) -> _FlowSampler:
    """A flow sampler by name (`euler` | `midpoint`), one line for anything else."""
    if name == "euler":
        return FlowEulerSampler(num_steps)
    if name == "midpoint":
        return FlowMidpointSampler(num_steps)
    raise ConfigError(f"unknown flow sampler '{name}' (known: {', '.join(FLOW_SAMPLERS)})")
