"""Readers and writers: D4RL HDF5 written with plain h5py, our atomic writers, every error
message, and Minari datasets written by minari itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from diffrl.data import (
    OfflineDataset,
    load_d4rl_hdf5,
    load_minari,
    load_npz,
    load_path,
    write_d4rl_hdf5,
    write_npz,
)
from diffrl.errors import DatasetError

# Three episodes: rows 0-4 end in a terminal, rows 5-11 in a timeout, rows 12-15 in a terminal.
LENGTHS = (5, 7, 4)
N = sum(LENGTHS)
OBS_DIM, ACT_DIM = 3, 2


def d4rl_arrays() -> dict[str, np.ndarray]:
    """Flat arrays as D4RL stores them; observation row i is (i, i, i) so rows are traceable."""
    obs = np.repeat(np.arange(N, dtype=np.float32)[:, None], OBS_DIM, axis=1)
    next_obs = obs + 1.0
    # At an episode's last row the true next observation is not the next row's.
    next_obs[[4, 11, 15]] = -1.0
    terminals = np.zeros(N, bool)
    terminals[[4, 15]] = True
    timeouts = np.zeros(N, bool)
    timeouts[11] = True
    rng = np.random.default_rng(0)
    return {
        "observations": obs,
        "next_observations": next_obs,
        "actions": rng.uniform(-1, 1, (N, ACT_DIM)).astype(np.float32),
        "rewards": rng.normal(size=N).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def write_plain_h5(path: Path, arrays: dict[str, np.ndarray], **extra: np.ndarray) -> Path:
    """A D4RL-style file written with plain h5py (not our writer)."""
    with h5py.File(path, "w") as f:
        for key, value in {**arrays, **extra}.items():
            f.create_dataset(key, data=value)
    return path


def write_plain_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------------------------------------
# D4RL files written with plain h5py
# ---------------------------------------------------------------------------------------------


def test_d4rl_full_layout(tmp_path: Path) -> None:
    arrays = d4rl_arrays()
    arrays["rewards"] = arrays["rewards"][:, None]  # some D4RL files store (N, 1)
    path = tmp_path / "hopper.hdf5"
    qpos = np.arange(N * 4, dtype=np.float64).reshape(N, 4)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.create_dataset("infos/qpos", data=qpos)
        f.create_dataset("infos/goal", data=np.ones((N, 2)))
        f.create_dataset("metadata/algorithm", data=b"SAC")
        f.create_dataset("metadata/iteration", data=7)
        f.create_dataset("metadata/policy/fc0/weight", data=np.ones((4, 4)))

    ds = load_d4rl_hdf5(path)

    assert ds.num_transitions == N and ds.num_episodes == 3
    np.testing.assert_array_equal(ds.episode_starts, [0, 5, 12])
    np.testing.assert_array_equal(ds.episode_lengths(), LENGTHS)
    np.testing.assert_array_equal(ds.next_observations, arrays["next_observations"])
    assert ds.next_valid.all()
    assert ds.rewards.shape == (N,) and ds.rewards.dtype == np.float32
    np.testing.assert_array_equal(ds.rewards, arrays["rewards"][:, 0])
    np.testing.assert_array_equal(ds.infos["qpos"], qpos)
    assert set(ds.infos) == {"qpos", "goal"}
    assert ds.metadata["algorithm"] == "SAC" and ds.metadata["iteration"] == 7
    assert "policy/fc0/weight" not in ds.metadata  # weights are not metadata
    assert ds.metadata["source"] == str(path)
    assert load_path(path).num_episodes == 3


def test_d4rl_without_next_observations(tmp_path: Path) -> None:
    arrays = d4rl_arrays()
    del arrays["next_observations"]
    ds = load_d4rl_hdf5(write_plain_h5(tmp_path / "old.hdf5", arrays))

    obs = arrays["observations"]
    inside = [i for i in range(N) if i not in (4, 11, 15)]
    np.testing.assert_array_equal(ds.next_observations[inside], obs[np.array(inside) + 1])
    # Terminal rows: value irrelevant (not_done = 0), kept valid; timeout row: unknown.
    for row in (4, 11, 15):
        np.testing.assert_array_equal(ds.next_observations[row], obs[row])
    assert ds.next_valid[4] and ds.next_valid[15]
    assert not ds.next_valid[11]
    assert ds.next_valid.sum() == N - 1


def test_d4rl_last_episode_cut_without_next_observations(tmp_path: Path) -> None:
    arrays = d4rl_arrays()
    del arrays["next_observations"]
    arrays["terminals"][15] = False  # the file stops mid-episode
    ds = load_d4rl_hdf5(write_plain_h5(tmp_path / "cut.hdf5", arrays))
    assert ds.num_episodes == 3
    assert not ds.next_valid[15] and not ds.next_valid[11] and ds.next_valid[4]


def test_d4rl_without_timeouts(tmp_path: Path) -> None:
    arrays = d4rl_arrays()
    del arrays["timeouts"], arrays["next_observations"]
    ds = load_d4rl_hdf5(write_plain_h5(tmp_path / "maze.hdf5", arrays))
    assert not ds.timeouts.any()
    # Only terminals cut episodes now: rows 5-15 are one episode.
    np.testing.assert_array_equal(ds.episode_starts, [0, 5])
    np.testing.assert_array_equal(ds.next_observations[11], arrays["observations"][12])
    assert ds.next_valid.all()


# ---------------------------------------------------------------------------------------------
# Our writers
# ---------------------------------------------------------------------------------------------


def tricky_dataset() -> OfflineDataset:
    """Episodes ending in a terminal, in nothing (cut mid-file), in a timeout, and in nothing at
    the end of the file; one unknown next observation; infos of several shapes and dtypes."""
    rng = np.random.default_rng(1)
    episodes = []
    for t, (term, tout) in zip((3, 4, 2, 5), ((1, 0), (0, 0), (0, 1), (0, 0)), strict=True):
        terminals = np.zeros(t, bool)
        timeouts = np.zeros(t, bool)
        terminals[-1], timeouts[-1] = term, tout
        next_valid = np.ones(t, bool)
        next_valid[-1] = not tout
        episodes.append(
            {
                "observations": rng.normal(size=(t, OBS_DIM)),
                "next_observations": rng.normal(size=(t, OBS_DIM)),
                "actions": rng.normal(size=(t, ACT_DIM)),
                "rewards": rng.normal(size=t),
                "terminals": terminals,
                "timeouts": timeouts,
                "next_valid": next_valid,
                "infos": {
                    "qpos": rng.normal(size=(t, 4)),
                    "step": np.arange(t, dtype=np.int32),
                    "success": rng.random(t) > 0.5,
                },
            }
        )
    metadata = {
        "name": "tricky",
        "env_id": "Hopper-v5",
        "ref_min_score": -20.272305,
        "ref_max_score": 3234.3,
        "seed": 3,
        "recipe": {"policy": "sac", "snapshots": [1, 2]},
        "action_low": [-1.0, -1.0],
        "missing": None,
    }
    return OfflineDataset.from_episodes(episodes, metadata=metadata)


def assert_same(a: OfflineDataset, b: OfflineDataset) -> None:
    for key in (
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "terminals",
        "timeouts",
        "episode_starts",
        "next_valid",
    ):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype, key
        np.testing.assert_array_equal(x, y, err_msg=key)
    assert set(a.infos) == set(b.infos)
    for key in a.infos:
        assert a.infos[key].dtype == b.infos[key].dtype, key
        np.testing.assert_array_equal(a.infos[key], b.infos[key], err_msg=key)
    strip = {"source"}
    assert {k: v for k, v in a.metadata.items() if k not in strip} == {
        k: v for k, v in b.metadata.items() if k not in strip
    }


@pytest.mark.parametrize(
    "write, load, name",
    [
        (write_d4rl_hdf5, load_d4rl_hdf5, "d.hdf5"),
        (lambda d, p: write_d4rl_hdf5(d, p, compression=None), load_d4rl_hdf5, "d.h5"),
        (write_npz, load_npz, "d.npz"),
        (lambda d, p: write_npz(d, p, compressed=True), load_npz, "d.npz"),
    ],
)
def test_writer_round_trip_is_exact(tmp_path: Path, write, load, name: str) -> None:
    ds = tricky_dataset()
    assert ds.num_episodes == 4
    path = tmp_path / name
    write(ds, path)
    back = load(path)
    assert_same(ds, back)
    assert back.metadata["source"] == str(path)
    assert_same(ds, load_path(path))
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_written_hdf5_is_plain_d4rl(tmp_path: Path) -> None:
    """A D4RL-only reader (keys + metadata/ scalars) understands our file."""
    ds = tricky_dataset()
    path = write_d4rl_hdf5(ds, tmp_path / "d.hdf5")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["observations"][()], ds.observations)
        np.testing.assert_array_equal(f["infos/qpos"][()], ds.infos["qpos"])
        assert f["metadata/env_id"][()] == b"Hopper-v5"
        assert json.loads(f.attrs["diffrl_metadata"])["recipe"]["snapshots"] == [1, 2]


def test_stored_episode_starts_must_agree_with_flags(tmp_path: Path) -> None:
    arrays = d4rl_arrays()
    # Row 11 is a timeout but episode_starts claims one episode runs from 5 to 15.
    path = write_plain_h5(tmp_path / "bad.hdf5", arrays, episode_starts=np.array([0, 5]))
    with pytest.raises(DatasetError) as err:
        load_d4rl_hdf5(path)
    assert str(err.value) == (
        f"{path}: key 'episode_starts' does not end an episode at row 11, "
        "which is a terminal or timeout"
    )


def test_hdf5_writer_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = tricky_dataset()
    path = tmp_path / "d.hdf5"
    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after two arrays are already on disk
            raise OSError("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="disk full"):
        write_d4rl_hdf5(ds, path)
    assert calls["n"] == 3
    assert os.listdir(tmp_path) == []

    # Overwriting: a failed write leaves the previous file untouched.
    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    write_d4rl_hdf5(ds.subset_episodes([0]), path)
    calls["n"] = 0
    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError):
        write_d4rl_hdf5(ds, path)
    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    assert os.listdir(tmp_path) == ["d.hdf5"]
    assert load_d4rl_hdf5(path).num_episodes == 1


def test_npz_writer_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy.lib.format as npy_format

    real = npy_format.write_array
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(npy_format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        write_npz(tricky_dataset(), tmp_path / "d.npz")
    assert calls["n"] == 3
    assert os.listdir(tmp_path) == []


def test_writer_rejects_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "d.hdf5"
    with pytest.raises(DatasetError) as err:
        write_d4rl_hdf5(tricky_dataset(), path)
    assert str(err.value) == f"{path}: directory {path.parent} does not exist"


# ---------------------------------------------------------------------------------------------
# Error messages (exact text), for HDF5 and npz alike
# ---------------------------------------------------------------------------------------------


def _drop(key):
    return lambda a: a.pop(key)


def _set(key, fn):
    def edit(a):
        a[key] = fn(a[key])

    return edit


def _nan_at(key, row, value):
    def edit(a):
        arr = a[key].copy()
        arr[row] = value
        a[key] = arr

    return edit


BAD_FILES = [
    (_drop("actions"), "missing key 'actions'"),
    (_drop("observations"), "missing key 'observations'"),
    (_drop("terminals"), "missing key 'terminals'"),
    (
        _set("rewards", lambda r: r[:-1]),
        "key 'rewards' has 15 rows, expected 16 (as 'observations')",
    ),
    (
        _set("actions", lambda x: x[:-2]),
        "key 'actions' has 14 rows, expected 16 (as 'observations')",
    ),
    (
        _set("timeouts", lambda x: x[:-1]),
        "key 'timeouts' has 15 rows, expected 16 (as 'observations')",
    ),
    (_set("actions", lambda x: x[:, 0]), "key 'actions' has shape (16,), expected (N, act_dim)"),
    (
        _set("observations", lambda x: x[:, 0]),
        "key 'observations' has shape (16,), expected (N, obs_dim)",
    ),
    (
        _set("next_observations", lambda x: x[:, :2]),
        "key 'next_observations' has shape (16, 2), expected (16, 3) (as 'observations')",
    ),
    (
        _set("next_observations", lambda x: x[:, 0]),
        "key 'next_observations' has shape (16,), expected (N, obs_dim)",
    ),
    (_nan_at("observations", 12, np.nan), "key 'observations' contains NaN (first at row 12)"),
    (_nan_at("actions", 3, np.inf), "key 'actions' contains inf (first at row 3)"),
    (_nan_at("rewards", 7, -np.inf), "key 'rewards' contains inf (first at row 7)"),
    (_nan_at("rewards", 0, np.nan), "key 'rewards' contains NaN (first at row 0)"),
    (
        _nan_at("next_observations", 15, np.nan),
        "key 'next_observations' contains NaN (first at row 15)",
    ),
    (
        _set("terminals", lambda x: x.astype(np.float32) * 2),
        "key 'terminals' has values other than 0 and 1",
    ),
    (lambda a: a.update({k: v[:0] for k, v in a.items()}), "dataset has no transitions"),
]


@pytest.mark.parametrize("suffix", [".hdf5", ".npz"])
@pytest.mark.parametrize("edit, message", BAD_FILES)
def test_reader_error_messages(tmp_path: Path, suffix: str, edit, message: str) -> None:
    arrays = d4rl_arrays()
    edit(arrays)
    path = tmp_path / f"bad{suffix}"
    if suffix == ".hdf5":
        write_plain_h5(path, arrays)
        loader = load_d4rl_hdf5
    else:
        write_plain_npz(path, arrays)
        loader = load_npz
    for load in (loader, load_path):
        with pytest.raises(DatasetError) as err:
            load(path)
        assert str(err.value) == f"{path}: {message}"


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    for loader in (load_d4rl_hdf5, load_npz, load_path):
        missing = tmp_path / "nothing.hdf5"
        with pytest.raises(DatasetError) as err:
            loader(missing)
        assert str(err.value) == f"{missing}: no such file"
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    for loader in (load_d4rl_hdf5, load_path):
        with pytest.raises(DatasetError) as err:
            loader(text)
        assert str(err.value) == f"{text}: not an HDF5 file"
    fake_npz = tmp_path / "notes.npz"
    fake_npz.write_text("not npz")
    with pytest.raises(DatasetError) as err:
        load_npz(fake_npz)
    assert str(err.value) == f"{fake_npz}: not an npz file"
    other = tmp_path / "data.csv"
    other.write_text("a,b")
    with pytest.raises(DatasetError) as err:
        load_path(other)
    assert str(err.value) == (
        f"{other}: unknown dataset format '.csv' (supported: .hdf5/.h5 (D4RL or Minari file), "
        ".npz, or a Minari dataset directory)"
    )


def test_npz_rejects_pickled_objects(tmp_path: Path) -> None:
    arrays = d4rl_arrays()
    arrays["actions"] = np.array([None] * N, dtype=object)
    path = tmp_path / "obj.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as err:
        load_npz(path)
    assert (
        str(err.value) == f"{path}: key 'actions' holds pickled Python objects, expected an array"
    )


# ---------------------------------------------------------------------------------------------
# Minari, written by minari itself
# ---------------------------------------------------------------------------------------------

MINARI_ID = "diffrl-test/pendulum/random-v0"


@pytest.fixture
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def minari_buffers(rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Episodes of 5, 7 and 4 steps: truncated, truncated, terminated."""
    episodes = []
    for i, t in enumerate(LENGTHS):
        terminations = np.zeros(t, bool)
        truncations = np.zeros(t, bool)
        (terminations if i == 2 else truncations)[-1] = True
        episodes.append(
            {
                "observations": rng.uniform(-1, 1, (t + 1, 3)).astype(np.float32),
                "actions": rng.uniform(-2, 2, (t, 1)).astype(np.float32),
                "rewards": rng.normal(size=t),
                "terminations": terminations,
                "truncations": truncations,
                "infos": {"step": np.arange(t + 1), "cost": rng.normal(size=(t + 1, 2))},
            }
        )
    return episodes


