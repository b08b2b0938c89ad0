"""Is a QGPO run's critic (or energy model) worth following? Acts in the environment by drawing
N unguided actions per state from the behaviour model and executing the one that ranks highest
by: the target critic's Q ("q"), the energy model f at t = T_MIN ("energy"), at random
("random", the behaviour model alone), or the target critic of another run ("critic:RUN_DIR",
a run whose agent has `critic_target.q_min`, e.g. Diffusion-QL). If ranking by Q beats the
behaviour model, Q carries a signal that energy guidance fails to use; if it does not, the
critic is the limit, and another run's critic says whether a better-trained one would help.

    DIFFRL_DATA=... python benchmarks/qgpo_selection.py RUN_DIR [--n 16] [--episodes 10]
        [--rankers random,q,energy] [--checkpoint latest]

Prints one line per ranker: the normalised score (mean and std over episodes).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from diffrl.algos.qgpo import T_MIN
from diffrl.api import load
from diffrl.evaluate import reference_for, rollouts


class Ranked:
    """Acts like the QGPO agent, choosing among n behaviour samples by a score."""

    def __init__(self, agent: torch.nn.Module, n: int, ranker: str) -> None:
        self.agent, self.n, self.ranker = agent, n, ranker
        self.other = load(ranker.split(":", 1)[1]).agent if ranker.startswith("critic:") else None

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        a = self.agent
        o = a.obs_normalizer.normalize(obs)
        x = a.sample(o, self.n, 0.0, generator=generator)  # (B * n, A), normalised
        b = obs.shape[0]
        if self.ranker == "random":
            return a.unnormalize_action(x.view(b, self.n, -1)[:, 0])
        if self.ranker == "q":
            rows = obs.repeat_interleave(self.n, 0)
            score = a.critic_target.q_min(rows, a.unnormalize_action(x))
        elif self.other is not None:
            rows = self.other.obs_normalizer.normalize(obs).repeat_interleave(self.n, 0)
            score = self.other.critic_target.q_min(rows, a.unnormalize_action(x))
        elif self.ranker == "energy":
            rows = o.repeat_interleave(self.n, 0)
            score = a.energy(x, torch.full((x.shape[0],), T_MIN), rows)
        else:
            raise SystemExit(f"unknown ranker {self.ranker!r}: use random, q, energy, critic:RUN")
        best = score.view(b, self.n).argmax(1)
        return a.unnormalize_action(x.view(b, self.n, -1)[torch.arange(b), best])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--rankers", default="random,q,energy")
    p.add_argument("--checkpoint", default="latest")
    p.add_argument("--seed", type=int, default=20_000)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = load(args.run_dir, args.checkpoint)
    agent = run.agent
    meta = json.loads((run.path / "run.json").read_text()).get("dataset_metadata")
    lo, hi = reference_for(run.config, meta)
    print(f"{args.run_dir} at step {run.step}, n={args.n}, {args.episodes} episodes")
    for ranker in args.rankers.split(","):
        gen = torch.Generator().manual_seed(args.seed)
        returns, _ = rollouts(
            Ranked(agent, args.n, ranker),
            run.config.env_id,
            args.episodes,
            args.seed,
            torch.device("cpu"),
            gen,
        )
        scores = 100.0 * (np.asarray(returns) - lo) / (hi - lo)
        print(f"{ranker}: {scores.mean():6.1f} +- {scores.std():5.1f}", flush=True)


if __name__ == "__main__":
    main()
