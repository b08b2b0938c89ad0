"""`diffrl sweep`: a grid of ordinary diffrl runs, on Ray (a local instance by default, or a
cluster given by its address).

A grid is algorithms x datasets (or environments) x seeds x swept settings, with fixed `--set`
values and a step budget, given by flags or a TOML file. Every trial is one `diffrl train` run
directory under the sweep's directory,

    OUT/SOURCE/NAME-sSEED      SOURCE: the dataset or environment id ('/' written as '_')
                               NAME: the algorithm, then each swept KEY=VALUE after a '+'

so `diffrl eval`, `diffrl train --resume` and `diffrl report` work on it as on any run. The
sweep's own files: OUT/sweep.json (the grid, what `--resume` reads) and OUT/trials.json (each
trial's state: pending, queued (submitted, waiting for a free CPU), running, done or failed
with its one-line error), both written atomically.

How the work is spread: each trial is a Ray task that asks for `threads` CPUs (and `gpus` of a
GPU), sets torch to that many threads and trains in the task's own worker process (one process
per trial: `max_calls=1`). Ray starts as many at once as the resources allow; on this 2-core
machine two single-threaded trials run side by side (docs/sweeps.md has the measurement).

Faults: a trial whose worker process dies (killed, out of memory, a node lost) is retried by Ray
up to `retries` times, and a retry resumes the run from its newest checkpoint, as `diffrl train
--resume` does; a trial stopped by SIGTERM writes a checkpoint first and is retried the same way.
A trial that fails by itself (a bad setting, a missing file) is not retried: it is marked failed
with its error and the rest go on. `diffrl sweep --resume OUT` continues a stopped sweep: finished
trials are skipped, partial ones resume from their checkpoints, none starts again from step 0.

Why Ray tasks and not Ray Tune: a diffrl run already checkpoints, resumes and evaluates itself,
and its directory is the unit everything else reads; Tune would add a second trial directory,
checkpoint protocol and experiment state beside it for nothing this grid needs (no search
algorithm, no early stopping). Tasks give the scheduling, the resources and the retries.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from diffrl.errors import ConfigError, DiffrlError
from diffrl.fileio import atomic_write_json

GRID_FILE = "sweep.json"
TRIALS_FILE = "trials.json"


def trial_name(label: str, source: str, seed: int) -> str:
    """A trial's name in OUT/trials.json: 'LABEL SOURCE sSEED'."""
    return f"{label} {source} s{seed}"


def trial_words(name: str) -> str:
    """`trial_name`'s name in words, 'LABEL on SOURCE, seed SEED' (as a report lists a run);
    a name of another form as it is."""
    parts = name.rsplit(" ", 2)
    if len(parts) != 3 or not parts[2][1:].isdigit():
        return name
    return f"{parts[0]} on {parts[1]}, seed {parts[2][1:]}"


# A trial's progress bars go to its train.log, redrawn at most this often: often enough to see a
# long stage move (QGPO's support generation holds the step count for hours), seldom enough to
# keep the log small (a 2-hour stage adds a few hundred lines).
TRIAL_BAR_SECONDS = 30


