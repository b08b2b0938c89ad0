"""Run a d3rlpy (Seno & Imai, JMLR 2022) algorithm inside diffrl's training loop.

The classic offline baselines (TD3+BC, IQL, BC) come from d3rlpy, a maintained third-party
implementation, rather than being written again here. This adapter makes a d3rlpy algorithm an
Agent: diffrl samples the batches (the same sampler, normalisers and rewards as every other
algorithm), calls d3rlpy's update for one gradient step, and evaluates, checkpoints and resumes
it like any other run. So a baseline and a diffusion policy see the same data, the same number
of gradient steps and the same evaluation.

Install: d3rlpy 2.8.1 pins gymnasium 1.0.0, which would downgrade gymnasium and break
gymnasium-robotics, so it is installed without its dependencies and the ones it needs come from
the `baselines` extra:

    .venv/bin/pip install --no-deps d3rlpy==2.8.1
    .venv/bin/pip install -c constraints.txt -e ".[baselines]"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffrl.algos import AgentBase, DataSpec
from diffrl.algos.base import TOY_BUDGET
from diffrl.config import PRECISIONS, TrainConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler, make_normalizer
from diffrl.data.normalizers import refit
from diffrl.errors import ConfigError

INSTALL = "pip install --no-deps d3rlpy==2.8.1 && pip install -c constraints.txt -e '.[baselines]'"


def import_d3rlpy() -> Any:
    try:
        import d3rlpy
    except ImportError as exc:
        raise ConfigError(
            f"this baseline needs d3rlpy ({exc}); install it with: {INSTALL}"
        ) from None
    return d3rlpy


@dataclass(frozen=True)
class BaseConfig(TrainConfig):
    """Keys shared by the d3rlpy baselines (each adds its own)."""

    steps: int = doc(1_000_000, "total gradient steps", ge=1)
    eval_every: int = doc(50_000, "evaluate every N steps", ge=0)
    save_every: int = doc(10_000, "checkpoint every N steps (and at every evaluation)", ge=1)
    obs_norm: str = doc(
        "none",
        "observation normaliser: none | gaussian | limits",
        choices=("none", "gaussian", "limits"),
    )
    reward_scale: float = doc(1.0, "rewards become reward_scale * r + reward_bias")
    reward_bias: float = doc(0.0, "see reward_scale")
    precision: str = doc("fp32", "fp32 only: d3rlpy builds these networks", choices=PRECISIONS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.precision != "fp32":
            # d3rlpy's output layers are plain Linear layers: under autocast its Q-values and
            # actions would come out in bfloat16 (diffrl/precision.py says why that is wrong).
            raise ConfigError(
                f"precision {self.precision}: {self.algo or 'this baseline'} runs d3rlpy's own "
                "networks, which diffrl does not build for bf16; use precision fp32"
            )


def toy_bandit_preset() -> dict[str, Any]:
    """The toy bandit's budget for the d3rlpy baselines (`TOY_BUDGET`, diffrl/algos/base.py)."""
    return dict(TOY_BUDGET)


class D3rlpyAgent(AgentBase):
    """An Agent around a d3rlpy algorithm; subclasses implement `make_d3rlpy_config`.

    The d3rlpy networks are registered as submodules (their weights are in the state_dict and
    thus in every checkpoint); their optimisers and d3rlpy's gradient-step counter are the
    train state. Actions are mapped from the dataset's bounds to [-1, 1] (d3rlpy's policies
    end in tanh) and back.
    """

    def __init__(self, config: BaseConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        d3rlpy = import_d3rlpy()
        self.obs_normalizer = make_normalizer(config.obs_norm, None, spec.obs_dim)
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32))
        self.register_buffer("reward_scale", torch.tensor(float(config.reward_scale)))
        self.algo = self.make_d3rlpy_config(d3rlpy).create(device=False)
        self.algo.create_impl((spec.obs_dim,), spec.act_dim)
        modules = self.algo.impl.modules
        self.nets = nn.ModuleDict(modules.get_torch_modules())
        self._optims = {
            name: opt
            for name, opt in vars(modules).items()
            if hasattr(opt, "optim") and hasattr(opt, "state_dict")
        }
        self.grad_step = 0
        self._device = "cpu:0"

    def make_d3rlpy_config(self, d3rlpy: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        # Keep d3rlpy's own notion of the device in step with .to(device).
        out = super()._apply(fn, recurse)
        device = self.action_low.device
        self._device = f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu:0"
        impl = getattr(getattr(self, "algo", None), "_impl", None)
        if impl is not None:
            impl._device = self._device
        return out

    def reward_scale_for(self, dataset: Any) -> float:
        """The reward scale used in training (the config's; IQL overrides)."""
        return float(self.config.reward_scale)

    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)
        self.reward_scale.fill_(self.reward_scale_for(dataset))

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        return TransitionSampler(
            dataset,
            device,
            obs_normalizer=self.obs_normalizer,
            reward_scale=float(self.reward_scale),
            reward_bias=self.config.reward_bias,
        )

    def _to_unit(self, action: torch.Tensor) -> torch.Tensor:
        span = (self.action_high - self.action_low).clamp_min(1e-6)
        return 2.0 * (action - self.action_low) / span - 1.0

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        d3rlpy = import_d3rlpy()
        ones = torch.ones_like(batch.reward)
        tb = d3rlpy.torch_utility.TorchMiniBatch(
            observations=batch.obs,
            actions=self._to_unit(batch.action),
            rewards=batch.reward,
            next_observations=batch.next_obs,
            next_actions=torch.zeros_like(batch.action),
            returns_to_go=torch.zeros_like(batch.reward),
            terminals=1.0 - batch.not_done,
            intervals=ones,
            device=self._device,
        )
        out = self.algo.impl.update(tb, self.grad_step)
        self.grad_step += 1
        return {k: float(v) for k, v in out.items()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): the policy's deterministic (best) action."""
        x = self.algo.impl.predict_best_action(self.obs_normalizer.normalize(obs))
        x = x.clamp(-1.0, 1.0)
        return self.action_low + (x + 1.0) * 0.5 * (self.action_high - self.action_low)

    def train_state_dict(self) -> dict[str, Any]:
        return {
            "optims": {k: v.state_dict() for k, v in self._optims.items()},
            "grad_step": self.grad_step,
        }

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self._optims.items():
            v.load_state_dict(state["optims"][k])
        self.grad_step = int(state["grad_step"])
