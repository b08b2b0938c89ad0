"""Noise schedules: betas against diffusers / closed forms, derived quantities, q_sample."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from diffrl.diffusion import (
    SCHEDULES,
    NoiseSchedule,
    extract,
    make_schedule,
    q_sample,
    schedule_from_betas,
)
from diffrl.errors import ConfigError

diffusers = pytest.importorskip("diffusers")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise relative error of a against reference b (float64)."""
    a, b = a.double(), b.double()
    return float(((a - b).abs() / b.abs()).max())


# diffusers builds betas in float32 (torch.linspace(..., dtype=float32) for "linear";
# betas_for_alpha_bar computes in Python floats then stores float32 for "squaredcos_cap_v2"),
# so the best agreement possible with our float64 betas is float32 rounding, ~1e-7 relative.
@pytest.mark.parametrize("T", [5, 50, 100, 1000])
def test_linear_betas_match_diffusers(T: int) -> None:
    ref = diffusers.DDPMScheduler(
        num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=2e-2
    ).betas
    s = make_schedule("linear", T)
    assert s.betas.dtype == torch.float64 and s.betas.shape == (T,)
    assert _rel(s.betas, ref) <= 1e-6


@pytest.mark.parametrize("T", [5, 50, 100, 1000])
def test_cosine_betas_match_diffusers(T: int) -> None:
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2").betas
    s = make_schedule("cosine", T)
    assert _rel(s.betas, ref) <= 1e-6
    assert float(s.betas.max()) <= 0.999


@pytest.mark.parametrize("T", [5, 100])
def test_vp_betas_closed_form(T: int) -> None:
    # Diffusion-QL's vp_beta_schedule, written out independently in numpy.
    t = np.arange(1, T + 1, dtype=np.float64)
    alpha = np.exp(-0.1 / T - 0.5 * (10.0 - 0.1) * (2 * t - 1) / T**2)
    ref = 1.0 - alpha
    s = make_schedule("vp", T)
    np.testing.assert_allclose(s.betas.numpy(), ref, rtol=1e-12, atol=0)
    if T == 5:  # a few hard-coded values guard against the formula being wrong in both places
        np.testing.assert_allclose(
            s.betas.numpy()[[0, -1]], [1 - np.exp(-0.02 - 0.198), 1 - np.exp(-0.02 - 1.782)]
        )


def test_schedule_kwargs() -> None:
    s = make_schedule("linear", 10, beta_start=1e-3, beta_end=5e-2)
    assert float(s.betas[0]) == pytest.approx(1e-3) and float(s.betas[-1]) == pytest.approx(5e-2)
    v = make_schedule("vp", 5, b_min=0.2, b_max=5.0)
    assert float(v.betas[0]) == pytest.approx(1 - np.exp(-0.2 / 5 - 0.5 * 4.8 / 25))


@pytest.mark.parametrize("name", SCHEDULES)
def test_derived_quantities(name: str) -> None:
    T = 20
    s = make_schedule(name, T)
    b = s.betas.numpy()
    a = 1.0 - b
    abar = np.cumprod(a)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    post_var = b * (1 - abar_prev) / (1 - abar)
    expected = {
        "alphas": a,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - abar),
        "sqrt_recip_alphas_cumprod": 1 / np.sqrt(abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / abar - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": b * np.sqrt(abar_prev) / (1 - abar),
        "posterior_mean_coef2": (1 - abar_prev) * np.sqrt(a) / (1 - abar),
    }
    for key, ref in expected.items():
        val = getattr(s, key)
        assert val.dtype == torch.float64 and val.shape == (T,), key
        np.testing.assert_allclose(val.numpy(), ref, rtol=1e-12, atol=1e-300, err_msg=key)
    assert float(s.alphas_cumprod_prev[0]) == 1.0
    assert float(s.posterior_variance[0]) == 0.0
    assert s.num_steps == T


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_mean_is_gaussian_conditional(name: str) -> None:
    """coef1 x0 + coef2 x_t and beta_tilde equal the conditional of the joint Gaussian
    (x_{t-1}, x_t) | x0, computed from its covariance instead of DDPM eq 7."""
    T = 10
    s = make_schedule(name, T)
    x0, xt = 0.7, -1.3
    for t in range(T):
        abar_t = float(s.alphas_cumprod[t])
        abar_p = 1.0 if t == 0 else float(s.alphas_cumprod[t - 1])
        alpha_t = abar_t / abar_p
        # x_{t-1} = sqrt(abar_p) x0 + sqrt(1 - abar_p) e1
        # x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e2
        s11 = 1.0 - abar_p
        s12 = np.sqrt(alpha_t) * s11
        s22 = 1.0 - abar_t
        mean = np.sqrt(abar_p) * x0 + s12 / s22 * (xt - np.sqrt(abar_t) * x0)
        var = s11 - s12**2 / s22
        got = float(s.posterior_mean_coef1[t]) * x0 + float(s.posterior_mean_coef2[t]) * xt
        assert got == pytest.approx(mean, rel=1e-10, abs=1e-12), t
        assert float(s.posterior_variance[t]) == pytest.approx(var, rel=1e-8, abs=1e-15), t


