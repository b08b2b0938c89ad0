"""Samplers against diffusers (whole sampling loops), differentiability, reproducibility,
guidance operations and the generic loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffrl.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    NoiseSchedule,
    SamplerStep,
    cfg_mix,
    gradient_step,
    inpaint,
    make_schedule,
    sample_loop,
    schedule_from_betas,
)
from diffrl.errors import ConfigError

diffusers = pytest.importorskip("diffusers")

# diffusers' DPM-Solver calls np.array(tensor), which numpy 2 flags for torch's __array__.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SHAPES = [(7, 3), (4, 16, 5)]  # (B, A) actions and (B, H, D) trajectories
TOL = 1e-5  # max |ours - diffusers| / max |diffusers| over the final sample


def dummy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Deterministic stand-in for a network: depends on x (mixing the last dim) and on t."""
    tt = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return 0.3 * torch.sin(x) + 0.2 * x.roll(1, dims=-1) + 0.01 * tt


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


def x_T(shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1234), dtype=dtype)


def gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def diffusers_loop(sched, x: torch.Tensor, generator=None, **step_kwargs) -> torch.Tensor:
    for t in sched.timesteps:
        t = int(t)
        out = dummy_model(x, torch.full((x.shape[0],), t, dtype=torch.long))
        if generator is not None:
            step_kwargs["generator"] = generator
        x = sched.step(out, t, x, **step_kwargs).prev_sample
    return x


def to_float64(sched, s: NoiseSchedule):
    """diffusers keeps its schedule in float32 (torch.tensor(trained_betas, dtype=float32) and a
    float32 cumprod), which alone puts ~1e-3 relative error into 1 - alpha_bar at small t. Hand it
    our float64 tensors so the comparison measures the update formulas, not float32 rounding."""
    sched.betas = s.betas.clone()
    sched.alphas = s.alphas.clone()
    sched.alphas_cumprod = s.alphas_cumprod.clone()
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return sched


def ref_prediction(prediction: str) -> str:
    return "sample" if prediction == "x0" else "epsilon"


# ------------------------------------------------------------------------------------------ #
# DDPM
# ------------------------------------------------------------------------------------------ #


def ref_ddpm(s: NoiseSchedule, prediction: str, clip: float | None):
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=s.num_steps,
        trained_betas=s.betas.numpy(),
        variance_type="fixed_small",
        prediction_type=ref_prediction(prediction),
        clip_sample=clip is not None,
        clip_sample_range=clip if clip is not None else 1.0,
    )
    return to_float64(sched, s)


