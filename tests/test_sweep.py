"""`diffrl sweep` (grids on Ray, retries from checkpoints, --resume) and `diffrl report`
(bootstrap intervals, rliable's aggregates, the files it writes)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffrl.errors import DiffrlError
from diffrl.report import bootstrap_ci, iqm, write_report
from diffrl.sweep import Grid, grid_from_args

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- statistics
def test_bootstrap_interval_agrees_with_scipy():
    from scipy.stats import bootstrap

    values = np.array([31.0, 45.5, 52.0, 88.0, 90.5, 101.0])
    lo, hi = bootstrap_ci(values, reps=20_000, seed=1)
    ref = bootstrap(
        (values,), np.mean, n_resamples=20_000, method="percentile", random_state=2
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=1.5)
    assert hi == pytest.approx(ref.high, abs=1.5)
    assert lo < values.mean() < hi
    assert bootstrap_ci(np.array([7.0])) == (7.0, 7.0)


def test_iqm_is_the_mean_of_the_middle_half_as_rliable_computes_it():
    from rliable import metrics

    scores = np.arange(1.0, 9.0)  # 1..8: the middle half is 3, 4, 5, 6
    assert iqm(scores) == pytest.approx(4.5)
    grid = np.random.default_rng(0).normal(50, 20, size=(5, 3))
    assert iqm(grid) == pytest.approx(metrics.aggregate_iqm(grid))


# ---------------------------------------------------------------------- report files
def _fake_run(
    root: Path,
    source: str,
    algo: str,
    seed: int,
    scores: list[float],
    budget: int,
    label: str | None = None,
) -> Path:
    """A run directory as diffrl writes one: config.json and metrics.jsonl with evaluations
    every budget / len(scores) steps (the last at the budget when the run is finished)."""
    run = root / source / f"{label or algo}-s{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({"algo": algo, "dataset": source, "seed": seed, "steps": budget})
    )
    every = budget // 4
    lines = [json.dumps({"step": 10, "loss": 1.0})]
    for i, score in enumerate(scores):
        lines.append(
            json.dumps(
                {
                    "step": every * (i + 1),
                    "eval/episodes": 10,
                    "eval/normalized_score": score,
                    "eval/return_mean": 10 * score,
                }
            )
        )
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if label:
        (run / "trial.json").write_text(json.dumps({"label": label}))
    return run


def test_report_keeps_notes_and_states_its_command(tmp_path, capsys):
    from diffrl.cli import main

    _fake_run(tmp_path / "runs", "hopper-medium-v0", "bc", 0, [1.0, 2.0, 3.0, 4.0], 1000)
    notes = tmp_path / "notes.md"
    notes.write_text("## What the intervals support\n\nNothing yet.\n")
    argv = ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--name", "t"]
    assert main([*argv, "--notes", str(notes), "--reps", "200"]) == 0
    md = (tmp_path / "o" / "t.md").read_text()
    made_by = f"- Made by: `diffrl report {tmp_path / 'runs'} --out {tmp_path / 'o'} --name t"
    assert f"{made_by} --notes {notes}`." in md
    # The notes come after the header and before the tables.
    assert (
        md.index("Made by") < md.index("## What the intervals support") < md.index("## Per dataset")
    )
    capsys.readouterr()
    assert main([*argv, "--notes", str(tmp_path / "missing.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: --notes {tmp_path / 'missing.md'}: cannot read it (No such file or directory)"
    )


def test_report_lists_every_trial_of_a_stopped_sweep(tmp_path):
    """A sweep stopped part-way: one trial finished, one trained without an evaluation, one
    never started (no run directory). The page lists all three, each with its state."""
    sweep = tmp_path / "sw"
    _fake_run(sweep, "toy-bandit", "diffusion-bc", 0, [1.0, 2.0, 3.0, 4.0], 3000)
    part = _fake_run(sweep, "toy-bandit", "diffusion-bc", 1, [], 3000)
    (part / "checkpoints" / "step_00001200").mkdir(parents=True)
    (part / "checkpoints" / "step_00001200" / "model.safetensors").write_bytes(b"")
    never = sweep / "toy-bandit" / "gaussian-bc-s0"
    # Paths as the sweep stored them on another machine: a sweep folder is moved or copied
    # (sweep-progress/ to runs/sweeps/), and its trials are found where they lie now.
    moved = "/elsewhere/runs/sweeps/sw/toy-bandit"
    states = {
        "toy-bandit/diffusion-bc-s0": {"run_dir": f"{moved}/diffusion-bc-s0", "state": "done"},
        "toy-bandit/diffusion-bc-s1": {"run_dir": f"{moved}/diffusion-bc-s1", "state": "pending"},
        "gaussian-bc toy-bandit s0": {"run_dir": str(never), "state": "pending"},
    }
    (sweep / "trials.json").write_text(json.dumps(states))
    md = write_report([sweep], out=tmp_path / "o", name="r", reps=200)["md"].read_text()
    assert md.startswith("# Results: 1 finished run, 2 unfinished")
    assert (
        "- diffusion-bc on toy-bandit, seed 1, pending: trained to step 1,200 of "
        f"3,000, never evaluated (`{part}`)" in md
    )
    # The trial as the sweep names it ('ALGO DATASET sN'), worded as the started ones are.
    assert "- gaussian-bc on toy-bandit, seed 0, pending: not started" in md
    # Nothing started at all: the page still lists the grid.
    (sweep / "trials.json").write_text(
        json.dumps({"a/b-s0": {"run_dir": str(tmp_path / "x"), "state": "pending"}})
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "trials.json").write_text((sweep / "trials.json").read_text())
    md = write_report([empty], out=tmp_path / "o2", name="r", reps=200)["md"].read_text()
    assert md.startswith("# Results: 0 finished runs, 1 unfinished")
    assert "- a/b-s0, pending: not started" in md  # a name of another form, as it is


def test_report_tables_intervals_aggregate_and_figures(tmp_path):
    runs = tmp_path / "runs"
    finals = {
        ("hopper-medium-v0", "td3bc"): [50.0, 60.0, 70.0],
        ("hopper-medium-v0", "bc"): [40.0, 41.0, 45.0],
        ("walker2d-medium-v0", "td3bc"): [80.0, 82.0, 84.0],
        ("walker2d-medium-v0", "bc"): [70.0, 72.0, 90.0],
    }
    for (source, algo), scores in finals.items():
        for seed, final in enumerate(scores):
            _fake_run(runs, source, algo, seed, [10.0, 20.0, 30.0, final], 1000)
    # An unfinished run (no evaluation at its budget) is listed and left out.
    _fake_run(runs, "hopper-medium-v0", "iql", 0, [10.0, 20.0], 1000)
    # A dataset run at another budget: the header lists budgets per dataset.
    _fake_run(runs, "toy", "bc", 0, [1.0, 2.0, 3.0, 4.0], 200)
    # A run reached through a symbolic link is found.
    elsewhere = _fake_run(tmp_path / "elsewhere", "x", "bc", 7, [1.0, 2.0, 3.0, 4.0], 1000)
    link = runs / "linked"
    link.mkdir()
    (link / "bc-s7").symlink_to(elsewhere, target_is_directory=True)

    files = write_report([runs], tmp_path / "out", reps=2000)
    md = files["md"].read_text()
    assert "# Results: 14 finished runs, 1 unfinished" in md
    assert (
        "- Budget (steps): hopper-medium-v0: bc 1,000, iql 1,000, td3bc 1,000; toy: bc 200; "
        "walker2d-medium-v0: bc 1,000, td3bc 1,000; x: bc 1,000.\n"
    ) in md
    # Bold marks each dataset's best mean and the means whose intervals overlap the best's:
    # on hopper bc's [40, 45] is clear of td3bc's, on walker2d bc's wide one is not.
    assert "Bold: each dataset's best mean, and every mean whose interval overlaps" in md
    assert "| hopper-medium-v0 | td3bc | 3 | **60.0** |" in md
    assert "| hopper-medium-v0 | bc | 3 | 42.0 |" in md
    assert "| walker2d-medium-v0 | td3bc | 3 | **82.0** |" in md
    assert "| walker2d-medium-v0 | bc | 3 | **77.3** |" in md
    assert "Bold: the best IQM, and every IQM whose interval overlaps" in md
    td3_iqm = iqm(np.array([[50.0, 80.0], [60.0, 82.0], [70.0, 84.0]]))
    assert f"| td3bc | 3 | **{td3_iqm:.1f}** |" in md
    assert "| toy | bc | 1 | **4** |" in md  # alone on its dataset (small scores: 3 digits)
    assert (
        "iql on hopper-medium-v0, seed 0: trained to step 0 of 1,000, last evaluated at step 500"
        in md
    )
    lo, hi = bootstrap_ci(np.array([50.0, 60.0, 70.0]), reps=2000)
    assert f"[{lo:.1f}, {hi:.1f}]" in md
    rows = list(
        __import__("csv").DictReader(open(files["csv"]))  # noqa: SIM115 - read once
    )
    assert sum(r["kind"] == "run" for r in rows) == 15
    iqm_rows = {r["algo"]: r for r in rows if r["kind"] == "IQM"}
    # The aggregate is over the datasets where every algorithm has the same seeds: hopper and
    # walker (x has only bc).
    assert set(iqm_rows) == {"td3bc", "bc"}
    td3 = np.array([[50.0, 80.0], [60.0, 82.0], [70.0, 84.0]])
    assert float(iqm_rows["td3bc"]["mean"]) == pytest.approx(iqm(td3))
    assert float(iqm_rows["td3bc"]["ci_low"]) <= iqm(td3) <= float(iqm_rows["td3bc"]["ci_high"])
    for key in ("aggregate", "performance profiles", "curves hopper-medium-v0"):
        assert files[key].stat().st_size > 10_000


def test_final_evaluation_uses_the_value_the_training_evaluation_chose(tmp_path):
    # QGPO sweeps its guidance scale in training evaluations; the report's separate final
    # evaluation must act at the scale chosen there, not pick the best on its own episodes.
    from diffrl.cli import main
    from diffrl.report import read_run

    run = tmp_path / "q"
    sets = ["behavior_steps=20", "eval_every=40", "eval_sweep=guidance_scale=0,3"]
    sets += ["support_actions=2", "support_steps=2", "sampling_steps=2", "compile=false"]
    argv = ["train", "qgpo", "--dataset", "toy-bandit", "--steps", "40", "--run-dir", str(run)]
    assert main([*argv, *[x for kv in sets for x in ("--set", kv)]]) == 0
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    chosen = next(m["eval/guidance_scale"] for m in last if "eval/guidance_scale" in m)
    result = read_run(run, final_episodes=3)
    cached = json.loads((run / "final_eval_3.json").read_text())
    assert cached["guidance_scale"] == chosen
    assert "by_guidance_scale" not in cached  # one value evaluated, not a sweep
    assert result.score == cached["reward_mean"]


def test_report_rejects_missing_and_empty_directories(tmp_path, capsys):
    from diffrl.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such directory"
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"error: no run directories under {tmp_path / 'empty'}"
    )


# ---------------------------------------------------------------------- grids
def test_grid_from_flags_and_toml(tmp_path):
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'algos = ["diffusion-bc"]\ndatasets = ["toy-bandit"]\nseeds = [0, 1]\nsteps = 500\n'
        "[set]\neval_every = 100\n[sweep]\nlr = [1e-3, 3e-4]\n"
    )
    grid = grid_from_args(
        str(toml),
        "gaussian-bc,diffusion-bc",
        None,
        None,
        None,
        None,
        ["save_every=100"],
        None,
        None,
        None,
        None,
    )
    assert grid.algos == ["gaussian-bc", "diffusion-bc"]  # the flag wins
    assert grid.sets == {"eval_every": "100", "save_every": "100"}
    trials = grid.trials(tmp_path / "sw")
    assert len(trials) == 2 * 2 * 2
    t = trials[0]
    assert Path(t.run_dir) == tmp_path / "sw" / "toy-bandit" / "gaussian-bc+lr=0.001-s0"
    assert t.overrides() == {
        "eval_every": "100",
        "save_every": "100",
        "lr": "0.001",
        "seed": 0,
        "steps": 500,
    }
    envs = Grid(algos=["sac"], envs=["diffrl/FourGoals-v0"]).trials(tmp_path)
    assert Path(envs[0].run_dir) == tmp_path / "diffrl_FourGoals-v0" / "sac-s0"
    assert envs[0].overrides()["env_id"] == "diffrl/FourGoals-v0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--datasets", "toy-bandit"], "a sweep needs at least one algorithm (--algos A,B)"),
        (["--algos", "bc"], "a sweep needs datasets (--datasets) or environments (--envs)"),
        (
            ["--algos", "bc", "--datasets", "toy-bandit", "--seeds", "0,x"],
            "--seeds '0,x': expected integers like 0,1,2",
        ),
        (
            ["--algos", "bc", "--datasets", "toy-bandit", "--set", "lr=1", "--sweep", "lr=1,2"],
            "lr is both swept (--sweep) and fixed (--set)",
        ),
        (["--algos", "nope", "--datasets", "toy-bandit"], "unknown algorithm 'nope'"),
        (["--algos", "bc", "--datasets", "toy-bandit", "--cpus", "0"], "--cpus 0: expected at"),
        (
            ["--algos", "bc", "--datasets", "toy-bandit", "--cpus", "1", "--address", "auto"],
            "--cpus sizes the local Ray instance",
        ),
        (
            ["--algos", "bc", "--datasets", "toy-bandit", "--threads", "2", "--cpus", "1"],
            "--cpus 1 is fewer than the 2 thread(s) each trial needs",
        ),
        (["--algos", "gaussian-bc", "--datasets", "toy-bandit", "--set", "nokey=1"], "nokey"),
    ],
)
def test_sweep_rejects_bad_grids_in_one_line(tmp_path, capsys, argv, message):
    from diffrl.cli import main

    assert main(["sweep", *argv, "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "sw").exists()  # nothing started


def test_sweep_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    from diffrl.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    argv = ["sweep", "--algos", "gaussian-bc", "--datasets", "toy-bandit", "--steps", "10"]
    assert main([*argv, "--out", str(tmp_path / "sw")]) == 2
    assert capsys.readouterr().err.strip() == (
        'error: diffrl sweep runs on Ray, which is not installed: pip install -e ".[sweep]"'
    )


def test_a_trial_stopped_in_its_final_evaluation_is_not_done(tmp_path):
    from diffrl.sweep import Trial, trial_done

    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000100").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"steps": 100, "env_id": "toy-bandit"}))
    trial = Trial("bc toy-bandit s0", str(run), "bc", "toy-bandit", "", 0, 100, {}, "bc", 1, "")
    assert not trial_done(trial)  # the checkpoint at the budget, no evaluation there
    evals = [{"step": 50, "score": 1.0}]
    (run / "selection.json").write_text(json.dumps({"evaluations": evals}))
    assert not trial_done(trial)
    evals.append({"step": 100, "score": 2.0})
    (run / "selection.json").write_text(json.dumps({"evaluations": evals}))
    assert trial_done(trial)
    (run / "config.json").write_text(json.dumps({"steps": 100, "env_id": ""}))
    (run / "selection.json").unlink()
    assert trial_done(trial)  # a run with no environment finishes without evaluating


def test_a_trial_directory_holding_another_config_is_refused(tmp_path):
    """A run branched (or left) in a trial's directory with settings the grid does not give would
    be resumed with its own settings and reported under the grid's name: refused in one line."""
    from diffrl.errors import ConfigError
    from diffrl.run import make_config, start_run
    from diffrl.sweep import check_trials

    grid = Grid(algos=["gaussian-bc"], datasets=["toy-bandit"], seeds=[0], steps=20)
    grid.sets = {"lr": "0.001"}
    (trial,) = grid.trials(tmp_path / "sw")
    check_trials([trial])  # nothing there yet
    start_run(make_config("gaussian-bc", "toy-bandit", trial.overrides()), Path(trial.run_dir))
    check_trials([trial])  # the grid's own run (its env_id filled in at start)
    grid.steps = 40
    (longer,) = grid.trials(tmp_path / "sw")
    check_trials([longer])  # a larger budget extends the run
    grid.sets = {"lr": "0.002", "hidden": "64"}
    (other,) = grid.trials(tmp_path / "sw")
    with pytest.raises(ConfigError) as err:
        check_trials([other])
    assert str(err.value) == (
        f"{trial.run_dir}: its run has lr=0.001 but the sweep's grid gives lr=0.002 "
        "(and 1 more); move the run away, or sweep with its settings"
    )


