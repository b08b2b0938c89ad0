"""The official Diffuser's guided planning, timed on this machine beside `diffrl bench plan`.

Imports the official model and sampling modules (github.com/jannerm/diffuser, branch main:
diffuser/models/{temporal,helpers,diffusion}.py, diffuser/sampling/{functions,guides}.py) from a
checkout given by path. It does so without the package's `__init__` (which registers MuJoCo
environments through gym) and with a two-name stand-in for `diffuser.utils` (`to_np` and
`Silent`, the only names those modules use when planning). The modules need `einops`
(`pip install einops`; not a diffrl dependency).

Times one decision as the official planner makes it: `GaussianDiffusion.conditional_sample`
with `n_step_guided_p_sample` and a `ValueGuide` on a `ValueFunction`, at config/locomotion.py's
settings (H 32, 20 diffusion steps, 64 plans, 2 guide steps, scale 0.1, t_stopgrad 2, gradients
scaled by the posterior variance), with random weights (the cost does not depend on them).

Run, then `diffrl bench plan` with the same settings:
    python benchmarks/official_diffuser.py --official-repo PATH [--obs-dim 11 --act-dim 3
        --horizon 32 --plans 64 --sampling-steps 20 --guide-steps 2 --seconds 20 --threads N
        --json]
    diffrl bench plan --algo diffuser --obs-dim 11 --act-dim 3 --horizon 32 --plans 64 \
        --sampling-steps 20 --guide-steps 2 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_official(repo: Path) -> dict[str, types.ModuleType]:
    """The official modules, imported from `repo` without the package's side effects."""
    root = repo / "diffuser"
    needed = [root / "models" / f for f in ("temporal.py", "helpers.py", "diffusion.py")]
    needed += [root / "sampling" / f for f in ("functions.py", "guides.py")]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"error: {repo} is not a checkout of jannerm/diffuser (no {missing[0]})")
    if importlib.util.find_spec("einops") is None:
        raise SystemExit("error: the official modules need einops: pip install einops")

    class Silent:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __getattr__(self, attr):  # noqa: ANN204
            return lambda *args, **kwargs: None

    for name, path in (("diffuser", root), ("diffuser.models", root / "models")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    utils = types.ModuleType("diffuser.utils")
    utils.to_np = lambda x: x.detach().cpu().numpy()
    utils.Silent = Silent
    utils.Progress = Silent
    sys.modules["diffuser.utils"] = utils
    sampling = types.ModuleType("diffuser.sampling")
    sampling.__path__ = [str(root / "sampling")]
    sys.modules["diffuser.sampling"] = sampling
    return {
        "temporal": _load("diffuser.models.temporal", root / "models" / "temporal.py"),
        "helpers": _load("diffuser.models.helpers", root / "models" / "helpers.py"),
        "diffusion": _load("diffuser.models.diffusion", root / "models" / "diffusion.py"),
        "functions": _load("diffuser.sampling.functions", root / "sampling" / "functions.py"),
        "guides": _load("diffuser.sampling.guides", root / "sampling" / "guides.py"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-repo", required=True, type=Path)
    parser.add_argument("--obs-dim", type=int, default=11)
    parser.add_argument("--act-dim", type=int, default=3)
    parser.add_argument("--horizon", type=int, default=32)
    parser.add_argument("--plans", type=int, default=64)
    parser.add_argument("--sampling-steps", type=int, default=20)
    parser.add_argument("--guide-steps", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = load_official(args.official_repo)
    d = args.obs_dim + args.act_dim
    model = m["temporal"].TemporalUnet(args.horizon, d, cond_dim=args.obs_dim)
    diffusion = m["diffusion"].GaussianDiffusion(
        model,
        args.horizon,
        args.obs_dim,
        args.act_dim,
        n_timesteps=args.sampling_steps,
        loss_type="l2",
        predict_epsilon=False,
        action_weight=10,
    )
    value = m["temporal"].ValueFunction(args.horizon, d, cond_dim=args.obs_dim)
    guide = m["guides"].ValueGuide(value)
    sample_fn = m["functions"].n_step_guided_p_sample
    obs = torch.from_numpy(np.zeros((args.plans, args.obs_dim), np.float32))

    def plan() -> None:
        diffusion.conditional_sample(
            {0: obs},
            verbose=False,
            sample_fn=sample_fn,
            guide=guide,
            n_guide_steps=args.guide_steps,
            scale=0.1,
            t_stopgrad=2,
            scale_grad_by_std=True,
        )

    start = time.perf_counter()
    while time.perf_counter() - start < 3.0:  # warm-up
        plan()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds or n < 3:
        plan()
        n += 1
    elapsed = time.perf_counter() - start
    out = {
        "code": "official (jannerm/diffuser, main)",
        "ms_per_plan": round(elapsed / n * 1e3, 3),
        "plans_per_second": round(n / elapsed, 3),
        "calls": n,
        "horizon": args.horizon,
        "plans": args.plans,
        "sampling_steps": args.sampling_steps,
        "guide_steps": args.guide_steps,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"official diffuser: {out['ms_per_plan']:.1f} ms per plan ({n} plans)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
