"""The official DIPO code's speed on synthetic data, for `benchmarks/dipo_speed.py`.

Imports `agent/DiPo.py` from a checkout of github.com/BellmanTimeHut/DIPO given by path (never
copied into this repository), fills its two memories with random transitions, and times what
its main loop does per environment step after the warm-up: `agent.train(1, batch_size)` (one
update) and `agent.sample_action(state)` (one exploration action), at its main.py defaults
(100 diffusion steps, cosine schedule, 20 action-gradient steps, batch 256) unless changed.
Prints JSON like `diffrl bench train|act --json`.

    python benchmarks/official_dipo.py train|act --official-repo PATH [--obs-dim 11]
        [--act-dim 3] [--seconds 20] [--threads N] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

WARMUP_SECONDS, WARMUP_CALLS = 3.0, 20  # as diffrl.bench


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["train", "act"])
    p.add_argument("--official-repo", required=True, type=Path)
    p.add_argument("--obs-dim", type=int, default=11)
    p.add_argument("--act-dim", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.official_repo.resolve()))
    from agent.DiPo import DiPo
    from agent.replay_memory import DiffusionMemory, ReplayMemory

    # main.py's defaults.
    settings = dict(
        policy_type="Diffusion",
        noise_ratio=1.0,
        beta_schedule="cosine",
        n_timesteps=100,
        diffusion_lr=3e-4,
        critic_lr=3e-4,
        action_lr=0.03,
        action_gradient_steps=20,
        ratio=0.1,
        ac_grad_norm=2.0,
        tau=0.005,
        update_actor_target_every=1,
    )
    for pair in args.set:
        key, _, value = pair.partition("=")
        settings[key] = type(settings[key])(value)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    obs_dim, act_dim = args.obs_dim, args.act_dim
    device = torch.device("cpu")
    memory = ReplayMemory(obs_dim, act_dim, 10_000, device)
    diffusion_memory = DiffusionMemory(obs_dim, act_dim, 10_000, device)
    space = SimpleNamespace(shape=(act_dim,), high=np.ones(act_dim), low=-np.ones(act_dim))
    agent = DiPo(SimpleNamespace(**settings), obs_dim, space, memory, diffusion_memory, device)
    for _ in range(10_000):
        agent.append_memory(
            rng.standard_normal(obs_dim),
            rng.uniform(-1, 1, act_dim),
            float(rng.standard_normal()),
            rng.standard_normal(obs_dim),
            0.99,
        )
    state = rng.standard_normal(obs_dim).astype(np.float32)
    if args.what == "train":
        fn = lambda: agent.train(1, batch_size=args.batch_size)  # noqa: E731
    else:
        fn = lambda: agent.sample_action(state, eval=False)  # noqa: E731
    start, k = time.perf_counter(), 0
    while time.perf_counter() - start < WARMUP_SECONDS or k < WARMUP_CALLS:
        fn()
        k += 1
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        fn()
        n += 1
    elapsed = time.perf_counter() - start
    out = {"code": "official", "threads": torch.get_num_threads(), "settings": settings}
    if args.what == "train":
        out.update(steps_per_second=round(n / elapsed, 3), steps=n, batch_size=args.batch_size)
    else:
        out.update(ms_per_action=round(1e3 * elapsed / n, 3), actions=n)
    out["seconds"] = round(elapsed, 2)
    print(json.dumps(out, indent=2) if args.json else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