def test_progress_counts_only_started_trials_as_running(tmp_path):
    from diffrl.sweep import progress_line

    trials = Grid(algos=["gaussian-bc"], datasets=["toy-bandit"], seeds=[0, 1, 2], steps=300)
    trials = trials.trials(tmp_path)
    submitted = {t.name: 0 for t in trials}
    # Submitted to Ray, none started by a worker yet: all queued, no slowest to name.
    assert progress_line(trials, submitted, 0)[1] == "running 0, queued 3, failed 0"
    # s0 and s1 started (a worker wrote trial.json); s0 is further along.
    for t, step in zip(trials[:2], (200, 50), strict=True):
        Path(t.run_dir).mkdir(parents=True)
        (Path(t.run_dir) / "trial.json").write_text(json.dumps({"starts": 1}))
        (Path(t.run_dir) / "metrics.jsonl").write_text(json.dumps({"step": step}) + "\n")
    active, text = progress_line(trials, submitted, 1)
    assert [t.name for t in active] == [trials[0].name, trials[1].name]
    assert text == f"running 2, queued 1, failed 1; slowest {trials[1].name} at 50/300"
    # A trial resumed by `sweep --resume` had started once before: it is queued until it
    # starts again.
    assert progress_line(trials, {**submitted, trials[1].name: 1}, 0)[1].startswith(
        "running 1, queued 2"
    )


