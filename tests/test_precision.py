"""Mixed precision (diffrl/precision.py): bf16 products, float32 weights and outputs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_algos import FAST, SMALL

from diffrl import precision
from diffrl.algos import ALGOS
from diffrl.cli import main
from diffrl.datasets import make_builtin
from diffrl.errors import ConfigError
from diffrl.nets import DiffusionMLP, TwinQ, mlp
from diffrl.precision import Float32Linear, check_precision, precision_scope
from diffrl.run import load_agent, make_config, start_run
from diffrl.train import train

BF16 = precision.bf16_supported(torch.device("cpu"))
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no bf16 matrix-product path")
D3RLPY = {"td3bc", "iql", "bc"}


def test_output_layer_stays_float32_and_loads_like_a_linear():
    torch.manual_seed(0)
    plain, out = torch.nn.Linear(64, 3), Float32Linear(64, 3)
    out.load_state_dict(plain.state_dict())  # the same keys and shapes
    x = torch.randn(8, 64)
    assert torch.equal(out(x), plain(x))  # no autocast: exactly nn.Linear
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_out, y_plain = out(x), plain(x)
    assert y_plain.dtype == torch.bfloat16 and y_out.dtype == torch.float32
    assert torch.allclose(y_out, F.linear(x, plain.weight, plain.bias))


def test_networks_give_float32_outputs_under_bf16():
    torch.manual_seed(0)
    obs, act = torch.randn(5, 11), torch.randn(5, 3)
    q, denoiser, net = TwinQ(11, 3, hidden=32), DiffusionMLP(11, 3, hidden=32), mlp(11, [32], 2)
    with precision_scope("bf16", "cpu"):
        q1, q2 = q(obs, act)
        eps = denoiser(act, torch.zeros(5), obs)
        eps_chain = denoiser.condition(obs, [0, 1])(act, 1)
        hidden = net[0](obs)
        assert hidden.dtype == torch.bfloat16  # the products inside are bf16
        assert net(obs).dtype == torch.float32
    for t in (q1, q2, eps, eps_chain):
        assert t.dtype == torch.float32
    # bf16 products, so close to float32 but not equal
    q1_fp32 = q(obs, act)[0]
    assert torch.allclose(q1, q1_fp32, atol=0.05) and not torch.equal(q1, q1_fp32)


def test_weights_updated_inside_one_bf16_region_are_used_at_once():
    # The scope spans a whole training loop: a cached bf16 copy of a weight would keep the
    # first step's value while the float32 weight moves on (autocast's cast cache did that).
    torch.manual_seed(0)
    net = mlp(4, [16], 2)
    net[-1].requires_grad_(False)  # only the bf16 hidden layer moves
    opt = torch.optim.SGD(net[0].parameters(), lr=0.5)
    x = torch.randn(8, 4)
    with precision_scope("bf16", "cpu"):
        before = net(x).detach()
        net(x).square().mean().backward()
        opt.step()
        after = net(x).detach()
    with torch.no_grad():
        expected = net(x)
    assert not torch.allclose(before, after, atol=1e-2)
    assert torch.allclose(after, expected, atol=0.05)


def test_fp32_scope_changes_nothing():
    x = torch.randn(4, 4)
    with precision_scope("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (x @ x).dtype == torch.float32


def test_no_bf16_path_is_one_line(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    with pytest.raises(ConfigError) as err:
        check_precision("bf16", "cpu")
    assert str(err.value) == (
        "precision bf16: this CPU (no AVX-512 BF16 or AMX) has no bfloat16 matrix-product "
        "path; use --precision fp32"
    )
    check_precision("fp32", "cpu")  # always fine


def test_bad_precision_value_is_one_line():
    module = __import__("diffrl.algos.diffusion_bc", fromlist=["Config"])
    with pytest.raises(ConfigError, match=r"^config key 'precision' must be one of fp32 \| bf16"):
        module.Config(algo="diffusion-bc", precision="fp16")


def test_d3rlpy_baselines_refuse_bf16_before_a_run_directory(tmp_path, capsys):
    pytest.importorskip("d3rlpy")
    make_builtin("toy-bandit", size=400, seed=0)
    run = tmp_path / "run"
    argv = ["train", "td3bc", "--dataset", "toy-bandit", "--run-dir", str(run)]
    assert main([*argv, "--precision", "bf16", "--no-progress"]) == 2
    # (importing d3rlpy may print gym's deprecation notice first)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "error: precision bf16: td3bc runs d3rlpy's own networks, which diffrl does not build "
        "for bf16; use precision fp32"
    )
    assert not run.exists()


@needs_bf16
@pytest.mark.parametrize("algo", sorted(a for a in ALGOS if a not in D3RLPY))
def test_every_algorithm_trains_and_acts_in_bf16(algo, tmp_path):
    make_builtin("toy-bandit", size=400, seed=0)
    config = make_config(algo, "toy-bandit", {**FAST, **SMALL.get(algo, {}), "precision": "bf16"})
    run_dir, dataset = start_run(config, tmp_path / "run")
    result = train(run_dir, dataset=dataset, progress=False)
    assert set(result["mode_fractions"]) >= {"right_bottom", "off_mode"}
    assert json.loads((run_dir / "config.json").read_text())["precision"] == "bf16"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    losses = [v for line in lines for k, v in json.loads(line).items() if "loss" in k]
    assert losses and all(torch.isfinite(torch.tensor(float(v))) for v in losses)

    agent, cfg, _, step = load_agent(run_dir)
    assert step == 30 and cfg.precision == "bf16"
    # master weights stay float32 (what the checkpoint holds)
    assert {p.dtype for p in agent.parameters()} == {torch.float32}
    with torch.no_grad(), precision_scope("bf16", "cpu"):
        actions = agent.act(torch.zeros(16, 2), torch.Generator().manual_seed(0))
    assert actions.dtype == torch.float32 and torch.isfinite(actions).all()
