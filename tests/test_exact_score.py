"""Samplers driven by the EXACT noise prediction of a known distribution reproduce it.

For a mixture of isotropic Gaussians the optimal eps-model is available in closed form:
x_t | k ~ N(sqrt(abar_t) mu_k, (abar_t s^2 + 1 - abar_t) I), so
eps*(x_t, t) = -sqrt(1 - abar_t) * grad log p_t(x_t). Sampling with it must give back the
mixture's weights; this checks schedule + sampler end to end without any training.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffrl.datasets import toy_bandit
from diffrl.diffusion import make_schedule, sample_loop
from diffrl.diffusion.factory import make_sampler

CENTRES = torch.tensor([c for c, _ in toy_bandit.MODES.values()], dtype=torch.float64)


def exact_eps(schedule, std: float):
    abar = schedule.alphas_cumprod

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = float(abar[int(t[0])])
        var = a * std**2 + 1.0 - a
        d = x[:, None, :] - math.sqrt(a) * CENTRES[None]  # (B, K, 2)
        w = torch.softmax(-(d**2).sum(-1) / (2 * var), dim=1)  # posterior over modes
        score = -(w[..., None] * d).sum(1) / var
        return -math.sqrt(1.0 - a) * score

    return eps


@pytest.mark.parametrize(
    "sampler,steps", [("ddpm", 0), ("ddim", 0), ("ddim", 25), ("dpm-solver", 0)]
)
def test_exact_model_recovers_the_four_modes(sampler, steps):
    schedule = make_schedule("vp", 50)
    smp = make_sampler(sampler, schedule, steps, clip_x0=1.0)
    x_T = torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x0 = sample_loop(
        smp, exact_eps(schedule, 0.05), x_T, generator=torch.Generator().manual_seed(1)
    )
    fr = toy_bandit.evaluate_actions(x0.numpy())["mode_fractions"]
    for mode in ("left_up", "left_bottom", "right_up", "right_bottom"):
        assert 0.22 < fr[mode] < 0.28, fr
    assert fr["off_mode"] < 0.02, fr


def test_a_wrong_schedule_does_not():
    """The check is sensitive: sampling with a schedule the model was not built for fails."""
    model_schedule = make_schedule("vp", 50)
    smp = make_sampler("ddpm", make_schedule("linear", 50), 0, clip_x0=1.0)
    x_T = torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x0 = sample_loop(
        smp, exact_eps(model_schedule, 0.05), x_T, generator=torch.Generator().manual_seed(1)
    )
    assert toy_bandit.evaluate_actions(x0.numpy())["mode_fractions"]["off_mode"] > 0.2
