"""The continuous-time VP-SDE (Song et al. 2021) and DPM-Solver for it (Lu et al. 2022a, 2022b).

QGPO's behaviour model is a noise-prediction network eps(x_t, t) for t in (0, 1] of the VP-SDE
with linear beta(t) = beta_0 + t (beta_1 - beta_0) (0.1 -> 20):

    alpha_t = exp(-t^2 (beta_1 - beta_0) / 4 - t beta_0 / 2),  sigma_t = sqrt(1 - alpha_t^2),
    lambda_t = log(alpha_t / sigma_t)  (half the log-SNR),  x_t = alpha_t x_0 + sigma_t eps.

`dpm_solve` integrates the probability-flow ODE from t = 1 to t = t_end with DPM-Solver in
data-prediction form (DPM-Solver++; x0 = (x_t - sigma_t eps) / alpha_t), order 1, 2 or 3,
singlestep (intermediate points inside each step) or multistep (previous steps' estimates),
on a grid uniform in t (QGPO's setting) or in lambda; `steps` counts model evaluations.
Guidance is the caller's: pass an `eps_fn` that already adds it (for energy guidance,
eps - sigma_t * scale * grad_x f(x_t, t)). Everything is differentiable; no random draws here.

Updates, h = lambda_t - lambda_s, phi_1 = expm1(-h) (Lu et al. 2022b, Alg. 1-2 and app. B):
    order 1:        x_t = sigma_t/sigma_s x_s - alpha_t phi_1 D0
    multistep 2:    ... - 0.5 alpha_t phi_1 D1,  D1 = (D0 - D0_prev) / r0,  r0 = h_prev / h
    multistep 3:    ... + alpha_t phi_2 D1 - alpha_t phi_3 D2  (phi_2 = phi_1/h + 1,
                    phi_3 = phi_2/h - 1/2; D1, D2 from the last three estimates)
    singlestep 2/3: intermediate points at lambda_s + r h, the grid points inside the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffrl.errors import ConfigError


class VPSDE:
    """Linear-beta VP-SDE marginals. t may be a float or a tensor (any shape)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 <= beta_min < beta_max:
            raise ConfigError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def log_alpha(self, t):  # noqa: ANN001, ANN201 - float or Tensor
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):  # noqa: ANN001, ANN201
        la = self.log_alpha(t)
        return torch.exp(la) if isinstance(la, Tensor) else math.exp(la)

    def sigma(self, t):  # noqa: ANN001, ANN201
        la = self.log_alpha(t)
        if isinstance(la, Tensor):
            return torch.sqrt(-torch.expm1(2.0 * la))
        return math.sqrt(-math.expm1(2.0 * la))

    def lam(self, t: float) -> float:
        """lambda_t = log alpha_t - log sigma_t."""
        la = self.log_alpha(t)
        return la - 0.5 * math.log(-math.expm1(2.0 * la))

    def t_of_lambda(self, lam: float) -> float:
        """Inverse of lambda_t (closed form: log alpha is quadratic in t)."""
        # log alpha = -0.5 log(1 + e^{-2 lambda}); solve a t^2 + b t + log_alpha = 0.
        log_alpha = -0.5 * math.log1p(math.exp(-2.0 * lam))
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return 2.0 * (-log_alpha) / (b + math.sqrt(b * b + 4.0 * a * (-log_alpha)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = alpha_t x0 + sigma_t noise; t: (B,) in (0, 1]."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return self.alpha(t).view(shape) * x0 + self.sigma(t).view(shape) * noise


EpsFn = Callable[[Tensor, float], Tensor]
SKIP_TYPES = ("time_uniform", "logSNR")


X0Fn = Callable[[Tensor, float], Tensor]


def _x0_fn(sde: VPSDE, eps_fn: EpsFn, clip_x0: tuple[float, float] | None) -> X0Fn:
    """x0 estimate (x - sigma_t eps) / alpha_t, clamped to `clip_x0` = (low, high) if given."""

    def x0(x: Tensor, t: float) -> Tensor:
        out = (x - sde.sigma(t) * eps_fn(x, t)) / sde.alpha(t)
        return out if clip_x0 is None else out.clamp(*clip_x0)

    return x0


def time_grid(
    sde: VPSDE, n: int, t_start: float = 1.0, t_end: float = 1e-3, skip: str = "time_uniform"
) -> list[float]:
    """n + 1 times from t_start down to t_end: uniform in t, or uniform in lambda ("logSNR")."""
    if skip == "time_uniform":
        return [t_start + (t_end - t_start) * i / n for i in range(n + 1)]
    if skip == "logSNR":
        lam_s, lam_e = sde.lam(t_start), sde.lam(t_end)
        inner = [sde.t_of_lambda(lam_s + (lam_e - lam_s) * i / n) for i in range(1, n)]
        return [t_start, *inner, t_end]
    raise ConfigError(f"DPM-Solver skip type must be one of {SKIP_TYPES}, got {skip!r}")


def singlestep_orders(steps: int, order: int) -> list[int]:
    """DPM-Solver-fast: the orders of the singlestep updates that use exactly `steps` NFE."""
    if order == 1:
        return [1] * steps
    if order == 2:
        k = steps // 2 + steps % 2
        return [2] * k if steps % 2 == 0 else [2] * (k - 1) + [1]
    k = steps // 3 + 1
    if steps % 3 == 0:
        return [3] * (k - 2) + [2, 1]
    return [3] * (k - 1) + [steps % 3]


def dpm_solve(
    sde: VPSDE,
    eps_fn: EpsFn,
    x_T: Tensor,
    steps: int = 15,
    order: int = 2,
    method: str = "singlestep",
    t_end: float = 1e-3,
    t_start: float = 1.0,
    skip: str = "time_uniform",
    denoise_to_zero: bool = False,
    clip_x0: tuple[float, float] | None = None,
    after_step: Callable[[Tensor, float], Tensor] | None = None,
) -> Tensor:
    """Solve the diffusion ODE from x_T at t_start to x at t_end (B, ...).

    `steps` is the number of model evaluations (NFE), as in DPM-Solver's `sample`:
    - multistep: `steps` intervals of the grid, one evaluation each; the first intervals use
      lower orders to warm up and, as DPM-Solver does for fewer than 10 steps, the final ones too;
    - singlestep ("DPM-Solver-fast"): `singlestep_orders(steps, order)` updates, each spanning
      as many grid intervals as its order, with its intermediate points on the grid.
    With `denoise_to_zero`, one more evaluation returns the x0 estimate at t_end instead.
    With `clip_x0` = (low, high), every x0 estimate is clamped to it before it is used
    (DDPM's `clip_denoised`, DPM-Solver's thresholding); for data inside that box an exact
    model's estimate E[x_0 | x_t] lies in it already, so the clamp only corrects model errors.
    `after_step(x, t)`, if given, is applied to x_T and after every update, with t the time
    the update reached (inpainting; the intermediate points of a singlestep update see none).
    eps_fn(x, t) -> eps, with t a Python float.
    """
    if order not in (1, 2, 3):
        raise ConfigError(f"DPM-Solver order must be 1, 2 or 3, got {order}")
    if method not in ("multistep", "singlestep"):
        raise ConfigError(f"DPM-Solver method must be multistep or singlestep, got {method!r}")
    if steps < 1:
        raise ConfigError(f"DPM-Solver needs at least 1 step, got {steps}")
    if not 0.0 < t_end < t_start <= 1.0:
        raise ConfigError(f"DPM-Solver needs 0 < t_end < t_start <= 1, got {t_end}, {t_start}")
    x0_fn = _x0_fn(sde, eps_fn, clip_x0)
    ts = time_grid(sde, steps, t_start, t_end, skip)
    lams = [sde.lam(t) for t in ts]
    x = x_T if after_step is None else after_step(x_T, ts[0])
    if method == "multistep":
        prev: list[tuple[Tensor, float]] = []  # (x0 estimate, lambda) of earlier points
        for i in range(steps):
            d0 = x0_fn(x, ts[i])
            prev.append((d0, lams[i]))
            k = min(order, i + 1, steps - i if steps < 10 else order)
            x = _multistep_update(sde, x, ts[i], ts[i + 1], lams[i + 1] - lams[i], prev[-k:])
            prev = prev[-2:]
            if after_step is not None:
                x = after_step(x, ts[i + 1])
    else:
        i = 0
        for k in singlestep_orders(steps, order):
            x = _singlestep_update(sde, x0_fn, x, ts[i : i + k + 1], lams[i : i + k + 1])
            i += k
            if after_step is not None:
                x = after_step(x, ts[i])
    return x0_fn(x, ts[-1]) if denoise_to_zero else x


def clip_bounds(clip_x0: Any) -> tuple[float, float] | None:
    """None, c or (low, high) -> None or (low, high) (a float c means [-c, c])."""
    if clip_x0 is None or clip_x0 is False:
        return None
    if isinstance(clip_x0, (int, float)) and not isinstance(clip_x0, bool):
        return (-float(clip_x0), float(clip_x0))
    low, high = clip_x0
    return (float(low), float(high))


class VPSDEDPMSolver:
    """DPM-Solver (Lu et al. 2022a/b) on the VP-SDE behind the sampler contract
    (`diffrl.diffusion.loop.Sampler`): `sample(model_fn, x_T)` with model_fn(x, t) the noise
    prediction at a float time t. Deterministic: `generator` is accepted and unused.

    Args: see `dpm_solve`; `num_steps` is its `steps` (model evaluations, QGPO's 15).
    """

    def __init__(
        self,
        sde: VPSDE,
        num_steps: int = 15,
        order: int = 2,
        method: str = "singlestep",
        skip: str = "time_uniform",
        t_end: float = 1e-3,
        clip_x0: Any = None,
        denoise_to_zero: bool = False,
    ) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ConfigError(f"DPM-Solver needs at least 1 step, got {num_steps!r}")
        if order not in (1, 2, 3):
            raise ConfigError(f"DPM-Solver order must be 1, 2 or 3, got {order}")
        if method not in ("multistep", "singlestep"):
            raise ConfigError(f"DPM-Solver method must be multistep or singlestep, got {method!r}")
        if skip not in SKIP_TYPES:
            raise ConfigError(f"DPM-Solver skip type must be one of {SKIP_TYPES}, got {skip!r}")
        if not 0.0 < t_end < 1.0:
            raise ConfigError(f"DPM-Solver needs 0 < t_end < 1, got {t_end}")
        self.sde = sde
        self.num_steps, self.order, self.method, self.skip = num_steps, order, method, skip
        self.t_end = float(t_end)
        self.clip_x0 = clip_bounds(clip_x0)
        self.denoise_to_zero = denoise_to_zero

    @property
    def num_evals(self) -> int:
        return self.num_steps + int(self.denoise_to_zero)

    def sample(
        self,
        model_fn: EpsFn,
        x_T: Tensor,
        generator: torch.Generator | None = None,
        after_step: Callable[[Tensor, float], Tensor] | None = None,
    ) -> Tensor:
        return dpm_solve(
            self.sde,
            model_fn,
            x_T,
            steps=self.num_steps,
            order=self.order,
            method=self.method,
            t_end=self.t_end,
            skip=self.skip,
            denoise_to_zero=self.denoise_to_zero,
            clip_x0=self.clip_x0,
            after_step=after_step,
        )


def _multistep_update(
    sde: VPSDE, x: Tensor, s: float, t: float, h: float, hist: list[tuple[Tensor, float]]
) -> Tensor:
    a_t, sig_s, sig_t = sde.alpha(t), sde.sigma(s), sde.sigma(t)
    phi_1 = math.expm1(-h)
    d0, lam0 = hist[-1]
    out = (sig_t / sig_s) * x - (a_t * phi_1) * d0
    if len(hist) == 2:
        d_1, lam_1 = hist[-2]
        r0 = (lam0 - lam_1) / h
        out = out - (0.5 * a_t * phi_1 / r0) * (d0 - d_1)
    elif len(hist) == 3:
        d_1, lam_1 = hist[-2]
        d_2, lam_2 = hist[-3]
        r0, r1 = (lam0 - lam_1) / h, (lam_1 - lam_2) / h
        d1_0, d1_1 = (d0 - d_1) / r0, (d_1 - d_2) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        out = out + (a_t * phi_2) * d1 - (a_t * phi_3) * d2
    return out


def _singlestep_update(
    sde: VPSDE, x0_fn: X0Fn, x: Tensor, ts: list[float], lams: list[float]
) -> Tensor:
    """One singlestep update of order len(ts) - 1 from ts[0] to ts[-1]; the points between
    are its intermediate points, at r_k = (lambda_k - lambda_s) / h."""
    order = len(ts) - 1
    s, t = ts[0], ts[-1]
    h = lams[-1] - lams[0]
    a_t, sig_s, sig_t = sde.alpha(t), sde.sigma(s), sde.sigma(t)
    phi_1 = math.expm1(-h)
    d0 = x0_fn(x, s)
    base = (sig_t / sig_s) * x - (a_t * phi_1) * d0
    if order == 1:
        return base
    s1, r1 = ts[1], (lams[1] - lams[0]) / h
    x1 = (sde.sigma(s1) / sig_s) * x - (sde.alpha(s1) * math.expm1(-r1 * h)) * d0
    d1 = x0_fn(x1, s1)
    if order == 2:
        return base - (0.5 / r1) * (a_t * phi_1) * (d1 - d0)
    s2, r2 = ts[2], (lams[2] - lams[0]) / h
    phi_12 = math.expm1(-r2 * h)
    phi_22 = phi_12 / (r2 * h) + 1.0
    phi_2 = phi_1 / h + 1.0
    x2 = (
        (sde.sigma(s2) / sig_s) * x
        - (sde.alpha(s2) * phi_12) * d0
        + (r2 / r1) * (sde.alpha(s2) * phi_22) * (d1 - d0)
    )
    d2 = x0_fn(x2, s2)
    return base + (1.0 / r2) * (a_t * phi_2) * (d2 - d0)
