"""The Python API mirrors the CLI: dataset, config, fit, load, act, evaluate, sweep, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

import diffrl
from diffrl.errors import ConfigError, DiffrlError


def test_api_round_trip(tmp_path):
    data = diffrl.load_dataset("toy-bandit")
    config = diffrl.make_config("diffusion-bc", "toy-bandit", steps=30, eval_every=0)
    assert (config.algo, config.dataset, config.steps) == ("diffusion-bc", "toy-bandit", 30)
    run = diffrl.fit(config, run_dir=tmp_path / "run", progress=False)
    assert run.step == 30 and run.config.steps == 30

    again = diffrl.load(tmp_path / "run")
    obs = data.observations[:4]
    a, b = again.act(obs, seed=0), run.act(obs, seed=0)
    assert a.shape == (4, 2) and np.array_equal(a, b)
    assert again.act(obs[0], seed=0).shape == (2,)
    assert np.all(np.abs(a) <= 1.0)

    result = run.evaluate()
    assert result["samples"] == 1000 and "reward_mean" in result
    rows = run.sweep("sampling_steps", [5, 50], sampler="ddim")
    assert [r["value"] for r in rows] == [5, 50]
    assert rows[0]["reward_mean"] == run.evaluate(sampler="ddim", sampling_steps=5)["reward_mean"]

    # What `diffrl eval` keeps: the record, then the summary or the sweep; eval.json on save.
    record = run.evaluation(seed=3, save=False, sampler="ddim", sampling_steps=5)
    assert not (tmp_path / "run" / "eval.json").exists()
    assert (record["seed"], record["checkpoint_step"], record["algo"]) == (3, 30, "diffusion-bc")
    assert record["overrides"] == {"sampler": "ddim", "sampling_steps": 5}
    assert (
        record["reward_mean"]
        == run.evaluate(seed=3, sampler="ddim", sampling_steps=5)["reward_mean"]
    )
    swept = run.evaluation(seed=3, sweep=("sampling_steps", [5, 50]), sampler="ddim")
    assert [r["value"] for r in swept["sweep"]["results"]] == [5, 50]
    assert json.loads((tmp_path / "run" / "eval.json").read_text()) == swept

    run = diffrl.resume(tmp_path / "run", steps=40, progress=False)
    assert run.step == 40
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 40


def test_api_errors(tmp_path):
    with pytest.raises(ConfigError, match="config key 'lr' must be >= 0, got -1"):
        diffrl.make_config("diffusion-bc", "toy-bandit", lr=-1)
    config = diffrl.make_config("diffusion-bc", "toy-bandit", steps=10, eval_every=0)
    run = diffrl.fit(config, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(DiffrlError, match=r"observations must have shape \(2,\) or \(B, 2\)"):
        run.act(np.zeros((3, 5)))
    with pytest.raises(DiffrlError, match="episodes must be >= 1, got 0"):
        run.evaluate(episodes=0)
    with pytest.raises(AttributeError):
        diffrl.no_such_thing  # noqa: B018
