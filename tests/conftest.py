"""Shared fixtures: every test gets its own DIFFRL_DATA and MINARI_DATASETS_PATH."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # small models on a shared 2-core machine: one thread is fastest

from diffrl.algos import ALGOS  # noqa: E402
from diffrl.nets.activations import set_fast_mish  # noqa: E402

# The example algorithm (tests/example_algo.py): one file plus this one registry line, and the
# shared harness in tests/test_algos.py runs it like every built-in algorithm.
ALGOS["example-bc"] = "example_algo"

# Compiling kernels costs seconds per new shape; the tests that check the compiled Mish turn
# it on themselves.
set_fast_mish(False)


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFRL_DATA", str(tmp_path / "diffrl-data"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    yield
