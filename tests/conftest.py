"""Shared fixtures: every test gets its own DIFFRL_DATA and MINARI_DATASETS_PATH."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # small models on a shared 2-core machine: one thread is fastest


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFRL_DATA", str(tmp_path / "diffrl-data"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    yield