# ---------------------------------------------------------------------- on Ray, for real
def _sweep_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "diffrl.cli",
        "sweep",
        "--algos",
        "gaussian-bc",
        "--datasets",
        "toy-bandit",
        "--seeds",
        "0,1",
        "--steps",
        "1500",
        "--set",
        "save_every=100",
        "--set",
        "eval_every=1500",
        "--set",
        "log_every=50",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _trial(out: Path, seed: int) -> dict:
    path = out / "toy-bandit" / f"gaussian-bc-s{seed}" / "trial.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _checkpoints(run: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("step_*"))


def _wait(cond, timeout: float = 120.0) -> None:
    start = time.time()
    while not cond():
        if time.time() - start > timeout:
            raise AssertionError("timed out")
        time.sleep(0.2)


@pytest.fixture
def ray_env(tmp_path):
    pytest.importorskip("ray")
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    env["DIFFRL_DATA"] = os.environ["DIFFRL_DATA"]
    return env


def test_sweep_retries_a_killed_worker_from_its_checkpoint(tmp_path, ray_env):
    out = tmp_path / "sw"
    proc = subprocess.Popen(
        _sweep_cmd(out, "--threads", "1"),
        env=ray_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run = out / "toy-bandit" / "gaussian-bc-s0"
        _wait(lambda: _trial(out, 0) and (_checkpoints(run) or [0])[-1] >= 200)
        victim = _trial(out, 0)["pid"]
        os.kill(victim, signal.SIGKILL)  # the worker process dies mid-trial
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    info = _trial(out, 0)
    assert info["starts"] == 2 and info["pid"] != victim
    assert info["from_step"] >= 200  # the retry resumed from a checkpoint, not from step 0
    assert _checkpoints(run)[-1] == 1500
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 1500
    assert _trial(out, 1)["starts"] == 1  # the other trial ran once, undisturbed
    # A trial's progress bars are in its train.log (what shows a long stage moving).
    log = (out / "toy-bandit" / "gaussian-bc-s1" / "train.log").read_text()
    assert "gaussian-bc: 100%" in log and "1500/1500" in log
    states = json.loads((out / "trials.json").read_text())
    assert {s["state"] for s in states.values()} == {"done"}


def test_sweep_resume_finishes_without_restarting_any_trial(tmp_path, ray_env):
    out = tmp_path / "sw"
    # Two trials one at a time, whatever the core count: a local Ray instance of one CPU
    # (--cpus 1) runs one single-threaded trial at a time.
    proc = subprocess.Popen(
        _sweep_cmd(out, "--threads", "1", "--cpus", "1"),
        env=ray_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first = out / "toy-bandit" / "gaussian-bc-s0"

    def states() -> dict[str, str]:
        path = out / "trials.json"
        return (
            {k: v["state"] for k, v in json.loads(path.read_text()).items()}
            if path.exists()
            else {}
        )

    try:
        # One trial at a time: the one training is running, the other waits in Ray's queue
        # (checked first: this holds from the trial's start to its end).
        _wait(lambda: sorted(states().values()) == ["queued", "running"])
        _wait(lambda: (_checkpoints(first) or [0])[-1] >= 200)
    finally:
        # The trial's worker first, then the driver and the Ray processes it started. A Ray
        # worker notices its raylet's death only after a while, and a toy trial can run its
        # last 1300 steps in that while (seen in CI: the killed trial reached 1500 alone).
        with contextlib.suppress(ProcessLookupError, KeyError):
            os.kill(_trial(out, 0)["pid"], signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stopped_at = _checkpoints(first)[-1]
    assert stopped_at < 1500
    with pytest.raises(DiffrlError, match="already holds a sweep"):
        from diffrl.sweep import run_sweep

        run_sweep(out, Grid(algos=["gaussian-bc"], datasets=["toy-bandit"]))
    done = subprocess.run(
        [sys.executable, "-m", "diffrl.cli", "sweep", "--resume", str(out), "--no-progress"],
        env=ray_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for seed in (0, 1):
        run = out / "toy-bandit" / f"gaussian-bc-s{seed}"
        assert _checkpoints(run)[-1] == 1500
    assert _trial(out, 0)["starts"] == 2 and _trial(out, 0)["from_step"] >= stopped_at
    assert _trial(out, 1)["from_step"] == 0
    again = subprocess.run(
        [sys.executable, "-m", "diffrl.cli", "sweep", "--resume", str(out), "--no-progress"],
        env=ray_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0
    assert "2 trials, 2 finished already" in again.stderr


def test_a_sweep_started_above_a_clone_named_diffrl_runs(tmp_path, ray_env):
    """Started from the folder that holds a clone named `diffrl` (cloned into ~/diffrl, run
    from ~): Ray puts that folder on its workers' path, where the clone is a namespace package
    `diffrl` that shadowed an editable install, and every trial failed to import."""
    import diffrl

    parent = tmp_path / "home"
    parent.mkdir()
    (parent / "diffrl").symlink_to(Path(diffrl.__file__).resolve().parents[1])
    out = tmp_path / "sw"
    # The installed `diffrl` command, as a user types it (`python -m` would put the current
    # folder first on the driver's own path too).
    cmd = [str(Path(sys.executable).parent / "diffrl")]
    cmd += _sweep_cmd(out, "--threads", "1", "--cpus", "1")[3:]
    cmd[cmd.index("0,1")] = "0"
    cmd[cmd.index("1500")] = "100"
    done = subprocess.run(cmd, env=ray_env, cwd=parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 done, 0 failed" in done.stderr
    assert _checkpoints(out / "toy-bandit" / "gaussian-bc-s0")[-1] == 100


def test_sigterm_stops_a_background_sweep_with_checkpoints(tmp_path, ray_env):
    # Started as a script's background job is: SIGINT ignored. `kill PID` (SIGTERM) must stop it
    # as Ctrl-C does: the running trial writes a checkpoint at its step, the states say pending.
    out = tmp_path / "sw"
    proc = subprocess.Popen(
        _sweep_cmd(out, "--threads", str(os.cpu_count())),
        env=ray_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    first = out / "toy-bandit" / "gaussian-bc-s0"
    try:
        _wait(lambda: (_checkpoints(first) or [0])[-1] >= 200)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, err  # diffrl's exit status for an error
    assert f"sweep interrupted; continue it with `diffrl sweep --resume {out}`" in err
    states = json.loads((out / "trials.json").read_text())
    assert {s["state"] for s in states.values()} == {"pending"}
    assert "stopping: writing a checkpoint at the current step" in (first / "train.log").read_text()
    assert 200 <= _checkpoints(first)[-1] < 1500