def test_schedule_from_betas_and_validation() -> None:
    betas = [0.1, 0.2, 0.3]
    s = schedule_from_betas(betas)
    assert s.betas.tolist() == betas and s.num_steps == 3
    one = schedule_from_betas([0.5])  # T = 1: the only posterior variance is 0 -> log(1e-20)
    assert torch.isfinite(one.posterior_log_variance_clipped).all()
    for bad in ([0.0, 0.1], [0.1, 1.0], [[0.1]], []):
        with pytest.raises(ConfigError):
            schedule_from_betas(bad)


def test_unknown_schedule_name() -> None:
    with pytest.raises(ConfigError) as err:
        make_schedule("quadratic", 10)
    msg = str(err.value)
    assert "quadratic" in msg and all(n in msg for n in SCHEDULES) and "\n" not in msg


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_num_steps(steps) -> None:
    with pytest.raises(ConfigError):
        make_schedule("linear", steps)


def test_unknown_kwarg() -> None:
    with pytest.raises(ConfigError, match="b_max"):
        make_schedule("linear", 10, b_max=3.0)


def test_schedule_is_frozen_and_to_is_cached() -> None:
    s = make_schedule("cosine", 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.betas = s.betas  # type: ignore[misc]
    assert s.to() is s and s.to("cpu", torch.float64) is s
    s32 = s.to(dtype=torch.float32)
    assert s32.alphas_cumprod.dtype == torch.float32 and s32.num_steps == 8
    assert s.to(torch.device("cpu"), torch.float32) is s32
    assert isinstance(s32, NoiseSchedule)


def test_extract_shapes() -> None:
    a = torch.arange(10, dtype=torch.float64)
    t = torch.tensor([3, 0, 9])
    out = extract(a, t, (3, 16, 5))
    assert out.shape == (3, 1, 1) and out.flatten().tolist() == [3.0, 0.0, 9.0]
    assert extract(a, t, (3, 4)).shape == (3, 1)
    assert extract(a, t, (3,)).shape == (3,)


@pytest.mark.parametrize("shape", [(7, 3), (4, 16, 5)])
def test_q_sample_matches_diffusers_add_noise(shape: tuple[int, ...]) -> None:
    T = 100
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    noise = torch.randn(shape, generator=gen, dtype=torch.float64)
    t = torch.randint(0, T, (shape[0],), generator=gen)
    s = make_schedule("linear", T)
    ref_sched = diffusers.DDPMScheduler(num_train_timesteps=T, trained_betas=s.betas.numpy())
    # float32 inputs: diffusers uses its float32 alphas_cumprod, so agree to float32 precision.
    ours32 = q_sample(s, x0.float(), t, noise.float())
    ref32 = ref_sched.add_noise(x0.float(), noise.float(), t)
    assert ours32.dtype == torch.float32
    assert float((ours32 - ref32).abs().max() / ref32.abs().max()) <= 1e-6
    # float64: give diffusers float64 alphas_cumprod and the agreement becomes exact-ish.
    ref_sched.alphas_cumprod = s.alphas_cumprod.clone()
    ours64 = q_sample(s, x0, t, noise)
    ref64 = ref_sched.add_noise(x0, noise, t)
    assert ours64.dtype == torch.float64
    assert float((ours64 - ref64).abs().max() / ref64.abs().max()) <= 1e-12
    # and the formula itself, element by element
    sa = s.sqrt_alphas_cumprod[t].reshape(-1, *([1] * (len(shape) - 1)))
    so = s.sqrt_one_minus_alphas_cumprod[t].reshape(-1, *([1] * (len(shape) - 1)))
    torch.testing.assert_close(ours64, sa * x0 + so * noise, rtol=1e-14, atol=1e-14)


def test_q_sample_is_differentiable() -> None:
    s = make_schedule("vp", 5)
    x0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    xt = q_sample(s, x0, torch.tensor([0, 1, 2, 4]), torch.zeros(4, 3, dtype=torch.float64))
    xt.sum().backward()
    torch.testing.assert_close(x0.grad, s.sqrt_alphas_cumprod[[0, 1, 2, 4]][:, None].expand(4, 3))


def test_replace_does_not_share_cache() -> None:
    s = make_schedule("linear", 10)
    s32 = s.to(dtype=torch.float32)
    other = dataclasses.replace(s, betas=s.betas * 0.5)
    assert other.to(dtype=torch.float32) is not s32
