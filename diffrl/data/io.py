"""Readers and writers: D4RL HDF5, flat .npz, Minari's on-disk format (read without minari).

Every reader validates what it reads and raises `DatasetError` with one line naming the file,
the key and the problem, e.g. ``data.hdf5: key 'rewards' has 999 rows, expected 1000 (as
'observations')``. Writers are atomic: they write a hidden temporary file in the target's
directory, fsync it and `os.replace` it onto the final name, so a crash never leaves a half file
under that name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffrl.data.dataset import (
    OfflineDataset,
    as_column,
    as_flags,
    as_matrix,
    boundaries_from_flags,
    check_episode_starts,
    check_finite,
    check_rows,
    infer_next,
    shape_str,
)
from diffrl.errors import DatasetError
from diffrl.fileio import atomic_write

PathLike = str | os.PathLike
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS = ("next_observations", "timeouts", "episode_starts", "next_valid")
METADATA_ATTR = "diffrl_metadata"
SUPPORTED = ".hdf5/.h5 (D4RL or Minari file), .npz, or a Minari dataset directory"


# ---------------------------------------------------------------------------------------------
# Flat layout (D4RL HDF5 and .npz): shared validation and assembly
# ---------------------------------------------------------------------------------------------


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"{path}: no such file")


def _from_flat(
    where: str,
    raw: dict[str, np.ndarray],
    infos: dict[str, np.ndarray],
    metadata: dict[str, Any],
) -> OfflineDataset:
    """Validate the flat arrays of a D4RL-style file and build the dataset.

    raw holds REQUIRED_KEYS and any of OPTIONAL_KEYS; checks run in a fixed order (missing
    keys, shapes, emptiness, row counts, NaN/inf) so a file with several faults always gets the
    same message.
    """
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise DatasetError(f"{where}: missing key '{key}'")
    obs = as_matrix(where, "observations", raw["observations"], "obs_dim")
    actions = as_matrix(where, "actions", raw["actions"], "act_dim")
    rewards = as_column(where, "rewards", raw["rewards"])
    next_obs = None
    if "next_observations" in raw:
        next_obs = as_matrix(where, "next_observations", raw["next_observations"], "obs_dim")
    terminals = as_flags(where, "terminals", raw["terminals"])
    n = obs.shape[0]
    if n == 0:
        raise DatasetError(f"{where}: dataset has no transitions")
    timeouts = as_flags(where, "timeouts", raw["timeouts"]) if "timeouts" in raw else None
    for key, arr in (
        ("actions", actions),
        ("rewards", rewards),
        ("next_observations", next_obs),
        ("terminals", terminals),
        ("timeouts", timeouts),
    ):
        if arr is not None:
            check_rows(where, key, arr, n, "observations")
    if next_obs is not None and next_obs.shape[1] != obs.shape[1]:
        raise DatasetError(
            f"{where}: key 'next_observations' has shape {shape_str(next_obs.shape)}, "
            f"expected {shape_str(obs.shape)} (as 'observations')"
        )
    for key, arr in (
        ("observations", obs),
        ("actions", actions),
        ("rewards", rewards),
        ("next_observations", next_obs),
    ):
        if arr is not None:
            check_finite(where, key, arr)
    for key, arr in infos.items():
        if arr.ndim == 0:
            raise DatasetError(f"{where}: key 'infos/{key}' is a scalar, expected (N, ...)")
        check_rows(where, f"infos/{key}", arr, n, "observations")
    if timeouts is None:
        timeouts = np.zeros(n, bool)
    if "episode_starts" in raw:
        starts = check_episode_starts(
            where, raw["episode_starts"], terminals, timeouts, "episode_starts"
        )
    else:
        starts = boundaries_from_flags(terminals, timeouts)
    if next_obs is None:
        next_obs, next_valid = infer_next(obs, starts, terminals)
    elif "next_valid" in raw:
        next_valid = as_flags(where, "next_valid", raw["next_valid"])
        check_rows(where, "next_valid", next_valid, n, "observations")
    else:
        next_valid = np.ones(n, bool)
    metadata = dict(metadata)
    metadata["source"] = where
    return OfflineDataset(
        observations=obs,
        actions=actions,
        rewards=rewards,
        next_observations=next_obs,
        terminals=terminals,
        timeouts=timeouts,
        episode_starts=starts,
        next_valid=next_valid,
        infos=infos,
        metadata=metadata,
    )


def _parse_metadata_json(where: str, text: Any) -> dict[str, Any]:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        value = json.loads(str(text))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{where}: key '{METADATA_ATTR}' is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: key '{METADATA_ATTR}' is not a JSON object")
    return value


def _metadata_json(dataset: OfflineDataset, path: Path) -> str:
    try:
        # sorted keys: the same metadata always gives the same bytes
        return json.dumps(dataset.metadata, allow_nan=True, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{path}: metadata is not JSON-serialisable ({err})") from None


def _json_default(value: Any) -> Any:
    # numpy scalars and small arrays are common in metadata; store them as plain JSON.
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _plain(value: Any) -> Any:
    """An HDF5 scalar/attribute as a JSON-able Python value, or None when it is not simple."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(()).item()
        return _plain(value)
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, str | int | float | bool):
        return value
    return None