@dataclass
class Grid:
    """What a sweep runs. `sweep` maps a key to the values tried (a grid axis); `sets` are fixed
    for every trial."""

    algos: list[str]
    datasets: list[str] = field(default_factory=list)
    envs: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int | None = None
    sets: dict[str, str] = field(default_factory=dict)
    sweep: dict[str, list[str]] = field(default_factory=dict)
    threads: int = 1
    gpus: float = 0.0
    retries: int = 3

    def check(self) -> None:
        """One-line errors for a grid that cannot run."""
        if not self.algos:
            raise ConfigError("a sweep needs at least one algorithm (--algos A,B)")
        if not self.datasets and not self.envs:
            raise ConfigError("a sweep needs datasets (--datasets) or environments (--envs)")
        if self.datasets and self.envs:
            raise ConfigError("give --datasets (offline) or --envs (online), not both")
        if not self.seeds:
            raise ConfigError("a sweep needs at least one seed (--seeds 0,1,2)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds has repeats: {self.seeds}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if not 0 <= self.gpus:
            raise ConfigError(f"--gpus must be >= 0, got {self.gpus}")
        if self.retries < 0:
            raise ConfigError(f"--retries must be >= 0, got {self.retries}")
        for key, values in self.sweep.items():
            if not values:
                raise ConfigError(f"--sweep {key}=: no values")
            if key in self.sets:
                raise ConfigError(f"{key} is both swept (--sweep) and fixed (--set)")
            if key in ("seed", "steps", "dataset", "env_id", "algo"):
                raise ConfigError(f"--sweep {key}: use --seeds / --steps / --datasets / --algos")

    def trials(self, out: Path) -> list[Trial]:
        sources = self.datasets or self.envs
        keys = list(self.sweep)
        combos = list(itertools.product(*(self.sweep[k] for k in keys))) if keys else [()]
        found = []
        for source, algo, combo, seed in itertools.product(sources, self.algos, combos, self.seeds):
            swept = dict(zip(keys, combo, strict=True))
            name = "+".join([algo, *(f"{k}={v}" for k, v in swept.items())])
            run_dir = out / source.replace("/", "_") / f"{name}-s{seed}"
            found.append(
                Trial(
                    name=trial_name(name, source, seed),
                    run_dir=str(run_dir),
                    algo=algo,
                    dataset=source if self.datasets else "",
                    env=source if self.envs else "",
                    seed=seed,
                    steps=self.steps,
                    settings={**self.sets, **swept},
                    label=name,
                    threads=self.threads,
                    device="cuda" if self.gpus > 0 else "",
                )
            )
        return found


@dataclass
class Trial:
    name: str
    run_dir: str
    algo: str
    dataset: str
    env: str
    seed: int
    steps: int | None
    settings: dict[str, str]
    label: str
    threads: int
    device: str

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.settings)
        out["seed"] = self.seed
        if self.steps is not None:
            out["steps"] = self.steps
        if self.env:
            out["env_id"] = self.env
        if self.device and "device" not in out:
            out["device"] = self.device
        return out


# ---------------------------------------------------------------------- the grid, from the user
def _split(text: str | None) -> list[str]:
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def grid_from_toml(path: str | Path) -> dict[str, Any]:
    """The grid's fields from a TOML file (keys as in `Grid`; `set` and `sweep` as tables)."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    known = {f for f in Grid.__dataclass_fields__} | {"set"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {sorted(known)})")
    if "set" in data:
        data["sets"] = {k: str(v) for k, v in data.pop("set").items()}
    if "sweep" in data:
        data["sweep"] = {
            k: [str(x) for x in (v if isinstance(v, list) else [v])]
            for k, v in data["sweep"].items()
        }
    return data


def grid_from_args(
    file: str | None,
    algos: str | None,
    datasets: str | None,
    envs: str | None,
    seeds: str | None,
    steps: int | None,
    sets: list[str] | None,
    sweeps: list[str] | None,
    threads: int | None,
    gpus: float | None,
    retries: int | None,
) -> Grid:
    """Flags over the TOML file's values (a flag given wins)."""
    data: dict[str, Any] = grid_from_toml(file) if file else {}
    if algos:
        data["algos"] = _split(algos)
    if datasets:
        data["datasets"] = _split(datasets)
    if envs:
        data["envs"] = _split(envs)
    if seeds:
        try:
            data["seeds"] = [int(s) for s in _split(seeds)]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected integers like 0,1,2") from None
    for key, value in (("steps", steps), ("threads", threads), ("gpus", gpus)):
        if value is not None:
            data[key] = value
    if retries is not None:
        data["retries"] = retries
    if sets:
        data["sets"] = {**data.get("sets", {}), **_pairs(sets, "--set")}
    if sweeps:
        data["sweep"] = {
            **data.get("sweep", {}),
            **{k: _split(v) for k, v in _pairs(sweeps, "--sweep").items()},
        }
    grid = Grid(**{"algos": [], **data})
    grid.check()
    return grid


def check_trials(trials: list[Trial]) -> None:
    """Every trial's config builds and its data exists, before anything starts (one-line
    errors); built-in datasets not made yet are made here, once each, not by racing trials."""
    from diffrl.datasets import BUILTINS, builtin_path, resolve
    from diffrl.run import make_config

    for trial in trials:
        config = make_config(trial.algo, trial.dataset, trial.overrides())
        check_trial_run(trial, config)
    for name in sorted({t.dataset for t in trials if t.dataset}):
        if name in BUILTINS and not builtin_path(name).exists():
            print(f"sweep: making dataset {name} (once, before the trials)", file=sys.stderr)
        resolve(name)  # makes a missing built-in; raises a one-line error for a bad name


