"""One harness for every algorithm: train a few steps, checkpoint, reload, act."""

from __future__ import annotations

import pytest
import torch

from diffrl.algos import ALGOS
from diffrl.datasets import make_builtin
from diffrl.run import load_agent, make_config, start_run
from diffrl.train import train

FAST = {"steps": 30, "eval_every": 0, "save_every": 10, "log_every": 10, "batch_size": 32}
SMALL = {
    "diffusion-bc": {"hidden": 32, "diffusion_steps": 5},
    "diffusion-ql": {"hidden": 32, "diffusion_steps": 5, "compile": False, "ema_start": 5},
    "gaussian-bc": {"hidden": 32},
    "idql": {"hidden": 32, "diffusion_steps": 5, "critic_hidden": 32, "candidates": 4},
    "fql": {"hidden": 32, "n_layers": 2, "flow_steps": 3},
    # behaviour stage 15 steps, critic/energy stage 15 (resume at 20 lands inside it)
    "qgpo": {
        "behavior_steps": 15,
        "behavior_batch_size": 32,
        "hidden": 32,
        "support_actions": 4,
        "support_steps": 3,
        "sampling_steps": 3,
        "compile": False,
    },
    # value stage 10 steps, then the trajectory model's (resume at 20 lands inside it)
    "diffuser": {
        "horizon": 4,
        "diffusion_steps": 5,
        "dim": 16,
        "dim_mults": (1, 2),
        "value_steps": 10,
        "value_batch_size": 16,
        "n_plans": 2,
        "ema_start": 5,
    },
    "decision-diffuser": {
        "horizon": 4,
        "diffusion_steps": 5,
        "dim": 16,
        "dim_mults": (1, 2),
        "inv_hidden": 16,
        "ema_start": 5,
    },
}


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_train_save_reload_act(algo, tmp_path):
    make_builtin("toy-bandit", size=400, seed=0)
    config = make_config(algo, "toy-bandit", {**FAST, **SMALL.get(algo, {})})
    run_dir, dataset = start_run(config, tmp_path / "run")
    result = train(run_dir, dataset=dataset, progress=False)
    assert set(result["mode_fractions"]) >= {"right_bottom", "off_mode"}

    agent, cfg, _, step = load_agent(run_dir)
    assert step == 30 and cfg == config.__class__(**{**config.__dict__, "env_id": "toy-bandit"})
    obs = torch.zeros(64, 2)
    gen = torch.Generator().manual_seed(0)
    a1 = agent.act(obs, gen)
    assert a1.shape == (64, 2) and torch.isfinite(a1).all()
    assert a1.min() >= -1 and a1.max() <= 1
    a2 = agent.act(obs, torch.Generator().manual_seed(0))
    assert torch.equal(a1, a2)  # reproducible from a generator

    # Every diffusion algorithm takes every sampler by the shared keys (diffrl eval --sampler).
    if "sampler" in cfg.RESUME_KEYS:
        from diffrl.api import load

        run = load(run_dir)
        import dataclasses

        field = {f.name: f for f in dataclasses.fields(cfg)}["sampler"]
        for sampler in field.metadata["choices"]:
            steps = 2
            result = run.evaluate(sampler=sampler, sampling_steps=steps, clip_x0=False)
            assert result["samples"] == 1000, (algo, sampler)

    # the reloaded weights are the trained ones, not a fresh init
    fresh = type(agent)(cfg, agent.spec)
    trained = dict(agent.state_dict())
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize(
    "algo", ["diffusion-bc", "diffusion-ql", "qgpo", "diffuser", "decision-diffuser", "example-bc"]
)
def test_resume_continues_exactly(algo, tmp_path):
    """20 steps + resume to 40 == 40 steps in one go (weights bit for bit)."""
    make_builtin("toy-bandit", size=400, seed=0)
    over = {**FAST, **SMALL.get(algo, {}), "steps": 40}
    straight, ds = start_run(make_config(algo, "toy-bandit", over), tmp_path / "a")
    train(straight, dataset=ds, progress=False)

    split, ds = start_run(make_config(algo, "toy-bandit", {**over, "steps": 20}), tmp_path / "b")
    train(split, dataset=ds, progress=False)
    train(split, resume=True, steps=40, progress=False)

    a, *_ = load_agent(straight)
    b, _, _, step = load_agent(split)
    assert step == 40
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
