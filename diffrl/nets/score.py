"""QGPO's networks: the behaviour model's noise predictor and the time-dependent energy model.

Both follow the official code (ChenDRAG/CEP-energy-guided-diffusion, ``diffusion_SDE/model.py``,
classes ``ScoreNet``, ``Residual_Block`` and ``GuidanceQt``) layer for layer:

- :class:`ScoreResMLP`: a residual MLP U-shape over the action, 512 -> 256 -> 128 -> 128 ->
  256 -> 512 with skip concatenations, SiLU; the state and the Gaussian-Fourier embedding of t
  enter every block through a shared 128-d conditioning vector. The official network returns
  h / sigma_t as the score, i.e. eps = -h; this one returns eps directly (the last layer's sign
  is a parametrisation, not a different model).
- :class:`TimeEnergyMLP`: f(a_t, s, t) = MLP(cat[a_t, emb(t), s]), 4 x 256 SiLU.
"""

from __future__ import annotations

import torch
from torch import nn

from diffrl.errors import ConfigError
from diffrl.nets.embeddings import GaussianFourierEmbedding
from diffrl.nets.mlp import check_positive, mlp
from diffrl.nets.onednn import Linear
from diffrl.precision import Float32Linear


def _time_batch(t: torch.Tensor | float, rows: int, like: torch.Tensor) -> torch.Tensor:
    """t as a (rows,) tensor: a float or 0-d tensor is broadcast, a (rows,) tensor kept."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(rows)
    if t.shape != (rows,):
        raise ConfigError(f"time t must be a scalar or have shape ({rows},), got {tuple(t.shape)}")
    return t


class ResidualBlock(nn.Module):
    """h = SiLU(W2 (SiLU(W1 x) + V SiLU(c))) + skip(x); skip is linear when the width changes."""

    def __init__(self, in_dim: int, out_dim: int, cond_dim: int = 128) -> None:
        super().__init__()
        self.dense1 = Linear(in_dim, out_dim)
        self.dense2 = Linear(out_dim, out_dim)
        self.time_mlp = Linear(cond_dim, out_dim)
        self.skip = Linear(in_dim, out_dim) if in_dim != out_dim else nn.Identity()
        self.act = nn.SiLU()

    def cond_term(self, cond_act: torch.Tensor) -> torch.Tensor:
        """V SiLU(c): depends on (s, t) only, so it can be computed once per state."""
        return self.time_mlp(cond_act)

    def forward(self, x: torch.Tensor, cond_term: torch.Tensor) -> torch.Tensor:
        h = self.act(self.dense1(x)) + cond_term
        return self.act(self.dense2(h)) + self.skip(x)


class ScoreResMLP(nn.Module):
    """eps_theta(x_t, t, s) of the VP-SDE behaviour model (QGPO's ``ScoreNet``).

    Shapes
    ------
    x : (N, act_dim), t : float or (S,), obs : (S, obs_dim) with N = S * r: each state's r rows
    are consecutive (``repeat_interleave`` layout), and the state/time terms are computed once
    per state.  ->  (N, act_dim)
    """

    def __init__(self, obs_dim: int, act_dim: int, embed_dim: int = 32, cond_dim: int = 128):
        super().__init__()
        check_positive(obs_dim=obs_dim, act_dim=act_dim, embed_dim=embed_dim, cond_dim=cond_dim)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.t_embed = nn.Sequential(
            GaussianFourierEmbedding(embed_dim), Linear(embed_dim, embed_dim)
        )
        self.obs_embed = nn.Sequential(Linear(obs_dim, 32), nn.SiLU())
        self.cond = nn.Sequential(
            Linear(embed_dim + 32, cond_dim), nn.SiLU(), Linear(cond_dim, cond_dim)
        )
        self.down1 = ResidualBlock(act_dim, 512, cond_dim)
        self.down2 = ResidualBlock(512, 256, cond_dim)
        self.down3 = ResidualBlock(256, 128, cond_dim)
        self.middle = ResidualBlock(128, 128, cond_dim)
        self.up3 = ResidualBlock(256, 256, cond_dim)
        self.up2 = ResidualBlock(512, 512, cond_dim)
        self.last = Float32Linear(1024, act_dim)  # float32 under bf16 (diffrl/precision.py)
        self.blocks = (self.down1, self.down2, self.down3, self.middle, self.up3, self.up2)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, obs: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.act_dim or obs.dim() != 2:
            raise ConfigError(
                f"ScoreResMLP expects x (N, {self.act_dim}) and obs (S, {self.obs_dim}), "
                f"got {tuple(x.shape)} and {tuple(obs.shape)}"
            )
        if obs.shape[1] != self.obs_dim or x.shape[0] % obs.shape[0]:
            raise ConfigError(
                f"ScoreResMLP: obs {tuple(obs.shape)} does not match x {tuple(x.shape)} "
                f"(need obs_dim {self.obs_dim} and N a multiple of S)"
            )
        rep = x.shape[0] // obs.shape[0]
        t = _time_batch(t, obs.shape[0], x)
        c = self.cond(torch.cat([self.obs_embed(obs), self.t_embed(t)], dim=-1))
        c = torch.nn.functional.silu(c)
        terms = [b.cond_term(c) for b in self.blocks]
        if rep > 1:
            terms = [v.repeat_interleave(rep, dim=0) for v in terms]
        d1 = self.down1(x, terms[0])
        d2 = self.down2(d1, terms[1])
        d3 = self.down3(d2, terms[2])
        u3 = self.middle(d3, terms[3])
        u2 = self.up3(torch.cat([d3, u3], dim=-1), terms[4])
        u1 = self.up2(torch.cat([d2, u2], dim=-1), terms[5])
        return self.last(torch.cat([d1, u1], dim=-1))


class TimeEnergyMLP(nn.Module):
    """The intermediate energy f_phi(a_t, s, t) of CEP (QGPO's ``GuidanceQt``).

    Shapes
    ------
    action : (N, act_dim), t : float or (N,), obs : (N, obs_dim)  ->  (N, 1)
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: int = 256, n_layers: int = 4, embed_dim: int = 32
    ) -> None:
        super().__init__()
        check_positive(obs_dim=obs_dim, act_dim=act_dim, hidden=hidden, n_layers=n_layers)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.t_embed = nn.Sequential(
            GaussianFourierEmbedding(embed_dim), Linear(embed_dim, embed_dim)
        )
        self.net = mlp(act_dim + embed_dim + obs_dim, [hidden] * n_layers, 1, nn.SiLU)

    def forward(
        self, action: torch.Tensor, t: torch.Tensor | float, obs: torch.Tensor
    ) -> torch.Tensor:
        if action.shape[-1] != self.act_dim or obs.shape[-1] != self.obs_dim:
            raise ConfigError(
                f"TimeEnergyMLP expects action (N, {self.act_dim}) and obs (N, {self.obs_dim}), "
                f"got {tuple(action.shape)} and {tuple(obs.shape)}"
            )
        emb = self.t_embed(_time_batch(t, action.shape[0], action))
        return self.net(torch.cat([action, emb, obs], dim=-1))

    def action_grad(
        self, action: torch.Tensor, t: torch.Tensor | float, obs: torch.Tensor
    ) -> torch.Tensor:
        """d f / d action, (N, act_dim), by the chain rule written out (no autograd graph).

        The same numbers as autograd's (tested); being a plain forward computation it can be
        compiled together with the sampler, which autograd.grad inside a graph cannot.
        """
        emb = self.t_embed(_time_batch(t, action.shape[0], action))
        h = torch.cat([action, emb, obs], dim=-1)
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        sig = []
        for layer in linears[:-1]:
            z = layer(h)
            s = torch.sigmoid(z)
            sig.append((s, z))
            h = z * s
        # Backward from the scalar output: g = W_out, then through each SiLU and Linear.
        g = linears[-1].weight.expand(action.shape[0], -1)
        for layer, (s, z) in zip(reversed(linears[:-1]), reversed(sig), strict=True):
            g = (g * (s * (1.0 + z * (1.0 - s)))) @ layer.weight
        return g[:, : self.act_dim]