def check_trial_run(trial: Trial, config: Any) -> None:
    """A trial's directory that already holds a run (a resumed sweep, or a run branched into it
    with `diffrl branch`) must hold the run the grid describes: the sweep resumes it with its own
    config, so a setting that differs would be trained and reported under the grid's name.
    Only `steps` may differ (a larger budget extends the run); `env_id` is filled in at start."""
    from diffrl.config import to_dict
    from diffrl.run import RunDir, load_config

    if not RunDir(trial.run_dir).has_config():
        return
    stored = to_dict(load_config(trial.run_dir))
    wanted = to_dict(config)
    misfits = [
        key
        for key, value in wanted.items()
        if key != "steps" and stored.get(key) != value and not (key == "env_id" and not value)
    ]
    if misfits:
        key = misfits[0]
        more = f" (and {len(misfits) - 1} more)" if len(misfits) > 1 else ""
        raise ConfigError(
            f"{trial.run_dir}: its run has {key}={stored.get(key)!r} but the sweep's grid gives "
            f"{key}={wanted[key]!r}{more}; move the run away, or sweep with its settings"
        )


# ---------------------------------------------------------------------- one trial (a Ray task)
def trial_done(trial: Trial) -> bool:
    """Whether the run has reached its budget and evaluated there (or cannot evaluate)."""
    from diffrl.run import RunDir

    run = RunDir(trial.run_dir)
    if not run.has_config():
        return False
    try:
        config = run.raw_config()
    except DiffrlError:
        return False
    budget = int(config.get("steps", 0))
    if trial.steps is not None and trial.steps != budget:
        return False
    if not run.checkpoint_step() >= budget > 0:
        return False
    if not config.get("env_id"):
        return True  # nothing to evaluate in (train fills env_id from the dataset when it can)
    # A trial stopped during its final evaluation has its last checkpoint but not that
    # evaluation: a resume evaluates it (train does), so it is not done yet.
    return any(e.get("step") == budget for e in run.evaluations())


