"""The algorithm contract: the shared modules know no algorithm, and acting-time keys are swept
generically by `diffrl eval --sweep`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diffrl.algos import ALGOS, BenchHooks, Counted, Selecting, Staged, get_algo
from diffrl.cli import main
from diffrl.config import acting_keys, parse_sweep
from diffrl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ["train.py", "run.py", "evaluate.py", "bench.py", "cli.py"]


@pytest.mark.parametrize("name", SHARED)
def test_shared_modules_name_no_algorithm_and_probe_no_agent(name):
    text = (ROOT / "diffrl" / name).read_text()
    assert not re.search(r"hasattr\(agent|getattr\(agent", text)
    code = text
    if name == "cli.py":
        # `diffrl behavior` trains stable-baselines3's SAC behaviour policies for datasets: a
        # tool, not the `sac` algorithm; its help text names it in capitals. Code that picked
        # out the algorithm would name it as registered, in lower case.
        code = re.sub(r"\bSAC\b", "", code)
    for algo in ALGOS:
        words = {algo, algo.replace("-", "_"), algo.replace("-", " ")}
        for word in words:
            assert not re.search(rf"\b{re.escape(word)}\b", code, re.IGNORECASE), (name, word)


def test_optional_protocols_are_declared_by_the_agents_that_need_them():
    from diffrl.algos import DataSpec

    spec = DataSpec(2, 2, (-1.0, -1.0), (1.0, 1.0))
    agents = {}
    for algo in ("diffusion-bc", "diffusion-ql", "qgpo", "gaussian-bc"):
        module = get_algo(algo)
        agents[algo] = module.Agent(
            module.Config(algo=algo, compile=False)
            if "compile" in module.Config.__dataclass_fields__
            else module.Config(algo=algo),
            spec,
        )
    assert [a for a, x in agents.items() if isinstance(x, Staged)] == ["qgpo"]
    assert [a for a, x in agents.items() if isinstance(x, Selecting)] == ["diffusion-ql"]
    assert [a for a, x in agents.items() if isinstance(x, BenchHooks)] == ["qgpo"]
    assert {a for a, x in agents.items() if isinstance(x, Counted)} == {"diffusion-ql", "qgpo"}
    assert agents["diffusion-ql"].selection_rank == agents["diffusion-ql"].config.select_top_k


def test_parse_sweep():
    config = get_algo("diffusion-bc").Config(algo="diffusion-bc")
    assert acting_keys(config) == ["clip_x0", "ddim_eta", "sampler", "sampling_steps"]
    key, configs = parse_sweep(config, "sampling_steps=5, 50")
    assert key == "sampling_steps" and [c.sampling_steps for c in configs] == [5, 50]
    with pytest.raises(ConfigError, match=r"^cannot sweep 'lr' for diffusion-bc: not an acting"):
        parse_sweep(config, "lr=1,2")
    with pytest.raises(ConfigError, match=r"^a sweep is KEY=V1,V2,...; got 'sampling_steps'$"):
        parse_sweep(config, "sampling_steps")
    with pytest.raises(ConfigError, match=r"config key 'sampling_steps' must be >= 0, got -1"):
        parse_sweep(config, "sampling_steps=5,-1")


def test_eval_sweep_reports_every_value_on_the_same_episodes(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "diffusion-bc", "--dataset", "toy-bandit", "--steps", "30"]
    assert main([*argv, "--run-dir", str(run), "--no-progress", "--set", "eval_every=0"]) == 0
    capsys.readouterr()
    sweep = ["--sampler", "ddim", "--sweep", "sampling_steps=5,50", "--json"]
    assert main(["eval", str(run), *sweep]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sweep"]["key"] == "sampling_steps"
    rows = out["sweep"]["results"]
    assert [r["value"] for r in rows] == [5, 50]
    assert all(r["samples"] == 1000 and "reward_mean" in r for r in rows)
    assert "reward_mean" not in out  # no value is chosen
    # Each value's result is what evaluating at that value alone gives (same seed).
    assert main(["eval", str(run), "--sampler", "ddim", "--set", "sampling_steps=5", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["reward_mean"] == rows[0]["reward_mean"]
    assert json.loads((run / "eval.json").read_text())["reward_mean"] == alone["reward_mean"]
    assert main(["eval", str(run), "--sweep", "lr=1,2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: cannot sweep 'lr' for diffusion-bc: not an acting-time key "
        "(these are: clip_x0, ddim_eta, sampler, sampling_steps)"
    )


def test_run_made_before_the_renames_evaluates_and_resumes(tmp_path, capsys):
    """A Diffusion-QL run directory as 0.1 wrote it: `lr` in config.json, trainer.pt."""
    import torch

    from diffrl.checkpoint import MANIFEST, TRAINER_JSON, TRAINER_TENSORS, load_state_tree

    run = tmp_path / "run"
    argv = ["train", "diffusion-ql", "--dataset", "toy-bandit", "--steps", "20"]
    flags = ["--set", "compile=false", "--set", "eval_every=0", "--set", "actor_lr=2e-3"]
    assert main([*argv, "--run-dir", str(run), "--no-progress", *flags]) == 0
    config = json.loads((run / "config.json").read_text())
    config["lr"] = config.pop("actor_lr")
    (run / "config.json").write_text(json.dumps(config))
    ckpt = run / "checkpoints" / "step_00000020"
    state = load_state_tree(ckpt)
    for name in (TRAINER_JSON, TRAINER_TENSORS, MANIFEST):
        (ckpt / name).unlink()
    torch.save(state, ckpt / "trainer.pt")
    capsys.readouterr()

    assert main(["eval", str(run), "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("notice: config key 'lr' is renamed; read as actor_lr=0.002") <= 1
    # The old name is held to the same rule as the new one.
    assert main(["train", "--resume", str(run), "--set", "lr=1e-2"]) == 2
    assert "--resume cannot change 'actor_lr'" in capsys.readouterr().err
    argv = ["train", "--resume", str(run), "--steps", "30", "--no-progress"]
    assert main(argv) == 0
    assert json.loads((run / "config.json").read_text())["actor_lr"] == 2e-3
    assert (run / "checkpoints" / "step_00000030" / TRAINER_JSON).exists()


def test_qgpo_has_the_shared_acting_keys():
    from diffrl.run import make_config

    config = make_config("qgpo", "toy-bandit")
    shared = {"sampler", "sampling_steps", "ddim_eta", "clip_x0"}
    assert shared | {"guidance_scale"} <= set(acting_keys(config))
    assert shared <= set(acting_keys(make_config("diffusion-bc", "toy-bandit")))
    assert make_config("qgpo", "toy-bandit", {"sampler": "ddim"}).sampler == "ddim"
    message = r"^config key 'sampler' must be one of ddpm \| ddim \| dpm-solver, got 'euler'"
    with pytest.raises(ConfigError, match=message):
        make_config("qgpo", "toy-bandit", {"sampler": "euler"})
    key, configs = parse_sweep(config, "guidance_scale=0,3")
    assert [c.guidance_scale for c in configs] == [0.0, 3.0]


def test_ddim_eta_is_a_config_key_the_sampler_receives():
    import torch

    from diffrl.algos import DataSpec

    module = get_algo("diffusion-bc")
    spec = DataSpec(2, 2, (-1.0, -1.0), (1.0, 1.0))
    config = module.Config(algo="diffusion-bc", diffusion_steps=10, sampler="ddim")
    config = parse_sweep(config, "ddim_eta=0.5")[1][0]
    config = parse_sweep(config, "sampling_steps=5")[1][0]
    agent = module.Agent(config, spec)
    agent.act(torch.zeros(3, 2), torch.Generator().manual_seed(0))
    (sampler,) = agent.actor._samplers.values()
    assert (sampler.eta, sampler.num_steps) == (0.5, 5)
    with pytest.raises(ConfigError, match="config key 'ddim_eta' must be <= 1, got 2.0"):
        module.Config(ddim_eta=2.0)
