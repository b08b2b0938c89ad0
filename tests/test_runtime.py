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


@pytest.mark.parametrize(
    "argv, policy",
    [
        (["/venv/bin/diffrl", "train", "diffuser"], "PASSIVE"),
        (["/venv/bin/diffrl", "eval", "RUN"], "PASSIVE"),
        (["/venv/bin/diffrl", "bench", "train"], "PASSIVE"),
        (["/venv/bin/diffrl", "plan", "RUN", "--start", "1,1"], "ACTIVE"),
        (["/venv/bin/diffrl", "bench", "plan", "--algo", "diffuser"], "ACTIVE"),
        (["-m", "bench", "plan"], "ACTIVE"),  # python -m diffrl.cli, while diffrl imports
        (["/usr/bin/myscript.py", "plan"], "PASSIVE"),  # not the diffrl CLI
        ([], "PASSIVE"),
    ],
)
def test_wait_policy_spins_only_for_lone_planning_commands(argv, policy) -> None:
    from diffrl.runtime import default_wait_policy

    assert default_wait_policy(argv) == policy


def test_cli_plan_benchmark_runs_with_a_spinning_pool() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import sys, diffrl, os; print(os.environ['OMP_WAIT_POLICY'])"
    for args, want in ((["bench", "plan"], "ACTIVE"), (["train"], "PASSIVE")):
        out = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.argv = ['diffrl', *{args!r}]; {code}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == want