# ---------------------------------------------------------------------------------------------
# D4RL HDF5
# ---------------------------------------------------------------------------------------------


def _read_group(group: h5py.Group, prefix: str = "") -> dict[str, np.ndarray]:
    """Every dataset under `group`, recursively, keyed by its path relative to the group."""
    out: dict[str, np.ndarray] = {}
    for name in group:
        item = group[name]
        key = f"{prefix}{name}"
        if isinstance(item, h5py.Group):
            out.update(_read_group(item, key + "/"))
        elif isinstance(item, h5py.Dataset):
            out[key] = item[()]
    return out


def _open_hdf5(path: Path) -> h5py.File:
    _check_exists(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"{path}: not an HDF5 file ({err})") from None


def load_d4rl_hdf5(path: PathLike) -> OfflineDataset:
    """Read a D4RL-layout HDF5 file (see DATASETS.md); boundaries = terminals | timeouts unless
    the file stores `episode_starts` (files we wrote), which is then checked and trusted."""
    path = Path(path)
    where = str(path)
    with _open_hdf5(path) as f:
        raw: dict[str, np.ndarray] = {}
        for key in REQUIRED_KEYS + OPTIONAL_KEYS:
            if key in f:
                item = f[key]
                if not isinstance(item, h5py.Dataset):
                    raise DatasetError(f"{where}: key '{key}' is a group, expected an array")
                raw[key] = item[()]
        infos = _read_group(f["infos"]) if isinstance(f.get("infos"), h5py.Group) else {}
        metadata: dict[str, Any] = {}
        if isinstance(f.get("metadata"), h5py.Group):
            # D4RL keeps policy weights under metadata/; only simple values are kept.
            for key, value in _read_group(f["metadata"]).items():
                simple = _plain(value)
                if simple is not None:
                    metadata[key] = simple
        if METADATA_ATTR in f.attrs:
            metadata.update(_parse_metadata_json(where, f.attrs[METADATA_ATTR]))
    return _from_flat(where, raw, infos, metadata)


def write_d4rl_hdf5(
    dataset: OfflineDataset, path: PathLike, compression: str | None = "gzip"
) -> Path:
    """Write `dataset` in the D4RL layout, atomically; returns the path.

    Besides D4RL's keys it stores episode_starts and next_valid (so boundaries of a last
    episode that ends without terminal/timeout, and unknown next observations, survive), the
    metadata as JSON in the root attribute `diffrl_metadata`, and its simple scalars under
    metadata/ for tools that only read D4RL's layout.
    """
    path = Path(path)
    meta_json = _metadata_json(dataset, path)
    # No timestamps in the file, so the same data gives the same bytes (and checksum).
    kwargs: dict[str, Any] = {"track_times": False}
    if compression:
        kwargs["compression"] = compression

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for key in (
                "observations",
                "next_observations",
                "actions",
                "rewards",
                "terminals",
                "timeouts",
                "episode_starts",
                "next_valid",
            ):
                f.create_dataset(key, data=getattr(dataset, key), **kwargs)
            for key, value in dataset.infos.items():
                f.create_dataset(f"infos/{key}", data=value, **kwargs)
            meta = f.create_group("metadata")
            for key, value in dataset.metadata.items():
                simple = _plain(value) if not isinstance(value, list | dict) else None
                if simple is not None and key and "/" not in key and key != ".":
                    meta.create_dataset(key, data=simple, track_times=False)
            f.attrs[METADATA_ATTR] = meta_json

    _atomic_write(path, write)
    return path


# ---------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------


