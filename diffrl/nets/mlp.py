"""Multi-layer perceptrons: a builder and the Diffusion-QL denoiser.

:class:`DiffusionMLP` is the noise-prediction network of Diffusion-QL / Diffusion-BC
(Wang, Hunt, Zhou 2022; official ``agents/model.py``, class ``MLP``): the same layers in the same
order, so its parameter count equals the official one (141,363 for hopper: obs 11, action 3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from diffrl.errors import ConfigError
from diffrl.nets.activations import Mish, mish
from diffrl.nets.embeddings import SinusoidalPosEmb
from diffrl.nets.onednn import Linear, linear
from diffrl.precision import Float32Linear, linear_fp32

Activation = Callable[[], nn.Module]


def check_positive(**dims: int) -> None:
    """Raise ConfigError naming the first keyword whose value is not a positive int."""
    for name, value in dims.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    activation: Activation = Mish,
    out_activation: Activation | None = None,
) -> nn.Sequential:
    """Linear -> activation for each hidden width, then Linear(out_dim) [-> out_activation].

    ``hidden=()`` gives a single Linear layer. ``activation`` is a class (or factory) so that
    every layer gets its own instance.

    Shapes: (..., in_dim) -> (..., out_dim).
    """
    check_positive(in_dim=in_dim, out_dim=out_dim)
    for width in hidden:
        check_positive(hidden_width=width)
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [Linear(prev, width), activation()]  # oneDNN's products (nets/onednn.py)
        prev = width
    # The output layer stays float32 under bf16 autocast (diffrl/precision.py).
    layers.append(Float32Linear(prev, out_dim))
    if out_activation is not None:
        layers.append(out_activation())
    return nn.Sequential(*layers)


class DiffusionMLP(nn.Module):
    """Diffusion-QL's state-conditioned noise predictor eps_theta(x_t, t, obs).

    time_mlp : SinusoidalPosEmb(t_dim) -> Linear(t_dim, t_hidden) -> Mish -> Linear(t_dim),
               t_hidden 2 t_dim by default (Diffusion-QL; DIPO: t_dim 32, t_hidden 256)
    body     : cat([x_t, t_emb, obs]) -> n_layers x (Linear(hidden), Mish) -> Linear(act_dim)

    The concatenation order [x_t, t_emb, obs] is the official one; it matters only for loading
    official weights, which then map one to one (``mid_layer``/``final_layer`` there are
    ``body[:-1]``/``body[-1]`` here).

    Parameters
    ----------
    obs_dim, act_dim : sizes of the state and the action.
    hidden : width of every hidden layer (256 in the paper; 128 for the toy bandit).
    n_layers : number of hidden layers (3 in the paper).
    t_dim : size of the time embedding (16 in the paper).
    t_hidden : width of the time MLP's hidden layer (0 = 2 t_dim).

    Shapes
    ------
    x_t : (B, act_dim), t : (B,) long or float, obs : (B, obs_dim)  ->  (B, act_dim)
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        n_layers: int = 3,
        t_dim: int = 16,
        t_hidden: int = 0,
    ) -> None:
        super().__init__()
        check_positive(obs_dim=obs_dim, act_dim=act_dim, hidden=hidden, n_layers=n_layers)
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        t_hidden = t_hidden or 2 * t_dim
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(t_dim),
            nn.Linear(t_dim, t_hidden),
            Mish(),
            nn.Linear(t_hidden, t_dim),
        )
        self.t_dim = t_dim
        self.body = mlp(act_dim + t_dim + obs_dim, [hidden] * n_layers, act_dim, Mish)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        if x_t.shape[-1] != self.act_dim or obs.shape[-1] != self.obs_dim:
            raise ConfigError(
                f"DiffusionMLP expects x_t (B, {self.act_dim}) and obs (B, {self.obs_dim}), "
                f"got {tuple(x_t.shape)} and {tuple(obs.shape)}"
            )
        t_emb = self.time_mlp(t).expand(x_t.shape[0], -1)  # (B, t_dim); a 0-d t broadcasts
        return self.body(torch.cat([x_t, t_emb, obs], dim=1))

    def split_first_layer(
        self, obs: torch.Tensor, steps: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The pieces of the network for a fixed obs (B, obs_dim) along a chain of `steps`.

        The first layer acts on cat([x_t, t_emb, obs]), so it splits into x_t W_x^T + t_emb W_t^T +
        (obs W_s^T + b); the last two terms do not change along a sampling chain. Returns
        h_s (B, H) = obs W_s^T + b, h_t (K, H) = time_mlp(steps) W_t^T, W_x (H, act_dim) and the
        [(W, b)] of the Linear layers after the first (each preceded by Mish). Differentiable.
        """
        first = self.body[0]
        linears = [m for m in self.body if isinstance(m, nn.Linear)][1:]
        a, td = self.act_dim, self.t_dim
        w = first.weight  # (H, act_dim + t_dim + obs_dim)
        t = torch.as_tensor(list(steps), device=obs.device, dtype=w.dtype)
        h_t = self.time_mlp(t) @ w[:, a : a + td].t()  # (K, H)
        h_s = torch.addmm(first.bias, obs, w[:, a + td :].t())  # (B, H)
        return h_s, h_t, w[:, :a], [(lin.weight, lin.bias) for lin in linears]

    def condition(
        self, obs: torch.Tensor, steps: Sequence[int]
    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """eps(x_t, k) = forward(x_t, steps[k], obs) for a fixed obs (B, obs_dim).

        The step-invariant terms of the first layer (`split_first_layer`) are computed once
        here instead of at every step, which leaves the matrix products of the hidden layers as
        the per-step work. Same weights, same function, differentiable w.r.t. the parameters,
        obs and x_t.
        """
        h_s, h_t, w_x, layers = self.split_first_layer(obs, steps)
        w_x_t = w_x.t()
        h_base = [h_s + h_t[k] for k in range(len(steps))]

        def eps(x_t: torch.Tensor, k: int) -> torch.Tensor:
            h = torch.addmm(h_base[k], x_t, w_x_t)
            for weight, bias in layers[:-1]:
                h = linear(mish(h), weight, bias)
            return linear_fp32(mish(h), *layers[-1])  # the output layer (diffrl/precision.py)

        return eps
