"""D4RL-style locomotion datasets made here from Gymnasium v5 MuJoCo and SAC behaviour policies.

Levels, as D4RL made them (DATASETS.md):
- random: uniform random actions;
- medium: a SAC policy stopped at about a third of the expert's return, actions sampled;
- expert: a fully trained SAC policy, actions sampled;
- medium-replay: every transition of the SAC run up to the medium snapshot;
- medium-expert: medium and expert together (half each).

Behaviour policies are the actors of stable-baselines3 SAC runs trained on this project's machine
(`shared/behavior/`, see docs/datasets.md); their weights ship in `diffrl/assets/policies/` with
their provenance and measured returns in the file's metadata.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from diffrl import __version__
from diffrl.data import OfflineDataset, concatenate
from diffrl.datasets.collect import SACActor, collect
from diffrl.envs import REF_SCORES
from diffrl.errors import DatasetError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5"}
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")
DEFAULT_SIZE = 1_000_000


def dataset_names() -> list[str]:
    return [f"{env}-{level}-v0" for env in ENVS for level in LEVELS]


def default_size(name: str) -> int:
    env, level = parse(name)
    if level == "medium-replay":
        with np.load(ASSETS / "replay" / f"{env}-medium-replay.npz") as data:
            return len(data["rewards"])
    return 2 * DEFAULT_SIZE if level == "medium-expert" else DEFAULT_SIZE


def parse(name: str) -> tuple[str, str]:
    stem = name.removesuffix("-v0")
    for env in ENVS:
        if stem.startswith(env + "-") and stem[len(env) + 1 :] in LEVELS:
            return env, stem[len(env) + 1 :]
    raise DatasetError(f"unknown locomotion dataset '{name}'")


def policy_path(env: str, level: str) -> Path:
    return ASSETS / "policies" / f"{env}-{level}.safetensors"


def _policy(env: str, level: str) -> SACActor:
    path = policy_path(env, level)
    if not path.exists():
        raise DatasetError(
            f"{env}-{level}-v0: no {level} behaviour policy ships with this version of diffrl "
            f"(expected {path.name}); train one with `diffrl behavior train {ENVS[env]}` and use "
            f"`diffrl datasets make --env {ENVS[env]} --policy SNAPSHOT`"
        )
    return SACActor.load(path)


def _policy_metadata(env: str, level: str) -> dict:
    from safetensors import safe_open

    with safe_open(str(policy_path(env, level)), framework="numpy") as f:
        return dict(f.metadata() or {})


def versions() -> dict[str, str]:
    out = {"diffrl": __version__}
    for pkg in ("gymnasium", "mujoco", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _replay(env: str, size: int | None) -> OfflineDataset:
    with np.load(ASSETS / "replay" / f"{env}-medium-replay.npz") as data:
        arrays = {k: data[k] for k in data.files}
    term, tout = arrays["terminals"], arrays["timeouts"]
    ends = np.flatnonzero(term | tout)
    if size is not None:  # whole episodes, at least `size` transitions (or all there are)
        ends = ends[: int(np.searchsorted(ends, size - 1)) + 1]
    n = int(ends[-1]) + 1
    obs = arrays["observations"][:n]
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    nxt[ends] = arrays["end_next_observations"][: len(ends)]
    return OfflineDataset(
        observations=obs,
        actions=arrays["actions"][:n],
        rewards=arrays["rewards"][:n],
        next_observations=nxt,
        terminals=term[:n],
        timeouts=tout[:n],
        episode_starts=np.concatenate([[0], ends[:-1] + 1]).astype(np.int64),
        infos={},
        metadata={},
    )


def make(name: str, size: int, seed: int) -> OfflineDataset:
    """Dataset `name` (e.g. 'hopper-medium-v0') with at least `size` transitions, whole episodes."""
    env, level = parse(name)
    env_id = ENVS[env]
    policy_meta: dict = {}
    if level == "random":
        dataset = collect(env_id, None, size, seed, desc=name)
        recipe = "uniform random actions"
    elif level in ("medium", "expert"):
        dataset = collect(env_id, _policy(env, level), size, seed, desc=name)
        policy_meta = _policy_metadata(env, level)
        recipe = f"SAC {level} policy (step {policy_meta.get('step')}), actions sampled"
    elif level == "medium-replay":
        dataset = _replay(env, size)
        policy_meta = _policy_metadata(env, "medium")
        recipe = (
            f"every transition of the SAC run up to the medium snapshot (step "
            f"{policy_meta.get('step')}), in order, random warm-up included"
        )
    else:  # medium-expert
        expert = _policy(env, "expert")
        half = size // 2
        medium = collect(env_id, _policy(env, "medium"), half, seed, desc=f"{name} (medium)")
        dataset = concatenate(
            [medium, collect(env_id, expert, half, seed + 1, desc=f"{name} (expert)")]
        )
        policy_meta = {
            "medium": str(_policy_metadata(env, "medium")),
            "expert": str(_policy_metadata(env, "expert")),
        }
        recipe = "medium (seed S) then expert (seed S+1), half each"
    lo, hi = REF_SCORES[env]
    dataset.metadata.update(
        {
            "name": name,
            "env_id": env_id,
            "recipe": recipe,
            "seed": seed,
            "size": size,
            "ref_min_score": lo,
            "ref_max_score": hi,
            "versions": versions(),
            "behavior_policy": policy_meta,
        }
    )
    # Hopper and HalfCheetah act in [-1, 1]^A (the replay file does not record the bounds).
    dataset.metadata.setdefault("action_low", [-1.0] * dataset.act_dim)
    dataset.metadata.setdefault("action_high", [1.0] * dataset.act_dim)
    return dataset
