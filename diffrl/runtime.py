"""Process-level settings that make small-network training faster on a CPU.

`passive_omp_default()` (run when `diffrl` is imported) sets ``OMP_WAIT_POLICY=PASSIVE`` unless
the user set it, before torch loads its OpenMP runtime. Why: with the default (active) policy
each of torch's worker threads spins for a while after every parallel region, waiting for the
next one. Alone on the machine that saves a wake-up per operation; with a second busy process
on a 2-core machine the spinning threads take the cores the other process's threads need, and
training collapses (measured here: Diffusion-BC 103 -> 3.5 steps/s, Diffusion-QL 14.9 -> 4.2,
with a second training beside it). Passive threads sleep instead: 10-15 % slower alone, but two
runs side by side each keep 60-75 % of their speed alone (docs/performance.md, "Threads").
`set_threads(n)` is the `--threads` option of `diffrl train`, `eval` and `bench`.

`tune_cpu_allocator()` keeps freed memory inside the process instead of handing it back to the
kernel after every step. Why: a Diffusion-QL step on hopper shapes allocates ~100 fresh
256 x 256 float32 buffers (256 KiB each: activations, Mish slopes, gradients). With glibc's
default settings a 256 KiB block is mapped anew with mmap or lies above the heap top, which is
trimmed when freed, so every step touches ~500 new pages (measured: 508 minor page faults and
2.2 ms of system time per step, each first write to a page paying a kernel fault). With a higher
mmap threshold and trim threshold the blocks are reused from the heap: 0 faults per step and
about 14 % less time per step (docs/performance.md). Nothing numerical changes.

It is called by `diffrl train`, `diffrl bench` and `diffrl eval` (the CLI) and by
`diffrl.train.train`; library users with their own loop can call it once. It only acts on Linux
with glibc, and `DIFFRL_TUNE_MALLOC=0` turns it off. The cost: up to `trim_mib` of freed heap
stays with the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# CLI commands that plan trajectories alone on the machine: a planner's decision is tens of
# thousands of short operations, and a sleeping pool wakes up for each one. Diffuser's guided
# plan at the official settings on 2 cores: 3.34 s with PASSIVE, 1.15 s with ACTIVE (measured,
# docs/performance.md). They get libgomp's spinning pool unless OMP_WAIT_POLICY is set.
_SPINNING_COMMANDS = (("plan",), ("bench", "plan"))


def _cli_command(argv: list[str]) -> tuple[str, ...]:
    """The diffrl CLI command words in argv ('' when this is not the diffrl CLI)."""
    if not argv or os.path.basename(argv[0]) not in ("diffrl", "cli.py", "-m"):
        return ()
    return tuple(a for a in argv[1:3] if not a.startswith("-"))


def passive_omp_default(argv: list[str] | None = None) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless it is set or torch is loaded already (then it is too
    late to matter), or the CLI command plans alone (`diffrl plan`, `diffrl bench plan`: then
    ACTIVE). Returns True when this call set PASSIVE."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    policy = default_wait_policy(sys.argv if argv is None else argv)
    os.environ["OMP_WAIT_POLICY"] = policy
    return policy == "PASSIVE"


def default_wait_policy(argv: list[str]) -> str:
    """ACTIVE for the CLI commands that plan alone, PASSIVE for everything else."""
    command = _cli_command(argv)
    return "ACTIVE" if any(command[: len(c)] == c for c in _SPINNING_COMMANDS) else "PASSIVE"


def set_threads(n: int | None) -> None:
    """torch's intra-op threads (None: torch's default, one per core)."""
    if n is None:
        return
    from diffrl.errors import DiffrlError

    if n < 1:
        raise DiffrlError(f"--threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(int(n))


# mallopt(3) parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_applied: bool | None = None


def tune_cpu_allocator(mmap_mib: int = 32, trim_mib: int = 256, top_pad_mib: int = 16) -> bool:
    """Raise glibc's mmap threshold, trim threshold and top pad (once per process).

    Blocks below `mmap_mib` come from the heap (32 MiB is glibc's largest allowed value on
    64-bit); the heap is trimmed only when more than `trim_mib` is free at its top; each heap
    growth asks for `top_pad_mib` extra. Returns True when the settings are in effect (False on
    other platforms or C libraries, or with DIFFRL_TUNE_MALLOC=0).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("DIFFRL_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only (not musl)
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    mib = 1 << 20
    ok = (
        mallopt(_M_MMAP_THRESHOLD, mmap_mib * mib) == 1
        and mallopt(_M_TRIM_THRESHOLD, trim_mib * mib) == 1
        and mallopt(_M_TOP_PAD, top_pad_mib * mib) == 1
    )
    _applied = bool(ok)
    return _applied
