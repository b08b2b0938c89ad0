"""Why does a QGPO run's guidance help or not? Five checks on a finished run (RUN_DIR must hold
its support table, support.safetensors, for `energy`, `q-longer` and `support`):

    DIFFRL_DATA=... python benchmarks/qgpo_diagnose.py energy RUN_DIR [--states 512]
        Does the energy model follow the critic? On random dataset states: the spread of the
        target critic's Q over each state's support actions, the entropy of the CEP target
        softmax(beta Q) against log M, and the within-state correlation of f(a_t, t, s) with Q.

    ... select RUN_DIR [--n 16] [--episodes 10] [--rankers random,q,energy,critic:RUN]
        Acts in the environment with the best of N unguided behaviour samples per state, ranked
        by the target critic's Q ("q"), the energy model at t = T_MIN ("energy"), another run's
        target critic ("critic:RUN", any agent with `critic_target.q_min`, e.g. Diffusion-QL),
        or not ranked ("random": the behaviour model alone). Normalised score per ranker.

    ... critics RUN_DIR OTHER_RUN [--also RUN ...] [--n 16] [--states 512]
        Do two critics rank the behaviour model's samples alike? The within-state correlation
        of the run's Q with OTHER_RUN's (and of each --also run's with both), where the dataset
        action ranks among the samples, and what each critic's argmax picks.

    ... q-longer RUN_DIR OTHER_RUN [--steps 50000] [--every 5000] [--fresh] [--support data]
        Does Q learn a ranking if its in-support softmax Q-learning runs longer? Continues the
        run's own Q updates (its `_q_update`, support table and settings; `--fresh`: from new
        weights) and prints the within-state correlation with OTHER_RUN's critic as it goes,
        and Q's bias against the data's discounted returns by steps to a fall
        (benchmarks/critic_vs_returns.py). `--support data`: the backup's V(s') uses the
        dataset's next action instead of the support table (SARSA on the data), which tells
        whether the support actions are what biases Q. The run directory is not changed.

    ... support RUN_DIR [--states 2000] [--neighbours 20] [--sample [--checkpoint STEP]]
        Are the support actions (the behaviour model's samples that Q's backup and the energy
        model's training both use) where the data is? Per action dimension, the share at the
        action box's bound in the data and in the table; and, on random states, the distance
        from each support action to the nearest dataset action of the state's nearest
        neighbour states, against the same distance for the dataset's own action (its state
        left out). `--sample`: draw them now from a checkpoint's behaviour model (for the
        chosen states only; the share at the bound is then over those), to follow them over the
        behaviour stage.

Every check draws its states and samples from fixed seeds, so a second run prints the same.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from critic_vs_returns import biases, returns_for, sample_groups
from safetensors.torch import load_file

from diffrl.algos.qgpo import SUPPORT_FILE, T_MIN
from diffrl.api import load, load_dataset
from diffrl.evaluate import reference_for, rollouts


def within_corr(q: torch.Tensor, r: torch.Tensor) -> float:
    """Correlation of (B, N) scores after removing each state's mean."""
    qc, rc = q - q.mean(1, keepdim=True), r - r.mean(1, keepdim=True)
    return float((qc * rc).sum() / (qc.norm() * rc.norm()))


