"""Where one Diffusion-QL training step's time goes, by operator, in fp32 and bf16.

Times 100 steps at hopper shapes (obs 11, action 3, batch 256) with the default settings, then
profiles 30 more with torch.profiler and prints each precision's step time and the operators'
self time per step, grouped: matrix products (mm, addmm, bmm), compiled element-wise graphs
(inductor's fused kernels, casts included), the optimiser, dispatch (dynamo's guards, autograd's
compiled functions) and the rest. Writes OUT/step_profile.{csv,md}.

    .venv/bin/python benchmarks/step_profile.py [--out docs/results]

Run it on a quiet machine; the shares matter more than the absolute times.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import diffrl  # noqa: F401  (the default thread settings, as a user gets them)
from diffrl.bench import _agent, synthetic_dataset
from diffrl.precision import precision_scope


def group(name: str) -> str:
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        return "matrix products"
    if "CompiledFxGraph" in name:
        return "compiled element-wise graphs"
    if "Adam" in name or "fused_adam" in name or "zero_grad" in name:
        return "optimiser"
    if "Dynamo" in name or name.startswith("Compiled") or "Torch-Compiled Region" in name:
        return "dispatch (dynamo guards, compiled autograd functions)"
    if name in ("aten::copy_", "aten::_to_copy"):
        return "copies"
    return "other eager operators"


def measure(precision: str, steps: int = 100, profiled: int = 30) -> tuple[float, dict]:
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    agent, _ = _agent("diffusion-ql", 11, 3, cpu, {"precision": precision})
    data = synthetic_dataset(11, 3)
    agent.fit_normalizers(data)
    agent.train()
    sampler = agent.batch_sampler(data, cpu)
    agent.num_updates = 10**6  # the steady state, past the EMA's start
    with precision_scope(precision, cpu):
        for _ in range(60):
            agent.update(sampler.sample(256))
        start = time.perf_counter()
        for _ in range(steps):
            agent.update(sampler.sample(256))
        ms = (time.perf_counter() - start) / steps * 1e3
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(profiled):
                agent.update(sampler.sample(256))
    shares: dict[str, float] = {}
    for event in prof.key_averages():
        key = group(event.key)
        shares[key] = shares.get(key, 0.0) + event.self_cpu_time_total / profiled / 1e3
    return ms, shares


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/results")
    args = p.parse_args()
    results = {prec: measure(prec) for prec in ("fp32", "bf16")}
    groups = sorted({g for _, shares in results.values() for g in shares})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "step_profile.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["precision", "ms_per_step", "group", "self_ms_per_step"])
        for prec, (ms, shares) in results.items():
            for g in groups:
                w.writerow([prec, round(ms, 3), g, round(shares.get(g, 0.0), 3)])
    lines = [
        "# One Diffusion-QL training step by operator group, fp32 and bf16",
        "",
        "Hopper shapes (obs 11, action 3, batch 256, T = 5), default settings, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}. Step time: 100 steps "
        "timed; operator self time: 30 more under torch.profiler (self times leave out the "
        "waits between operators and include the profiler's own cost, so their total and the "
        "step time differ).",
        "",
        "Command: `.venv/bin/python benchmarks/step_profile.py`",
        "",
        "| group | " + " | ".join(f"{p} ms/step | {p} share" for p in results) + " |",
        "| --- | " + " | ".join("--- | ---" for _ in results) + " |",
    ]
    for g in sorted(groups, key=lambda g: -results["fp32"][1].get(g, 0.0)):
        cells = []
        for _, shares in results.values():
            total = sum(shares.values())
            cells.append(f"{shares.get(g, 0.0):.2f} | {100 * shares.get(g, 0.0) / total:.0f} %")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    totals = " | ".join(f"{sum(s.values()):.2f} | 100 %" for _, s in results.values())
    lines.append(f"| profiled total | {totals} |")
    steps = " | ".join(f"{ms:.2f} | " for ms, _ in results.values())
    lines.append(f"| step time, unprofiled | {steps} |")
    (out / "step_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
