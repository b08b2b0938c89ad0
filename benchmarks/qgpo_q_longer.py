"""Does a QGPO run's critic learn an action ranking if its in-support softmax Q-learning runs
longer? Continues the run's Q updates (paper eq. 13, the run's own `_q_update`, support table
and settings) for --steps more steps, and every --every steps prints the within-state
correlation of its target critic's Q with another run's critic (e.g. a Diffusion-QL run) on
fixed behaviour samples, with its within-state spread. The run directory is not changed.

    DIFFRL_DATA=... python benchmarks/qgpo_q_longer.py RUN_DIR OTHER_RUN_DIR [--steps 50000]
        [--every 5000] [--fresh] [--n 16] [--states 512]

RUN_DIR must hold its support table (support.safetensors). `--fresh`: start Q from new weights.
"""

from __future__ import annotations

import argparse
import time

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
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--every", type=int, default=5_000)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--states", type=int, default=512)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = load(args.run_dir)
    a, other = run.agent, load(args.other_run_dir).agent
    data = load_dataset(run.config.dataset)
    sampler = a.batch_sampler(data, torch.device("cpu"))
    a.prepare_support(run.path, progress=False)
    if a._support is None:
        raise SystemExit(f"{args.run_dir}: its support table is missing or incomplete")
    if args.fresh:
        for layer in a.critic.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
        a.critic_target.load_state_dict(a.critic.state_dict())
        a.critic_opt = torch.optim.Adam(a.critic.parameters(), lr=a.config.critic_lr)
        a.critic_params = list(a.critic.parameters())
        a.critic_target_params = list(a.critic_target.parameters())
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(data.observations), (args.states,), generator=g).numpy()
    obs = torch.as_tensor(data.observations[idx], dtype=torch.float32)
    n, b = args.n, len(idx)
    with torch.no_grad():
        x = a.unnormalize_action(a.sample(a.obs_normalizer.normalize(obs), n, 0.0, generator=g))
        rows = obs.repeat_interleave(n, 0)
        q_other = other.critic_target.q_min(other.obs_normalizer.normalize(rows), x).view(b, n)

    def report(step: int, metrics: dict[str, float]) -> None:
        with torch.no_grad():
            q = a.critic_target.q_min(rows, x).view(b, n)
        print(
            f"step {step:>7}: corr with other {within_corr(q, q_other):6.3f}, "
            f"within-state std {q.std(1).mean():.3f} around {q.mean():.2f}, "
            f"target_q {metrics.get('target_q', float('nan')):.2f}, "
            f"critic_loss {metrics.get('critic_loss', float('nan')):.4f}",
            flush=True,
        )

    print(f"{args.run_dir} ({'fresh Q' if args.fresh else 'Q continued'}) vs {args.other_run_dir}")
    report(0, {})
    a.train()
    start = time.monotonic()
    metrics: dict[str, float] = {}
    for step in range(1, args.steps + 1):
        batch = sampler.sample(a.config.batch_size)
        metrics = a._q_update(batch, a._support[a._next_ref[batch.index]])
        if step % args.every == 0:
            report(step, metrics)
    rate = args.steps / (time.monotonic() - start)
    print(f"{rate:.1f} Q steps/s")


if __name__ == "__main__":
    main()
