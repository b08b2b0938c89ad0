"""Collect D4RL-style datasets from a Gymnasium environment and a behaviour policy.

As D4RL did: actions are SAMPLED from the stochastic policy (not its mean), only whole episodes
are kept, `terminals` (true termination) and `timeouts` (time limit) are kept apart, and
`infos/qpos`, `infos/qvel` (MuJoCo state before the step) and `infos/action_log_probs` are
recorded. The same env id, policy and seed give the same dataset on the same machine.

Policies are SAC snapshots of stable-baselines3 (`step_XXXXXXX.zip`); they are read with torch
alone (the zip's `policy.pth`), so making a dataset does not need stable-baselines3, and the
actor runs in numpy, one observation at a time, which is faster than SB3's `predict` here.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from diffrl.data import OfflineDataset
from diffrl.errors import DatasetError
from diffrl.progress import bar as progress_bar
from diffrl.stepper import EnvStepper

# stable-baselines3's SAC clamps log-std to this range and adds this epsilon in the tanh
# log-probability correction.
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
TANH_EPS = 1e-6


class SACActor:
    """The actor of a stable-baselines3 SAC snapshot: tanh-squashed diagonal Gaussian.

    mu, log_std = heads(relu(W2 relu(W1 s + b1) + b2)); u ~ N(mu, std); a = tanh(u) in [-1, 1],
    then rescaled to the env's action bounds. log pi(a|s) includes the tanh correction.
    """

    def __init__(self, weights: dict[str, np.ndarray], source: str = "") -> None:
        self.source = source
        layers, i = [], 0
        while f"actor.latent_pi.{i}.weight" in weights:
            layers.append(
                (weights[f"actor.latent_pi.{i}.weight"], weights[f"actor.latent_pi.{i}.bias"])
            )
            i += 2  # Linear, ReLU, Linear, ReLU, ...
        if not layers or "actor.mu.weight" not in weights or "actor.log_std.weight" not in weights:
            raise DatasetError(f"{source}: not a stable-baselines3 SAC policy (no actor weights)")
        self.layers = layers
        self.mu = (weights["actor.mu.weight"], weights["actor.mu.bias"])
        self.log_std = (weights["actor.log_std.weight"], weights["actor.log_std.bias"])
        self.obs_dim = int(layers[0][0].shape[1])
        self.act_dim = int(self.mu[0].shape[0])

    @classmethod
    def load(cls, path: str | Path) -> SACActor:
        """From an SB3 snapshot (.zip) or diffrl's actor-only asset (.safetensors)."""
        import torch

        path = Path(path)
        if not path.exists():
            raise DatasetError(f"{path}: no such file")
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            weights = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
            return cls(weights, source=str(path))
        try:
            with zipfile.ZipFile(path) as zf:
                raw = zf.read("policy.pth")
        except (zipfile.BadZipFile, KeyError):
            raise DatasetError(
                f"{path}: not a stable-baselines3 snapshot (zip with policy.pth)"
            ) from None
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        weights = {k: v.double().numpy() for k, v in state.items() if k.startswith("actor.")}
        return cls(weights, source=str(path))

    def _heads(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = obs.astype(np.float64)
        for w, b in self.layers:
            h = np.maximum(h @ w.T + b, 0.0)
        mu = h @ self.mu[0].T + self.mu[1]
        log_std = np.clip(h @ self.log_std[0].T + self.log_std[1], LOG_STD_MIN, LOG_STD_MAX)
        return mu, log_std

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """(action in [-1, 1]^A, log pi(action | obs)) for one observation (obs_dim,)."""
        mu, log_std = self._heads(obs)
        std = np.exp(log_std)
        eps = rng.standard_normal(mu.shape)
        u = mu + std * eps
        a = np.tanh(u)
        logp = float(
            np.sum(-0.5 * eps**2 - log_std - 0.5 * np.log(2 * np.pi))
            - np.sum(np.log(1.0 - a**2 + TANH_EPS))
        )
        return a, logp

    def mean_action(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(self._heads(obs)[0])


def check_policy_fits(actor: SACActor, env: Any, env_id: str) -> None:
    obs_dim = int(np.prod(_obs_space(env).shape))
    act_dim = int(np.prod(env.action_space.shape))
    if (actor.obs_dim, actor.act_dim) != (obs_dim, act_dim):
        raise DatasetError(
            f"{actor.source}: policy takes obs {actor.obs_dim} -> action {actor.act_dim}, "
            f"but {env_id} has obs {obs_dim} -> action {act_dim}"
        )


def _obs_space(env: Any) -> Any:
    space = env.observation_space
    return (
        space["observation"]
        if hasattr(space, "spaces") and "observation" in space.spaces
        else space
    )


def collect(
    env_id: str,
    policy: SACActor | None,
    size: int,
    seed: int = 0,
    progress: bool = True,
    desc: str | None = None,
) -> OfflineDataset:
    """Whole episodes until at least `size` transitions; `policy=None` is uniform random."""
    stepper = EnvStepper(env_id, 1, seed, autoreset=True, dtype=np.float64)
    env = stepper.envs[0]
    if policy is not None:
        check_policy_fits(policy, env, env_id)
    rng = np.random.default_rng(seed)
    low, high = stepper.action_low, stepper.action_high
    uniform_logp = -float(np.sum(np.log(high - low)))
    mujoco = hasattr(env.unwrapped, "data") and hasattr(env.unwrapped.data, "qpos")

    cols: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next", "term", "tout", "logp")}
    qpos: list[np.ndarray] = []
    qvel: list[np.ndarray] = []
    starts: list[int] = []
    stepper.reset()
    env.action_space.seed(seed)
    bar = progress_bar(
        total=size, desc=desc or f"collect {env_id}", unit="step", disable=not progress
    )
    n = 0
    try:
        while n < size:
            starts.append(n)
            done = False
            while not done:  # one whole episode; the stepper starts the next one
                obs = stepper.obs[0].copy()
                if mujoco:
                    qpos.append(env.unwrapped.data.qpos.copy())
                    qvel.append(env.unwrapped.data.qvel.copy())
                if policy is None:
                    action = rng.uniform(low, high)
                    logp = uniform_logp
                else:
                    unit, logp = policy.sample(obs, rng)
                    action = low + (unit + 1.0) * 0.5 * (high - low)
                out = stepper.step(action[None])
                cols["obs"].append(obs)
                cols["act"].append(action)
                cols["rew"].append(out.reward[0])
                cols["next"].append(out.final_obs[0])
                cols["term"].append(out.terminated[0])
                cols["tout"].append(out.truncated[0] and not out.terminated[0])
                cols["logp"].append(logp)
                n += 1
                done = bool(out.done[0])
            bar.update(n - bar.n)
    finally:
        bar.close()
        stepper.close()
    infos: dict[str, np.ndarray] = {"action_log_probs": np.asarray(cols["logp"], np.float32)}
    if mujoco:
        infos["qpos"] = np.asarray(qpos, np.float32)
        infos["qvel"] = np.asarray(qvel, np.float32)
    return OfflineDataset(
        observations=np.asarray(cols["obs"], np.float32),
        actions=np.asarray(cols["act"], np.float32),
        rewards=np.asarray(cols["rew"], np.float32),
        next_observations=np.asarray(cols["next"], np.float32),
        terminals=np.asarray(cols["term"], bool),
        timeouts=np.asarray(cols["tout"], bool),
        episode_starts=np.asarray(starts, np.int64),
        infos=infos,
        metadata={
            "env_id": env_id,
            "seed": seed,
            "policy": policy.source if policy is not None else "uniform random",
            "action_low": low.tolist(),
            "action_high": high.tolist(),
        },
    )


def snapshot_info(path: str | Path) -> dict[str, Any]:
    """num_timesteps and class of an SB3 snapshot (for provenance), without stable-baselines3."""
    with zipfile.ZipFile(path) as zf:
        data = json.loads(zf.read("data"))
    return {
        "num_timesteps": data.get("num_timesteps"),
        "policy_class": str(data.get("policy_class", ""))[:80],
    }


def export_actor(snapshot: str | Path, out: str | Path, metadata: dict[str, str]) -> Path:
    """Write a snapshot's actor weights (float32) as safetensors, with provenance metadata."""
    from safetensors.numpy import save_file

    from diffrl.fileio import atomic_write

    actor = SACActor.load(snapshot)
    tensors = {}
    for i, (w, b) in enumerate(actor.layers):
        tensors[f"actor.latent_pi.{2 * i}.weight"] = w.astype(np.float32)
        tensors[f"actor.latent_pi.{2 * i}.bias"] = b.astype(np.float32)
    for name, (w, b) in (("mu", actor.mu), ("log_std", actor.log_std)):
        tensors[f"actor.{name}.weight"] = w.astype(np.float32)
        tensors[f"actor.{name}.bias"] = b.astype(np.float32)
    return atomic_write(Path(out), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
