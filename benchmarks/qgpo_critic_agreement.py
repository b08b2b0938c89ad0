"""Do two critics rank a QGPO run's behaviour samples alike? On random dataset states, draws N
unguided samples per state from the run's behaviour model and prints, for the run's target critic
and another run's (any agent with `critic_target.q_min`, e.g. Diffusion-QL):

- the within-state correlation of the two critics' Q over the samples (1: the same ranking);
- where the dataset's own action ranks among the samples by the run's Q;
- the actions each critic's argmax picks: mean |a|, share at the box edge, distance to the
  dataset action of the state (for a sample drawn at random as the reference).

    DIFFRL_DATA=... python benchmarks/qgpo_critic_agreement.py RUN_DIR OTHER_RUN_DIR [--n 16]
        [--states 512] [--also RUN_DIR ...]

`--also`: more runs whose critics are compared with OTHER_RUN_DIR's on the same samples (e.g.
a second seed of it: do two critics trained alike agree?).
"""

from __future__ import annotations

import argparse

import torch

from diffrl.api import load, load_dataset


def within_corr(q: torch.Tensor, r: torch.Tensor) -> float:
    """Correlation of (B, N) scores after removing each state's mean."""
    qc, rc = q - q.mean(1, keepdim=True), r - r.mean(1, keepdim=True)
    return float((qc * rc).sum() / (qc.norm() * rc.norm()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("other_run_dir")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--states", type=int, default=512)
    p.add_argument("--also", nargs="*", default=[])
    args = p.parse_args()
    torch.set_num_threads(1)
    run = load(args.run_dir)
    a, other = run.agent, load(args.other_run_dir).agent
    data = load_dataset(run.config.dataset)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(data.observations), (args.states,), generator=g).numpy()
    obs = torch.as_tensor(data.observations[idx], dtype=torch.float32)
    act = torch.as_tensor(data.actions[idx], dtype=torch.float32)
    n, b = args.n, len(idx)
    with torch.no_grad():
        x = a.unnormalize_action(a.sample(a.obs_normalizer.normalize(obs), n, 0.0, generator=g))
        rows = obs.repeat_interleave(n, 0)
        q = a.critic_target.q_min(rows, x).view(b, n)
        q_other = other.critic_target.q_min(other.obs_normalizer.normalize(rows), x).view(b, n)
        q_data = a.critic_target.q_min(obs, act)
    xs = x.view(b, n, -1)
    print(f"{args.run_dir} vs {args.other_run_dir}: {b} states x {n} behaviour samples")
    print(f"within-state correlation of the two critics' Q: {within_corr(q, q_other):.3f}")
    for path in args.also:
        third = load(path).agent
        with torch.no_grad():
            q3 = third.critic_target.q_min(third.obs_normalizer.normalize(rows), x).view(b, n)
        print(
            f"within-state correlation of {path}'s Q with the other run's: "
            f"{within_corr(q3, q_other):.3f}, with the run's: {within_corr(q3, q):.3f}"
        )
    print(f"Q of the run: within-state std {q.std(1).mean():.3f} around {q.mean():.2f}")
    above = (q > q_data).float().mean()
    print(f"share of samples the run's Q ranks above the dataset action: {above:.3f}")
    ar = torch.arange(b)
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


if __name__ == "__main__":
    main()