DDPM_CASES = [("vp", 5), ("linear", 100), ("cosine", 50)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
@pytest.mark.parametrize("name,T", DDPM_CASES)
def test_ddpm_matches_diffusers(name, T, prediction, clip, shape) -> None:
    s = make_schedule(name, T)
    xT = x_T(shape)
    g_ref, g_ours = gen(), gen()
    ref = diffusers_loop(ref_ddpm(s, prediction, clip), xT, generator=g_ref)
    ours = sample_loop(DDPMSampler(s, prediction, clip), dummy_model, xT, generator=g_ours)
    assert ours.dtype == torch.float64 and ours.shape == shape
    assert rel_err(ours, ref) <= TOL
    # same number of draws as diffusers (none at t = 0): the generators end in the same state
    assert torch.equal(g_ours.get_state(), g_ref.get_state())


def test_ddpm_clip_is_active_in_comparison() -> None:
    # Guards the clip cases above against being vacuous: clipping must change the result.
    s = make_schedule("linear", 100)
    xT = x_T((7, 3))
    clipped = sample_loop(DDPMSampler(s, clip_x0=0.5), dummy_model, xT, generator=gen())
    free = sample_loop(DDPMSampler(s), dummy_model, xT, generator=gen())
    assert rel_err(clipped, free) > 1e-2


def test_ddpm_step_details() -> None:
    s = make_schedule("vp", 5)
    sampler = DDPMSampler(s)
    assert sampler.timesteps == [4, 3, 2, 1, 0]
    for t in range(5):
        assert sampler.variance(t) == pytest.approx(
            math.exp(float(s.posterior_log_variance_clipped[t]))
        )
    assert sampler.variance(0) == pytest.approx(1e-20)  # Diffusion-QL / Diffuser clamp
    assert sampler.std(0) == 0.0
    assert sampler.std(3) == pytest.approx(math.sqrt(float(s.posterior_variance[3])))

    x = x_T((7, 3))
    eps = dummy_model(x, torch.full((7,), 3))
    z = torch.randn(7, 3, dtype=torch.float64, generator=gen(1))
    out = sampler.step(eps, 3, x, noise=z)
    assert isinstance(out, SamplerStep)
    x0 = (x - math.sqrt(1 - float(s.alphas_cumprod[3])) * eps) / math.sqrt(
        float(s.alphas_cumprod[3])
    )
    torch.testing.assert_close(out.x0, x0)
    mean = float(s.posterior_mean_coef1[3]) * x0 + float(s.posterior_mean_coef2[3]) * x
    torch.testing.assert_close(out.mean, mean)
    torch.testing.assert_close(out.prev_sample, mean + sampler.std(3) * z)
    torch.testing.assert_close(sampler.posterior_mean(x0, x, torch.full((7,), 3)), mean)
    last = sampler.step(eps, 0, x, noise=z)  # no noise at t = 0
    torch.testing.assert_close(last.prev_sample, last.mean)
    assert last.std == 0.0
    with pytest.raises(ConfigError):
        sampler.step(eps, 3, x, generator=gen(), noise=z)
    with pytest.raises(ConfigError):
        sampler.step(eps, 5, x)


# ------------------------------------------------------------------------------------------ #
# DDIM
# ------------------------------------------------------------------------------------------ #


def ref_ddim(s: NoiseSchedule, K: int, prediction: str, clip: float | None):
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=s.num_steps,
        trained_betas=s.betas.numpy(),
        prediction_type=ref_prediction(prediction),
        clip_sample=clip is not None,
        clip_sample_range=clip if clip is not None else 1.0,
    )
    sched = to_float64(sched, s)
    sched.set_timesteps(K)
    return sched


# (schedule, T, K, eta): K = 7 does not divide T = 100 (leading spacing, stride 14).
DDIM_CASES = [("linear", 100, 10, 0.0), ("linear", 100, 7, 1.0), ("cosine", 50, 10, 1.0),
              ("vp", 5, 3, 0.0), ("vp", 5, 5, 1.0)]  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
@pytest.mark.parametrize("name,T,K,eta", DDIM_CASES)
def test_ddim_matches_diffusers(name, T, K, eta, prediction, clip, shape) -> None:
    s = make_schedule(name, T)
    ref_sched = ref_ddim(s, K, prediction, clip)
    sampler = DDIMSampler(s, K, eta=eta, prediction=prediction, clip_x0=clip)
    assert sampler.timesteps == ref_sched.timesteps.tolist()
    xT = x_T(shape)
    g_ref, g_ours = gen(), gen()
    ref = diffusers_loop(ref_sched, xT, generator=g_ref if eta > 0 else None, eta=eta)
    ours = sample_loop(sampler, dummy_model, xT, generator=g_ours)
    assert rel_err(ours, ref) <= TOL
    # one draw per step when eta > 0 (even the last, where sigma = 0), none when eta = 0
    assert torch.equal(g_ours.get_state(), g_ref.get_state())


def test_ddim_timesteps_and_std() -> None:
    s = make_schedule("linear", 100)
    sampler = DDIMSampler(s, 7, eta=0.5)
    assert sampler.timesteps == [84, 70, 56, 42, 28, 14, 0]
    a_t, a_p = float(s.alphas_cumprod[42]), float(s.alphas_cumprod[28])
    expected = 0.5 * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
    assert sampler.std(42) == pytest.approx(expected, rel=1e-12)
    assert sampler.std(0) == 0.0  # abar_prev = 1 below t = 0
    assert DDIMSampler(s, 7).std(42) == 0.0
    for bad in (0, 101, 2.0):
        with pytest.raises(ConfigError):
            DDIMSampler(s, bad)
    with pytest.raises(ConfigError):
        DDIMSampler(s, 10, eta=-0.1)
    with pytest.raises(ConfigError):
        DDIMSampler(s, 10, eta=3.0)  # sqrt(1 - abar_prev - sigma^2) would be imaginary


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_ddim_full_steps_eta_one_equals_ddpm(prediction) -> None:
    # With K = T and eta = 1 DDIM's mean and sigma are DDPM's posterior ones, and both draw the
    # same noise until t = 0 (where DDIM's sigma is 0), so the same seed gives the same sample.
    s = make_schedule("linear", 100)
    xT = x_T((4, 16, 5))
    ddim = sample_loop(DDIMSampler(s, 100, eta=1.0, prediction=prediction), dummy_model, xT, gen())
    ddpm = sample_loop(DDPMSampler(s, prediction), dummy_model, xT, gen())
    assert rel_err(ddim, ddpm) <= 1e-10


