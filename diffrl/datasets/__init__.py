"""Built-in datasets (recipes made on this machine) and name/path resolution.

A built-in dataset NAME is written to ``$DIFFRL_DATA/NAME.hdf5`` (default
``~/.cache/diffrl/datasets``) in the D4RL layout; `resolve` turns a name, a file path or a Minari
id into an `OfflineDataset`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diffrl.data import OfflineDataset, load_minari, load_path, write_d4rl_hdf5
from diffrl.data.io import minari_root
from diffrl.envs import reference_scores
from diffrl.errors import DatasetError


@dataclass(frozen=True)
class BuiltinDataset:
    """A recipe: `make(size, seed)` returns the dataset; `default_size` transitions by default."""

    name: str
    description: str
    default_size: int
    make: Callable[[int, int], OfflineDataset]


def _toy_make(size: int, seed: int) -> OfflineDataset:
    from diffrl.datasets import toy_bandit

    return toy_bandit.make(size, seed)


BUILTINS: dict[str, BuiltinDataset] = {
    "toy-bandit": BuiltinDataset(
        "toy-bandit",
        "Diffusion-QL's 2-d multimodal bandit: four Gaussian action modes, one constant state",
        10_000,
        _toy_make,
    ),
}


def _register_locomotion() -> None:
    from diffrl.datasets import locomotion

    for name in locomotion.dataset_names():
        env, level = locomotion.parse(name)
        missing = "expert" in level and not locomotion.policy_path(env, "expert").exists()
        BUILTINS[name] = BuiltinDataset(
            name,
            f"D4RL-style {level} data on Gymnasium {locomotion.ENVS[env]}"
            + (" (needs an expert policy: not shipped yet)" if missing else ""),
            locomotion.default_size(name),
            lambda size, seed, name=name: locomotion.make(name, size, seed),
        )


_register_locomotion()


def _register_maze() -> None:
    from diffrl.datasets import maze

    for name in maze.dataset_names():
        BUILTINS[name] = BuiltinDataset(
            name,
            f"D4RL-style maze2d run (noisy waypoint controller) on {maze.ENVS[maze.parse(name)]}",
            maze.default_size(name),
            lambda size, seed, name=name: maze.make(name, size, seed),
        )


_register_maze()


def data_root() -> Path:
    """Where built-in datasets live: $DIFFRL_DATA, else ~/.cache/diffrl/datasets."""
    root = os.environ.get("DIFFRL_DATA")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "diffrl" / "datasets"


def builtin_path(name: str) -> Path:
    return data_root() / f"{name}.hdf5"


def unknown_name_error(name: str) -> DatasetError:
    close = difflib.get_close_matches(name, list(BUILTINS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return DatasetError(
        f"unknown dataset '{name}': not a built-in name ({', '.join(BUILTINS)}), "
        f"not an existing file, not a Minari id{hint}"
    )


def minari_id(name: str) -> str:
    """diffrl's Minari id for a dataset name: 'hopper-medium-v0' -> 'diffrl/hopper/medium-v0'."""
    stem, _, version = name.rpartition("-v")
    env, _, level = stem.partition("-")
    if not level or not version.isdigit():
        return f"diffrl/{name}/data-v0"
    return f"diffrl/{env}/{level}-v{version}"


def _target(path: Path | None, name: str, fmt: str) -> Path | None:
    """Where `write` puts a D4RL-layout file (None for Minari, which checks for itself)."""
    if fmt == "minari":
        return None
    if fmt != "d4rl":
        raise DatasetError(f"unknown --format '{fmt}' (d4rl or minari)")
    return Path(path) if path is not None else data_root() / f"{name}.hdf5"


def _refuse_existing(path: Path | None, force: bool) -> None:
    """Never replace a user's file silently: one line naming it unless `force`."""
    if path is None or force or not path.exists():
        return
    try:
        held = f" ({transitions_on_disk(path):,} transitions)"
    except Exception:  # an unreadable file is still the user's file
        held = ""
    raise DatasetError(f"{path}: exists{held}; pass --force to replace it")


def transitions_on_disk(path: Path) -> int:
    """The number of transitions in a D4RL-layout HDF5 file (its rewards' length), read cheaply."""
    import h5py

    with h5py.File(path, "r") as fh:
        return int(fh["rewards"].shape[0])