@pytest.mark.filterwarnings("ignore")
def test_minari_dataset_from_minari(minari_root: Path) -> None:
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    episodes = minari_buffers(np.random.default_rng(0))
    minari.create_dataset_from_buffers(
        MINARI_ID,
        [EpisodeBuffer(id=i, **ep) for i, ep in enumerate(episodes)],
        env="Pendulum-v1",
        algorithm_name="random",
        ref_min_score=-1500.0,
        ref_max_score=-150.0,
    )
    dataset_dir = minari_root / MINARI_ID
    data_file = dataset_dir / "data" / "main_data.hdf5"
    by_id = load_minari(MINARI_ID)
    loads = [
        by_id,
        load_minari(MINARI_ID, root=minari_root),
        load_minari("diffrl-test/pendulum/random"),  # no version: the newest
        load_minari(dataset_dir),
        load_minari(dataset_dir / "data"),
        load_minari(data_file),
        load_path(dataset_dir),
        load_path(data_file),
    ]
    for ds in loads:
        assert ds.num_transitions == N and ds.num_episodes == 3
        np.testing.assert_array_equal(ds.observations, by_id.observations)

    ds = by_id
    np.testing.assert_array_equal(ds.episode_lengths(), LENGTHS)
    for e, ep in enumerate(episodes):
        got = ds.episode(e)
        np.testing.assert_array_equal(got["observations"], ep["observations"][:-1])
        np.testing.assert_array_equal(got["next_observations"], ep["observations"][1:])
        np.testing.assert_array_equal(got["actions"], ep["actions"])
        np.testing.assert_array_equal(got["rewards"], ep["rewards"].astype(np.float32))
        np.testing.assert_array_equal(got["terminals"], ep["terminations"])
        np.testing.assert_array_equal(got["timeouts"], ep["truncations"])
        np.testing.assert_array_equal(got["infos"]["step"], ep["infos"]["step"][:-1])
        np.testing.assert_array_equal(got["infos"]["cost"], ep["infos"]["cost"][:-1])
    assert ds.next_valid.all()
    assert ds.metadata["env_id"] == "Pendulum-v1"
    assert ds.metadata["ref_min_score"] == -1500.0 and ds.metadata["ref_max_score"] == -150.0
    assert ds.metadata["dataset_id"] == MINARI_ID and ds.metadata["total_steps"] == N
    assert ds.metadata["source"] == str(data_file)
    np.testing.assert_array_equal(ds.action_bounds()[0], [-2.0])
    assert "normalized_return_mean" in ds.stats()

    # minari's own reader sees the same episodes.
    theirs = list(minari.load_dataset(MINARI_ID).iterate_episodes())
    assert len(theirs) == ds.num_episodes
    for e, ep in enumerate(theirs):
        got = ds.episode(e)
        np.testing.assert_array_equal(got["observations"], ep.observations[:-1])
        np.testing.assert_array_equal(got["actions"], ep.actions)
        np.testing.assert_array_equal(got["terminals"], ep.terminations)


