"""Critics: the twin Q-network shared by Diffusion-QL, QGPO and DIPO, and a state-value MLP.

:class:`TwinQ` matches Diffusion-QL's ``Critic`` (official ``agents/ql_diffusion.py``): two
independent MLPs on cat([obs, action]), 3 x 256 Mish each.
"""

from __future__ import annotations

import torch
from torch import nn

from diffrl.errors import ConfigError
from diffrl.nets.activations import Mish
from diffrl.nets.mlp import Activation, check_positive, mlp


class TwinQ(nn.Module):
    """Two independent Q-functions Q_1, Q_2 (s, a) -> R (clipped double Q).

    The heads share no parameters: the min over two independently fitted estimates is what
    counters over-estimation, and Diffusion-QL's actor loss picks one head at random.

    Shapes
    ------
    obs : (B, obs_dim), action : (B, act_dim)  ->  q1, q2 : (B, 1) each
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        n_layers: int = 3,
        activation: Activation = Mish,
    ) -> None:
        super().__init__()
        check_positive(obs_dim=obs_dim, act_dim=act_dim, hidden=hidden, n_layers=n_layers)
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.q1_model = mlp(obs_dim + act_dim, [hidden] * n_layers, 1, activation)
        self.q2_model = mlp(obs_dim + act_dim, [hidden] * n_layers, 1, activation)

    def _input(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if obs.shape[-1] != self.obs_dim or action.shape[-1] != self.act_dim:
            raise ConfigError(
                f"TwinQ expects obs (B, {self.obs_dim}) and action (B, {self.act_dim}), "
                f"got {tuple(obs.shape)} and {tuple(action.shape)}"
            )
        return torch.cat([obs, action], dim=-1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads: (q1, q2), each (B, 1)."""
        x = self._input(obs, action)
        return self.q1_model(x), self.q2_model(x)

    def q1(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """First head only, (B, 1) (TD3-style actor losses need just one)."""
        return self.q1_model(self._input(obs, action))

    def q2(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Second head only, (B, 1)."""
        return self.q2_model(self._input(obs, action))

    def q_min(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Elementwise min(Q_1, Q_2), (B, 1): the pessimistic estimate used in targets."""
        q1, q2 = self(obs, action)
        return torch.minimum(q1, q2)


class ValueMLP(nn.Module):
    """State value V(s) -> R (IQL-style baselines).

    Shapes
    ------
    obs : (B, obs_dim)  ->  (B, 1)
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: int = 256,
        n_layers: int = 3,
        activation: Activation = Mish,
    ) -> None:
        super().__init__()
        check_positive(obs_dim=obs_dim, hidden=hidden, n_layers=n_layers)
        self.obs_dim = obs_dim
        self.net = mlp(obs_dim, [hidden] * n_layers, 1, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.shape[-1] != self.obs_dim:
            raise ConfigError(f"ValueMLP expects obs (B, {self.obs_dim}), got {tuple(obs.shape)}")
        return self.net(obs)
