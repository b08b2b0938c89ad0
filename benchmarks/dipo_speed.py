"""DIPO's update speed beside the official code, in one sitting, A B A B, and this CPU's floor.

Alternates `benchmarks/official_dipo.py train` (the official update, imported from a checkout of
BellmanTimeHut/DIPO given by path) and `diffrl bench train --algo dipo` at the official settings
(100 diffusion steps, 20 action-gradient steps, batch 256, hopper sizes 11 / 3), each in its own
process, for --rounds rounds; then `diffrl bench train --algo dipo --fast` and
`diffrl bench train --algo sac`. Also times one action of each (`act`).

The floor: the update's matrix products counted by hand (`update_flops`) over the rate this
CPU reaches on the update's biggest product, (256 x 256) @ (256 x 256), measured here in the
same sitting and with the same threads (`gemm_rate`). Elementwise work and everything else
count as zero, so the floor is optimistic. A second floor adds the activations: every hidden
layer's Mish (`mish_counts`) at the rate of diffrl's fastest Mish on a large buffer
(`mish_rate`), also measured in the same sitting.

Writes OUT/dipo_speed.csv and OUT/dipo_speed.md (every measurement, medians, ratios, floor).

    python benchmarks/dipo_speed.py --official-repo PATH [--rounds 2] [--seconds 20]
        [--threads N] [--out docs/results]

Run it on a quiet machine with nothing set by hand (no OMP_WAIT_POLICY, GOMP_SPINCOUNT or
OMP_NUM_THREADS): diffrl is timed with the settings a user gets, the official code with
libgomp's defaults, as its users get it.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPE = ["--obs-dim", "11", "--act-dim", "3"]


def _run(argv: list[str]) -> dict:
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{") :])


def update_flops(
    obs: int = 11,
    act: int = 3,
    batch: int = 256,
    hidden: int = 256,
    layers: int = 3,
    t_dim: int = 32,
    diffusion_steps: int = 100,
    action_steps: int = 20,
) -> dict[str, float]:
    """Multiply-adds x 2 of one DIPO update's matrix products, as diffrl computes them.

    An MLP of `layers` hidden layers: first (in -> h), (layers - 1) x (h -> h), last (h -> out).
    Forward = F; a backward pass to the input only = F (no weight gradients); a full backward
    = 2 F. The denoiser's state / time terms are computed once per chain (not counted).
    """

    def mlp(inp: int, out: int) -> float:
        return 2.0 * batch * (inp * hidden + (layers - 1) * hidden * hidden + hidden * out)

    critic = mlp(obs + act, 1)  # one head
    chain_step = mlp(act, act)  # the denoiser per step, state/time terms precomputed
    denoiser = mlp(act + t_dim + obs, act)
    parts = {
        "target chain": diffusion_steps * chain_step,
        "target critic": 2 * critic,
        "critic update": 2 * 3 * critic,
        "action gradient": action_steps * 2 * 2 * critic,  # both heads, forward + input grad
        "actor update": 3 * denoiser,
    }
    parts["total"] = sum(parts.values())
    return parts


def mish_counts(
    batch: int = 256,
    hidden: int = 256,
    layers: int = 3,
    diffusion_steps: int = 100,
    action_steps: int = 20,
) -> dict[str, float]:
    """Mish evaluations (elements) of one update: `forward` where only the value is needed
    (the target chain and target critic), `slope` where a backward pass needs the derivative
    too (critic update, action gradient, actor update). Every hidden layer has one."""
    per_net = float(batch * hidden * layers)
    return {
        "forward": per_net * (diffusion_steps + 2),
        "slope": per_net * (2 + action_steps * 2 + 1),
    }


def mish_rate(threads: int | None, seconds: float = 2.0) -> dict[str, float]:
    """Seconds per element of diffrl's compiled one-exponential Mish, value only and value with
    slope, on a (16384 x 256) buffer (large enough that the per-call cost vanishes)."""
    import torch

    from diffrl.nets import activations

    if threads:
        torch.set_num_threads(threads)
    x = torch.randn(16384, 256)
    out = {}
    fns = {
        "forward": torch.compile(activations._mish_forward, dynamic=False),
        "slope": torch.compile(activations._mish_forward_and_slope, dynamic=False),
    }
    with torch.no_grad():
        for key, fn in fns.items():
            for _ in range(5):
                fn(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                fn(x)
                n += 1
            out[key] = (time.perf_counter() - start) / n / x.numel()
    return out


def gemm_rate(threads: int | None, seconds: float = 3.0) -> float:
    """GFLOP/s of (256 x 256) @ (256 x 256) float32 products, back to back."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    out = torch.empty(256, 256)
    for _ in range(200):
        torch.mm(a, b, out=out)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            torch.mm(a, b, out=out)
        n += 100
    return 2 * 256**3 * n / (time.perf_counter() - start) / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-repo", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args()
    here = Path(__file__).resolve().parent
    threads = ["--threads", str(args.threads)] if args.threads else []
    sec = ["--seconds", str(args.seconds)]
    official = [sys.executable, str(here / "official_dipo.py")]
    repo = ["--official-repo", str(args.official_repo)]
    bench = [sys.executable, "-m", "diffrl.cli", "bench"]
    rows: list[dict] = []

    def record(code: str, settings: str, what: str, res: dict) -> None:
        key = "steps_per_second" if what == "train" else "ms_per_action"
        rows.append(
            {
                "code": code,
                "settings": settings,
                "what": what,
                key: res[key],
                "threads": res["threads"],
                "wait": res.get("omp_wait_policy", "libgomp default"),
            }
        )
        print(rows[-1], flush=True)

    for what in ("train", "act"):
        for _ in range(args.rounds):
            res = _run([*official, what, *repo, *SHAPE, *sec, *threads, "--json"])
            record("official", "official", what, res)
            res = _run([*bench, what, "--algo", "dipo", *SHAPE, *sec, *threads, "--json"])
            record("diffrl", "official", what, res)
        for _ in range(args.rounds):
            res = _run([*bench, what, "--algo", "dipo", "--fast", *SHAPE, *sec, *threads, "--json"])
            record("diffrl", "fast", what, res)
            res = _run([*bench, what, "--algo", "sac", *SHAPE, *sec, *threads, "--json"])
            record("diffrl sac", "defaults", what, res)

    rate = gemm_rate(args.threads)
    flops = update_flops()
    floor_ms = flops["total"] / (rate * 1e9) * 1e3
    counts, per_elem = mish_counts(), mish_rate(args.threads)
    mish_ms = sum(counts[k] * per_elem[k] for k in counts) * 1e3

    def med(code: str, settings: str, what: str) -> float:
        key = "steps_per_second" if what == "train" else "ms_per_action"
        return statistics.median(
            r[key] for r in rows if (r["code"], r["settings"], r["what"]) == (code, settings, what)
        )

    off, ours = med("official", "official", "train"), med("diffrl", "official", "train")
    fast, sac = med("diffrl", "fast", "train"), med("diffrl sac", "defaults", "train")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "dipo_speed.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["code", "settings", "what", "value", "threads"])
        writer.writeheader()
        for r in rows:
            value = r.get("steps_per_second", r.get("ms_per_action"))
            head = {k: r[k] for k in ("code", "settings", "what", "threads")}
            writer.writerow({**head, "value": value})
    n_threads = rows[0]["threads"]
    off_wait = next(r["wait"] for r in rows if r["code"] == "official")
    ours_wait = next(r["wait"] for r in rows if r["code"] == "diffrl")
    lines = [
        "# DIPO update speed",
        "",
        f"One sitting, {args.rounds} rounds A B A B, {args.seconds:g} s each, {n_threads} threads, "
        f"nothing set by hand (diffrl: {ours_wait}, threads following the load; the official "
        f"code: {off_wait}); hopper sizes (observation "
        "11, action 3), batch 256, random data. One step = one full update (critic, action "
        "gradient, actor, targets).",
        "",
        "| code | settings | updates / s (median) | x official | ms per action (median) |",
        "| --- | --- | --- | --- | --- |",
        f"| official | official (100 steps, 20 action steps) | {off:.2f} | 1.00 | "
        f"{med('official', 'official', 'act'):.2f} |",
        f"| diffrl | official | {ours:.2f} | {ours / off:.2f} | "
        f"{med('diffrl', 'official', 'act'):.2f} |",
        f"| diffrl | fast preset | {fast:.2f} | {fast / off:.2f} | "
        f"{med('diffrl', 'fast', 'act'):.2f} |",
        f"| diffrl | SAC (defaults) | {sac:.2f} | {sac / off:.2f} | "
        f"{med('diffrl sac', 'defaults', 'act'):.2f} |",
        "",
        f"Floor at the official settings: {flops['total'] / 1e9:.2f} GFLOP per update in matrix "
        f"products ("
        + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in flops.items() if k != "total")
        + f") at {rate:.0f} GFLOP/s, this CPU's rate on a (256 x 256) @ (256 x 256) product "
        f"measured in the same sitting: **{floor_ms:.1f} ms per update, "
        f"{1e3 / floor_ms:.2f} updates/s**. diffrl's update takes {1e3 / ours:.1f} ms, "
        f"**{1e3 / ours / floor_ms:.2f}x the floor**.",
        "",
        "With the activations: every hidden layer also evaluates Mish on its (256 x 256) "
        f"output, {counts['forward'] / 1e6:.1f}M values where only the value is needed and "
        f"{counts['slope'] / 1e6:.1f}M where a backward pass needs the slope too. At diffrl's "
        "fastest Mish (compiled, one exponential) on a large buffer, measured in the same "
        f"sitting ({per_elem['forward'] * 1e9:.2f} and {per_elem['slope'] * 1e9:.2f} ns per "
        f"value) that is {mish_ms:.1f} ms, so a floor of products and activations together is "
        f"**{floor_ms + mish_ms:.1f} ms per update**; diffrl's update is "
        f"**{1e3 / ours / (floor_ms + mish_ms):.2f}x that floor**. The rest of the update "
        "(other elementwise work, the optimisers, the small layers) still counts as zero.",
        "",
        "Command:",
        "",
        "```",
        "python benchmarks/dipo_speed.py " + " ".join(sys.argv[1:]),
        "```",
        "",
    ]
    (args.out / "dipo_speed.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