@pytest.mark.filterwarnings("ignore")
def test_minari_goal_dict_observations(minari_root: Path) -> None:
    minari = pytest.importorskip("minari")
    from gymnasium import spaces
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(2)
    box = lambda n: spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
    obs_space = spaces.Dict(
        {"observation": box(4), "achieved_goal": box(2), "desired_goal": box(2)}
    )
    buffers, raw = [], []
    for i, t in enumerate((3, 6)):
        obs = {k: rng.normal(size=(t + 1, s.shape[0])) for k, s in obs_space.spaces.items()}
        raw.append(obs)
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=obs,
                actions=rng.uniform(-1, 1, (t, 2)).astype(np.float32),
                rewards=rng.normal(size=t),
                terminations=np.zeros(t, bool),
                truncations=np.eye(t, dtype=bool)[-1],
            )
        )
    minari.create_dataset_from_buffers(
        "maze-v1",  # an old-style id without namespace
        buffers,
        observation_space=obs_space,
        action_space=spaces.Box(-1, 1, (2,), np.float32),
        algorithm_name="random",
    )
    ds = load_minari("maze-v1")
    assert ds.num_transitions == 9 and ds.num_episodes == 2 and ds.obs_dim == 4
    np.testing.assert_array_equal(
        ds.observations, np.concatenate([o["observation"][:-1] for o in raw]).astype(np.float32)
    )
    np.testing.assert_array_equal(
        ds.infos["goal"], np.concatenate([o["desired_goal"][:-1] for o in raw])
    )
    np.testing.assert_array_equal(
        ds.infos["achieved_goal"], np.concatenate([o["achieved_goal"][:-1] for o in raw])
    )
    assert "env_id" not in ds.metadata and "ref_min_score" not in ds.metadata


