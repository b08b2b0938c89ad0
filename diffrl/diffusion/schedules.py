"""Noise schedules of the discrete forward process and helpers shared by the samplers.

Notation follows DDPM (Ho et al. 2020): ``beta_t`` is the per-step noise variance,
``alpha_t = 1 - beta_t`` and ``alpha_bar_t = prod_{s<=t} alpha_s`` (``alphas_cumprod``).
Timesteps are 0-based: index ``t`` in ``[0, T)`` is the paper's step ``t + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from diffrl.errors import ConfigError

SCHEDULES: tuple[str, ...] = ("linear", "cosine", "vp")
PREDICTIONS: tuple[str, ...] = ("epsilon", "x0")

# ``clip_x0`` accepts a symmetric bound c (clamp to [-c, c]) or explicit (lo, hi) bounds, which may
# be tensors broadcastable over the last dim (e.g. per-action bounds of shape (A,)).
ClipSpec = float | tuple[float | Tensor, float | Tensor] | None


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Precomputed quantities of a discrete diffusion with T steps; every tensor has shape (T,).

    Built in float64 (see :func:`schedule_from_betas`); :meth:`to` gives (cached) copies on
    another device / dtype. ``eq=False``: equality and hashing are by identity, since tensors
    do not compare to a single bool.
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
    # init=False: dataclasses.replace() must not carry one schedule's cached copies to another.
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps."""
        return int(self.betas.shape[0])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> NoiseSchedule:
        """Copy of the schedule on ``device`` with ``dtype``, cached per (device, dtype).

        The cache means samplers and losses can call this on every step without re-copying.
        """
        device = self.betas.device if device is None else torch.device(device)
        dtype = self.betas.dtype if dtype is None else dtype
        if device == self.betas.device and dtype == self.betas.dtype:
            return self
        key = (device, dtype)
        cached = self._cache.get(key)
        if cached is None:
            kwargs = {
                f.name: getattr(self, f.name).to(device=device, dtype=dtype)
                for f in fields(self)
                if f.init
            }
            cached = NoiseSchedule(**kwargs)
            self._cache[key] = cached
        return cached


@dataclass
class SamplerStep:
    """Result of one reverse step ``x_t -> x_prev``.

    ``prev_sample`` is the next sample (x_{t-1} for DDPM), ``x0`` the clean-sample estimate
    after clipping. ``mean`` / ``std`` describe the Gaussian ``prev_sample`` was drawn from:
    ``prev_sample = mean + std * z``; deterministic steps have ``std == 0`` and
    ``mean == prev_sample``.
    """

    prev_sample: Tensor
    x0: Tensor
    mean: Tensor | None = None
    std: float | Tensor = 0.0


def schedule_from_betas(betas: Tensor | list[float]) -> NoiseSchedule:
    """Derive every schedule quantity (DDPM eqs 4, 6, 7) from ``betas`` (T,), in float64.

    ``posterior_log_variance_clipped`` is ``log(max(posterior_variance, 1e-20))``, the convention
    of Diffusion-QL's and Diffuser's code (and diffusers' "fixed_small"): at t = 0 the posterior
    variance is 0, so the entry is log(1e-20). It never adds noise (the last DDPM step is
    noise-free); it sets :meth:`DDPMSampler.variance`, by which Diffuser scales its value
    gradient, so guidance vanishes at t = 0 as in Diffuser. (improved/guided-diffusion instead
    copy the t = 1 entry into t = 0.)
    """
    betas = torch.as_tensor(betas, dtype=torch.float64).detach().clone()
    if betas.dim() != 1 or betas.numel() == 0:
        raise ConfigError(f"betas must be a non-empty 1-D sequence, got shape {tuple(betas.shape)}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ConfigError("betas must all lie in the open interval (0, 1)")
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    # DDPM eq 7: q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, beta_tilde_t)
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    log_var = torch.log(posterior_variance.clamp(min=1e-20))
    return NoiseSchedule(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=torch.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=torch.sqrt(1.0 - alphas_cumprod),
        sqrt_recip_alphas_cumprod=torch.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=torch.sqrt(1.0 / alphas_cumprod - 1.0),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=log_var,
        posterior_mean_coef1=betas * torch.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev)
        * torch.sqrt(alphas)
        / (1.0 - alphas_cumprod),
    )


def _linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> Tensor:
    # DDPM's linear schedule (Ho et al. 2020, Sec. 4), as diffusers' beta_schedule="linear".
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def _cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    # Nichol & Dhariwal 2021 eq 17: alpha_bar(t) = cos(((t/T) + s) / (1 + s) * pi/2)^2 and
    # beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), clipped so the last steps stay invertible.
    t = torch.arange(T + 1, dtype=torch.float64)
    alpha_bar = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def _vp_betas(T: int, b_min: float = 0.1, b_max: float = 10.0) -> Tensor:
    # Diffusion-QL's discretised VP-SDE (Song et al. 2021): for t = 1..T,
    # alpha_t = exp(-b_min/T - 0.5 (b_max - b_min)(2t - 1)/T^2), i.e. the SDE's beta(t)
    # integrated over [(t-1)/T, t/T]; meant for very few steps (T = 5).
    t = torch.arange(1, T + 1, dtype=torch.float64)
    alphas = torch.exp(-b_min / T - 0.5 * (b_max - b_min) * (2 * t - 1) / T**2)
    return 1.0 - alphas


