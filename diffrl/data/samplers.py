"""Batch samplers: views over an `OfflineDataset` that live on the training device.

Arrays are normalised and copied to the device once, in the constructor; `sample()` only draws
indices with `torch.randint` on that device and gathers, so a training step makes no host copies
and touches no numpy. Pass a `torch.Generator` created on the same device for reproducible
batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffrl.data.dataset import OfflineDataset
from diffrl.errors import DatasetError


def _normalize(normalizer: Any, x: np.ndarray) -> np.ndarray:
    # Normalising the numpy copy keeps this independent of the device the normaliser lives on.
    if normalizer is None:
        return x
    return np.asarray(normalizer.normalize(x), dtype=np.float32)


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    g = torch.device(generator.device)
    same = g.type == device.type and (
        g.index is None or device.index is None or g.index == device.index
    )
    if not same:
        raise ValueError(f"generator lives on {g}, but the sampler's data lives on {device}")


def discounted_returns_to_go(
    rewards: np.ndarray, episode_starts: np.ndarray, discount: float
) -> np.ndarray:
    """(N,) float64: sum_k discount^k r[i + k] up to the end of row i's episode.

    The recurrence y[i] = r[i] + c[i] y[i + 1] (c = discount, 0 at an episode's last row) is
    solved by parallel doubling in log2(N) vectorised passes, instead of a Python loop over
    up to millions of rows; products of discounts only shrink, so nothing overflows.
    """
    n = len(rewards)
    y = rewards.astype(np.float64)
    c = np.full(n, float(discount))
    c[episode_starts[1:] - 1] = 0.0
    c[-1] = 0.0
    shift = 1
    while shift < n:
        # y[i] now sums `shift` steps from i; add the next `shift` steps, scaled by c's product.
        y_next = np.zeros(n)
        y_next[:-shift] = y[shift:]
        c_next = np.zeros(n)
        c_next[:-shift] = c[shift:]
        y = y + c * y_next
        c = c * c_next
        shift *= 2
    return y


@dataclass
class TransitionBatch:
    """B transitions; float32 tensors on the sampler's device."""

    obs: torch.Tensor  # (B, obs_dim)
    action: torch.Tensor  # (B, act_dim)
    reward: torch.Tensor  # (B, 1), already reward_scale * r + reward_bias
    next_obs: torch.Tensor  # (B, obs_dim)
    not_done: torch.Tensor  # (B, 1), 0 at true terminations (timeouts still bootstrap)
    index: torch.Tensor | None = None  # (B,) positions in the sampler (for per-row caches)
    extra: dict[str, torch.Tensor] | None = None  # per-row values kept beside (ReplayBuffer)


class TransitionSampler:
    """Uniform transitions (s, a, r, s', not_done) for TD learning and behaviour cloning.

    Rows whose next observation is unknown (next_valid False) are left out. The observation
    normaliser (if any) is applied once to obs and next_obs; rewards become
    reward_scale * r + reward_bias.
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        device: torch.device | str,
        obs_normalizer: Any = None,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
    ) -> None:
        self.device = torch.device(device)
        keep = np.flatnonzero(dataset.next_valid)
        if keep.size == 0:
            raise DatasetError(
                f"{dataset.metadata.get('source', 'OfflineDataset')}: "
                "no transition has a known next observation"
            )
        rewards = dataset.rewards[keep].astype(np.float32) * reward_scale + reward_bias

        def put(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=self.device)

        self.obs = put(_normalize(obs_normalizer, dataset.observations[keep]))
        self.action = put(dataset.actions[keep])
        self.reward = put(rewards[:, None])
        self.next_obs = put(_normalize(obs_normalizer, dataset.next_observations[keep]))
        self.not_done = put(~dataset.terminals[keep][:, None])
        self.rows = torch.as_tensor(keep, device=self.device)  # dataset row of each entry

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TransitionBatch:
        """B transitions drawn uniformly with replacement."""
        _check_generator(generator, self.device)
        idx = torch.randint(len(self), (batch_size,), device=self.device, generator=generator)
        return TransitionBatch(
            obs=self.obs[idx],
            action=self.action[idx],
            reward=self.reward[idx],
            next_obs=self.next_obs[idx],
            not_done=self.not_done[idx],
            index=idx,
        )


@dataclass
class TrajectoryBatch:
    """B windows of H steps from single episodes; float32 tensors on the sampler's device."""

    observations: torch.Tensor  # (B, H, obs_dim)
    actions: torch.Tensor  # (B, H, act_dim)
    rewards: torch.Tensor  # (B, H)
    mask: torch.Tensor  # (B, H): 1 for real steps, 0 for padding past the episode's end
    returns: torch.Tensor  # (B, 1): discounted return-to-go from the first step to episode end
    terminals: torch.Tensor  # (B, H): 1 at a true termination (0 on padding)


class TrajectorySampler:
    """Windows of `horizon` consecutive steps within one episode (Diffuser's SequenceDataset).

    With pad=True every step of every episode may start a window; steps past the episode's end
    repeat its last observation, with zero action and reward, mask 0 and terminal 0 (zeros are
    in normalised units: the model sees padding as zeros). With pad=False only windows that fit
    inside an episode are used. `returns` is the discounted return-to-go of the raw rewards,
    computed once per row.

    Layout: each episode's T rows are stored followed by H - 1 padding rows, so every window is
    one contiguous slice and sample() is a single gather per field.
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        horizon: int,
        device: torch.device | str,
        obs_normalizer: Any = None,
        action_normalizer: Any = None,
        discount: float = 0.99,
        pad: bool = True,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.device = torch.device(device)
        self.horizon = horizon
        self.discount = discount
        self.pad = pad
        lengths = dataset.episode_lengths()
        starts = dataset.episode_starts
        n, e = dataset.num_transitions, dataset.num_episodes
        extra = horizon - 1 if pad else 0
        # Padded position of each real row: its row + (H - 1) for every earlier episode.
        row_pos = np.arange(n) + np.repeat(np.arange(e) * extra, lengths)
        total = n + e * extra

        obs = _normalize(obs_normalizer, dataset.observations)
        actions = _normalize(action_normalizer, dataset.actions)
        rtg = discounted_returns_to_go(dataset.rewards, starts, discount)

        obs_pad = np.empty((total, dataset.obs_dim), np.float32)
        # Fill every slot with its episode's last observation, then overwrite the real rows.
        ends = dataset.episode_ends
        obs_pad[:] = np.repeat(obs[ends - 1], lengths + extra, axis=0)
        obs_pad[row_pos] = obs
        act_pad = np.zeros((total, dataset.act_dim), np.float32)
        act_pad[row_pos] = actions
        rew_pad = np.zeros(total, np.float32)
        rew_pad[row_pos] = dataset.rewards
        mask_pad = np.zeros(total, np.float32)
        mask_pad[row_pos] = 1.0
        term_pad = np.zeros(total, np.float32)
        term_pad[row_pos] = dataset.terminals
        rtg_pad = np.zeros(total, np.float32)
        rtg_pad[row_pos] = rtg

        if pad:
            valid = row_pos
        else:
            # A window fits when start - episode start <= T - H.
            offset = np.arange(n) - np.repeat(starts, lengths)
            fits = offset <= np.repeat(lengths, lengths) - horizon
            valid = row_pos[fits]
            if valid.size == 0:
                raise DatasetError(
                    f"{dataset.metadata.get('source', 'OfflineDataset')}: no episode is long "
                    f"enough for horizon {horizon} (longest has {int(lengths.max())} steps); "
                    "use pad=True or a shorter horizon"
                )

        def put(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x, device=self.device)

        self.observations = put(obs_pad)
        self.actions = put(act_pad)
        self.rewards = put(rew_pad)
        self.mask = put(mask_pad)
        self.terminals = put(term_pad)
        self.returns_to_go = put(rtg_pad)
        self.starts = put(valid.astype(np.int64))  # padded positions where a window may start
        self._offsets = torch.arange(horizon, device=self.device)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TrajectoryBatch:
        """B windows whose starts are drawn uniformly with replacement."""
        _check_generator(generator, self.device)
        pick = torch.randint(len(self), (batch_size,), device=self.device, generator=generator)
        first = self.starts[pick]  # (B,)
        idx = first[:, None] + self._offsets[None, :]  # (B, H)
        return TrajectoryBatch(
            observations=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            mask=self.mask[idx],
            returns=self.returns_to_go[first][:, None],
            terminals=self.terminals[idx],
        )
