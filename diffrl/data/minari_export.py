"""Write an OfflineDataset as a Minari dataset, with minari's own writer.

Using `minari.create_dataset_from_buffers` (not our own HDF5 code) guarantees that
`minari.load_dataset(id)` reads the result. Each episode becomes one EpisodeBuffer whose
observations have T+1 rows (the episode's observations plus its last next observation).
Per-step infos (qpos, qvel, ...) are not exported: Minari wants T+1 rows of infos, which a D4RL
file does not have. The dataset is written under a temporary root beside the final one and
moved into place, so a failure leaves no half dataset under the id.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from diffrl.data.dataset import OfflineDataset
from diffrl.data.io import minari_root
from diffrl.errors import DatasetError


def write_minari(
    dataset: OfflineDataset,
    dataset_id: str,
    env_id: str | None = None,
    root: str | Path | None = None,
    overwrite: bool = True,
) -> Path:
    """Write `dataset` as Minari dataset `dataset_id` under `root`; return its directory."""
    try:
        import minari
        from minari.data_collector import EpisodeBuffer
    except ImportError:
        raise DatasetError("--format minari needs minari: pip install -e '.[minari]'") from None
    root = minari_root(root)
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise DatasetError(f"minari dataset '{dataset_id}' already exists under {root}")
    buffers = []
    for i, sl in enumerate(dataset.episode_slices()):
        obs = dataset.observations[sl]
        last_next = dataset.next_observations[sl.stop - 1 : sl.stop]
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=list(obs) + list(last_next),
                actions=list(dataset.actions[sl]),
                rewards=list(dataset.rewards[sl].astype(float)),
                terminations=list(dataset.terminals[sl]),
                truncations=list(dataset.timeouts[sl]),
            )
        )
    meta = dataset.metadata
    kwargs: dict[str, Any] = {
        "algorithm_name": str(meta.get("recipe", "diffrl")),
        "description": f"made by diffrl: {meta.get('recipe', '')}",
    }
    env_id = env_id or meta.get("env_id")
    if env_id:
        kwargs["env"] = env_id
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
        kwargs["ref_min_score"] = float(meta["ref_min_score"])
        kwargs["ref_max_score"] = float(meta["ref_max_score"])
    root.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".diffrl-minari-", dir=root))
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_root)
    try:
        minari.create_dataset_from_buffers(dataset_id, buffers, **kwargs)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_root / dataset_id, final)
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final