_BETA_FNS = {"linear": _linear_betas, "cosine": _cosine_betas, "vp": _vp_betas}
_BETA_KWARGS = {
    "linear": ("beta_start", "beta_end"),
    "cosine": ("s", "max_beta"),
    "vp": ("b_min", "b_max"),
}


def make_schedule(name: str, num_steps: int, **kwargs: float) -> NoiseSchedule:
    """Named schedule with ``num_steps`` = T steps: ``"linear"``, ``"cosine"`` or ``"vp"``.

    kwargs: linear ``beta_start=1e-4, beta_end=2e-2``; cosine ``s=0.008, max_beta=0.999``;
    vp ``b_min=0.1, b_max=10.0``.
    """
    if name not in _BETA_FNS:
        raise ConfigError(f"unknown noise schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ConfigError(f"num_steps must be a positive integer, got {num_steps!r}")
    unknown = sorted(set(kwargs) - set(_BETA_KWARGS[name]))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for schedule {name!r}; "
            f"valid: {', '.join(_BETA_KWARGS[name])}"
        )
    return schedule_from_betas(_BETA_FNS[name](num_steps, **kwargs))


def extract(a: Tensor, t: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Gather ``a[t]`` for a batch of timesteps, reshaped to (B, 1, ..., 1).

    a: (T,); t: LongTensor (B,); shape: the shape (B, ...) of the tensor it will multiply.
    """
    out = a[t.to(device=a.device, dtype=torch.long)]
    return out.reshape(t.shape[0], *((1,) * (len(shape) - 1)))


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Forward process (DDPM eq 4): ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.

    x0, noise: (B, ...); t: LongTensor (B,). Returns x_t (B, ...) in x0's dtype.
    """
    s = schedule.to(x0.device, x0.dtype)
    t = t.to(x0.device)
    return (
        extract(s.sqrt_alphas_cumprod, t, x0.shape) * x0
        + extract(s.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise
    )


# --------------------------------------------------------------------------------------------
# Helpers shared by the samplers (not about schedules, but every sampler file imports these).
# --------------------------------------------------------------------------------------------


def check_prediction(prediction: str) -> str:
    """Validate the model parameterisation: ``"epsilon"`` (noise) or ``"x0"`` (clean sample)."""
    if prediction not in PREDICTIONS:
        raise ConfigError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    return prediction


def check_clip(clip_x0: ClipSpec) -> ClipSpec:
    """Validate a ``clip_x0`` spec: None, a positive bound c, or a (lo, hi) pair."""
    if clip_x0 is None:
        return None
    if isinstance(clip_x0, (tuple, list)):
        if len(clip_x0) != 2:
            raise ConfigError(f"clip_x0 as bounds must be (lo, hi), got {len(clip_x0)} values")
        lo, hi = clip_x0
        if not bool(torch.all(torch.as_tensor(lo) <= torch.as_tensor(hi))):
            raise ConfigError("clip_x0 bounds need lo <= hi")
        return (lo, hi)
    if isinstance(clip_x0, bool) or not isinstance(clip_x0, (int, float)) or clip_x0 <= 0:
        raise ConfigError(f"clip_x0 must be a positive number or (lo, hi), got {clip_x0!r}")
    return float(clip_x0)


class _ClipCache:
    """Applies a clip spec; tensor bounds are cast to x's (device, dtype) once and cached."""

    def __init__(self, clip_x0: ClipSpec) -> None:
        self.spec = check_clip(clip_x0)
        self._bounds: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def __call__(self, x0: Tensor) -> Tensor:
        if self.spec is None:
            return x0
        if isinstance(self.spec, float):
            return x0.clamp(-self.spec, self.spec)
        key = (x0.device, x0.dtype)
        if key not in self._bounds:
            lo, hi = self.spec
            self._bounds[key] = (
                torch.as_tensor(lo, dtype=x0.dtype, device=x0.device),
                torch.as_tensor(hi, dtype=x0.dtype, device=x0.device),
            )
        lo_t, hi_t = self._bounds[key]
        # torch.clamp with tensor bounds is out-of-place and passes gradient where not clipped.
        return torch.clamp(x0, min=lo_t, max=hi_t)


def draw_noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One ``torch.randn`` of x's shape/dtype, the draw diffusers' ``randn_tensor`` makes.

    A CPU generator with x on another device draws on the CPU and moves the result, as
    diffusers does, so CPU-seeded runs give the same numbers on any device.
    """
    device = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


def resolve_noise(x: Tensor, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
    """Explicit ``noise`` if given (cast to x), else a fresh draw from ``generator``."""
    if noise is not None:
        if generator is not None:
            raise ConfigError("pass either generator or noise to step(), not both")
        if noise.shape != x.shape:
            raise ConfigError(f"noise shape {tuple(noise.shape)} != sample shape {tuple(x.shape)}")
        return noise.to(device=x.device, dtype=x.dtype)
    return draw_noise(x, generator)


def check_timestep(t: int | Tensor, num_steps: int, who: str) -> int:
    """Turn a step's ``t`` (int or 1-element tensor) into an int in [0, T)."""
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ConfigError(
                f"{who}.step takes one int timestep, got a tensor of shape {tuple(t.shape)}"
            )
        t = int(t.item())
    t = int(t)
    if not 0 <= t < num_steps:
        raise ConfigError(f"{who}: timestep {t} outside [0, {num_steps})")
    return t
