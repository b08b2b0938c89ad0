"""Continuous-time VP-SDE and DPM-Solver against the closed form for Gaussian data.

For x0 ~ N(mu, s^2) the exact noise predictor is eps*(x, t) = sigma_t (x - alpha_t mu) /
(alpha_t^2 s^2 + sigma_t^2), and the probability-flow ODE is linear: each sample moves as
x_t = alpha_t mu + sqrt(v_t / v_T) (x_T - alpha_T mu), v_t = alpha_t^2 s^2 + sigma_t^2.
So every solver can be checked sample by sample against the exact ODE solution.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffrl.diffusion.vpsde import VPSDE, dpm_solve
from diffrl.errors import ConfigError

SDE = VPSDE(0.1, 20.0)
MU = torch.tensor([0.7, -1.5], dtype=torch.float64)
S = torch.tensor([0.3, 1.2], dtype=torch.float64)


def eps_star(x: torch.Tensor, t: float) -> torch.Tensor:
    a, sg = SDE.alpha(t), SDE.sigma(t)
    return sg * (x - a * MU) / (a * a * S * S + sg * sg)


def exact(x_T: torch.Tensor, t_end: float) -> torch.Tensor:
    def v(t: float) -> torch.Tensor:
        return SDE.alpha(t) ** 2 * S * S + SDE.sigma(t) ** 2

    return SDE.alpha(t_end) * MU + torch.sqrt(v(t_end) / v(1.0)) * (x_T - SDE.alpha(1.0) * MU)


def test_marginals_and_lambda_inverse():
    for t in (1e-3, 0.1, 0.5, 1.0):
        assert SDE.alpha(t) ** 2 + SDE.sigma(t) ** 2 == pytest.approx(1.0)
        assert SDE.t_of_lambda(SDE.lam(t)) == pytest.approx(t, rel=1e-9)
    # alpha_t = exp(-1/4 t^2 (b1 - b0) - 1/2 t b0)
    assert SDE.alpha(1.0) == pytest.approx(math.exp(-0.25 * 19.9 - 0.05))


@pytest.mark.parametrize("method", ["multistep", "singlestep"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_follows_the_exact_ode(method, order):
    x_T = torch.randn(20_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = dpm_solve(SDE, eps_star, x_T, steps=15, order=order, method=method)
    err = (out - exact(x_T, 1e-3)).abs().mean().item()
    # measured: order 1 0.089; order 2 0.013; order 3 0.0097 (multistep), 8e-5 (singlestep)
    assert err < {1: 0.1, 2: 0.015, 3: 0.012}[order], err
    if order > 1:  # 15 steps of a higher-order solver: the data's mean and std
        torch.testing.assert_close(out.mean(0), MU, atol=0.02, rtol=0)
        torch.testing.assert_close(out.std(0), S, atol=0.0, rtol=0.04)


@pytest.mark.parametrize("method", ["multistep", "singlestep"])
def test_higher_order_and_more_steps_are_more_accurate(method):
    x_T = torch.randn(2000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = exact(x_T, 1e-3)

    def err(order: int, steps: int) -> float:
        out = dpm_solve(SDE, eps_star, x_T, steps=steps, order=order, method=method)
        return (out - ref).abs().mean().item()

    assert err(2, 15) < err(1, 15) / 5
    assert err(3, 15) < err(2, 15)
    assert err(2, 30) < err(2, 15) / 3  # second order: ~4x per halving of the step


def test_differentiable_and_bad_arguments():
    x_T = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    dpm_solve(SDE, eps_star, x_T, steps=5).sum().backward()
    assert torch.isfinite(x_T.grad).all() and x_T.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="order"):
        dpm_solve(SDE, eps_star, x_T, order=4)
    with pytest.raises(ConfigError, match="method"):
        dpm_solve(SDE, eps_star, x_T, method="adaptive")