def write(
    dataset: OfflineDataset, path: Path | None, name: str, fmt: str = "d4rl", force: bool = False
) -> Path:
    """Write in the D4RL layout at `path` (default $DIFFRL_DATA/NAME.hdf5) or as Minari."""
    if fmt == "minari":
        from diffrl.data.minari_export import write_minari

        return write_minari(dataset, minari_id(name), root=path, overwrite=force)
    target = _target(path, name, fmt)
    assert target is not None
    _refuse_existing(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_d4rl_hdf5(dataset, target)
    return target


def make_builtin(
    name: str,
    size: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    fmt: str = "d4rl",
    force: bool = False,
) -> Path:
    """Make built-in dataset `name`, write it atomically in the D4RL layout, return the path.

    A file already at the target is kept (DatasetError) unless `force`: it is checked before
    the (possibly long) collection starts.
    """
    if name not in BUILTINS:
        raise unknown_name_error(name)
    spec = BUILTINS[name]
    n = spec.default_size if size is None else int(size)
    if n <= 0:
        raise DatasetError(f"--size must be positive, got {n}")
    _refuse_existing(_target(Path(out) if out is not None else None, name, fmt), force)
    try:
        dataset = spec.make(n, seed)
    except ValueError as exc:
        raise DatasetError(f"{name}: {exc}") from None
    return write(dataset, Path(out) if out is not None else None, name, fmt, force=force)


def make_from_policy(
    env_id: str,
    policy: str,
    size: int = 1_000_000,
    seed: int = 0,
    out: str | Path | None = None,
    fmt: str = "d4rl",
    force: bool = False,
) -> Path:
    """Collect a dataset in `env_id` with an SB3 SAC snapshot (or 'random'); return its path."""
    from diffrl.datasets.collect import SACActor, collect
    from diffrl.datasets.locomotion import versions

    if size <= 0:
        raise DatasetError(f"--size must be positive, got {size}")
    actor = None if policy == "random" else SACActor.load(policy)
    stem = "random" if actor is None else Path(policy).stem
    name = f"{env_id}-{stem}-s{seed}"
    _refuse_existing(_target(Path(out) if out is not None else None, name, fmt), force)
    dataset = collect(env_id, actor, size, seed, desc=f"collect {env_id}")
    dataset.metadata.update({"name": name, "size": size, "versions": versions()})
    ref = reference_scores(env_id)
    if ref is not None:
        dataset.metadata["ref_min_score"], dataset.metadata["ref_max_score"] = ref
    return write(dataset, Path(out) if out is not None else None, name, fmt, force=force)


def _looks_like_minari_id(name: str) -> bool:
    return "/" in name and not name.startswith((".", "/", "~")) and not Path(name).suffix


def resolve(name_or_path: str, auto_make: bool = True) -> OfflineDataset:
    """A built-in name (made on first use when `auto_make`), a file/dir path, or a Minari id.

    Where the data carries no reference scores, D4RL's for its environment family are filled in
    (from the dataset's name, file name or env id), so normalised returns can be reported.
    """
    dataset = _resolve(name_or_path, auto_make)
    meta = dataset.metadata
    if meta.get("ref_min_score") is None or meta.get("ref_max_score") is None:
        for key in (
            str(meta.get("name", "")),
            Path(name_or_path).name,
            str(meta.get("env_id", "")),
        ):
            ref = reference_scores(key) if key else None
            if ref is not None:
                meta["ref_min_score"], meta["ref_max_score"] = ref
                break
    return dataset


def _resolve(name_or_path: str, auto_make: bool) -> OfflineDataset:
    if name_or_path in BUILTINS:
        path = builtin_path(name_or_path)
        if not path.exists():
            if not auto_make:
                raise DatasetError(
                    f"dataset '{name_or_path}' is not made yet: "
                    f"run `diffrl datasets make {name_or_path}`"
                )
            make_builtin(name_or_path)
        dataset = load_path(path)
        dataset.metadata.setdefault("name", name_or_path)
        return dataset
    path = Path(name_or_path).expanduser()
    if path.exists():
        return load_path(path)
    if _looks_like_minari_id(name_or_path) or (minari_root() / name_or_path).is_dir():
        return load_minari(name_or_path)
    if path.suffix:
        raise DatasetError(f"{name_or_path}: no such file")
    raise unknown_name_error(name_or_path)