def write_minari_by_hand(root: Path, dataset_id: str, episodes: list[dict]) -> Path:
    """A minimal Minari layout written with h5py (for malformed files minari refuses to make)."""
    data = root / dataset_id / "data"
    data.mkdir(parents=True)
    (data / "metadata.json").write_text(json.dumps({"dataset_id": dataset_id}))
    with h5py.File(data / "main_data.hdf5", "w") as f:
        for i, ep in enumerate(episodes):
            for key, value in ep.items():
                if key == "infos":
                    for k, v in value.items():
                        f.create_dataset(f"episode_{i}/infos/{k}", data=v)
                else:
                    f.create_dataset(f"episode_{i}/{key}", data=value)
    return data / "main_data.hdf5"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ep: ep.pop("actions"), "missing key 'episode_1/actions'"),
        (lambda ep: ep.pop("truncations"), "missing key 'episode_1/truncations'"),
        (
            lambda ep: ep.update(rewards=ep["rewards"][:-1]),
            "key 'episode_1/rewards' has 6 rows, expected 7 (as 'episode_1/actions')",
        ),
        (
            lambda ep: ep.update(observations=ep["observations"][:-1]),
            "key 'episode_1/observations' has 7 rows, expected 8 "
            "(as 'episode_1/actions' plus the final observation)",
        ),
        (
            lambda ep: ep.update(actions=ep["actions"][:, 0]),
            "key 'episode_1/actions' has shape (7,), expected (N, act_dim)",
        ),
        (
            lambda ep: ep["observations"].__setitem__((3, 1), np.nan),
            "key 'episode_1/observations' contains NaN (first at row 3)",
        ),
        (
            lambda ep: ep["actions"].__setitem__((5, 0), np.inf),
            "key 'episode_1/actions' contains inf (first at row 5)",
        ),
        (
            lambda ep: ep["truncations"].__setitem__(2, True),
            "key 'episode_1/truncations' is set at step 2, before the episode's last step 6",
        ),
        (
            lambda ep: ep["infos"].update(cost=ep["infos"]["cost"][:3]),
            "key 'episode_1/infos/cost' has 3 rows, expected 7 or 8 (as 'episode_1/actions')",
        ),
    ],
)
def test_minari_error_messages(minari_root: Path, edit, message: str) -> None:
    episodes = minari_buffers(np.random.default_rng(0))
    edit(episodes[1])
    path = write_minari_by_hand(minari_root, "bad/env/data-v0", episodes)
    with pytest.raises(DatasetError) as err:
        load_minari("bad/env/data-v0")
    assert str(err.value) == f"{path}: {message}"


