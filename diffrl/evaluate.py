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


class Sweep:
    """Agents at every value of one acting-time key, each built from its own config and
    sharing the weights of the agent being evaluated (`diffrl eval --sweep`, and `eval_sweep`
    during training). Built once: later evaluations only copy the weights in, so compiled
    graphs are kept."""

    def __init__(self, text: str, config: Any, spec: Any, device: torch.device) -> None:
        from diffrl.algos import get_algo
        from diffrl.config import parse_sweep

        self.key, self.configs = parse_sweep(config, text)
        module = get_algo(config.algo)
        # Their initial weights are overwritten before use: building them must not move the
        # training's random streams (a resumed run would otherwise diverge from a straight one).
        with torch.random.fork_rng(devices=[]):
            self.agents = [module.Agent(c, spec).to(device).eval() for c in self.configs]

    def values(self) -> list[Any]:
        return [getattr(c, self.key) for c in self.configs]

    def run(
        self,
        agent: Any,
        episodes: int,
        seed: int,
        device: torch.device,
        dataset_metadata: dict | None = None,
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        """Every value's evaluation on the same episodes (same seeds), in the values' order."""
        state = agent.state_dict()
        results = []
        bar = tqdm(self.configs, desc=f"eval sweep: {self.key}", unit="value", disable=not progress)
        for config, swept in zip(bar, self.agents, strict=True):
            bar.set_postfix({self.key: getattr(config, self.key)})
            swept.load_state_dict(state)
            results.append(
                _evaluate_once(swept, config, episodes, seed, device, dataset_metadata, progress)
            )
        bar.close()
        return results


def evaluate(
    agent: Any,
    config: Any,
    episodes: int,
    seed: int,
    device: torch.device,
    dataset_metadata: dict | None = None,
    progress: bool = False,
    sweep: Sweep | None = None,
) -> dict[str, Any]:
    """Evaluate `agent`; the result is JSON-able.

    With a `sweep` (from `config.eval_sweep`), every value is evaluated on the same seeds; the
    result is that of the best value, with the key naming it and `by_KEY` holding every
    value's summary (training's model selection, as the papers that sweep a scale do).
    """
    if sweep is None:
        return _evaluate_once(agent, config, episodes, seed, device, dataset_metadata, progress)
    results = sweep.run(agent, episodes, seed, device, dataset_metadata, progress)

    def score(i: int) -> float:
        value = eval_score(results[i])
        return float("-inf") if value is None else value

    best = max(range(len(results)), key=score)
    out = dict(results[best])
    out[sweep.key] = sweep.values()[best]
    out[f"by_{sweep.key}"] = {
        _label(v): {k: x for k, x in r.items() if not isinstance(x, list)}
        for v, r in zip(sweep.values(), results, strict=True)
    }
    return out


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
    own = envs.non_gym_env(config.env_id)
    if own is not None:
        return own.evaluate_agent(agent, device, generator)
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
