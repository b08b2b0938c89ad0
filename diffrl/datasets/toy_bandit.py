"""The multimodal toy bandit of the Diffusion-QL paper (Wang et al. 2022, section 4).

State: a constant 2-d zero vector. Action: 2-d in [-1, 1]. Behaviour data: an equal mixture of
four Gaussians (std 0.05, clipped to [-1, 1]) at the corners (+-0.8, +-0.8). Rewards per mode
plus N(0, 0.5^2) noise. Every sample is its own one-step episode (terminal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffrl.data import OfflineDataset

NAME = "toy-bandit"
DEFAULT_SIZE = 10_000
# mode name -> (centre, mean reward), REFERENCES.md.
MODES: dict[str, tuple[tuple[float, float], float]] = {
    "left_up": ((-0.8, 0.8), 3.0),
    "left_bottom": ((-0.8, -0.8), 0.0),
    "right_up": ((0.8, 0.8), 1.5),
    "right_bottom": ((0.8, -0.8), 5.0),
}
MODE_STD = 0.05
REWARD_STD = 0.5
# A sample counts for a mode when it lies within this distance of the mode's centre.
MODE_RADIUS = 0.2


def make(size: int = DEFAULT_SIZE, seed: int = 0) -> OfflineDataset:
    """`size` one-step episodes; `size` is split equally over the four modes (rest to the first)."""
    if size < 4:
        raise ValueError(f"toy-bandit needs --size >= 4, got {size}")
    rng = np.random.default_rng(seed)
    counts = [size // 4] * 4
    counts[0] += size - sum(counts)
    actions, rewards = [], []
    for (centre, mean_reward), n in zip(MODES.values(), counts, strict=True):
        a = rng.normal(centre, MODE_STD, size=(n, 2)).clip(-1.0, 1.0)
        actions.append(a)
        rewards.append(mean_reward + rng.normal(0.0, REWARD_STD, size=n))
    order = rng.permutation(size)
    act = np.concatenate(actions)[order].astype(np.float32)
    rew = np.concatenate(rewards)[order].astype(np.float32)
    obs = np.zeros((size, 2), np.float32)
    return OfflineDataset(
        observations=obs,
        actions=act,
        rewards=rew,
        next_observations=obs.copy(),
        terminals=np.ones(size, bool),
        timeouts=np.zeros(size, bool),
        episode_starts=np.arange(size, dtype=np.int64),
        next_valid=np.ones(size, bool),
        infos={},
        metadata={
            "name": NAME,
            "env_id": NAME,
            "recipe": "Diffusion-QL toy: 4 Gaussians at (+-0.8, +-0.8), std 0.05, clipped to "
            "[-1, 1]; rewards 3.0/0.0/1.5/5.0 (left_up/left_bottom/right_up/right_bottom) "
            "+ N(0, 0.5^2)",
            "seed": seed,
            "size": size,
            "action_low": [-1.0, -1.0],
            "action_high": [1.0, 1.0],
        },
    )


def evaluate_actions(actions: np.ndarray) -> dict:
    """Mode fractions and expected reward of sampled actions (N, 2).

    `reward_mean` is the mean over samples of the mean reward of the mode a sample lies in
    (within MODE_RADIUS of its centre); an off-mode sample earns 0.
    """
    actions = np.asarray(actions, dtype=np.float64).reshape(-1, 2)
    fractions: dict[str, float] = {}
    reward = np.zeros(len(actions))
    on_any = np.zeros(len(actions), bool)
    for name, (centre, mean_reward) in MODES.items():
        on = np.linalg.norm(actions - np.asarray(centre), axis=1) <= MODE_RADIUS
        fractions[name] = float(on.mean())
        reward[on] = mean_reward
        on_any |= on
    fractions["off_mode"] = float((~on_any).mean())
    return {
        "samples": len(actions),
        "reward_mean": float(reward.mean()),
        "mode_fractions": fractions,
    }


# -- the environment interface (diffrl.envs.NON_GYM_ENVS): evaluation and a picture, no rollouts
SAMPLES = 1000  # actions sampled per evaluation


def evaluate_agent(agent: Any, device: Any, generator: Any) -> dict:
    """Sample SAMPLES actions at the (constant) state and score them (`evaluate_actions`)."""
    import torch

    obs = torch.zeros((SAMPLES, agent.spec.obs_dim), device=device)
    return evaluate_actions(agent.act(obs, generator).cpu().numpy())


def plot_agent(agent: Any, config: Any, step: int, out_dir: Path) -> Path:
    """The agent's sampled actions over the behaviour data and the modes (actions.png)."""
    import torch

    from diffrl.datasets import resolve
    from diffrl.errors import DiffrlError
    from diffrl.plotting import plot_toy_actions

    device = next(agent.parameters()).device
    gen = torch.Generator(device=device).manual_seed(config.seed)
    obs = torch.zeros((SAMPLES, agent.spec.obs_dim), device=device)
    actions = agent.act(obs, gen).cpu().numpy()
    try:
        data = resolve(config.dataset, auto_make=False).actions
    except DiffrlError:
        data = None
    return plot_toy_actions(
        data,
        [(f"{config.algo} (step {step})", actions)],
        out_dir / "actions.png",
        radius=MODE_RADIUS,
        centres=[c for c, _ in MODES.values()],
    )