# ------------------------------------------------------------------------------------------ #
# DPM-Solver++
# ------------------------------------------------------------------------------------------ #


def ref_dpm(s: NoiseSchedule, K: int, prediction: str, clip: float | None):
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=s.num_steps,
        trained_betas=s.betas.numpy(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        timestep_spacing="linspace",
        lower_order_final=True,
        final_sigmas_type="zero",
        prediction_type=ref_prediction(prediction),
        # dynamic thresholding with sample_max_value = 1 is exactly clipping to [-1, 1]
        thresholding=clip is not None,
        sample_max_value=1.0,
    )
    sched.alphas_cumprod = s.alphas_cumprod.clone()  # float64 before set_timesteps (see to_float64)
    sched.set_timesteps(K)
    # set_timesteps stores sigma = sqrt((1 - abar)/abar) as float32; restore float64. The update
    # itself still runs in float32 inside diffusers (sample.to(torch.float32)), ~1e-7 relative.
    sigmas = ((1 - s.alphas_cumprod) / s.alphas_cumprod).sqrt()[sched.timesteps]
    sched.sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sched


# K = 10 < 15 (diffusers' lower_order_final condition) and K = 20 >= 15.
DPM_CASES = [("linear", 100, 10), ("linear", 100, 20), ("cosine", 50, 10), ("vp", 5, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
@pytest.mark.parametrize("name,T,K", DPM_CASES)
def test_dpm_solver_matches_diffusers(name, T, K, prediction, shape) -> None:
    s = make_schedule(name, T)
    ref_sched = ref_dpm(s, K, prediction, None)
    sampler = DPMSolverSampler(s, K, prediction=prediction)
    assert sampler.timesteps == ref_sched.timesteps.tolist()
    xT = x_T(shape)
    ref = diffusers_loop(ref_sched, xT)
    ours = sample_loop(sampler, dummy_model, xT)
    assert rel_err(ours, ref) <= TOL


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
@pytest.mark.parametrize("name,T,K", DPM_CASES)
def test_dpm_solver_clip_matches_diffusers_thresholding(name, T, K, prediction) -> None:
    # diffusers' thresholding reshapes to (B, C, ...) so it needs a 3-D sample.
    s = make_schedule(name, T)
    xT = 4.0 * x_T((4, 16, 5))  # large enough that x0 estimates leave [-1, 1] in every case
    ref = diffusers_loop(ref_dpm(s, K, prediction, 1.0), xT)
    ours = sample_loop(DPMSolverSampler(s, K, prediction, clip_x0=1.0), dummy_model, xT)
    assert rel_err(ours, ref) <= TOL
    free = sample_loop(DPMSolverSampler(s, K, prediction), dummy_model, xT)
    assert rel_err(ours, free) > 1e-3  # the clip was active


@pytest.mark.parametrize("T,K", [(100, 1), (100, 2), (100, 10), (100, 20), (100, 99), (5, 4),
                                 (50, 7), (1000, 25)])  # fmt: skip
def test_dpm_solver_timesteps_match_diffusers(T, K) -> None:
    s = make_schedule("linear", T)
    ref = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T)
    ref.set_timesteps(K)
    assert DPMSolverSampler(s, K).timesteps == ref.timesteps.tolist()


def test_dpm_solver_state_and_errors() -> None:
    s = make_schedule("linear", 100)
    sampler = DPMSolverSampler(s, 10)
    assert sampler.timesteps[0] == 99 and len(sampler.timesteps) == 10
    alpha, sigma = sampler.alpha_sigma(40)
    assert alpha == pytest.approx(math.sqrt(float(s.alphas_cumprod[40])))
    assert sigma == pytest.approx(math.sqrt(1 - float(s.alphas_cumprod[40])))
    x = x_T((7, 3))
    ts = sampler.timesteps
    out = sampler.step(dummy_model(x, torch.full((7,), ts[0])), ts[0], x)
    with pytest.raises(ConfigError, match="expected t="):
        sampler.step(dummy_model(x, torch.full((7,), ts[2])), ts[2], out.prev_sample)
    # Re-entering at the first timestep starts a new chain, so an aborted chain is harmless.
    again = sampler.step(dummy_model(x, torch.full((7,), ts[0])), ts[0], x)
    torch.testing.assert_close(again.prev_sample, out.prev_sample)
    sampler.reset()
    with pytest.raises(ConfigError):
        sampler.step(dummy_model(x, torch.full((7,), ts[1])), ts[1], x)
    # A full chain: the last step returns its x0 estimate and leaves no state behind.
    sampler.reset()
    y = x
    for t in ts:
        res = sampler.step(dummy_model(y, torch.full((7,), t)), t, y, generator=gen())
        y = res.prev_sample
    torch.testing.assert_close(res.prev_sample, res.x0)
    assert sampler._prev_x0 is None
    for bad in (0, 100, 150):
        with pytest.raises(ConfigError):
            DPMSolverSampler(s, bad)


# ------------------------------------------------------------------------------------------ #
# Properties shared by all samplers
# ------------------------------------------------------------------------------------------ #


def all_samplers(s: NoiseSchedule) -> dict[str, object]:
    return {
        "ddpm": DDPMSampler(s),
        "ddim": DDIMSampler(s, 10, eta=1.0),
        "dpm_solver": DPMSolverSampler(s, 10),
    }


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm_solver"])
def test_perturbed_schedule_is_detected(kind) -> None:
    """The comparison is sensitive: betas * 1.001 moves the result far beyond TOL."""
    s = make_schedule("linear", 100)
    bad = schedule_from_betas(s.betas * 1.001)
    xT = x_T((4, 16, 5))
    if kind == "ddpm":
        ref = diffusers_loop(ref_ddpm(s, "epsilon", None), xT, generator=gen())
    elif kind == "ddim":
        ref = diffusers_loop(ref_ddim(s, 10, "epsilon", None), xT, generator=gen(), eta=1.0)
    else:
        ref = diffusers_loop(ref_dpm(s, 10, "epsilon", None), xT)
    good = sample_loop(all_samplers(s)[kind], dummy_model, xT, generator=gen())
    perturbed = sample_loop(all_samplers(bad)[kind], dummy_model, xT, generator=gen())
    assert rel_err(good, ref) <= TOL
    assert rel_err(perturbed, ref) > 1e-4


class TinyDenoiser(nn.Module):
    """Linear map of [x, t/T] over the last dim; works for (B, A) and (B, H, D)."""

    def __init__(self, dim: int, T: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim + 1, dim)
        self.T = T

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = (t.to(x.dtype) / self.T).reshape(-1, *([1] * (x.dim() - 1))).expand(*x.shape[:-1], 1)
        return torch.tanh(self.lin(torch.cat([x, tt], dim=-1)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "kind,name,T", [("ddpm", "vp", 5), ("ddim", "linear", 100), ("dpm_solver", "linear", 100)]
)
def test_gradients_flow_through_every_step(kind, name, T, shape) -> None:
    torch.manual_seed(0)
    s = make_schedule(name, T)
    sampler = {
        "ddpm": lambda: DDPMSampler(s, clip_x0=1.0),
        "ddim": lambda: DDIMSampler(s, 10, eta=1.0, clip_x0=1.0),
        "dpm_solver": lambda: DPMSolverSampler(s, 10, clip_x0=1.0),
    }[kind]()
    net = TinyDenoiser(shape[-1], T)
    outputs: list[torch.Tensor] = []

    def model_fn(x, t):
        out = net(x, t)
        out.retain_grad()
        outputs.append(out)
        return out

    x0 = sample_loop(sampler, model_fn, x_T(shape, torch.float32), generator=gen())
    assert x0.dtype == torch.float32 and x0.requires_grad
    (x0**2).mean().backward()
    assert len(outputs) == len(sampler.timesteps)
    for i, out in enumerate(outputs):  # every step's model output receives gradient
        assert out.grad is not None and torch.isfinite(out.grad).all(), i
        assert out.grad.abs().sum() > 0, i
    for p in net.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm_solver"])
def test_reproducibility(kind) -> None:
    s = make_schedule("linear", 100)
    xT = x_T((7, 3))
    a = sample_loop(all_samplers(s)[kind], dummy_model, xT, generator=gen(1))
    b = sample_loop(all_samplers(s)[kind], dummy_model, xT, generator=gen(1))
    c = sample_loop(all_samplers(s)[kind], dummy_model, xT, generator=gen(2))
    assert torch.equal(a, b)
    if kind == "dpm_solver":  # deterministic: the generator is ignored
        assert torch.equal(a, c)
    else:
        assert not torch.allclose(a, c)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm_solver"])
def test_float32_matches_float64(kind) -> None:
    s = make_schedule("linear", 100)
    xT = x_T((4, 16, 5))
    out64 = sample_loop(all_samplers(s)[kind], dummy_model, xT, generator=gen())
    out32 = sample_loop(all_samplers(s)[kind], dummy_model, xT.float(), generator=gen())
    assert out32.dtype == torch.float32
    # the generator draws different float32 / float64 numbers, so only compare deterministic ones
    if kind == "dpm_solver":
        assert rel_err(out32, out64) <= 1e-5
    assert torch.isfinite(out32).all()


def test_predict_x0_and_tensor_clip_bounds() -> None:
    s = make_schedule("vp", 5)
    lo = torch.tensor([-0.1, -0.2, -0.3])
    hi = torch.tensor([0.1, 0.2, 0.3])
    x = x_T((7, 3)) * 10
    eps = dummy_model(x, torch.full((7,), 4))
    for sampler in (
        DDPMSampler(s, clip_x0=(lo, hi)),
        DDIMSampler(s, 5, clip_x0=(lo, hi)),
        DPMSolverSampler(s, 4, clip_x0=(lo, hi)),
    ):
        raw = sampler.predict_x0(eps, 4, x, clip=False)
        ref = (x - math.sqrt(1 - float(s.alphas_cumprod[4])) * eps) / math.sqrt(
            float(s.alphas_cumprod[4])
        )
        torch.testing.assert_close(raw, ref)
        torch.testing.assert_close(
            sampler.predict_x0(eps, 4, x), torch.maximum(torch.minimum(ref, hi), lo).double()
        )
    for bad in (-1.0, 0, (1.0,), (1.0, -1.0), "big"):
        with pytest.raises(ConfigError):
            DDPMSampler(s, clip_x0=bad)
    with pytest.raises(ConfigError, match="epsilon"):
        DDIMSampler(s, 5, prediction="v")


# ------------------------------------------------------------------------------------------ #
# Loop, guidance and factory
# ------------------------------------------------------------------------------------------ #


def test_sample_loop_calls_and_after_step() -> None:
    s = make_schedule("linear", 100)
    sampler = DDIMSampler(s, 5)
    seen_t: list[torch.Tensor] = []
    seen_after: list[int] = []

    def model_fn(x, t):
        seen_t.append(t)
        return dummy_model(x, t)

    cond = {0: torch.ones(4, 2, dtype=torch.float64), -1: torch.tensor([5.0, 6.0])}

    def after(x, t):
        seen_after.append(t)
        return inpaint(x, cond, start=1)

    out = sample_loop(sampler, model_fn, x_T((4, 16, 5)), after_step=after)
    assert seen_after == [100] + sampler.timesteps
    assert [int(t[0]) for t in seen_t] == sampler.timesteps
    assert all(t.dtype == torch.long and t.shape == (4,) for t in seen_t)
    assert torch.equal(out[:, 0, 1:3], torch.ones(4, 2, dtype=torch.float64))
    assert torch.equal(out[:, -1, 1:3], torch.tensor([5.0, 6.0]).double().expand(4, 2))


def test_sample_loop_steps_between_part_way_and_at_a_temperature() -> None:
    """The planners' loop (diffrl/algos/planner.py): a step before each sampler step sees every t of
    the given suffix, and `noise_scale` draws scaled noise once per step, as a hand loop."""
    s = make_schedule("linear", 50)
    sampler = DDPMSampler(s)
    before: list[int] = []

    def nudge(x, t):
        before.append(t)
        return x + 0.01

    suffix = sampler.timesteps[-7:]
    got = sample_loop(
        sampler,
        dummy_model,
        x_T((3, 4)),
        gen(3),
        timesteps=suffix,
        before_step=nudge,
        noise_scale=0.5,
    )
    assert before == suffix
    g, x = gen(3), x_T((3, 4))
    for t in suffix:
        x = x + 0.01
        out = dummy_model(x, torch.full((3,), t))
        x = sampler.step(out, t, x, noise=0.5 * torch.randn(x.shape, generator=g, dtype=x.dtype))
        x = x.prev_sample
    assert torch.equal(got, x)


def test_inpaint() -> None:
    x = torch.zeros(2, 4, 3, requires_grad=True)
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = inpaint(x, {1: c})
    assert torch.equal(x, torch.zeros(2, 4, 3))  # input untouched
    assert torch.equal(out[:, 1, :2], c) and torch.equal(out[:, 1, 2], torch.zeros(2))
    (out * torch.arange(24.0).reshape(2, 4, 3)).sum().backward()
    assert x.grad[:, 1, :2].abs().sum() == 0 and x.grad[:, 0].abs().sum() > 0
    torch.testing.assert_close(c.grad, torch.tensor([[3.0, 4.0], [15.0, 16.0]]))
    for bad_cond, start in (({4: c}, 0), ({0: c}, 2), ({0: torch.ones(3, 2)}, 0)):
        with pytest.raises(ConfigError):
            inpaint(x, bad_cond, start=start)
    with pytest.raises(ConfigError):
        inpaint(torch.zeros(2, 3), {0: torch.ones(2)})


def test_cfg_mix_and_gradient_step() -> None:
    u, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
    torch.testing.assert_close(cfg_mix(u, c, 0.0), u)
    torch.testing.assert_close(cfg_mix(u, c, 1.0), c)
    torch.testing.assert_close(cfg_mix(u, c, 2.0), torch.tensor([5.0, -2.0]))
    x, g = torch.tensor([1.0, 1.0]), torch.tensor([2.0, -4.0])
    torch.testing.assert_close(gradient_step(x, g, 0.5, 0.1), torch.tensor([1.1, 0.8]))


def test_ddpm_with_fewer_steps_is_strided_ancestral_sampling():
    """ddpm with K < T steps: DDIM at eta = 1 on K strided steps, whose noise is DDPM's
    posterior std between the strided steps; with all T steps it is DDPM itself."""
    from diffrl.diffusion import DDIMSampler, DDPMSampler, make_schedule
    from diffrl.diffusion.factory import make_sampler

    schedule = make_schedule("vp", 50)
    strided = make_sampler("ddpm", schedule, 10)
    assert isinstance(strided, DDIMSampler) and strided.eta == 1.0
    assert strided.timesteps == list(range(45, -1, -5))
    abar = schedule.alphas_cumprod.double()
    for t in strided.timesteps[:-1]:
        a_t, a_prev = abar[t], abar[t - 5]
        posterior_var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        assert strided.std(t) == pytest.approx(float(posterior_var.sqrt()), rel=1e-9)
    assert isinstance(make_sampler("ddpm", schedule, 50), DDPMSampler)
    assert isinstance(make_sampler("ddpm", schedule, 0), DDPMSampler)


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_ddpm_chain_is_the_sample_path(prediction, clip):
    """`DDPMSampler.chain` (the tight loop acting uses) gives what `sample` gives for the same
    generator state, clipped or not, for both predictions."""
    from diffrl.diffusion import make_schedule
    from diffrl.diffusion.factory import make_sampler

    schedule = make_schedule("vp", 7)
    sampler = make_sampler("ddpm", schedule, 0, prediction=prediction, clip_x0=clip)
    weight = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ weight) * (1.0 + t.float()[:, None] / 7.0)

    g = torch.Generator().manual_seed(5)
    noise = sampler.chain_noise((16, 3), g, "cpu", torch.float32)
    fast = sampler.chain(lambda x, k: model(x, torch.full((16,), sampler.timesteps[k])), noise)
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn((16, 3), generator=g)
    ref = sampler.sample(model, x_T, generator=g)
    # float32 rounding only: the two loops order the same operations differently, and on some
    # CPUs (an AMD EPYC here) that moves an element by ~3e-6; a wrong step would move it by ~0.1.
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    assert sampler.num_evals == 7