def test_minari_unknown_id_and_empty(minari_root: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_minari("x/y-v0")
    assert str(err.value) == (
        f"minari dataset 'x/y-v0' not found under {minari_root} (set MINARI_DATASETS_PATH)"
    )
    path = write_minari_by_hand(minari_root, "empty-v0", [])
    with pytest.raises(DatasetError) as err:
        load_minari("empty-v0")
    assert str(err.value) == f"{path}: dataset has no transitions"


def test_minari_other_storage_format(minari_root: Path) -> None:
    data = minari_root / "ns" / "arrow-v0" / "data"
    data.mkdir(parents=True)
    (data / "metadata.json").write_text(json.dumps({"data_format": "arrow"}))
    with pytest.raises(DatasetError) as err:
        load_minari("ns/arrow-v0")
    assert str(err.value) == (
        f"{data / 'metadata.json'}: data_format 'arrow' is not supported (only 'hdf5')"
    )


# ---------------------------------------------------------------------------------------------
# OfflineDataset itself
# ---------------------------------------------------------------------------------------------


def test_dataset_from_episodes_subset_concatenate_stats() -> None:
    rng = np.random.default_rng(5)
    episodes = [
        {  # T + 1 observations: the last is the final next observation
            "observations": rng.normal(size=(t + 1, 3)),
            "actions": rng.normal(size=(t, 2)),
            "rewards": np.full(t, 1.0),
            "terminals": np.eye(t, dtype=bool)[-1],
        }
        for t in (2, 3, 4)
    ]
    ds = OfflineDataset.from_episodes(
        episodes, metadata={"name": "a", "ref_min_score": 0.0, "ref_max_score": 4.0}
    )
    np.testing.assert_array_equal(ds.episode_starts, [0, 2, 5])
    np.testing.assert_array_equal(ds.episode_ends, [2, 5, 9])
    assert ds.episode_slices() == [slice(0, 2), slice(2, 5), slice(5, 9)]
    np.testing.assert_array_equal(ds.episode_returns(), [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(
        ds.episode(1)["next_observations"], episodes[1]["observations"][1:].astype(np.float32)
    )
    stats = ds.stats()
    assert stats["transitions"] == 9 and stats["episodes"] == 3
    assert stats["return_mean"] == pytest.approx(3.0) and stats["length_mean"] == 3.0
    assert stats["normalized_return_min"] == pytest.approx(50.0)
    assert stats["normalized_return_max"] == pytest.approx(100.0)
    np.testing.assert_array_equal(ds.action_bounds()[0], ds.actions.min(0))

    sub = ds.subset_episodes([2, 0])
    np.testing.assert_array_equal(sub.episode_lengths(), [4, 2])
    np.testing.assert_array_equal(sub.observations[:4], ds.observations[5:9])
    np.testing.assert_array_equal(sub.observations[4:], ds.observations[:2])

    both = OfflineDataset.concatenate([ds, sub])
    np.testing.assert_array_equal(both.episode_starts, [0, 2, 5, 9, 13])
    np.testing.assert_array_equal(both.observations[9:], sub.observations)
    assert both.metadata["ref_max_score"] == 4.0 and both.metadata["parts"] == ["a", "a"]
    assert "normalized_return_mean" not in OfflineDataset.from_episodes(episodes).stats()


def test_dataset_rejects_inconsistent_arrays() -> None:
    good = tricky_dataset()

    def build(**change) -> OfflineDataset:
        fields = {
            k: getattr(good, k)
            for k in (
                "observations",
                "actions",
                "rewards",
                "next_observations",
                "terminals",
                "timeouts",
                "episode_starts",
                "next_valid",
            )
        }
        fields.update(change)
        return OfflineDataset(**fields)

    cases = [
        ({"episode_starts": np.array([1, 3])}, "key 'episode_starts' must start with 0"),
        (
            {"episode_starts": np.array([0, 3, 3])},
            "key 'episode_starts' is not strictly increasing",
        ),
        (
            {"episode_starts": np.array([0, 3, 99])},
            "key 'episode_starts' has a start at row 99, beyond the 14 rows",
        ),
        (
            {"episode_starts": np.array([0, 7])},
            "key 'episode_starts' does not end an episode at row 2, which is a terminal or timeout",
        ),
        (
            {"rewards": good.rewards[:3]},
            "key 'rewards' has 3 rows, expected 14 (as 'observations')",
        ),
        (
            {"next_valid": good.next_valid[:3]},
            "key 'next_valid' has 3 rows, expected 14 (as 'observations')",
        ),
    ]
    for change, message in cases:
        with pytest.raises(DatasetError) as err:
            build(**change)
        assert str(err.value) == f"OfflineDataset: {message}"
    # Without episode_starts the boundaries come from the flags (the cut episode merges).
    assert build(episode_starts=None).num_episodes == 3


def test_minari_other_dict_layout_and_old_metadata(minari_root: Path) -> None:
    """Non-goal Dict observations are concatenated in sorted key order; without metadata.json
    (Minari < 0.5) the metadata comes from the file's root attributes."""
    rng = np.random.default_rng(3)
    path = minari_root / "old-v2" / "data" / "main_data.hdf5"
    path.parent.mkdir(parents=True)
    parts = []
    with h5py.File(path, "w") as f:
        f.attrs["dataset_id"] = "old-v2"
        f.attrs["env_spec"] = json.dumps({"id": "Old-v0"})
        f.attrs["ref_max_score"] = 10.0
        for i, t in enumerate((2, 3)):
            obs = {"b": rng.normal(size=(t + 1, 2)), "a": rng.normal(size=(t + 1,))}
            parts.append(np.concatenate([obs["a"][:-1, None], obs["b"][:-1]], axis=1))
            for key, value in obs.items():
                f.create_dataset(f"episode_{i}/observations/{key}", data=value)
            f.create_dataset(f"episode_{i}/actions", data=rng.normal(size=(t, 1)))
            f.create_dataset(f"episode_{i}/rewards", data=rng.normal(size=t))
            f.create_dataset(f"episode_{i}/terminations", data=np.zeros(t, bool))
            f.create_dataset(f"episode_{i}/truncations", data=np.arange(t) == t - 1)
    ds = load_path(path)
    assert ds.obs_dim == 3 and ds.num_episodes == 2
    np.testing.assert_array_equal(ds.observations, np.concatenate(parts).astype(np.float32))
    assert ds.metadata["env_id"] == "Old-v0" and ds.metadata["ref_max_score"] == 10.0
