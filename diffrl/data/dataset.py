"""`OfflineDataset`: episodes stored as flat, time-ordered arrays plus explicit boundaries.

Episodes are the truth (as in d3rlpy): transition samplers and trajectory slicers are views built
from these arrays. Row i is the transition (observations[i], actions[i], rewards[i],
next_observations[i]); episode e is rows [episode_starts[e], episode_ends[e]).

The checks here are shared with the readers in `diffrl.data.io`, so a bad array gets the same
one-line message whether it came from a file or from code: "<where>: key '<key>' <problem>".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffrl.errors import DatasetError

# Keys that hold floating-point data and are checked for NaN/inf.
FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")


# ---------------------------------------------------------------------------------------------
# Checks shared with the readers (each raises DatasetError with a one-line message).
# ---------------------------------------------------------------------------------------------


def shape_str(shape: Sequence[int]) -> str:
    """`(1000,)` / `(1000, 3)`: Python's tuple spelling, the same for numpy and h5py shapes."""
    return str(tuple(int(s) for s in shape))


def check_numeric(where: str, key: str, arr: np.ndarray) -> None:
    """Refuse strings and pickled objects where numbers are expected."""
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DatasetError(f"{where}: key '{key}' has dtype {arr.dtype}, expected numbers")


def check_ndim(
    where: str, key: str, arr: np.ndarray, expected: str, ndims: tuple[int, ...]
) -> None:
    """`arr.ndim` must be one of `ndims`; `expected` is the spelling for the message."""
    if arr.ndim not in ndims:
        raise DatasetError(
            f"{where}: key '{key}' has shape {shape_str(arr.shape)}, expected {expected}"
        )


def check_rows(where: str, key: str, arr: np.ndarray, rows: int, ref: str) -> None:
    """`arr` must have `rows` rows, like the array `ref`."""
    if arr.shape[0] != rows:
        raise DatasetError(
            f"{where}: key '{key}' has {arr.shape[0]} rows, expected {rows} (as '{ref}')"
        )


def check_finite(where: str, key: str, arr: np.ndarray) -> None:
    """No NaN or inf; the message gives the first bad row."""
    if not np.issubdtype(arr.dtype, np.floating):
        return
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    finite = np.isfinite(flat)
    if finite.all():
        return
    # NaN is reported before inf: it is the more common sign of a broken pipeline.
    for name, bad in (("NaN", np.isnan(flat)), ("inf", np.isinf(flat))):
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            raise DatasetError(
                f"{where}: key '{key}' contains {name} (first at row {int(rows[0])})"
            )


