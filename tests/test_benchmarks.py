"""benchmarks/offline.py: runs, the separate final evaluation and its cache, the report."""

from __future__ import annotations

import csv
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "offline.py"


def run_script(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_offline_benchmark_final_evaluation_is_cached_and_reported(tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    common = ["--steps", "40", "--eval-every", "20", "--datasets", "toy-bandit"]
    common += ["--algos", "diffusion-bc", "--runs", str(runs), "--out", str(out)]
    run_script(monkeypatch, *common, "--final-episodes", "3")

    run_dir = runs / "toy-bandit" / "diffusion-bc-s0"
    cached = json.loads((run_dir / "final_eval_3.json").read_text())
    assert cached["checkpoint_step"] == 40
    assert cached["seed"] == 30_000
    rows = list(csv.DictReader(open(out / "offline.csv")))
    assert len(rows) == 1 and rows[0]["done"] == "True"
    assert float(rows[0]["final_n_score"]) == pytest.approx(cached["reward_mean"])
    table = (out / "offline.md").read_text()
    assert "| final (3 episodes) | last (10 episodes) |" in table
    assert f"**{cached['reward_mean']:.1f}**" in table

    # The report reads the cache: evaluating again would be a bug (and slow).
    import diffrl.evaluate

    def no_eval(*a, **k):
        raise AssertionError("final evaluation repeated despite the cache")

    monkeypatch.setattr(diffrl.evaluate, "evaluate", no_eval)
    run_script(monkeypatch, *common, "--final-episodes", "3", "--report")
    assert f"**{cached['reward_mean']:.1f}**" in (out / "offline.md").read_text()


def test_offline_benchmark_rejects_negative_final_episodes(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_script(monkeypatch, "--final-episodes", "-1", "--report")
    assert "--final-episodes must be >= 0, got -1" in capsys.readouterr().err


OFFICIAL = SCRIPT.parent / "official_dql.py"

# A stand-in for a checkout of the official repository: same module paths and calls, and it
# writes down how the benchmark drove it.
FAKE_QL = """
import json, os
class Diffusion_QL:
    def __init__(self, **kw):
        self.kw, self.calls, self.step = kw, [], 0
    def train(self, sampler, iterations, batch_size=100, log_writer=None):
        self.calls.append([iterations, batch_size, self.step])
        self.step += iterations
        rec = {"kw": self.kw, "calls": self.calls, "shapes": sampler.shapes}
        open(os.environ["FAKE_RECORD"], "w").write(json.dumps(rec))
        return {}
    def sample_action(self, state):
        return state[:3]
"""
FAKE_SAMPLER = """
class Data_Sampler:
    def __init__(self, data, device, reward_tune="no"):
        self.shapes = {k: list(v.shape) + [float(v.sum())] for k, v in data.items()}
"""


def run_official(*args: str, env: dict | None = None):
    import os
    import subprocess

    return subprocess.run(
        [sys.executable, str(OFFICIAL), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_official_benchmark_drives_a_checkout_of_the_official_code(tmp_path):
    repo = tmp_path / "official"
    (repo / "agents").mkdir(parents=True)
    (repo / "utils").mkdir()
    (repo / "agents" / "ql_diffusion.py").write_text(FAKE_QL)
    (repo / "utils" / "data_sampler.py").write_text(FAKE_SAMPLER)
    record = tmp_path / "record.json"
    proc = run_official(
        "train", "--seconds", "0.2", "--official-repo", str(repo), "--json",
        env={"FAKE_RECORD": str(record)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["code"] == f"official code ({repo})" and out["steps_per_second"] > 0
    rec = json.loads(record.read_text())
    # main.py's hopper-medium settings, in the steady state (EMA on from step 1000)
    assert rec["kw"]["beta_schedule"] == "vp" and rec["kw"]["n_timesteps"] == 5
    assert rec["kw"]["grad_norm"] == 9.0 and rec["kw"]["eta"] == 1.0
    assert rec["kw"]["lr_decay"] is False and rec["kw"]["max_q_backup"] is False
    assert rec["calls"][0] == [10, 256, 1000]
    assert out["iterations"] == 10 * (len(rec["calls"]) - 1)  # the first call is warm-up
    s = rec["shapes"]
    assert s["observations"][:2] == [4096, 11] and s["actions"][:2] == [4096, 3]
    assert s["rewards"][:1] == [4096] and s["terminals"] == [4096, 0.0]


def test_official_benchmark_rejects_a_directory_without_the_official_code(tmp_path):
    proc = run_official("act", "--official-repo", str(tmp_path), "--seconds", "0.1")
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        f"--official-repo {tmp_path}: no agents/ql_diffusion.py there; give a checkout of "
        "github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL"
    )


def test_official_diffuser_benchmark_rejects_a_directory_without_the_official_code(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "official_diffuser.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--official-repo", str(tmp_path), "--seconds", "0.1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        f"error: {tmp_path} is not a checkout of jannerm/diffuser "
        f"(no {tmp_path}/diffuser/models/temporal.py)"
    )


def _fake_online_run(run: Path, evals: list[tuple[int, float]], sps: float) -> None:
    """A run directory as an online diffrl run leaves it: logs every 100 updates at `sps`
    updates per second, evaluations (update, return) with env_steps = update + 1000."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"log_every": 100, "warmup_steps": 1000}))
    lines = []
    last = max(step for step, _ in evals)
    for step in range(100, last + 1, 100):
        lines.append({"step": step, "steps_per_second": sps, "env_steps": step + 1000})
        for s, ret in evals:
            if s == step:
                record = {"step": s, "env_steps": s + 1000, "eval/return_mean": ret}
                lines.append({**record, "eval/return_std": 1.0})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_online_benchmark_compares_at_equal_environment_steps(tmp_path, monkeypatch):
    """The table reads each seed's evaluation at the largest environment step every run
    reached, and wall-clock from the logged update rates (evaluations left out)."""
    runs = tmp_path / "runs"
    _fake_online_run(runs / "Pendulum-v1" / "dipo-s0", [(500, -800.0), (1000, -200.0)], 10.0)
    _fake_online_run(
        runs / "Pendulum-v1" / "sac-s0", [(500, -900.0), (1000, -300.0), (1500, -150.0)], 50.0
    )
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "online.py"
    argv = [str(script), "--envs", "Pendulum-v1", "--algos", "dipo", "sac", "--seeds", "0"]
    argv += ["--runs", str(runs), "--out", str(tmp_path / "out"), "--report"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    md = (tmp_path / "out" / "online.md").read_text()
    assert "Equal budget: 2,000 environment steps." in md
    # dipo: 1000 updates at 10/s = 100 s; sac at its 1000-update evaluation: 20 s
    assert "| dipo | 1 | -200.0 | -200.0 | 1.7 min | 50.00 |" in md
    assert "| sac | 1 | -300.0 | -150.0 | 0.3 min | 10.00 |" in md
    rows = list(csv.DictReader(open(tmp_path / "out" / "online.csv")))
    assert len(rows) == 5 and (tmp_path / "out" / "online_Pendulum-v1.png").exists()


def test_dipo_floor_counts_the_matrix_products_of_the_real_update():
    """dipo_speed.py's hand count of an update's matrix products (the floor's numerator)
    agrees with PyTorch's FLOP counter on one real update at the official settings."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffrl.bench import _agent, synthetic_dataset

    speed = runpy.run_path(str(SCRIPT.parent / "dipo_speed.py"))
    agent, _ = _agent("dipo", 11, 3, torch.device("cpu"), {"compile": False})
    batch = agent.batch_sampler(synthetic_dataset(11, 3, n=512), torch.device("cpu")).sample(256)
    counter = FlopCounterMode(display=False)
    with counter:
        agent.update(batch)
    counted = counter.get_total_flops()
    by_hand = speed["update_flops"]()["total"]
    assert abs(by_hand - counted) / counted < 0.02, (by_hand, counted)
