"""BC: deterministic behaviour cloning (an MLP fitted by MSE), run through d3rlpy.

The plain baseline of the offline RL papers; implementation: `d3rlpy.algos.BC` (256-256 ReLU,
tanh output).

Where diffrl differs from running d3rlpy alone: batches, evaluation, checkpoints and resume are
diffrl's (the same as for every other algorithm); the update itself is d3rlpy's. The batch and
learning rate follow the offline RL baselines' usual 256 / 3e-4 rather than d3rlpy's 100 / 1e-3
defaults, so that BC sees the same batches as the other algorithms. Install: see
`diffrl/algos/_d3rlpy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffrl.algos._d3rlpy import BaseConfig, D3rlpyAgent, toy_bandit_preset
from diffrl.config import doc


@dataclass(frozen=True)
class Config(BaseConfig):
    algo: str = doc("bc", "algorithm name")
    lr: float = doc(3e-4, "Adam learning rate", ge=0)
    obs_norm: str = doc(
        "gaussian", "observation normaliser", choices=("none", "gaussian", "limits")
    )


def presets(dataset: str) -> dict[str, Any]:
    return toy_bandit_preset() if dataset == "toy-bandit" else {}


class Agent(D3rlpyAgent):
    def make_d3rlpy_config(self, d3rlpy: Any) -> Any:
        c = self.config
        return d3rlpy.algos.BCConfig(batch_size=c.batch_size, learning_rate=c.lr)