def load_npz(path: PathLike) -> OfflineDataset:
    """Read the same flat keys from an .npz (infos as `infos/<key>`, metadata as JSON under
    `diffrl_metadata`, optional `episode_starts` and `next_valid`)."""
    path = Path(path)
    where = str(path)
    _check_exists(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception:  # numpy raises ValueError, OSError or UnpicklingError by content
        raise DatasetError(f"{where}: not an npz file") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DatasetError(f"{where}: not an npz file")
    with npz:
        raw: dict[str, np.ndarray] = {}
        infos: dict[str, np.ndarray] = {}
        metadata: dict[str, Any] = {}
        for key in npz.files:
            if (
                key in REQUIRED_KEYS + OPTIONAL_KEYS
                or key.startswith("infos/")
                or (key == METADATA_ATTR)
            ):
                try:
                    value = npz[key]
                except ValueError:
                    raise DatasetError(
                        f"{where}: key '{key}' holds pickled Python objects, expected an array"
                    ) from None
                if key == METADATA_ATTR:
                    metadata = _parse_metadata_json(where, value.item())
                elif key.startswith("infos/"):
                    infos[key[len("infos/") :]] = value
                else:
                    raw[key] = value
    return _from_flat(where, raw, infos, metadata)


def write_npz(dataset: OfflineDataset, path: PathLike, compressed: bool = False) -> Path:
    """Write `dataset` as a flat .npz (keys as `load_npz` reads them), atomically.

    The file is written exactly at `path` (numpy's habit of appending .npz does not apply).
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        key: getattr(dataset, key)
        for key in (
            "observations",
            "next_observations",
            "actions",
            "rewards",
            "terminals",
            "timeouts",
            "episode_starts",
            "next_valid",
        )
    }
    arrays.update({f"infos/{k}": v for k, v in dataset.infos.items()})
    arrays[METADATA_ATTR] = np.array(_metadata_json(dataset, path))
    save = np.savez_compressed if compressed else np.savez

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as fh:
            save(fh, **arrays)

    _atomic_write(path, write)
    return path


def _atomic_write(path: Path, write: Any) -> None:
    if not path.parent.is_dir():
        raise DatasetError(f"{path}: directory {path.parent} does not exist")
    atomic_write(path, write)


# ---------------------------------------------------------------------------------------------
# Minari (read without importing minari)
# ---------------------------------------------------------------------------------------------


def minari_root(root: PathLike | None = None) -> Path:
    """`root`, else $MINARI_DATASETS_PATH, else ~/.minari/datasets (as Minari itself does)."""
    if root is None:
        root = os.environ.get("MINARI_DATASETS_PATH") or "~/.minari/datasets"
    # absolute: Minari joins a relative MINARI_DATASETS_PATH onto itself when writing
    return Path(root).expanduser().absolute()


def _version(p: Path) -> int:
    m = re.search(r"-v(\d+)$", p.name)
    return int(m.group(1)) if m else -1


def _minari_file(dataset_id_or_path: PathLike, root: PathLike | None) -> tuple[Path, str | None]:
    """(main_data.hdf5 path, the id it was asked by or None for a path)."""
    given = Path(dataset_id_or_path).expanduser()
    if given.exists():
        if given.is_file():
            return given, None
        for candidate in (given / "main_data.hdf5", given / "data" / "main_data.hdf5"):
            if candidate.is_file():
                return candidate, None
        raise DatasetError(f"{given}: not a Minari dataset (no data/main_data.hdf5 inside)")
    dataset_id = str(dataset_id_or_path)
    base = minari_root(root)
    dirs = [base / dataset_id]
    if not re.search(r"-v\d+$", dataset_id):
        # An id without version means the newest one, as in minari.load_dataset.
        stem = base / dataset_id
        dirs = sorted(stem.parent.glob(f"{stem.name}-v*"), key=_version, reverse=True)
    for d in dirs:
        if (d / "data" / "main_data.hdf5").is_file():
            return d / "data" / "main_data.hdf5", dataset_id
        if (d / "data" / "metadata.json").is_file():
            # A dataset in another storage format (Minari also writes Arrow).
            return d / "data" / "main_data.hdf5", dataset_id
    raise DatasetError(
        f"minari dataset '{dataset_id}' not found under {base} (set MINARI_DATASETS_PATH)"
    )


def _flatten_obs(
    where: str, name: str, group: h5py.Group
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A Dict/Tuple observation group -> ((T + 1, obs_dim) array, extra infos (T + 1, ...)).

    Goal-conditioned layouts (keys observation + desired_goal, as in PointMaze/AntMaze/Fetch)
    use 'observation' as the observation and move desired_goal to infos['goal'] (D4RL maze2d's
    name) and achieved_goal to infos['achieved_goal']; any other key goes to
    infos['observations/<key>']. Every other layout is flattened: leaves in sorted key order
    (Tuple entries `_index_i` by i, nested groups depth-first), each reshaped to (T + 1, -1),
    then concatenated along the last axis.
    """
    leaves = _read_group(group)
    if "observation" in leaves and "desired_goal" in leaves:
        extra = {}
        for key, value in leaves.items():
            if key == "desired_goal":
                extra["goal"] = value
            elif key != "observation":
                extra[key if key == "achieved_goal" else f"observations/{key}"] = value
        return leaves["observation"], extra

    def order(key: str) -> list[tuple[int, Any]]:
        # `_index_10` after `_index_2`: Tuple spaces are ordered by index, not by string.
        parts = []
        for part in key.split("/"):
            m = re.fullmatch(r"_index_(\d+)", part)
            parts.append((0, int(m.group(1))) if m else (1, part))
        return parts

    keys = sorted(leaves, key=order)
    rows = {leaves[k].shape[0] if leaves[k].ndim else 0 for k in keys}
    if len(rows) != 1 or 0 in rows:
        shapes = ", ".join(f"{k} {shape_str(leaves[k].shape)}" for k in keys)
        raise DatasetError(
            f"{where}: key '{name}/observations' has sub-arrays of different lengths ({shapes})"
        )
    return np.concatenate([leaves[k].reshape(leaves[k].shape[0], -1) for k in keys], axis=1), {}


def _minari_metadata(data_file: Path, f: h5py.File) -> dict[str, Any]:
    """metadata.json next to main_data.hdf5 (Minari >= 0.5), else the file's root attributes
    (older Minari kept its metadata there)."""
    meta_path = data_file.parent / "metadata.json"
    if meta_path.is_file():
        try:
            return json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(f"{meta_path}: not valid JSON ({err})") from None
    return {k: _plain(v) for k, v in f.attrs.items() if _plain(v) is not None}


def _space(value: Any) -> dict[str, Any] | None:
    """A Minari space description (JSON string or dict) as a dict, or None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def load_minari(dataset_id_or_path: PathLike, root: PathLike | None = None) -> OfflineDataset:
    """Read a Minari dataset by id ("ns/env/name-vN", old ids without namespace, or an id
    without version for the newest) under `root`, or by path (the dataset dir, its data/ dir or
    main_data.hdf5).

    Each `episode_{i}` group (in order of i) becomes one episode: observations (T + 1 rows;
    next_observations = observations[1:]), actions, rewards, terminations -> terminals,
    truncations -> timeouts, infos/* (T or T + 1 rows, the first T kept; only keys present in
    every episode). Dict observations: see `_flatten_obs`.
    """
    data_file, dataset_id = _minari_file(dataset_id_or_path, root)
    where = str(data_file)
    meta_path = data_file.parent / "metadata.json"
    if not data_file.exists() and meta_path.is_file():
        fmt = json.loads(meta_path.read_text()).get("data_format", "?")
        raise DatasetError(f"{meta_path}: data_format '{fmt}' is not supported (only 'hdf5')")
    with _open_hdf5(data_file) as f:
        info = _minari_metadata(data_file, f)
        fmt = info.get("data_format", "hdf5")
        if fmt != "hdf5":
            raise DatasetError(f"{where}: data_format '{fmt}' is not supported (only 'hdf5')")
        names = sorted((k for k in f if re.fullmatch(r"episode_\d+", k)), key=lambda k: int(k[8:]))
        episodes = [_read_minari_episode(where, name, f[name]) for name in names]
    episodes = [ep for ep in episodes if len(ep["actions"])]
    if not episodes:
        raise DatasetError(f"{where}: dataset has no transitions")
    # Infos can differ between episodes; keep those every episode has.
    common = set.intersection(*(set(ep["infos"]) for ep in episodes))
    for ep in episodes:
        ep["infos"] = {k: v for k, v in ep["infos"].items() if k in common}
    for key in sorted(common):
        tails = {ep["infos"][key].shape[1:] for ep in episodes}
        if len(tails) > 1:
            raise DatasetError(
                f"{where}: key 'infos/{key}' has different shapes across episodes "
                f"({', '.join(shape_str(t) for t in sorted(tails))})"
            )
    metadata = _metadata_from_minari(info, dataset_id)
    metadata["source"] = where
    return OfflineDataset.from_episodes(episodes, metadata=metadata)


def _read_minari_episode(where: str, name: str, g: Any) -> dict[str, Any]:
    """One episode group -> a dict for `OfflineDataset.from_episodes`, validated."""
    if not isinstance(g, h5py.Group):
        raise DatasetError(f"{where}: key '{name}' is not a group")
    for key in ("observations", "actions", "rewards", "terminations", "truncations"):
        if key not in g:
            raise DatasetError(f"{where}: missing key '{name}/{key}'")
    if not isinstance(g["actions"], h5py.Dataset):
        raise DatasetError(
            f"{where}: key '{name}/actions' is a group (Dict/Tuple action space), "
            "expected (N, act_dim)"
        )
    actions = as_matrix(where, f"{name}/actions", g["actions"][()], "act_dim")
    t = actions.shape[0]
    extra: dict[str, np.ndarray] = {}
    if isinstance(g["observations"], h5py.Group):
        obs_raw, extra = _flatten_obs(where, name, g["observations"])
    else:
        obs_raw = g["observations"][()]
    obs = as_matrix(where, f"{name}/observations", obs_raw, "obs_dim")
    if obs.shape[0] != t + 1:
        raise DatasetError(
            f"{where}: key '{name}/observations' has {obs.shape[0]} rows, expected {t + 1} "
            f"(as '{name}/actions' plus the final observation)"
        )
    rewards = as_column(where, f"{name}/rewards", g["rewards"][()])
    terminals = as_flags(where, f"{name}/terminations", g["terminations"][()])
    timeouts = as_flags(where, f"{name}/truncations", g["truncations"][()])
    for key, arr in (
        ("rewards", rewards),
        ("terminations", terminals),
        ("truncations", timeouts),
    ):
        check_rows(where, f"{name}/{key}", arr, t, f"{name}/actions")
    for key, arr in (("terminations", terminals), ("truncations", timeouts)):
        early = np.flatnonzero(arr[:-1])
        if early.size:
            raise DatasetError(
                f"{where}: key '{name}/{key}' is set at step {int(early[0])}, "
                f"before the episode's last step {t - 1}"
            )
    for key, arr in (("observations", obs), ("actions", actions), ("rewards", rewards)):
        check_finite(where, f"{name}/{key}", arr)
    infos: dict[str, np.ndarray] = {}
    raw_infos = _read_group(g["infos"]) if isinstance(g.get("infos"), h5py.Group) else {}
    for key, value in {**raw_infos, **extra}.items():
        label = f"{name}/infos/{key}" if key in raw_infos else f"{name}/observations/{key}"
        if value.ndim == 0:
            continue  # a per-episode constant, not a per-step info
        if value.shape[0] not in (t, t + 1):
            raise DatasetError(
                f"{where}: key '{label}' has {value.shape[0]} rows, expected {t} or {t + 1} "
                f"(as '{name}/actions')"
            )
        infos[key] = value[:t]
    return {
        "observations": obs,
        "actions": actions,
        "rewards": rewards,
        "terminals": terminals,
        "timeouts": timeouts,
        "infos": infos,
    }


def _metadata_from_minari(info: dict[str, Any], dataset_id: str | None) -> dict[str, Any]:
    """The parts of Minari's metadata we use, under our names."""
    ds_id = info.get("dataset_id") or dataset_id
    out: dict[str, Any] = {"name": ds_id, "dataset_id": ds_id}
    for spec_key in ("env_spec", "eval_env_spec"):
        spec = _space(info.get(spec_key))
        if spec and spec.get("id"):
            out["env_id"] = spec["id"]
            break
    for key in (
        "ref_min_score",
        "ref_max_score",
        "total_steps",
        "total_episodes",
        "algorithm_name",
        "minari_version",
    ):
        if info.get(key) is not None:
            out[key] = info[key]
    action_space = _space(info.get("action_space"))
    if action_space and action_space.get("type") == "Box":
        low = np.asarray(action_space.get("low", []), np.float64).reshape(-1)
        high = np.asarray(action_space.get("high", []), np.float64).reshape(-1)
        finite = np.isfinite(low).all() and np.isfinite(high).all()
        if low.size and low.size == high.size and finite:
            out["action_low"] = low.tolist()
            out["action_high"] = high.tolist()
    return out


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def load_path(path: PathLike) -> OfflineDataset:
    """Any supported file or directory: .hdf5/.h5 (D4RL or Minari main_data.hdf5, told apart by
    content), .npz, or a Minari dataset directory."""
    path = Path(path).expanduser()
    _check_exists(path)
    if path.is_dir():
        return load_minari(path)
    suffix = path.suffix.lower()
    if suffix in (".hdf5", ".h5"):
        with _open_hdf5(path) as f:
            is_minari = "observations" not in f and any(re.fullmatch(r"episode_\d+", k) for k in f)
        return load_minari(path) if is_minari else load_d4rl_hdf5(path)
    if suffix == ".npz":
        return load_npz(path)
    raise DatasetError(f"{path}: unknown dataset format '{suffix}' (supported: {SUPPORTED})")