def as_flags(where: str, key: str, arr: np.ndarray) -> np.ndarray:
    """(N,) or (N, 1) 0/1 values -> (N,) bool."""
    arr = np.asarray(arr)
    check_numeric(where, key, arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    check_ndim(where, key, arr, "(N,)", (1,))
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise DatasetError(f"{where}: key '{key}' has values other than 0 and 1")
        arr = arr.astype(bool)
    return arr


def as_column(where: str, key: str, arr: np.ndarray) -> np.ndarray:
    """(N,) or (N, 1) numbers -> (N,) float32 (D4RL stores rewards either way)."""
    arr = np.asarray(arr)
    check_numeric(where, key, arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    check_ndim(where, key, arr, "(N,)", (1,))
    return arr.astype(np.float32, copy=False)


def as_matrix(where: str, key: str, arr: np.ndarray, dim_name: str) -> np.ndarray:
    """(N, dim) numbers -> float32."""
    arr = np.asarray(arr)
    check_numeric(where, key, arr)
    check_ndim(where, key, arr, f"(N, {dim_name})", (2,))
    return arr.astype(np.float32, copy=False)


def boundaries_from_flags(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Episode starts (E,) from terminals | timeouts; the last row always ends the last episode."""
    ends = np.flatnonzero(terminals | timeouts) + 1
    n = len(terminals)
    return np.concatenate([[0], ends[ends < n]]).astype(np.int64)


def check_episode_starts(
    where: str, starts: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray, key: str
) -> np.ndarray:
    """`starts` (E,) must begin at 0, increase strictly, stay below N, and every terminal or
    timeout row must end an episode (an episode may also end without either: a cut run)."""
    starts = np.asarray(starts)
    n = len(terminals)
    if starts.ndim != 1 or not np.issubdtype(starts.dtype, np.integer):
        raise DatasetError(
            f"{where}: key '{key}' has shape {shape_str(starts.shape)} and dtype {starts.dtype}, "
            "expected (E,) integers"
        )
    starts = starts.astype(np.int64)
    if starts.size == 0 or starts[0] != 0:
        raise DatasetError(f"{where}: key '{key}' must start with 0")
    if np.any(np.diff(starts) <= 0):
        raise DatasetError(f"{where}: key '{key}' is not strictly increasing")
    if starts[-1] >= n:
        raise DatasetError(
            f"{where}: key '{key}' has a start at row {int(starts[-1])}, beyond the {n} rows"
        )
    is_end = np.zeros(n, bool)
    is_end[starts[1:] - 1] = True
    is_end[-1] = True
    bad = np.flatnonzero((terminals | timeouts) & ~is_end)
    if bad.size:
        raise DatasetError(
            f"{where}: key '{key}' does not end an episode at row {int(bad[0])}, "
            "which is a terminal or timeout"
        )
    return starts


def infer_next(
    observations: np.ndarray, starts: np.ndarray, terminals: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """next_observations (N, obs_dim) and next_valid (N,) for files that lack next_observations.

    Inside an episode the next observation is the next row. At an episode's last row it is
    unknown: we put observations[i] there; a terminal row stays valid (not_done = 0 makes the
    value irrelevant), a timeout or cut row is marked invalid so transition samplers skip it.
    """
    n = len(observations)
    is_end = np.zeros(n, bool)
    is_end[starts[1:] - 1] = True
    is_end[-1] = True
    next_obs = np.empty_like(observations)
    next_obs[:-1] = observations[1:]
    next_obs[is_end] = observations[is_end]
    next_valid = ~(is_end & ~terminals)
    return next_obs, next_valid


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class OfflineDataset:
    """N transitions in E episodes, stored flat and in time order.

    observations (N, obs_dim) float32, actions (N, act_dim) float32, rewards (N,) float32,
    next_observations (N, obs_dim) float32, terminals (N,) bool (true termination),
    timeouts (N,) bool (time-limit cut), episode_starts (E,) int64 (first row of each episode;
    derived from terminals | timeouts when None), next_valid (N,) bool (False where the next
    observation is unknown; all True when None), infos {key: (N, ...)}, metadata (JSON-able).
    Inputs are converted to these dtypes and checked (DatasetError on any inconsistency).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_starts: np.ndarray | None = None
    next_valid: np.ndarray | None = None
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.metadata, dict):
            raise DatasetError(f"OfflineDataset: metadata is a {type(self.metadata).__name__}")
        where = str(self.metadata.get("source", "OfflineDataset"))
        self.observations = as_matrix(where, "observations", self.observations, "obs_dim")
        self.actions = as_matrix(where, "actions", self.actions, "act_dim")
        self.rewards = as_column(where, "rewards", self.rewards)
        self.next_observations = as_matrix(
            where, "next_observations", self.next_observations, "obs_dim"
        )
        n = self.observations.shape[0]
        if n == 0:
            raise DatasetError(f"{where}: dataset has no transitions")
        for key in ("actions", "rewards", "next_observations"):
            check_rows(where, key, getattr(self, key), n, "observations")
        if self.next_observations.shape[1] != self.observations.shape[1]:
            raise DatasetError(
                f"{where}: key 'next_observations' has shape "
                f"{shape_str(self.next_observations.shape)}, expected "
                f"{shape_str((n, self.observations.shape[1]))} (as 'observations')"
            )
        self.terminals = as_flags(where, "terminals", self.terminals)
        self.timeouts = as_flags(where, "timeouts", self.timeouts)
        check_rows(where, "terminals", self.terminals, n, "observations")
        check_rows(where, "timeouts", self.timeouts, n, "observations")
        if self.next_valid is None:
            self.next_valid = np.ones(n, bool)
        self.next_valid = as_flags(where, "next_valid", self.next_valid)
        check_rows(where, "next_valid", self.next_valid, n, "observations")
        for key in FLOAT_KEYS:
            check_finite(where, key, getattr(self, key))
        if self.episode_starts is None:
            self.episode_starts = boundaries_from_flags(self.terminals, self.timeouts)
        self.episode_starts = check_episode_starts(
            where, self.episode_starts, self.terminals, self.timeouts, "episode_starts"
        )
        if not isinstance(self.infos, dict):
            raise DatasetError(f"{where}: infos is a {type(self.infos).__name__}, expected dict")
        for key, value in list(self.infos.items()):
            value = np.asarray(value)
            if value.ndim == 0:
                raise DatasetError(f"{where}: key 'infos/{key}' is a scalar, expected (N, ...)")
            check_rows(where, f"infos/{key}", value, n, "observations")
            self.infos[key] = value

    # -- sizes ------------------------------------------------------------------------------

    @property
    def num_transitions(self) -> int:
        return int(self.observations.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def episode_ends(self) -> np.ndarray:
        """(E,) int64, exclusive: episode e is rows [episode_starts[e], episode_ends[e])."""
        return np.append(self.episode_starts[1:], self.num_transitions).astype(np.int64)

    def __len__(self) -> int:
        return self.num_transitions

    def __repr__(self) -> str:
        name = self.metadata.get("name", self.metadata.get("source", "?"))
        return (
            f"OfflineDataset({name!r}: {self.num_transitions} transitions, "
            f"{self.num_episodes} episodes, obs_dim={self.obs_dim}, act_dim={self.act_dim})"
        )

    # -- episodes ---------------------------------------------------------------------------

    def episode_slices(self) -> list[slice]:
        ends = self.episode_ends
        return [slice(int(s), int(e)) for s, e in zip(self.episode_starts, ends, strict=True)]

    def episode_lengths(self) -> np.ndarray:
        """(E,) int64."""
        return self.episode_ends - self.episode_starts

    def episode_index(self) -> np.ndarray:
        """(N,) int64: the episode each row belongs to."""
        return np.repeat(np.arange(self.num_episodes, dtype=np.int64), self.episode_lengths())

    def episode_returns(self) -> np.ndarray:
        """(E,) float64 undiscounted returns."""
        # reduceat sums each [start, next start) run; float64 so long episodes do not drift.
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    def return_range_scale(self, target: float = 1000.0) -> float:
        """target / (max - min episode return): IQL's locomotion reward scaling, used by IQL and
        QGPO (1.0 when all returns are equal)."""
        returns = self.episode_returns()
        spread = float(returns.max() - returns.min()) if returns.size else 0.0
        return target / spread if spread > 0 else 1.0

    def episode(self, i: int) -> dict[str, Any]:
        """Episode i's arrays (views), keys as in `from_episodes`; infos as a nested dict."""
        e = self.num_episodes
        if not -e <= i < e:
            raise IndexError(f"episode {i} out of range ({e} episodes)")
        i %= e
        rows = slice(int(self.episode_starts[i]), int(self.episode_ends[i]))
        return {
            "observations": self.observations[rows],
            "actions": self.actions[rows],
            "rewards": self.rewards[rows],
            "next_observations": self.next_observations[rows],
            "terminals": self.terminals[rows],
            "timeouts": self.timeouts[rows],
            "next_valid": self.next_valid[rows],
            "infos": {k: v[rows] for k, v in self.infos.items()},
        }

    @classmethod
    def from_episodes(
        cls, episodes: Sequence[Mapping[str, Any]], metadata: dict[str, Any] | None = None
    ) -> OfflineDataset:
        """Build from per-episode dicts of T steps each.

        Each dict: actions (T, act_dim), rewards (T,), observations (T + 1, obs_dim) (the final
        observation included) or (T, obs_dim) with optional next_observations (T, obs_dim);
        optional terminals/timeouts (T,) (default False), next_valid (T,), infos {key: (T or
        T + 1, ...)} (the first T rows are kept; every episode must have the same info keys).
        With T observation rows and no next_observations the last step's next observation is
        unknown (see `infer_next`).
        """
        if len(episodes) == 0:
            raise DatasetError("from_episodes: dataset has no transitions")
        cols: dict[str, list[np.ndarray]] = {
            k: []
            for k in (
                "observations",
                "actions",
                "rewards",
                "next_observations",
                "terminals",
                "timeouts",
                "next_valid",
            )
        }
        infos: dict[str, list[np.ndarray]] = {}
        info_keys: set[str] | None = None
        lengths = []
        for j, ep in enumerate(episodes):
            where = f"from_episodes: episode {j}"
            for key in ("observations", "actions", "rewards"):
                if key not in ep:
                    raise DatasetError(f"{where}: missing key '{key}'")
            actions = as_matrix(where, "actions", ep["actions"], "act_dim")
            t = actions.shape[0]
            if t == 0:
                raise DatasetError(f"{where}: episode has no transitions")
            obs = as_matrix(where, "observations", ep["observations"], "obs_dim")
            terminals = as_flags(where, "terminals", ep.get("terminals", np.zeros(t, bool)))
            timeouts = as_flags(where, "timeouts", ep.get("timeouts", np.zeros(t, bool)))
            if ep.get("next_observations") is not None:
                check_rows(where, "observations", obs, t, "actions")
                next_obs = as_matrix(where, "next_observations", ep["next_observations"], "obs_dim")
                next_valid = np.ones(t, bool)
            elif obs.shape[0] == t + 1:
                obs, next_obs = obs[:-1], obs[1:]
                next_valid = np.ones(t, bool)
            else:
                check_rows(where, "observations", obs, t, "actions")
                next_obs, next_valid = infer_next(obs, np.zeros(1, np.int64), terminals)
            if ep.get("next_valid") is not None:
                next_valid = as_flags(where, "next_valid", ep["next_valid"])
            rewards = as_column(where, "rewards", ep["rewards"])
            for key, arr in (
                ("rewards", rewards),
                ("next_observations", next_obs),
                ("terminals", terminals),
                ("timeouts", timeouts),
                ("next_valid", next_valid),
            ):
                check_rows(where, key, arr, t, "actions")
            ep_infos = dict(ep.get("infos") or {})
            if info_keys is None:
                info_keys = set(ep_infos)
            elif set(ep_infos) != info_keys:
                raise DatasetError(
                    f"{where}: infos keys {sorted(ep_infos)} differ from episode 0's "
                    f"{sorted(info_keys)}"
                )
            for key, value in ep_infos.items():
                value = np.asarray(value)
                if value.ndim == 0 or value.shape[0] not in (t, t + 1):
                    raise DatasetError(
                        f"{where}: key 'infos/{key}' has shape {shape_str(value.shape)}, "
                        f"expected {t} or {t + 1} rows"
                    )
                infos.setdefault(key, []).append(value[:t])
            for key, arr in (
                ("observations", obs),
                ("actions", actions),
                ("rewards", rewards),
                ("next_observations", next_obs),
                ("terminals", terminals),
                ("timeouts", timeouts),
                ("next_valid", next_valid),
            ):
                cols[key].append(arr)
            lengths.append(t)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        try:
            flat = {k: np.concatenate(v) for k, v in cols.items()}
            flat_infos = {k: np.concatenate(v) for k, v in infos.items()}
        except ValueError as err:  # differing widths across episodes
            raise DatasetError(f"from_episodes: episodes do not stack: {err}") from None
        return cls(
            **flat,
            episode_starts=starts,
            infos=flat_infos,
            metadata=dict(metadata or {}),
        )

    def _take_rows(self, rows: np.ndarray, starts: np.ndarray, metadata: dict) -> OfflineDataset:
        return OfflineDataset(
            observations=self.observations[rows],
            actions=self.actions[rows],
            rewards=self.rewards[rows],
            next_observations=self.next_observations[rows],
            terminals=self.terminals[rows],
            timeouts=self.timeouts[rows],
            episode_starts=starts,
            next_valid=self.next_valid[rows],
            infos={k: v[rows] for k, v in self.infos.items()},
            metadata=metadata,
        )

    def subset_episodes(self, indices: Iterable[int] | np.ndarray) -> OfflineDataset:
        """A new dataset of the given episodes, in the given order (metadata copied)."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size == 0:
            raise DatasetError("subset_episodes: no episodes selected")
        if idx.min() < -self.num_episodes or idx.max() >= self.num_episodes:
            raise IndexError(f"episode index out of range ({self.num_episodes} episodes)")
        idx %= self.num_episodes
        lengths = self.episode_lengths()[idx]
        new_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # Row r of the subset comes from old start + (r - new start) of its episode.
        offsets = np.arange(int(lengths.sum())) - np.repeat(new_starts, lengths)
        rows = np.repeat(self.episode_starts[idx], lengths) + offsets
        return self._take_rows(rows, new_starts, copy.deepcopy(self.metadata))

    @staticmethod
    def concatenate(datasets: Sequence[OfflineDataset]) -> OfflineDataset:
        """See the module-level `concatenate`."""
        return concatenate(datasets)

    # -- summaries --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Sizes and return statistics (plus D4RL-normalised returns when ref scores are known)."""
        returns = self.episode_returns()
        out: dict[str, Any] = {
            "transitions": self.num_transitions,
            "episodes": self.num_episodes,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "length_mean": float(self.episode_lengths().mean()),
        }
        lo, hi = self.metadata.get("ref_min_score"), self.metadata.get("ref_max_score")
        if lo is not None and hi is not None and float(hi) != float(lo):
            norm = 100.0 * (returns - float(lo)) / (float(hi) - float(lo))
            out["normalized_return_mean"] = float(norm.mean())
            out["normalized_return_min"] = float(norm.min())
            out["normalized_return_max"] = float(norm.max())
        return out

    def fingerprint(self, rows: int = 4096) -> dict[str, Any]:
        """What identifies this data: its sizes and a SHA-256 of `rows` evenly spaced rows.

        Recorded in every run directory, so `--resume` can refuse data that changed under it
        (another seed, size or file under the same name). Format-independent: the same data read
        from HDF5, .npz or Minari has the same fingerprint. Costs a few ms for any size.
        """
        import hashlib

        n = self.num_transitions
        idx = np.unique(np.linspace(0, n - 1, min(n, rows)).astype(np.int64))
        digest = hashlib.sha256(f"{n} {self.num_episodes} {self.obs_dim} {self.act_dim}".encode())
        for arr in (self.observations, self.actions, self.rewards, self.terminals, self.timeouts):
            digest.update(np.ascontiguousarray(arr[idx]).tobytes())
        digest.update(np.ascontiguousarray(self.episode_starts).tobytes())
        return {
            "transitions": n,
            "episodes": self.num_episodes,
            "sha256_rows": digest.hexdigest()[:16],
        }

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (act_dim,) float32: metadata's action_low/action_high (the action
        space) when present, else the data's per-dimension min/max."""
        low, high = self.metadata.get("action_low"), self.metadata.get("action_high")
        if low is not None and high is not None:
            low_arr = np.broadcast_to(np.asarray(low, np.float32), (self.act_dim,)).copy()
            high_arr = np.broadcast_to(np.asarray(high, np.float32), (self.act_dim,)).copy()
            return low_arr, high_arr
        return self.actions.min(axis=0), self.actions.max(axis=0)


def concatenate(datasets: Sequence[OfflineDataset]) -> OfflineDataset:
    """Datasets one after another (e.g. D4RL's medium-expert = medium + expert).

    Every part must have the same obs_dim, act_dim and info keys. Metadata keeps the entries
    on which all parts agree, plus `parts`: each part's name (or source).
    """
    datasets = list(datasets)
    if not datasets:
        raise DatasetError("concatenate: no datasets given")
    first = datasets[0]
    for j, d in enumerate(datasets[1:], start=1):
        if (d.obs_dim, d.act_dim) != (first.obs_dim, first.act_dim):
            raise DatasetError(
                f"concatenate: dataset {j} has obs_dim/act_dim {d.obs_dim}/{d.act_dim}, "
                f"expected {first.obs_dim}/{first.act_dim} (as dataset 0)"
            )
        if set(d.infos) != set(first.infos):
            raise DatasetError(
                f"concatenate: dataset {j} has infos {sorted(d.infos)}, "
                f"expected {sorted(first.infos)} (as dataset 0)"
            )
    offsets = np.cumsum([0] + [d.num_transitions for d in datasets[:-1]])
    metadata = {
        k: copy.deepcopy(v)
        for k, v in first.metadata.items()
        if all(k in d.metadata and _same(d.metadata[k], v) for d in datasets[1:])
    }
    metadata["parts"] = [d.metadata.get("name", d.metadata.get("source")) for d in datasets]

    def cat(key: str) -> np.ndarray:
        return np.concatenate([getattr(d, key) for d in datasets])

    return OfflineDataset(
        observations=cat("observations"),
        actions=cat("actions"),
        rewards=cat("rewards"),
        next_observations=cat("next_observations"),
        terminals=cat("terminals"),
        timeouts=cat("timeouts"),
        episode_starts=np.concatenate(
            [d.episode_starts + off for d, off in zip(datasets, offsets, strict=True)]
        ).astype(np.int64),
        next_valid=cat("next_valid"),
        infos={k: np.concatenate([d.infos[k] for d in datasets]) for k in first.infos},
        metadata=metadata,
    )


def _same(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return bool(a == b)
    except (ValueError, TypeError):  # array-valued metadata
        return False
