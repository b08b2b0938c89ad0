"""Float32 products on this CPU: PyTorch's addmm (MKL's sgemm) against oneDNN with the weight
packed once (diffrl/nets/onednn.py), at the shapes diffrl's networks use.

    python benchmarks/onednn_products.py [--threads N] [--rounds 5]

Prints a Markdown table: microseconds per product (best of --rounds timed loops) and GFLOP/s.
Run it on a quiet machine; only the ratio within a row compares.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from diffrl.nets.onednn import ConstantProduct, onednn_available

# (rows, in, out): a 256-wide MLP layer at batch 256, the planner's dense maps at 64 and 4
# plans, an im2col product of the fast planner, and one action's 256-wide layer.
SHAPES = [(256, 256, 256), (64, 1024, 1024), (4, 1024, 1024), (16, 1280, 256), (1, 256, 256)]


def _time(fn, rounds: int, calls: int) -> float:
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not onednn_available():
        print("oneDNN is not available in this torch build (or DIFFRL_ONEDNN=0)")
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32\n")
    print("| rows, in, out | addmm (MKL), us | GFLOP/s | oneDNN packed, us | GFLOP/s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m, k, n in SHAPES:
        x, matrix, bias = torch.randn(m, k), torch.randn(k, n), torch.randn(n)
        product = ConstantProduct(matrix, bias, rows=m, min_macs=0)  # oneDNN at every size
        calls = max(20, int(2e8 / (m * k * n)))
        with torch.no_grad():
            plain = _time(partial(torch.addmm, bias, x, matrix), args.rounds, calls)
            fast = _time(partial(product, x), args.rounds, calls)
        flop = 2 * m * k * n / 1e3
        print(
            f"| {m}, {k}, {n} | {plain:.0f} | {flop / plain:.0f} | {fast:.0f} | {flop / fast:.0f} "
            f"| {plain / fast:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
