"""diffrl's SAC beside an independent SAC: stable-baselines3's, at the same settings, on the same
environment and budget.

diffrl's SAC (diffrl/algos/sac.py) takes stable-baselines3's defaults and update order; this
script checks that its learning curve is where stable-baselines3's is. It trains
`stable_baselines3.SAC("MlpPolicy", env, learning_starts=WARMUP)` (its defaults otherwise: 2 x 256
ReLU, lr 3e-4, batch 256, tau 0.005, automatic temperature from 1.0) for WARMUP + STEPS
environment steps on one thread, evaluating the deterministic policy every `--eval-every`
environment steps on 10 episodes (reset seeds 20000 + i), and writes OUT/NAME.csv (one row per
evaluation: code, seed, env_steps, return, return_std) and OUT/NAME.md, where each diffrl run
given with --runs (its logged evaluations) is set beside it at the same environment steps.

    python benchmarks/sac_reference.py --env Hopper-v5 --seeds 0 [--steps 100000]
        [--warmup 10000] [--runs runs/online/Hopper-v5/sac-s0 ...] [--out docs/results]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from diffrl.run import RunDir


def evaluate(model, env_id: str, episodes: int = 10) -> tuple[float, float]:
    """Deterministic episodes only: unlike diffrl.behavior.evaluate_policy (which also runs
    stochastic ones), this draws nothing from torch's RNG, so evaluating leaves SB3's training
    stream as it would be without evaluations."""
    import gymnasium as gym

    returns = []
    for i in range(episodes):
        env = gym.make(env_id)
        obs, _ = env.reset(seed=20000 + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        env.close()
        returns.append(total)
    return statistics.fmean(returns), statistics.pstdev(returns)


def train_sb3(env_id: str, seed: int, steps: int, warmup: int, every: int) -> list[dict]:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    model = SAC("MlpPolicy", gym.make(env_id), learning_starts=warmup, seed=seed, device="cpu")
    rows: list[dict] = []
    start = time.perf_counter()

    class Every(BaseCallback):
        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n > warmup and (n - warmup) % every == 0:
                mean, std = evaluate(model, env_id)
                rows.append(
                    {
                        "code": "stable-baselines3",
                        "seed": seed,
                        "env_steps": n,
                        "return": mean,
                        "return_std": std,
                    }
                )
                print(
                    f"sb3 seed {seed}: {n:,} env steps, return {mean:.1f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
            return True

    model.learn(warmup + steps, callback=Every())
    return rows


def diffrl_rows(run: Path) -> list[dict]:
    config = RunDir(run).raw_config()
    rows = []
    for r in RunDir(run).metrics():
        if "eval/return_mean" in r:
            rows.append(
                {
                    "code": "diffrl",
                    "seed": config["seed"],
                    "env_steps": r.get("env_steps", r["step"] + config["warmup_steps"]),
                    "return": r["eval/return_mean"],
                    "return_std": r["eval/return_std"],
                }
            )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=100_000, help="updates after the warm-up")
    p.add_argument("--warmup", type=int, default=10_000)
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--runs", nargs="*", type=Path, default=[], help="diffrl SAC run directories")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--name", default="sac_reference")
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / f"{args.name}.csv"
    rows = []
    for seed in args.seeds:
        rows += train_sb3(args.env, seed, args.steps, args.warmup, args.eval_every)
    for run in args.runs:
        rows += diffrl_rows(run)
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["code", "seed", "env_steps", "return", "return_std"])
        w.writeheader()
        w.writerows(rows)

    steps = sorted({r["env_steps"] for r in rows if r["code"] == "stable-baselines3"})
    columns = sorted({(r["code"], r["seed"]) for r in rows}, key=lambda k: (k[0] != "diffrl", k))
    by = {(r["code"], r["seed"], r["env_steps"]): r["return"] for r in rows}
    head = " | ".join(f"{code} s{seed}" for code, seed in columns)
    lines = [
        f"# SAC on {args.env}: diffrl's beside stable-baselines3's",
        "",
        f"Return of the deterministic policy, 10 episodes per evaluation; {args.warmup:,} random "
        f"environment steps first, then one update per environment step. Both at "
        "stable-baselines3's SAC defaults; one thread each.",
        "",
        f"| env steps | {head} |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for n in steps:
        cells = [by.get((code, seed, n)) for code, seed in columns]
        lines.append(
            f"| {n:,} | " + " | ".join("" if c is None else f"{c:.0f}" for c in cells) + " |"
        )
    lines += [
        "",
        "Command:",
        "",
        "```",
        "python benchmarks/sac_reference.py --env "
        f"{args.env} --seeds {' '.join(map(str, args.seeds))} --steps {args.steps} "
        f"--warmup {args.warmup} --runs {' '.join(str(r) for r in args.runs)} "
        f"--out {args.out} --name {args.name}",
        "```",
        "",
    ]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print(f"wrote {csv_path} and {args.out / f'{args.name}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
