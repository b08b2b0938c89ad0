"""Example algorithm: behaviour cloning by mean-squared error, as small as the contract allows.

It shows what a new algorithm needs (docs/architecture.md, "How to add an algorithm"): this one
file and one registry line (tests/conftest.py adds `ALGOS["example-bc"] = "example_algo"`); the
shared harness in tests/test_algos.py then trains, checkpoints, reloads, acts and resumes it
exactly like every built-in algorithm. Paper: none (the textbook regression baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffrl.algos import AgentBase, DataSpec
from diffrl.config import TrainConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler
from diffrl.data.normalizers import from_unit_box, to_unit_box
from diffrl.nets import mlp


@dataclass(frozen=True)
class Config(TrainConfig):
    algo: str = doc("example-bc", "algorithm name")
    lr: float = doc(1e-3, "Adam learning rate", ge=0)
    hidden: int = doc(64, "width of the hidden layers", ge=1)


def presets(dataset: str) -> dict[str, Any]:
    return {}


class Agent(AgentBase):
    """a = tanh(f_theta(s)) in [-1, 1], mapped to the action bounds; trained by MSE."""

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.net = mlp(spec.obs_dim, (config.hidden, config.hidden), spec.act_dim)
        self.register_buffer("low", torch.tensor(spec.action_low))
        self.register_buffer("high", torch.tensor(spec.action_high))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr)

    def fit_normalizers(self, dataset: Any) -> None:
        pass  # the example needs none

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        return TransitionSampler(dataset, device)

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        target = to_unit_box(batch.action, self.low, self.high)
        loss = (torch.tanh(self.net(batch.obs)) - target).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return from_unit_box(torch.tanh(self.net(obs)), self.low, self.high)

    def train_state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
