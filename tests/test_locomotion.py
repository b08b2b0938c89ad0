"""Built-in D4RL-style locomotion datasets and collection from any policy (small sizes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from diffrl.cli import main
from diffrl.datasets import builtin_path, resolve
from diffrl.datasets.collect import SACActor
from diffrl.datasets.locomotion import policy_path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_medium_is_d4rl_layout_whole_episodes_and_provenance(capsys):
    assert main(["datasets", "make", "hopper-medium-v0", "--size", "1500", "--json"]) == 0
    path = builtin_path("hopper-medium-v0")
    assert json.loads(capsys.readouterr().out)["path"] == str(path)
    with h5py.File(path) as f:
        for key in ("observations", "next_observations", "actions", "rewards", "terminals"):
            assert key in f
        for key in ("timeouts", "infos/qpos", "infos/qvel", "infos/action_log_probs"):
            assert key in f
        n = len(f["rewards"])
        assert f["infos/qpos"].shape == (n, 6) and f["infos/qvel"].shape == (n, 6)
    ds = resolve("hopper-medium-v0")
    assert ds.num_transitions >= 1500
    last = ds.num_transitions - 1
    assert ds.terminals[last] or ds.timeouts[last]  # only whole episodes
    assert not (ds.terminals & ds.timeouts).any()  # kept apart
    inside = np.setdiff1d(np.arange(last), np.flatnonzero(ds.terminals | ds.timeouts))
    np.testing.assert_array_equal(ds.next_observations[inside], ds.observations[inside + 1])
    meta = ds.metadata
    assert meta["env_id"] == "Hopper-v5" and meta["seed"] == 0 and "sampled" in meta["recipe"]
    assert meta["behavior_policy"]["step"] == "160000" and "gymnasium" in meta["versions"]
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-20.272305, 3234.3)
    # the recorded qpos is the simulator state of the observation (hopper obs = qpos[1:], qvel)
    np.testing.assert_allclose(ds.infos["qpos"][:, 1:], ds.observations[:, :5], atol=1e-5)


def test_same_name_and_seed_same_bytes(tmp_path):
    paths = []
    for i, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"{i}.hdf5"
        assert main(["datasets", "make", "halfcheetah-random-v0", "--size", "300",
                     "--seed", str(seed), "--out", str(out)]) == 0  # fmt: skip
        paths.append(out)
    assert sha(paths[0]) == sha(paths[1]) != sha(paths[2])


def test_medium_replay_is_the_runs_prefix():
    assert main(["datasets", "make", "hopper-medium-replay-v0", "--size", "3000"]) == 0
    ds = resolve("hopper-medium-replay-v0")
    assert 3000 <= ds.num_transitions < 4100  # whole episodes
    ends = np.flatnonzero(ds.terminals | ds.timeouts)
    assert ends[-1] == ds.num_transitions - 1
    inside = np.setdiff1d(np.arange(ds.num_transitions - 1), ends)
    np.testing.assert_array_equal(ds.next_observations[inside], ds.observations[inside + 1])


def test_collect_from_any_policy_and_mismatch(tmp_path, capsys):
    out = tmp_path / "pend.hdf5"
    args = ["datasets", "make", "--env", "Pendulum-v1", "--policy", "random", "--size", "400"]
    assert main([*args, "--out", str(out)]) == 0
    ds = resolve(str(out))
    assert ds.num_transitions == 400 and ds.num_episodes == 2 and ds.timeouts.sum() == 2
    assert np.abs(ds.actions).max() <= 2.0

    capsys.readouterr()
    hopper = str(policy_path("hopper", "medium"))
    bad = ["datasets", "make", "--env", "HalfCheetah-v5", "--policy", hopper, "--size", "10"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    expected = "policy takes obs 11 -> action 3, but HalfCheetah-v5 has obs 17 -> action 6"
    assert err == f"error: {hopper}: {expected}"
    assert main(["datasets", "make", "--env", "NoSuchEnv-v0", "--policy", "random"]) == 2
    assert "NoSuchEnv-v0" in capsys.readouterr().err


def test_halfcheetah_expert_ships_and_medium_expert_holds_both(capsys):
    # Expert actor: SAC step 380k (20k transitions measured at normalised 67.2, docs/datasets.md)
    assert main(["datasets", "make", "halfcheetah-medium-expert-v0", "--size", "4000"]) == 0
    ds = resolve("halfcheetah-medium-expert-v0")
    returns = np.asarray(ds.episode_returns())
    assert len(returns) == 4  # 2 medium episodes (seed S), then 2 expert ones (seed S + 1)
    assert returns[:2].max() < 6000 < 7500 < returns[2:].min(), returns
    assert "380000" in str(ds.metadata) and "medium" in ds.metadata["recipe"]


def test_hopper_expert_ships_and_medium_expert_holds_both(capsys):
    # Expert actor: SAC step 748,596 (20k transitions measured at normalised 106.1, 94.9 and
    # 101.0 at seeds 0-2, docs/datasets.md); the medium one scores about 38.
    assert main(["datasets", "make", "hopper-medium-expert-v0", "--size", "6000"]) == 0
    ds = resolve("hopper-medium-expert-v0")
    returns = np.asarray(ds.episode_returns())
    lengths = np.asarray(ds.episode_lengths())
    half = int(np.searchsorted(np.cumsum(lengths), 3000)) + 1  # medium episodes: first half
    assert 0 < half < len(returns)
    assert returns[:half].mean() < 2000 < 3000 < returns[half:].mean(), returns
    assert "748596" in str(ds.metadata) and "medium" in ds.metadata["recipe"]


def test_missing_expert_policy_is_a_clear_error(capsys, monkeypatch, tmp_path):
    import diffrl.datasets.locomotion as locomotion

    monkeypatch.setattr(locomotion, "ASSETS", tmp_path)  # a diffrl without its policies
    assert main(["datasets", "make", "hopper-expert-v0", "--size", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: hopper-expert-v0: no expert behaviour policy ships")


def test_actor_matches_stable_baselines3():
    sb3 = pytest.importorskip("stable_baselines3")
    import torch

    zip_path = SHARED / "behavior" / "Hopper-v5" / "step_0160000.zip"
    if not zip_path.exists():
        pytest.skip("shared/behavior is not beside this checkout")
    ours = SACActor.load(zip_path)
    asset = SACActor.load(policy_path("hopper", "medium"))
    model = sb3.SAC.load(zip_path, device="cpu")
    obs = np.random.default_rng(0).normal(size=(8, 11))
    theirs = model.actor(torch.tensor(obs, dtype=torch.float32), deterministic=True)
    np.testing.assert_allclose(ours.mean_action(obs), theirs.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(asset.mean_action(obs), theirs.detach().numpy(), atol=1e-5)
    a, logp = ours.sample(obs[0], np.random.default_rng(1))
    mean, log_std, _ = model.actor.get_action_dist_params(
        torch.tensor(obs[:1], dtype=torch.float32)
    )
    dist = model.actor.action_dist.proba_distribution(mean, log_std)
    expected = dist.log_prob(torch.tensor(a[None], dtype=torch.float32)).item()
    assert logp == pytest.approx(expected, abs=1e-3)


@pytest.mark.filterwarnings("ignore")
def test_minari_export_loads_with_minari(tmp_path, monkeypatch, capsys):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    args = ["datasets", "make", "hopper-random-v0", "--size", "300", "--seed", "5"]
    assert main([*args, "--format", "minari", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(
        tmp_path / "minari" / "diffrl" / "hopper" / "random-v0"
    )
    assert main([*args, "--out", str(tmp_path / "d4rl.hdf5")]) == 0
    ours = resolve(str(tmp_path / "d4rl.hdf5"))
    theirs = minari.load_dataset("diffrl/hopper/random-v0")
    assert theirs.total_episodes == ours.num_episodes and theirs.total_steps == ours.num_transitions
    for ep, sl in zip(theirs.iterate_episodes(), ours.episode_slices(), strict=True):
        np.testing.assert_array_equal(ep.observations[:-1], ours.observations[sl])
        np.testing.assert_array_equal(ep.observations[-1], ours.next_observations[sl.stop - 1])
        np.testing.assert_array_equal(ep.actions, ours.actions[sl])
        np.testing.assert_array_equal(ep.terminations, ours.terminals[sl])
        np.testing.assert_array_equal(ep.truncations, ours.timeouts[sl])
    assert not list((tmp_path / "minari").glob(".diffrl-minari-*"))  # no temp root left


@pytest.mark.filterwarnings("ignore")
def test_minari_export_to_a_relative_out_dir(tmp_path, monkeypatch, capsys):
    # Minari joins a relative MINARI_DATASETS_PATH onto itself; --out mx must still work.
    minari = pytest.importorskip("minari")
    monkeypatch.chdir(tmp_path)
    args = ["datasets", "make", "hopper-random-v0", "--size", "200", "--format", "minari"]
    assert main([*args, "--out", "mx", "--json"]) == 0
    path = Path(json.loads(capsys.readouterr().out)["path"])
    assert path == tmp_path / "mx" / "diffrl" / "hopper" / "random-v0"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "mx"))
    assert minari.load_dataset("diffrl/hopper/random-v0").total_steps >= 200
