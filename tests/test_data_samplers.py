"""Transition and trajectory samplers on hand-checked tiny datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrl.data import (
    GaussianNormalizer,
    LimitsNormalizer,
    OfflineDataset,
    TrajectorySampler,
    TransitionSampler,
    discounted_returns_to_go,
)
from diffrl.errors import DatasetError

# Episodes: rows 0-2 (terminal), rows 3-4 (timeout, next observation unknown), rows 5-8 (cut).
STARTS = [0, 3, 5]
N = 9


def tiny() -> OfflineDataset:
    """obs[i] = (i, 10 i), action[i] = (i, -i), reward[i] = i + 1: every row is traceable."""
    rows = np.arange(N, dtype=np.float32)
    terminals = np.zeros(N, bool)
    terminals[2] = True
    timeouts = np.zeros(N, bool)
    timeouts[4] = True
    next_valid = np.ones(N, bool)
    next_valid[4] = False
    return OfflineDataset(
        observations=np.stack([rows, 10 * rows], 1),
        actions=np.stack([rows, -rows], 1),
        rewards=rows + 1,
        next_observations=np.stack([rows + 1, 10 * rows + 10], 1),
        terminals=terminals,
        timeouts=timeouts,
        episode_starts=np.array(STARTS),
        next_valid=next_valid,
    )


# ---------------------------------------------------------------------------------------------
# Transitions
# ---------------------------------------------------------------------------------------------


def test_transition_sampler_skips_unknown_next_and_matches_rows() -> None:
    ds = tiny()
    sampler = TransitionSampler(ds, "cpu", reward_scale=2.0, reward_bias=-1.0)
    assert len(sampler) == N - 1
    batch = sampler.sample(500, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (500, 2) and batch.next_obs.shape == (500, 2)
    assert batch.action.shape == (500, 2)
    assert batch.reward.shape == (500, 1) and batch.not_done.shape == (500, 1)
    for t in (batch.obs, batch.action, batch.reward, batch.next_obs, batch.not_done):
        assert t.dtype == torch.float32 and t.device.type == "cpu"
    row = batch.action[:, 0].long()  # action[:, 0] is the row index
    assert set(row.tolist()) == set(range(N)) - {4}
    torch.testing.assert_close(batch.obs, torch.from_numpy(ds.observations)[row])
    torch.testing.assert_close(batch.next_obs, torch.from_numpy(ds.next_observations)[row])
    torch.testing.assert_close(batch.reward[:, 0], 2.0 * (row.float() + 1) - 1.0)
    torch.testing.assert_close(batch.not_done[:, 0], (row != 2).float())


def test_transition_sampler_is_reproducible() -> None:
    sampler = TransitionSampler(tiny(), torch.device("cpu"))
    a = sampler.sample(64, torch.Generator().manual_seed(3))
    b = sampler.sample(64, torch.Generator().manual_seed(3))
    c = sampler.sample(64, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a.obs, b.obs)
    torch.testing.assert_close(a.action, b.action)
    assert not torch.equal(a.action, c.action)


def test_transition_sampler_applies_normalizer_once() -> None:
    ds = tiny()
    norm = GaussianNormalizer.fit(ds.observations)
    sampler = TransitionSampler(ds, "cpu", obs_normalizer=norm)
    batch = sampler.sample(200, torch.Generator().manual_seed(1))
    row = batch.action[:, 0].long()
    expected = norm.normalize(torch.from_numpy(ds.observations))[row]
    torch.testing.assert_close(batch.obs, expected)
    expected_next = norm.normalize(torch.from_numpy(ds.next_observations))[row]
    torch.testing.assert_close(batch.next_obs, expected_next)
    # Actions are not the observation normaliser's business.
    torch.testing.assert_close(batch.action, torch.from_numpy(ds.actions)[row])


def test_transition_sampler_refuses_foreign_generator() -> None:
    sampler = TransitionSampler(tiny(), "cpu")
    sampler.device = torch.device("cuda")  # pretend the data lives elsewhere
    with pytest.raises(ValueError, match="generator lives on cpu"):
        sampler.sample(4, torch.Generator())


# ---------------------------------------------------------------------------------------------
# Trajectories
# ---------------------------------------------------------------------------------------------

GAMMA = 0.5
# Discounted return-to-go per row with rewards i + 1 and discount 0.5, by hand:
# episode 0 (r = 1, 2, 3):    1 + .5 * 2 + .25 * 3 = 2.75, 2 + .5 * 3 = 3.5, 3
# episode 1 (r = 4, 5):       4 + 2.5 = 6.5, 5
# episode 2 (r = 6, 7, 8, 9): 6 + 3.5 + 2 + 1.125 = 12.625, 7 + 4 + 2.25 = 13.25, 8 + 4.5, 9
RTG = [2.75, 3.5, 3.0, 6.5, 5.0, 12.625, 13.25, 12.5, 9.0]
ENDS = [3, 3, 3, 5, 5, 9, 9, 9, 9]  # exclusive end of each row's episode


def test_returns_to_go_by_hand() -> None:
    got = discounted_returns_to_go(tiny().rewards, np.array(STARTS), GAMMA)
    np.testing.assert_allclose(got, RTG)


@pytest.mark.parametrize("discount", [0.0, 0.9, 1.0])
def test_returns_to_go_matches_a_loop(discount: float) -> None:
    rng = np.random.default_rng(0)
    n = 1000
    starts = np.concatenate([[0], np.sort(rng.choice(np.arange(1, n), 40, replace=False))])
    rewards = rng.normal(size=n)
    expected = np.zeros(n)
    ends = set((starts[1:] - 1).tolist()) | {n - 1}
    acc = 0.0
    for i in range(n - 1, -1, -1):
        acc = rewards[i] + (0.0 if i in ends else discount * acc)
        expected[i] = acc
    np.testing.assert_allclose(discounted_returns_to_go(rewards, starts, discount), expected)


def check_windows(sampler: TrajectorySampler, ds: OfflineDataset, horizon: int) -> set[int]:
    """Check every sampled window against the hand rules; return the set of start rows."""
    batch = sampler.sample(400, torch.Generator().manual_seed(0))
    b = 400
    assert batch.observations.shape == (b, horizon, 2)
    assert batch.actions.shape == (b, horizon, 2)
    for t in (batch.rewards, batch.mask, batch.terminals):
        assert t.shape == (b, horizon) and t.dtype == torch.float32
    assert batch.returns.shape == (b, 1)
    starts = set()
    for w in range(b):
        first = int(batch.observations[w, 0, 0])  # obs[i, 0] = i (unnormalised tests)
        starts.add(first)
        end = ENDS[first]
        assert batch.returns[w, 0] == pytest.approx(RTG[first])
        for k in range(horizon):
            row = first + k
            if row < end:
                assert batch.mask[w, k] == 1
                assert batch.observations[w, k].tolist() == ds.observations[row].tolist()
                assert batch.actions[w, k].tolist() == ds.actions[row].tolist()
                assert batch.rewards[w, k] == row + 1
                assert batch.terminals[w, k] == float(ds.terminals[row])
            else:  # padding: last observation repeated, nothing else
                assert batch.mask[w, k] == 0
                assert batch.observations[w, k].tolist() == ds.observations[end - 1].tolist()
                assert batch.actions[w, k].tolist() == [0.0, 0.0]
                assert batch.rewards[w, k] == 0 and batch.terminals[w, k] == 0
    return starts


def test_trajectory_windows_with_padding() -> None:
    ds = tiny()
    sampler = TrajectorySampler(ds, horizon=3, device="cpu", discount=GAMMA, pad=True)
    assert len(sampler) == N
    assert check_windows(sampler, ds, 3) == set(range(N))


def test_trajectory_windows_without_padding() -> None:
    ds = tiny()
    sampler = TrajectorySampler(ds, horizon=3, device="cpu", discount=GAMMA, pad=False)
    # Episode 0 fits one window (start 0), episode 1 (2 steps) none, episode 2 two (5, 6).
    assert len(sampler) == 3
    assert check_windows(sampler, ds, 3) == {0, 5, 6}


def test_trajectory_horizon_longer_than_every_episode() -> None:
    with pytest.raises(DatasetError) as err:
        TrajectorySampler(tiny(), horizon=5, device="cpu", pad=False)
    assert str(err.value) == (
        "OfflineDataset: no episode is long enough for horizon 5 (longest has 4 steps); "
        "use pad=True or a shorter horizon"
    )
    # With padding a window may start anywhere, even past every episode's length.
    assert len(TrajectorySampler(tiny(), horizon=5, device="cpu", pad=True)) == N


def test_trajectory_normalizers_and_reproducibility() -> None:
    ds = tiny()
    obs_norm = GaussianNormalizer.fit(ds.observations)
    act_norm = LimitsNormalizer.fit(ds.actions)
    sampler = TrajectorySampler(
        ds, horizon=4, device="cpu", obs_normalizer=obs_norm, action_normalizer=act_norm
    )
    a = sampler.sample(50, torch.Generator().manual_seed(7))
    b = sampler.sample(50, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a.observations, b.observations)
    raw_obs = obs_norm.unnormalize(a.observations)
    first = raw_obs[:, 0, 0].round().long()
    torch.testing.assert_close(raw_obs[:, 0], torch.from_numpy(ds.observations)[first])
    real = a.mask.bool()
    raw_act = act_norm.unnormalize(a.actions)
    rows = (first[:, None] + torch.arange(4)).clamp(max=N - 1)
    torch.testing.assert_close(raw_act[real], torch.from_numpy(ds.actions)[rows][real])
    assert (a.actions[~real] == 0).all()  # padding is zero in normalised units
    assert a.actions[real].abs().max() <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_samplers_on_cuda() -> None:
    ds = tiny()
    norm = GaussianNormalizer.fit(ds.observations).to("cuda")  # normaliser on the device too
    for sampler in (
        TransitionSampler(ds, "cuda", obs_normalizer=norm),
        TrajectorySampler(ds, horizon=3, device="cuda", obs_normalizer=norm),
    ):
        a = sampler.sample(32, torch.Generator(device="cuda").manual_seed(0))
        b = sampler.sample(32, torch.Generator(device="cuda").manual_seed(0))
        for x, y in zip(vars(a).values(), vars(b).values(), strict=True):
            assert x.is_cuda and torch.equal(x, y)
        with pytest.raises(ValueError, match="generator lives on cpu"):
            sampler.sample(4, torch.Generator())
