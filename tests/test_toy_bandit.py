from __future__ import annotations

import numpy as np

from diffrl.datasets import toy_bandit


def test_data_matches_the_paper():
    ds = toy_bandit.make(10_000, seed=3)
    assert ds.num_transitions == 10_000 and ds.num_episodes == 10_000
    assert np.all(ds.observations == 0) and ds.terminals.all()
    assert ds.actions.min() >= -1 and ds.actions.max() <= 1
    ev = toy_bandit.evaluate_actions(ds.actions)
    for mode in ("left_up", "left_bottom", "right_up", "right_bottom"):
        assert abs(ev["mode_fractions"][mode] - 0.25) < 1e-3  # 4 equal modes, std 0.05 << 0.2
    assert ev["mode_fractions"]["off_mode"] < 1e-3  # 0.2 is 4 std: exp(-8) of samples
    # rewards: mode means (3, 0, 1.5, 5) plus N(0, 0.5^2) noise
    assert abs(ds.rewards.mean() - (3 + 0 + 1.5 + 5) / 4) < 0.03
    assert abs(ds.rewards.std() - np.sqrt(np.var([3, 0, 1.5, 5]) + 0.25)) < 0.03


def test_same_seed_same_data():
    a, b = toy_bandit.make(500, 1), toy_bandit.make(500, 1)
    assert np.array_equal(a.actions, b.actions) and np.array_equal(a.rewards, b.rewards)
    assert not np.array_equal(a.actions, toy_bandit.make(500, 2).actions)


def test_evaluate_actions_counts_modes_and_reward():
    acts = np.array([[0.8, -0.8], [0.75, -0.7], [-0.8, 0.8], [0.0, 0.0]])
    ev = toy_bandit.evaluate_actions(acts)
    assert ev["mode_fractions"]["right_bottom"] == 0.5
    assert ev["mode_fractions"]["left_up"] == 0.25
    assert ev["mode_fractions"]["off_mode"] == 0.25
    assert ev["reward_mean"] == (5 + 5 + 3 + 0) / 4