def run_trial(trial: dict[str, Any]) -> dict[str, Any]:
    """Train one trial to its budget in this process: resume it if it has a checkpoint, start it
    otherwise. Its output, progress bars included, goes to RUN/train.log. Returns the last
    evaluation."""
    from diffrl.run import RunDir, make_config, start_run
    from diffrl.runtime import set_threads, tune_cpu_allocator
    from diffrl.train import train

    t = Trial(**trial)
    tune_cpu_allocator()
    set_threads(t.threads)
    run_dir = Path(t.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunDir(run_dir)
    starts = _starts(run_dir)
    run.write_trial(
        {
            **trial,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "starts": starts + 1,
            "started": datetime.now().isoformat(timespec="seconds"),
            "from_step": run.checkpoint_step(),
        },
    )
    with (
        open(run_dir / "train.log", "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        print(f"--- start {starts + 1} at {datetime.now().isoformat(timespec='seconds')}")
        if run.has_checkpoint():
            result = train(run_dir, resume=True, steps=t.steps)
        else:
            config = make_config(t.algo, t.dataset, t.overrides())
            run_dir, dataset = start_run(config, run_dir)
            result = train(run_dir, dataset=dataset)
    return {k: v for k, v in (result or {}).items() if isinstance(v, (int, float, str))}


# ---------------------------------------------------------------------- the driver
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DiffrlError(
            'diffrl sweep runs on Ray, which is not installed: pip install -e ".[sweep]"'
        ) from None
    return ray


def _last_step(run_dir: Path) -> int:
    """The newest logged step of a running trial, else its checkpoint's."""
    from diffrl.run import RunDir

    return RunDir(run_dir).last_logged_step()


def _starts(run_dir: Path) -> int:
    """How many times a worker has started this trial (its trial record's counter; 0 if
    none)."""
    from diffrl.run import RunDir

    with contextlib.suppress(ValueError, TypeError):
        return int(RunDir(run_dir).trial().get("starts", 0))
    return 0


def _budget(trial: Trial) -> int:
    from diffrl.run import RunDir

    if trial.steps is not None:
        return trial.steps
    with contextlib.suppress(DiffrlError, ValueError, KeyError, TypeError):
        return int(RunDir(trial.run_dir).raw_config()["steps"])
    return 0


def progress_line(
    unfinished: list[Trial], submitted_starts: dict[str, int], failed: int
) -> tuple[list[Trial], str]:
    """The trials a worker has started among `unfinished` (their start counter has moved past
    `submitted_starts`), and the progress text: running, queued and failed counts and the
    slowest running trial's step against its budget."""
    active = [t for t in unfinished if _starts(Path(t.run_dir)) > submitted_starts.get(t.name, 0)]
    text = f"running {len(active)}, queued {len(unfinished) - len(active)}, failed {failed}"
    if active:
        # Slowest by the share of its own budget done: trials in one grid may differ in budget.
        at = {t.name: _last_step(Path(t.run_dir)) for t in active}
        slowest = min(active, key=lambda t: at[t.name] / max(1, _budget(t)))
        text += f"; slowest {slowest.name} at {at[slowest.name]:,}/{_budget(slowest):,}"
    return active, text


class TrialBook:
    """The sweep's record of its trials (OUT/trials.json): each trial's run directory and state
    (pending, queued, running, done, failed) with its result or error, saved at every change."""

    def __init__(self, out: Path, trials: list[Trial]) -> None:
        self.path = out / TRIALS_FILE
        self.states: dict[str, dict[str, Any]] = {
            t.name: {"run_dir": t.run_dir, "state": "done" if trial_done(t) else "pending"}
            for t in trials
        }
        self.save()

    def pending(self, trials: list[Trial]) -> list[Trial]:
        return [t for t in trials if self.states[t.name]["state"] != "done"]

    def mark(self, trials: list[Trial], state: str, **fields: Any) -> None:
        for t in trials:
            self.states[t.name] = {"run_dir": t.run_dir, "state": state, **fields}
        self.save()

    def started(self, trials: list[Trial]) -> None:
        """Queued trials whose worker has begun: running (saved only when one changed)."""
        queued = [t for t in trials if self.states[t.name]["state"] == "queued"]
        if queued:
            self.mark(queued, "running")

    def count(self, state: str) -> int:
        return sum(s["state"] == state for s in self.states.values())

    def save(self) -> None:
        atomic_write_json(self.path, self.states)


def _grid_for(out: Path, grid: Grid | None, resume: bool, cpus: int | None) -> Grid:
    """The sweep's grid: the saved one to resume, else `grid` for a folder that holds none."""
    grid_path = out / GRID_FILE
    if resume:
        if not grid_path.exists():
            raise DiffrlError(f"{out}: no sweep here to resume ({GRID_FILE} is missing)")
        grid = Grid(**json.loads(grid_path.read_text())["grid"])
    else:
        if grid is None:
            raise DiffrlError("run_sweep needs a grid, or resume=True")
        if grid_path.exists():
            raise DiffrlError(
                f"{out}: already holds a sweep; continue it with `diffrl sweep --resume {out}` "
                "or choose another --out"
            )
    if cpus is not None and cpus < grid.threads:
        raise DiffrlError(
            f"--cpus {cpus} is fewer than the {grid.threads} thread(s) each trial needs: "
            "no trial could start"
        )
    return grid


def _start_ray(ray: Any, address: str | None, cpus: int | None) -> None:
    import logging

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        # Trials at `threads` CPUs each: at most cpus // threads run at once here.
        ray.init(num_cpus=cpus or os.cpu_count(), **kwargs)


def _trial_task(ray: Any, grid: Grid) -> Any:
    """`run_trial` as a Ray task with the grid's resources: a fresh process per trial."""
    return ray.remote(
        num_cpus=grid.threads,
        num_gpus=grid.gpus,
        max_retries=grid.retries,
        retry_exceptions=_retryable(),
        max_calls=1,  # a fresh process per trial: no state carried from one run to the next
        # tqdm reads its defaults from TQDM_* variables when it is imported: the worker's
        # environment sets how often a trial redraws its bars in train.log.
        runtime_env={"env_vars": {"TQDM_MININTERVAL": str(TRIAL_BAR_SECONDS), **_import_path()}},
    )(run_trial)


def _schedule(ray: Any, task: Any, todo: list[Trial], book: TrialBook, out: Path, bar: Any) -> int:
    """Submit every trial in `todo`, follow them to the end, record each in `book`; return
    the number that failed. Ctrl-C or SIGTERM: running trials checkpoint, then a one-line
    error saying how to resume."""
    # Ray accepts every task at once and queues those that find no free CPU: a trial counts as
    # running only once a worker has started it, seen by its start counter moving past the
    # value it had at submission (the worker writes its trial record first thing; no clocks
    # compared, so this holds on a cluster with a shared filesystem too).
    submitted_starts = {t.name: _starts(Path(t.run_dir)) for t in todo}
    running = {task.remote(asdict(t)): t for t in todo}
    book.mark(todo, "queued")
    failed = 0
    # SIGTERM (`kill PID`) stops the sweep as Ctrl-C does. A sweep started in the background of
    # a script has SIGINT ignored (non-interactive shells start background jobs that way), so
    # without this the only ways to stop it would lose the running trials' latest steps.
    previous_term = None
    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
            for ref in ready:
                trial = running.pop(ref)
                try:
                    book.mark([trial], "done", result=ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - any trial's failure is reported
                    failed += 1
                    book.mark([trial], "failed", error=_one_line(exc))
                    print(f"sweep: {trial.name} failed: {_one_line(exc)}", file=sys.stderr)
                if bar is not None:
                    bar.update(1)
            active, text = progress_line(list(running.values()), submitted_starts, failed)
            book.started(active)
            if bar is not None:  # also after the last trial: the line ends on its true counts
                bar.set_postfix_str(text, refresh=True)
    except KeyboardInterrupt:
        # Running trials get SIGINT: each writes a checkpoint at its current step.
        for ref in running:
            ray.cancel(ref, force=False)
        with contextlib.suppress(Exception):
            ray.wait(list(running), num_returns=len(running), timeout=60)
        book.mark(list(running.values()), "pending")
        raise DiffrlError(
            f"sweep interrupted; continue it with `diffrl sweep --resume {out}`"
        ) from None
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    return failed


def run_sweep(
    out: str | Path,
    grid: Grid | None = None,
    resume: bool = False,
    address: str | None = None,
    progress: bool = True,
    cpus: int | None = None,
) -> int:
    """Run (or with `resume`, continue) the sweep in `out`; return the number of failed trials.

    `cpus`: the CPUs a local Ray instance offers (default every core), so that a sweep can share
    the machine with other work; a cluster's CPUs are set where it is started (`ray start`)."""
    if cpus is not None:
        if address:
            raise DiffrlError(
                "--cpus sizes the local Ray instance; a cluster's CPUs are set on its machines "
                "(ray start --num-cpus N)"
            )
        if cpus < 1:
            raise DiffrlError(f"--cpus {cpus}: expected at least 1")
    ray = _import_ray()  # first: no dataset is made for a sweep that cannot run
    out = Path(out)
    grid = _grid_for(out, grid, resume, cpus)
    trials = grid.trials(out)
    check_trials(trials)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_json(
            out / GRID_FILE,
            {"grid": asdict(grid), "created": datetime.now().isoformat(timespec="seconds")},
        )
    book = TrialBook(out, trials)
    todo = book.pending(trials)
    skipped = len(trials) - len(todo)
    print(
        f"sweep {out}: {len(trials)} trial{'s' if len(trials) != 1 else ''}"
        + (f", {skipped} finished already" if skipped else "")
        + f"; {grid.threads} thread(s)"
        + (f" and {grid.gpus:g} GPU" if grid.gpus else "")
        + " each",
        file=sys.stderr,
    )
    if not todo:
        return 0
    _start_ray(ray, address, cpus)
    bar = None
    if progress:
        from diffrl.progress import bar as progress_bar

        bar = progress_bar(total=len(trials), initial=skipped, desc="sweep", unit="trial")
    try:
        failed = _schedule(ray, _trial_task(ray, grid), todo, book, out, bar)
    finally:
        if bar is not None:
            bar.close()
    print(f"sweep {out}: {book.count('done')} done, {failed} failed", file=sys.stderr)
    return failed


def _import_path() -> dict[str, str]:
    """PYTHONPATH for the trials' workers: where this `diffrl` was imported from, first.

    Ray puts the driver's current directory on its workers' import path. Started from the
    folder that holds a clone named `diffrl`, that folder is a namespace package `diffrl` to
    the workers, found before an editable install's import hook, and every trial failed with
    "cannot import name '__version__' from 'diffrl' (unknown location)". With the real
    package's parent on PYTHONPATH the regular package is found first. An installed (not
    editable) package is in site-packages, which is on the path already."""
    import site

    import diffrl

    parent = str(Path(diffrl.__file__).resolve().parents[1])
    sites = {str(Path(p).resolve()) for p in site.getsitepackages() + [site.getusersitepackages()]}
    if parent in sites:
        return {}
    paths = [parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _retryable() -> list[type[BaseException]]:
    """Exceptions after which a trial is tried again (from its checkpoint): a run stopped by a
    signal (preemption, `ray stop`)."""
    from diffrl.train import TrainingInterrupted

    return [TrainingInterrupted]


def _one_line(exc: BaseException) -> str:
    """The root cause of a task's failure, on one line."""
    cause = getattr(exc, "cause", None) or exc
    text = f"{type(cause).__name__}: {cause}" if not isinstance(cause, DiffrlError) else str(cause)
    return " ".join(text.split())[:300]