def critic_q(agent: Any, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """An agent's target critic on (B, obs_dim) raw observations and (B * N, A) actions in the
    environment's units -> (B, N)."""
    n = actions.shape[0] // obs.shape[0]
    rows = agent.obs_normalizer.normalize(obs).repeat_interleave(n, 0)
    return agent.critic_target.q_min(rows, actions).view(obs.shape[0], n)


def behaviour_samples(
    agent: Any, data: Any, states: int, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random dataset states (B, obs_dim), their dataset actions (B, A) and N unguided samples
    per state in the environment's units (B * N, A), each state's N consecutive."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(data.observations), (states,), generator=g).numpy()
    obs = torch.as_tensor(data.observations[idx], dtype=torch.float32)
    act = torch.as_tensor(data.actions[idx], dtype=torch.float32)
    with torch.no_grad():
        x = agent.sample(agent.obs_normalizer.normalize(obs), n, 0.0, generator=g)
    return obs, act, agent.unnormalize_action(x)


# ---------------------------------------------------------------------- energy
def check_energy(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    run = load(args.run_dir)
    agent = run.agent
    data = load_dataset(run.config.dataset)
    support = load_file(str(Path(args.run_dir) / SUPPORT_FILE))["rows"]
    # Row i of the table is the sampler's row i, the dataset's row i where every row has a next
    # observation (the locomotion datasets); f and Q are compared on the same pairs either way.
    idx = torch.randint(0, len(data.observations), (args.states,))
    obs = torch.as_tensor(data.observations[idx.numpy()], dtype=torch.float32)
    s = support[idx]  # (B, M, A), normalised
    b, m, a = s.shape
    with torch.no_grad():
        q = critic_q(agent, obs, agent.unnormalize_action(s.reshape(-1, a)))
        p = torch.softmax(agent.config.beta * q, 1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean()
        print(f"Q: mean {q.mean():.2f}, within-state std {q.std(1).mean():.3f}")
        print(f"CEP target entropy {entropy:.3f} (log M = {math.log(m):.3f})")
        o = agent.obs_normalizer.normalize(obs).repeat_interleave(m, 0)
        for t in (0.01, 0.1, 0.5):
            f = agent.energy(s.reshape(-1, a), torch.full((b * m,), t), o).view(b, m)
            print(
                f"t={t}: energy within-state std {f.std(1).mean():.4f}, "
                f"corr(f, Q) {within_corr(f, q):.3f}"
            )


# ---------------------------------------------------------------------- support
def check_support(args: argparse.Namespace) -> None:
    run = load(args.run_dir, args.checkpoint)
    agent = run.agent
    data = load_dataset(run.config.dataset)
    n = len(data.observations)
    acts = torch.as_tensor(data.actions, dtype=torch.float32)
    unit = agent.normalize_action(acts)  # the table's units: the action box mapped to [-1, 1]
    obs = torch.as_tensor(data.observations, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, n, (args.states,), generator=g)
    if args.sample:
        # Drawn now from this checkpoint's behaviour model, as the table is made (unguided
        # DPM-Solver, support_actions x support_steps), for the chosen states only.
        m = run.config.support_actions
        with torch.no_grad():
            x = agent.sample(agent.obs_normalizer.normalize(obs[idx]), m, 0.0, None, g, True)
        chosen, everyone = x.view(args.states, m, -1), x.view(args.states, m, -1)
        where = f"{args.states} states x {m} actions drawn at step {run.step:,}"
    else:
        table = load_file(str(Path(args.run_dir) / SUPPORT_FILE))["rows"]
        everyone = table[:n]  # rows of the dataset's own states (see `energy`)
        chosen = everyone[idx]
        where = f"{n} states x {everyone.shape[1]} support actions (the run's table)"

    def at_bound(x: torch.Tensor, dims: Any) -> torch.Tensor:
        return (x.abs() >= 0.999).float().mean(dims)

    def fmt(v: torch.Tensor) -> str:
        return ", ".join(f"{x:.4f}" for x in v.tolist())

    print(where)
    print(f"share at the bound per dimension: data {fmt(at_bound(unit, 0))}")
    print(f"                                 support {fmt(at_bound(everyone, (0, 1)))}")
    k = args.neighbours
    near = torch.cdist(obs[idx], obs).topk(k + 1, largest=False).indices  # (B, k + 1), self first
    pool = unit[near[:, 1:]]  # neighbours' dataset actions, (B, k, A)
    d_support = torch.cdist(chosen, pool).min(2).values.flatten()
    d_data = (unit[idx][:, None] - pool).norm(dim=2).min(1).values
    q = torch.tensor([0.5, 0.9, 0.99])
    print(f"distance to the nearest action of the {k} nearest states (median, p90, p99):")
    print(f"  dataset action: {fmt(d_data.quantile(q))}")
    print(f"  support action: {fmt(d_support.quantile(q))}")


# ---------------------------------------------------------------------- select
class Ranked:
    """Acts like the QGPO agent, choosing among n behaviour samples by a score."""

    def __init__(self, agent: Any, n: int, ranker: str) -> None:
        self.agent, self.n, self.ranker = agent, n, ranker
        self.other = load(ranker.split(":", 1)[1]).agent if ranker.startswith("critic:") else None
        if self.other is None and ranker not in ("random", "q", "energy"):
            raise SystemExit(f"unknown ranker {ranker!r}: use random, q, energy, critic:RUN")

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        a, b, n = self.agent, obs.shape[0], self.n
        o = a.obs_normalizer.normalize(obs)
        x = a.sample(o, n, 0.0, generator=generator)  # (B * n, A), normalised
        if self.ranker == "random":
            return a.unnormalize_action(x.view(b, n, -1)[:, 0])
        if self.ranker == "energy":
            score = a.energy(x, torch.full((x.shape[0],), T_MIN), o.repeat_interleave(n, 0))
        else:
            score = critic_q(self.other or a, obs, a.unnormalize_action(x))
        best = score.view(b, n).argmax(1)
        return a.unnormalize_action(x.view(b, n, -1)[torch.arange(b), best])


def check_select(args: argparse.Namespace) -> None:
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


# ---------------------------------------------------------------------- critics
def check_critics(args: argparse.Namespace) -> None:
    run = load(args.run_dir)
    a, other = run.agent, load(args.other_run).agent
    data = load_dataset(run.config.dataset)
    obs, act, x = behaviour_samples(a, data, args.states, args.n)
    b, n = obs.shape[0], args.n
    with torch.no_grad():
        q, q_other = critic_q(a, obs, x), critic_q(other, obs, x)
        q_data = critic_q(a, obs, act)
    print(f"{args.run_dir} vs {args.other_run}: {b} states x {n} behaviour samples")
    print(f"within-state correlation of the two critics' Q: {within_corr(q, q_other):.3f}")
    for path in args.also:
        with torch.no_grad():
            q3 = critic_q(load(path).agent, obs, x)
        print(
            f"within-state correlation of {path}'s Q with the other run's: "
            f"{within_corr(q3, q_other):.3f}, with the run's: {within_corr(q3, q):.3f}"
        )
    print(f"Q of the run: within-state std {q.std(1).mean():.3f} around {q.mean():.2f}")
    above = (q > q_data).float().mean()
    print(f"share of samples the run's Q ranks above the dataset action: {above:.3f}")
    xs, ar = x.view(b, n, -1), torch.arange(b)
    for name, v in (
        ("dataset action", act),
        ("a sample", xs[:, 0]),
        ("argmax own Q", xs[ar, q.argmax(1)]),
        ("argmax other Q", xs[ar, q_other.argmax(1)]),
    ):
        print(
            f"{name:>15}: mean |a| {v.abs().mean():.3f}, share |a| > 0.99 "
            f"{(v.abs() > 0.99).float().mean():.3f}, distance to the dataset action "
            f"{(v - act).norm(dim=1).mean():.3f}"
        )


# ---------------------------------------------------------------------- q-longer
def check_q_longer(args: argparse.Namespace) -> None:
    run = load(args.run_dir)
    a, other = run.agent, load(args.other_run).agent
    data = load_dataset(run.config.dataset)
    sampler = a.batch_sampler(data, torch.device("cpu"))
    a.prepare_support(run.path, progress=False)
    if a._support is None:
        raise SystemExit(f"{args.run_dir}: its support table is missing or incomplete")
    if args.support == "data":
        # SARSA: every s' that is the next row's s gets that row's dataset action (M copies);
        # only the s' that end an episode keep the behaviour model's samples.
        n = len(data.observations)
        act = a.normalize_action(torch.as_tensor(data.actions, dtype=torch.float32))
        a._support = a._support.clone()
        a._support[:n] = act[:, None, :].expand(-1, a._support.shape[1], -1)
    if args.fresh:
        for layer in a.critic.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
        a.critic_target.load_state_dict(a.critic.state_dict())
        a.critic_opt = torch.optim.Adam(a.critic.parameters(), lr=a.config.critic_lr)
        a.critic_params = list(a.critic.parameters())
        a.critic_target_params = list(a.critic_target.parameters())
    obs, _, x = behaviour_samples(a, data, args.states, args.n)
    with torch.no_grad():
        q_other = critic_q(other, obs, x)
    picks = sample_groups(data, 3000, 300)
    g, scale = returns_for(a, run.config, data)

    def report(step: int, metrics: dict[str, float]) -> None:
        with torch.no_grad():
            q = critic_q(a, obs, x)
        print(
            f"step {step:>7}: corr with other {within_corr(q, q_other):6.3f}, "
            f"within-state std {q.std(1).mean():.3f} around {q.mean():.2f}, "
            f"target_q {metrics.get('target_q', float('nan')):.2f}, "
            f"critic_loss {metrics.get('critic_loss', float('nan')):.4f}",
            flush=True,
        )
        b = biases(a, data, picks, g, scale)
        cells = (f"{label}: {x:+.1f}" for (label, _), x in zip(picks, b, strict=True))
        print("  Q - G: " + ", ".join(cells), flush=True)

    print(
        f"{args.run_dir} ({'fresh Q' if args.fresh else 'Q continued'}, support actions from the "
        f"{args.support}) vs {args.other_run}"
    )
    report(0, {})
    a.train()
    start = time.monotonic()
    metrics: dict[str, float] = {}
    for step in range(1, args.steps + 1):
        batch = sampler.sample(a.config.batch_size)
        metrics = a._q_update(batch, a._support[a._next_ref[batch.index]])
        if step % args.every == 0:
            report(step, metrics)
    print(f"{args.steps / (time.monotonic() - start):.1f} Q steps/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="check", required=True)
    e = sub.add_parser("energy")
    e.set_defaults(func=check_energy)
    e.add_argument("run_dir")
    e.add_argument("--states", type=int, default=512)
    s = sub.add_parser("select")
    s.set_defaults(func=check_select)
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--episodes", type=int, default=10)
    s.add_argument("--rankers", default="random,q,energy")
    s.add_argument("--checkpoint", default="latest")
    s.add_argument("--seed", type=int, default=20_000)
    c = sub.add_parser("critics")
    c.set_defaults(func=check_critics)
    c.add_argument("run_dir")
    c.add_argument("other_run")
    c.add_argument("--also", nargs="*", default=[])
    q = sub.add_parser("q-longer")
    q.set_defaults(func=check_q_longer)
    q.add_argument("run_dir")
    q.add_argument("other_run")
    q.add_argument("--steps", type=int, default=50_000)
    q.add_argument("--every", type=int, default=5_000)
    q.add_argument("--fresh", action="store_true")
    q.add_argument(
        "--support",
        choices=("table", "data"),
        default="table",
        help="V(s') over the run's support table, or over the dataset's next action (SARSA)",
    )
    u = sub.add_parser("support")
    u.set_defaults(func=check_support)
    u.add_argument("run_dir")
    u.add_argument("--states", type=int, default=2000)
    u.add_argument("--neighbours", type=int, default=20)
    u.add_argument("--sample", action="store_true", help="draw them now, not from the table")
    u.add_argument("--checkpoint", default="latest", help="with --sample: latest, STEP, ...")
    for parser in (c, q):
        parser.add_argument("--n", type=int, default=16)
        parser.add_argument("--states", type=int, default=512)
    args = p.parse_args()
    torch.set_num_threads(1)
    args.func(args)


if __name__ == "__main__":
    main()
