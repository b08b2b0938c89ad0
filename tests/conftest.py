"""Shared fixtures: every test gets its own DIFFRL_DATA and MINARI_DATASETS_PATH."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # small models on a shared 2-core machine: one thread is fastest

from diffrl.nets.activations import set_fast_mish  # noqa: E402

# Compiling kernels costs seconds per new shape; the tests that check the compiled Mish turn
# it on themselves.
set_fast_mish(False)


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFRL_DATA", str(tmp_path / "diffrl-data"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    yield
