"""TD3+BC (Fujimoto & Gu 2021): TD3 with a behaviour-cloning term, run through d3rlpy.

Paper: "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021 (arXiv
2106.06860); implementation: `d3rlpy.algos.TD3PlusBC`.

Actor loss: -lambda Q(s, pi(s)) + (pi(s) - a)^2 with lambda = alpha / mean|Q| (alpha 2.5); TD3's
twin critics, target-policy smoothing (sigma 0.2, clip 0.5) and delayed actor updates (every 2
steps). Observations are standardised with the dataset's mean and std, as in the paper.

Where diffrl differs from running d3rlpy alone: batches, observation normalisation, evaluation,
checkpoints and resume are diffrl's (the same as for every other algorithm); the update itself
is d3rlpy's. Install: see `diffrl/algos/_d3rlpy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffrl.algos._d3rlpy import BaseConfig, D3rlpyAgent, toy_bandit_preset
from diffrl.config import doc


@dataclass(frozen=True)
class Config(BaseConfig):
    algo: str = doc("td3bc", "algorithm name")
    obs_norm: str = doc(
        "gaussian",
        "observation normaliser (the paper standardises)",
        choices=("none", "gaussian", "limits"),
    )
    alpha: float = doc(2.5, "lambda = alpha / mean |Q| weighs the Q term against BC", ge=0)
    actor_lr: float = doc(3e-4, "actor Adam learning rate", ge=0)
    critic_lr: float = doc(3e-4, "critic Adam learning rate", ge=0)
    discount: float = doc(0.99, "gamma", ge=0, le=1)
    tau: float = doc(0.005, "Polyak rate of the targets", gt=0, le=1)
    policy_noise: float = doc(0.2, "target-policy smoothing sigma", ge=0)
    noise_clip: float = doc(0.5, "target-policy smoothing clip", ge=0)
    policy_freq: int = doc(2, "actor (and target) update every N critic updates", ge=1)


def presets(dataset: str) -> dict[str, Any]:
    return toy_bandit_preset() if dataset == "toy-bandit" else {}


class Agent(D3rlpyAgent):
    def make_d3rlpy_config(self, d3rlpy: Any) -> Any:
        c = self.config
        return d3rlpy.algos.TD3PlusBCConfig(
            batch_size=c.batch_size,
            gamma=c.discount,
            tau=c.tau,
            alpha=c.alpha,
            actor_learning_rate=c.actor_lr,
            critic_learning_rate=c.critic_lr,
            target_smoothing_sigma=c.policy_noise,
            target_smoothing_clip=c.noise_clip,
            update_actor_interval=c.policy_freq,
        )
