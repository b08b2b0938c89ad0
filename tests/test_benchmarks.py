"""benchmarks/offline.py: runs, the separate final evaluation and its cache, the report."""

from __future__ import annotations

import csv
import json
import runpy
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
