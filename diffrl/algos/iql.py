"""IQL (Kostrikov, Nair & Levine 2022): implicit Q-learning, run through d3rlpy.

Paper: "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022 (arXiv 2110.06169);
implementation: `d3rlpy.algos.IQL`.

V is fitted by expectile regression (tau 0.7) on min of twin target Qs, Q by TD to V(s'), and
the policy by advantage-weighted regression, weights exp(beta A) clipped at 100 (beta 3).
As in the paper for locomotion, rewards are scaled by 1000 / (max - min episode return) of the
dataset, and the actor's learning rate follows a cosine schedule over the run.

Where diffrl differs from running d3rlpy alone: batches, reward scaling, evaluation,
checkpoints and resume are diffrl's (the same as for every other algorithm); the update itself
is d3rlpy's. Install: see `diffrl/algos/_d3rlpy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from diffrl.algos._d3rlpy import BaseConfig, D3rlpyAgent, toy_bandit_preset
from diffrl.config import doc


@dataclass(frozen=True)
class Config(BaseConfig):
    algo: str = doc("iql", "algorithm name")
    expectile: float = doc(0.7, "expectile tau of the value regression", gt=0, le=1)
    beta: float = doc(3.0, "inverse temperature of the advantage weights", ge=0)
    max_weight: float = doc(100.0, "clip of the advantage weights", gt=0)
    actor_lr: float = doc(3e-4, "actor Adam learning rate (cosine-decayed over `steps`)", ge=0)
    critic_lr: float = doc(3e-4, "Q and V Adam learning rate", ge=0)
    discount: float = doc(0.99, "gamma", ge=0, le=1)
    tau: float = doc(0.005, "Polyak rate of the target Qs", gt=0, le=1)
    layer_norm: bool = doc(
        False,
        "layer normalisation in the Q and V networks (not in the paper; JAX-CORL's IQL uses it)",
    )
    reward_norm: str = doc(
        "return_range",
        "rewards: return_range (r * 1000 / (max - min return), the paper's locomotion rule) | "
        "none (reward_scale * r + reward_bias)",
        choices=("return_range", "none"),
    )

    # Before 0.2 the return-range rule was a flag.
    LEGACY_KEYS: ClassVar[dict[str, Any]] = {
        "return_scaled_rewards": lambda v: {
            "reward_norm": "return_range"
            if str(v).lower() in ("1", "true", "yes", "on")
            else "none"
        }
    }


def presets(dataset: str) -> dict[str, Any]:
    if dataset == "toy-bandit":
        # Rewards 0-5 as they are: the return-range rule is the paper's for locomotion, and on
        # one-step episodes it would scale them by about 140.
        return {**toy_bandit_preset(), "reward_norm": "none"}
    return {}


class Agent(D3rlpyAgent):
    def make_d3rlpy_config(self, d3rlpy: Any) -> Any:
        c = self.config
        actor_optim = d3rlpy.optimizers.AdamFactory(
            lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=c.steps)
        )
        # d3rlpy's default encoder (2 x 256 ReLU), with layer norm when asked.
        value_net = d3rlpy.models.encoders.VectorEncoderFactory(
            hidden_units=[256, 256], use_layer_norm=c.layer_norm
        )
        return d3rlpy.algos.IQLConfig(
            batch_size=c.batch_size,
            gamma=c.discount,
            tau=c.tau,
            expectile=c.expectile,
            weight_temp=c.beta,
            max_weight=c.max_weight,
            actor_learning_rate=c.actor_lr,
            critic_learning_rate=c.critic_lr,
            actor_optim_factory=actor_optim,
            critic_encoder_factory=value_net,
            value_encoder_factory=value_net,
        )

    def reward_scale_for(self, dataset: Any) -> float:
        if self.config.reward_norm == "none":
            return float(self.config.reward_scale)
        return dataset.return_range_scale()
