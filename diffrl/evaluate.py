"""Evaluation: rollouts in the dataset's Gymnasium environment, or the toy bandit's mode count.

Rollouts run all episodes in lock-step (one environment per episode, seeds seed, seed+1, ...)
so the agent acts on a batch of observations at once: a diffusion policy's cost is per call,
not per row, so batching the episodes is several times faster than one episode after another.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diffrl import envs
from diffrl.datasets import toy_bandit

TOY_SAMPLES = 1000


def reference_for(config: Any, dataset_metadata: dict | None) -> tuple[float, float] | None:
    """(min, max) reference returns: the dataset's own, else D4RL's for its env family."""
    meta = dataset_metadata or {}
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
        return float(meta["ref_min_score"]), float(meta["ref_max_score"])
    return envs.reference_scores(config.dataset) or envs.reference_scores(config.env_id)


def eval_score(result: dict[str, Any]) -> float | None:
    """The number an evaluation is ranked by: normalised score, else mean return/reward."""
    for key in ("normalized_score", "return_mean", "reward_mean"):
        if isinstance(result.get(key), (int, float)):
            return float(result[key])
    return None


def evaluate(
    agent: Any,
    config: Any,
    episodes: int,
    seed: int,
    device: torch.device,
    dataset_metadata: dict | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate `agent`; the result is JSON-able.

    For an agent with a guidance scale (QGPO) and a non-empty `config.eval_guidance_scales`,
    every scale is evaluated on the same seeds; the result is that of the best scale, with
    `guidance_scale` naming it and `by_guidance_scale` holding every scale's summary.
    """
    scales = tuple(getattr(config, "eval_guidance_scales", ()) or ())
    if not scales or not hasattr(agent, "guidance_scale"):
        return _evaluate_once(agent, config, episodes, seed, device, dataset_metadata, progress)
    results: dict[float, dict[str, Any]] = {}
    default = agent.guidance_scale
    sweep = tqdm(scales, desc="eval sweep: guidance_scale", unit="value", disable=not progress)
    try:
        for scale in sweep:
            sweep.set_postfix(guidance_scale=f"{float(scale):g}")
            agent.guidance_scale = float(scale)
            results[float(scale)] = _evaluate_once(
                agent, config, episodes, seed, device, dataset_metadata, progress
            )
    finally:
        sweep.close()
        agent.guidance_scale = default

    def score(scale: float) -> float:
        value = eval_score(results[scale])
        return float("-inf") if value is None else value

    best = max(results, key=score)
    out = dict(results[best])
    out["guidance_scale"] = best
    out["by_guidance_scale"] = {
        f"{scale:g}": {k: v for k, v in r.items() if not isinstance(v, list)}
        for scale, r in results.items()
    }
    return out


def _evaluate_once(
    agent: Any,
    config: Any,
    episodes: int,
    seed: int,
    device: torch.device,
    dataset_metadata: dict | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    generator = torch.Generator(device=device).manual_seed(seed)
    if config.env_id == toy_bandit.NAME:
        obs = torch.zeros((TOY_SAMPLES, agent.spec.obs_dim), device=device)
        actions = agent.act(obs, generator).cpu().numpy()
        return toy_bandit.evaluate_actions(actions)
    returns, lengths = rollouts(agent, config.env_id, episodes, seed, device, generator, progress)
    out: dict[str, Any] = {
        "episodes": episodes,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        "returns": [float(r) for r in returns],
    }
    ref = reference_for(config, dataset_metadata)
    if ref is not None:
        lo, hi = ref
        scores = 100.0 * (np.asarray(returns) - lo) / (hi - lo)
        out["normalized_score"] = float(scores.mean())
        out["normalized_score_std"] = float(scores.std())
    return out


def rollouts(
    agent: Any,
    env_id: str,
    episodes: int,
    seed: int,
    device: torch.device,
    generator: torch.Generator,
    progress: bool = False,
) -> tuple[list[float], list[int]]:
    """Run `episodes` episodes in lock-step; return their undiscounted returns and lengths."""
    if not env_id:
        from diffrl.errors import DiffrlError

        raise DiffrlError(
            "no environment to evaluate in: the dataset names none; pass --set env_id=ENV_ID"
        )
    envs_ = [envs.make_env(env_id) for _ in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs_)]
    active = list(range(episodes))
    returns = [0.0] * episodes
    lengths = [0] * episodes
    bar = tqdm(total=episodes, desc=f"eval {env_id}", unit="ep", disable=not progress, leave=False)
    while active:
        batch = torch.as_tensor(np.stack([_flat(obs[i]) for i in active]), dtype=torch.float32)
        actions = agent.act(batch.to(device), generator).cpu().numpy()
        still = []
        for i, action in zip(active, actions, strict=True):
            obs[i], reward, terminated, truncated, _ = envs_[i].step(action)
            returns[i] += float(reward)
            lengths[i] += 1
            if terminated or truncated:
                bar.update(1)
            else:
                still.append(i)
        active = still
    bar.close()
    for env in envs_:
        env.close()
    return returns, lengths


def _flat(obs: Any) -> np.ndarray:
    """Dict observations (PointMaze) -> their 'observation' entry, as D4RL's maze2d used."""
    if isinstance(obs, dict):
        return np.asarray(obs["observation"], dtype=np.float32)
    return np.asarray(obs, dtype=np.float32)


# `diffrl eval` uses a seed apart from the in-training evaluations by default.
EVAL_SEED_OFFSET_CLI = 20_000
