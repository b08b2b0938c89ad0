"""diffrl.runtime: the allocator settings are applied once, and can be switched off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SNIPPET = "from diffrl.runtime import tune_cpu_allocator as t; print(t(), t())"


def _run(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DIFFRL_TUNE_MALLOC"}
    if env_value is not None:
        env["DIFFRL_TUNE_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_is_tuned_on_linux_and_the_answer_is_cached():
    assert _run(None) == "True True"


def test_allocator_tuning_can_be_switched_off():
    assert _run("0") == "False False"


def _fresh(code: str, **env_set: str) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    }
    env.update(env_set)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_bounds_the_openmp_spin_unless_the_user_chose_a_policy() -> None:
    from diffrl.runtime import SPIN_COUNT

    code = (
        "import os, diffrl; "
        "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    )
    assert _fresh(code) == f"{SPIN_COUNT} None"
    assert _fresh(code, OMP_WAIT_POLICY="PASSIVE") == "None PASSIVE"
    assert _fresh(code, GOMP_SPINCOUNT="7") == "7 None"
    # torch first: libgomp has read its settings, so diffrl sets nothing.
    assert _fresh(code.replace("import os,", "import torch, os,")) == "None None"


@pytest.mark.parametrize(
    "others, cores, want",
    [(0.0, 2, 2), (0.3, 2, 2), (0.5, 2, 1), (1.0, 2, 1), (2.0, 2, 1), (1.2, 16, 15), (3.2, 16, 13)],
)
def test_threads_leave_the_cores_other_processes_use(others, cores, want) -> None:
    from diffrl.runtime import target_threads

    assert target_threads(others, cores) == want


GOVERNOR = """
import subprocess, sys, time
import diffrl, torch
from diffrl.runtime import governor, threads_tick
x = torch.randn(128, 128)

def work(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        threads_tick()
        x @ x

work(1.5)
alone = torch.get_num_threads()
busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
work(2.5)
beside = torch.get_num_threads()
busy.kill(); busy.wait()
work(3.0)
print(alone, beside, torch.get_num_threads(), governor.changes)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) != 2,
    reason="measured on a 2-core Linux machine (the governor reads /proc)",
)
def test_thread_count_drops_while_another_process_works_and_comes_back() -> None:
    out = _fresh(GOVERNOR, DIFFRL_ADAPTIVE_THREADS="1")
    alone, beside, after, changes = (int(v) for v in out.split())
    assert (alone, beside, after) == (2, 1, 2), out
    assert changes == 2


def test_pinned_threads_switch_the_governor_off() -> None:
    code = (
        "import diffrl, torch; from diffrl.runtime import governor, set_threads, thread_policy; "
        "p = thread_policy(); set_threads(1); print(p, thread_policy(), torch.get_num_threads())"
    )
    assert _fresh(code) == "adaptive pinned 1"
    assert _fresh(code, OMP_NUM_THREADS="2").startswith("pinned")
