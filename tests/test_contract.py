"""The algorithm contract: the shared modules know no algorithm, and acting-time keys are swept
generically by `diffrl eval --sweep`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diffrl.algos import ALGOS, AgentBase, DataSpec, Planner, get_algo
from diffrl.cli import main
from diffrl.config import acting_keys, parse_sweep
from diffrl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# Every module outside diffrl/algos/ is shared: it may know the contract (diffrl/algos/base.py)
# and nothing of any algorithm.
SHARED = sorted(
    str(p.relative_to(ROOT / "diffrl"))
    for p in (ROOT / "diffrl").rglob("*.py")
    if "algos" not in p.relative_to(ROOT / "diffrl").parts
)


def test_the_scan_covers_the_shared_modules():
    assert {"train.py", "run.py", "config.py", "sweep.py", "report.py", "api.py"} <= set(SHARED)
    assert any(name.startswith("cli/") for name in SHARED)


def _algorithm_names_in_code(text: str) -> list[str]:
    """Where a module's code picks an algorithm out: a string literal that is a registered
    name ("qgpo", "diffusion-ql") or an identifier that is one (`diffusion_ql`). Prose (a
    docstring, a comment, a help text or recipe naming a paper's method) is documentation."""
    import ast
    import io
    import tokenize

    names = {n.lower() for algo in ALGOS for n in (algo, algo.replace("-", "_"))}
    found, prev = [], None
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        after_dot, prev = prev is not None and prev.string == ".", tok
        if after_dot:
            continue  # another library's member (stable-baselines3's `sb3.SAC`)
        if tok.type == tokenize.NAME and tok.string.lower() in names:
            found.append(f"line {tok.start[0]}: {tok.string}")
        elif tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                continue  # an f-string: its literal parts are prose
            if isinstance(value, str) and value.strip().lower() in names:
                found.append(f"line {tok.start[0]}: {tok.string}")
    return found


@pytest.mark.parametrize("name", SHARED)
def test_shared_modules_name_no_algorithm_and_probe_no_agent(name):
    text = (ROOT / "diffrl" / name).read_text()
    # No probe of an agent's or a config's members by name: the base class has them all.
    assert not re.search(r"(hasattr|getattr)\((self\.)?(agent|config|cfg)\s*,\s*[\"']", text)
    # The one capability checked is planning.
    checked = re.findall(r"isinstance\(\s*(?:self\.)?agent\s*,\s*(\w+)", text)
    assert set(checked) <= {"Planner"}, checked
    assert _algorithm_names_in_code(text) == []


def test_the_name_check_finds_a_name_in_code():
    code = 'if config.algo == "qgpo":\n    from diffrl.algos import diffusion_ql\n'
    prose = '"""Diffusion-QL and QGPO, as prose."""\nhelp = "a SAC behaviour policy"\n'
    assert len(_algorithm_names_in_code(code)) == 2
    assert _algorithm_names_in_code(prose) == []


def _agents() -> dict[str, AgentBase]:
    spec = DataSpec(2, 2, (-1.0, -1.0), (1.0, 1.0))
    agents = {}
    for algo in ("diffusion-bc", "diffusion-ql", "qgpo", "gaussian-bc", "dipo", "diffuser"):
        module = get_algo(algo)
        over = {"compile": False} if "compile" in module.Config.__dataclass_fields__ else {}
        agents[algo] = module.Agent(module.Config(algo=algo, **over), spec)
    return agents


def test_every_agent_extends_the_base_and_overrides_only_what_its_paper_needs():
    """The loop calls every member on every agent; the defaults are what an algorithm without
    the idea gets (one stage, no selection, exploring is acting, nothing kept per episode)."""
    agents = _agents()
    assert all(isinstance(a, AgentBase) for a in agents.values())
    staged = [name for name, a in agents.items() if len(a.stages()) > 1]
    assert staged == ["qgpo", "diffuser"]
    assert agents["gaussian-bc"].stages() == [
        ("train", agents["gaussian-bc"].config.steps, agents["gaussian-bc"].config.batch_size)
    ]
    assert [n for n, a in agents.items() if a.selection_metric] == ["diffusion-ql"]
    assert agents["diffusion-ql"].selection_rank == agents["diffusion-ql"].config.select_top_k
    assert [n for n, a in agents.items() if a.replay_columns] == ["dipo"]
    overrides = {
        member: sorted(n for n, a in agents.items() if member in type(a).__dict__)
        for member in ("explore", "act_goal", "reset_episodes", "inert_keys", "bench_work")
    }
    assert overrides == {
        "explore": ["dipo"],
        "act_goal": [],  # the planners inherit it from the shared planner
        "reset_episodes": [],
        "inert_keys": ["qgpo"],
        "bench_work": ["qgpo"],
    }
    assert isinstance(agents["diffuser"], Planner)
    assert not any(isinstance(a, Planner) for n, a in agents.items() if n != "diffuser")


def test_base_defaults_act_as_the_agent_acts():
    import torch

    agent = _agents()["gaussian-bc"]
    obs = torch.zeros(3, 2)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    want = agent.act(obs, gen())
    assert torch.equal(agent.act_goal(obs, torch.ones(3, 2), gen()), want)
    assert torch.equal(agent.explore(obs, None, gen()), want)
    assert agent.inert_keys() == frozenset() and agent.bench_work("train", None) is None
    assert not agent.compiles(torch.device("cpu"))


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
