"""Evaluation: rollouts in the dataset's Gymnasium environment, or the toy bandit's mode count.

Rollouts run all episodes in lock-step (one environment per episode, seeds seed, seed+1, ...)
so the agent acts on a batch of observations at once: a diffusion policy's cost is per call,
not per row, so batching the episodes is several times faster than one episode after another.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffrl import envs
from diffrl.errors import DiffrlError
from diffrl.precision import precision_scope
from diffrl.progress import bar as progress_bar
from diffrl.stepper import EnvStepper


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
        first_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Every value's evaluation on the same episodes (same seeds), in the values' order
        (`first_only`: the first value's alone)."""
        state = agent.state_dict()
        results = []
        configs = self.configs[:1] if first_only else self.configs
        bar = progress_bar(
            configs, desc=f"eval sweep: {self.key}", unit="value", disable=not progress
        )
        for config, swept in zip(bar, self.agents, strict=False):
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
    value's summary (training's model selection, as the papers that sweep a scale do). Where
    the key does not change how the agent acts yet (`agent.inert_keys()`), the first value alone is
    evaluated and stands for all of them (no `by_KEY`).
    """
    with precision_scope(config.precision, device):  # bf16 products if the run asks for them
        return _evaluate(agent, config, episodes, seed, device, dataset_metadata, progress, sweep)


def _evaluate(
    agent: Any,
    config: Any,
    episodes: int,
    seed: int,
    device: torch.device,
    dataset_metadata: dict | None,
    progress: bool,
    sweep: Sweep | None,
) -> dict[str, Any]:
    if sweep is None:
        return _evaluate_once(agent, config, episodes, seed, device, dataset_metadata, progress)
    if sweep.key in agent.inert_keys():
        out = sweep.run(agent, episodes, seed, device, dataset_metadata, progress, True)[0]
        return {**out, sweep.key: sweep.values()[0]}
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
    goals = eval_goals(config, dataset_metadata, episodes)
    returns, lengths = rollouts(
        agent, config.env_id, episodes, seed, device, generator, progress, goals
    )
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


def eval_goals(config: Any, dataset_metadata: dict | None, episodes: int) -> np.ndarray | None:
    """Per-episode goals from `config.eval_goal`: None (the environment's own), the dataset's
    evaluation goal ('dataset': maze2d's D4RL goal) or a fixed 'X,Y,...'; (episodes, goal_dim)."""
    text = str(config.eval_goal or "").strip()
    if not text:
        return None
    if text == "dataset":
        goal = (dataset_metadata or {}).get("eval_goal")
        if goal is None:
            raise DiffrlError(
                f"eval_goal=dataset: dataset '{config.dataset}' names no evaluation goal "
                "(give one as eval_goal=X,Y)"
            )
    else:
        try:
            goal = [float(v) for v in text.split(",")]
        except ValueError:
            raise DiffrlError(
                f"eval_goal must be '', 'dataset' or numbers X,Y,...; got {text!r}"
            ) from None
    return np.tile(np.asarray(goal, np.float64), (episodes, 1))


def check_eval_goal(config: Any, dataset_metadata: dict | None) -> None:
    """`config.eval_goal` checked where it enters (train, resume, `diffrl eval`, `Run`): the
    environment takes goals, the goal has their size, and a maze goal lies in an open cell."""
    goals = eval_goals(config, dataset_metadata, 1)
    if goals is None:
        return
    size = envs.goal_size(config.env_id) if config.env_id else None
    if size is None:
        raise DiffrlError(
            f"eval_goal={config.eval_goal}: environment '{config.env_id or '(none)'}' has no "
            "goal to set (eval_goal is for goal-reaching tasks such as PointMaze)"
        )
    envs.check_point(config.env_id, goals[0], "eval_goal=", size)


def rollouts(
    agent: Any,
    env_id: str,
    episodes: int,
    seed: int,
    device: torch.device,
    generator: torch.Generator,
    progress: bool = False,
    goals: np.ndarray | None = None,
) -> tuple[list[float], list[int]]:
    """Run `episodes` episodes in lock-step (environment i seeded seed + i); return their
    undiscounted returns and lengths. `goals` (episodes, goal_dim) sets each episode's goal.

    The agent acts on the running episodes' observations as one batch, toward their goals if
    it takes one (`act_goal`); the agent is told when the batch shrinks (`reset_episodes`).
    """
    if not env_id:
        raise DiffrlError(
            "no environment to evaluate in: the dataset names none; pass --set env_id=ENV_ID"
        )
    returns = [0.0] * episodes
    lengths = [0] * episodes
    bar = progress_bar(
        total=episodes, desc=f"eval {env_id}", unit="ep", disable=not progress, leave=False
    )
    with EnvStepper(env_id, episodes, seed) as stepper:
        stepper.reset()
        if goals is not None:
            for i in range(episodes):
                stepper.set_goal(i, goals[i])
        agent.reset_episodes(np.full(episodes, -1))
        last = np.arange(episodes)
        while stepper.active.any():
            index = np.flatnonzero(stepper.active)
            if index.size != last.size:
                agent.reset_episodes(np.searchsorted(last, index))
            last = index
            obs = torch.as_tensor(stepper.obs[index]).to(device)
            goal = None if stepper.goal is None else torch.as_tensor(stepper.goal[index]).to(device)
            step = stepper.step(agent.act_goal(obs, goal, generator).cpu().numpy())
            for j in np.flatnonzero(step.done):
                i = int(step.index[j])
                returns[i] = float(step.episode_return[j])
                lengths[i] = int(step.episode_length[j])
                bar.update(1)
    bar.close()
    return returns, lengths
