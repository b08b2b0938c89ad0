"""Process-level settings that make small-network work fast on a CPU, alone or beside others.

Two mechanisms, measured together (docs/performance.md, "Threads"):

1. **A short spin** (`short_spin_default()`, run when `diffrl` is imported). torch's OpenMP
   workers wait between operations. With ``OMP_WAIT_POLICY=PASSIVE`` they sleep at once, and
   every one of the thousands of small operations in a step pays a futex wake-up (Diffusion-QL
   acting 3.5 ms against 1.2 ms spinning); with ``ACTIVE`` they spin for minutes, holding cores
   another process needs. diffrl sets ``GOMP_SPINCOUNT`` (libgomp's bound on the spin) to
   `SPIN_COUNT`, a few hundred microseconds: as fast as ACTIVE between the operations of one
   step (measured), asleep between steps and when the process stops working. Set
   ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` yourself and diffrl leaves both alone.

2. **Threads that follow the machine's load** (`ThreadGovernor`, `threads_tick()`). A short
   spin is not enough when two processes each run two threads on two cores: every parallel
   region needs both of a process's threads on a core at once, and the four threads wait for
   each other's time slices (two Diffusion-QL trainings: 17 steps/s each against 44 alone).
   The loops that do the work (training steps, environment steps, benchmark calls,
   `Run.act`) call `threads_tick()`; about twice a second it reads how much CPU the *other*
   processes used (``/proc/stat`` minus this process's ``/proc/self/stat``) and gives torch
   the cores they leave: all of them when the machine is otherwise idle, fewer (down to one)
   while others work, all again once they stop. With one thread there are no parallel regions,
   so nothing spins. `set_threads(n)` (the `--threads` option) pins the count and switches the
   governor off, as does ``OMP_NUM_THREADS`` or ``DIFFRL_ADAPTIVE_THREADS=0``. Linux only
   (elsewhere the count stays torch's default).

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
import math
import os
import random
import sys
import time

# libgomp's spin bound, in iterations of its wait loop (a `pause` each: ~25 ns here, so ~250
# us). Measured on 2 cores (docs/performance.md): Diffusion-QL training and acting, Diffuser's
# plan at 1,000-20,000 match ACTIVE within the machine's noise; 0 (PASSIVE) is 2-3x slower.
SPIN_COUNT = 10_000


def short_spin_default() -> bool:
    """Set ``GOMP_SPINCOUNT=SPIN_COUNT`` unless the user chose a wait policy or spin, or torch is
    loaded already (then libgomp has read its settings). Returns True when this call set it."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    if "torch" in sys.modules:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True


def wait_policy() -> str:
    """How torch's OpenMP workers wait, in words (for benchmark records)."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    spin = os.environ.get("GOMP_SPINCOUNT")
    if policy and spin:
        return f"OMP_WAIT_POLICY={policy}, GOMP_SPINCOUNT={spin}"
    if policy:
        return f"OMP_WAIT_POLICY={policy}"
    if spin:
        return f"GOMP_SPINCOUNT={spin}"
    return "libgomp default"


def target_threads(others: float, cores: int, idle_below: float = 0.35) -> int:
    """Threads to run when other processes use `others` cores on average: all `cores` while
    they use less than `idle_below` of one, else the cores they leave, rounded down, at least 1.

    >>> target_threads(0.1, 2), target_threads(0.7, 2), target_threads(1.0, 2)
    (2, 1, 1)
    >>> target_threads(3.2, 16)
    13
    """
    busy = max(0.0, others - idle_below)
    return max(1, min(cores, cores - math.ceil(busy)))


def _machine_busy_ticks() -> int:
    """CPU ticks spent working by every process since boot (/proc/stat's first line, without
    idle, iowait, steal and guest time, which `user` already holds)."""
    with open("/proc/stat", "rb") as fh:
        fields = fh.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return user + nice + system + irq + softirq


def _own_ticks() -> int:
    """CPU ticks this process's threads spent (utime + stime)."""
    with open("/proc/self/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class ThreadGovernor:
    """Keeps torch's intra-op thread count at the cores other processes leave free.

    `tick()` is cheap (one clock read) and meant to be called once per unit of work; every
    `interval` seconds (jittered, so that two processes do not decide in lockstep) it measures
    the other processes' CPU use over the window and sets the thread count. Fewer threads take
    effect at once; more only after two windows in a row ask for them, so a brief burst
    elsewhere does not make the count flap.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.enabled = _governor_allowed()
        self.cores: int | None = None  # torch's default thread count, read at the first tick
        self.threads: int | None = None
        self.others: float = 0.0  # other processes' cores in the last window
        self.changes = 0
        self._next = 0.0
        self._last: tuple[float, int, int] | None = None
        self._raise_votes = 0
        # Its own generator: the global `random` stream belongs to the user's seed.
        self._jitter = random.Random()
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def pin(self) -> None:
        """Stop adapting (the user chose a thread count)."""
        self.enabled = False

    def tick(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval * self._jitter.uniform(0.8, 1.2)
        try:
            sample = (now, _machine_busy_ticks(), _own_ticks())
        except (OSError, ValueError, IndexError):
            self.enabled = False  # no /proc: keep torch's default
            return
        import torch

        if self.cores is None:
            self.cores = self.threads = torch.get_num_threads()
            if self.cores < 2:
                self.enabled = False
                return
        last, self._last = self._last, sample
        if last is None:
            return
        wall = sample[0] - last[0]
        if wall <= 0:
            return
        own = sample[2] - last[2]
        self.others = max(0.0, (sample[1] - last[1] - own) / self._hz / wall)
        want = target_threads(self.others, self.cores)
        if want > self.threads:
            self._raise_votes += 1
            if self._raise_votes < 2:
                return
        self._raise_votes = 0
        if want != self.threads:
            torch.set_num_threads(want)
            self.threads = want
            self.changes += 1


def _governor_allowed() -> bool:
    if os.environ.get("DIFFRL_ADAPTIVE_THREADS", "1") == "0" or "OMP_NUM_THREADS" in os.environ:
        return False
    return sys.platform.startswith("linux") and os.path.exists("/proc/self/stat")


governor = ThreadGovernor()


def threads_tick() -> None:
    """Let the thread governor look at the machine's load (cheap; call once per unit of work)."""
    governor.tick()


def thread_policy() -> str:
    """'adaptive' while the governor sets the thread count, 'pinned' otherwise."""
    return "adaptive" if governor.enabled else "pinned"


def set_threads(n: int | None) -> None:
    """torch's intra-op threads, pinned (None: torch's default, adapted to the machine's load)."""
    if n is None:
        return
    from diffrl.errors import DiffrlError

    if n < 1:
        raise DiffrlError(f"--threads must be >= 1, got {n}")
    import torch

    governor.pin()
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
