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
