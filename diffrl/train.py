"""The shared training loop: draw batches, update, log, checkpoint, evaluate, resume, signals.

Run directories (creating, checking, loading), metrics and checkpoint selection are in
diffrl/run.py; checkpoint files in diffrl/checkpoint.py. This module holds the loop only.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrl.algos import get_algo
from diffrl.checkpoint import (
    checkpoint_name,
    clean_partial,
    load_newest_intact,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from diffrl.data.online import OnlineSource
from diffrl.datasets import resolve
from diffrl.errors import ConfigError, DiffrlError
from diffrl.fileio import run_lock
from diffrl.progress import bar as progress_bar
from diffrl.run import (
    Metrics,
    RunDir,
    Selection,
    check_buildable,
    check_fingerprint,
    eval_seed,
    is_online,
    load_run,
    load_weights,
    plan_stages,
    resolve_device,
    resume_overrides,
    say,
    with_env,
)


class TrainingInterrupted(DiffrlError):
    """SIGINT / SIGTERM during training: a checkpoint was written at `step`."""

    def __init__(self, run_dir: Path, step: int, signum: int) -> None:
        self.run_dir, self.step, self.signum = run_dir, step, signum
        super().__init__(
            f"interrupted at step {step:,}: checkpoint written; continue with "
            f"`diffrl train --resume {run_dir}`"
        )


def _flatten(prefix: str, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(f"{prefix}{key}/", value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


class _StopSignals:
    """SIGINT / SIGTERM set a flag that the loop checks after every step (it then writes a
    checkpoint and stops); a second SIGINT stops at once. Installed only in the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        say(
            "stopping: writing a checkpoint at the current step "
            "(Ctrl-C again to stop at once without it)"
        )

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(
    run_dir: str | Path,
    dataset: Any = None,
    resume: bool = False,
    steps: int | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run in `run_dir` up to `config.steps`; return the last evaluation.

    On resume, `overrides` may change the keys in `Config.RESUME_KEYS` (environment,
    evaluation settings, device, step count). SIGINT or SIGTERM writes a checkpoint at the
    current step and raises `TrainingInterrupted`. One process at a time trains a run
    (`fileio.run_lock`): a second one stops with a one-line error.
    """
    with run_lock(run_dir):
        return _train(run_dir, dataset, resume, steps, progress, overrides)


def _train(
    run_dir: str | Path,
    dataset: Any,
    resume: bool,
    steps: int | None,
    progress: bool,
    overrides: dict[str, Any] | None,
) -> dict[str, Any]:
    from diffrl.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    training = _Training(Path(run_dir), dataset, resume, steps, progress, overrides)
    return training.run() if training.todo() else {}


class _Training:
    """One training of a run directory, from its config to its last evaluation.

    Built in named steps (`_configure`: the config with the resume's changes, checked before
    it is touched; `_restore`: the newest intact checkpoint, or normalisers fitted afresh;
    `_data`: batches from the dataset or from the environment), then `run` loops over the
    stages: `_update` one step, `_log` every `log_every`, `_evaluate` (which checkpoints first)
    every `eval_every`, `_save` every `save_every`, and the final checkpoint and evaluation.
    """

    def __init__(
        self,
        run_dir: Path,
        dataset: Any,
        resume: bool,
        steps: int | None,
        progress: bool,
        overrides: dict[str, Any] | None,
    ) -> None:
        from diffrl.precision import check_precision

        self.run_dir, self.resume, self.progress = run_dir, resume, progress
        self.dataset = dataset
        self._configure(steps, overrides)
        config = self.config
        self.device = resolve_device(config.device)
        check_precision(config.precision, self.device)
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.agent = get_algo(config.algo).Agent(config, self.spec).to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.stages = plan_stages(self.agent, config)
        self._restore()
        if self.changed:
            RunDir(run_dir).write_config(config)
        self.agent.train()
        resume_step = self.start if resume else None
        self.selection = Selection(run_dir, self.agent, config, resume_step=resume_step)
        self.can_evaluate = bool(config.env_id)

    # ------------------------------------------------------------------ set-up
    def _configure(self, steps: int | None, overrides: dict[str, Any] | None) -> None:
        """The run's config with the resume's changes; the data's fingerprint and everything
        that can fail checked before the stored config is touched."""
        config, self.spec, self.info = load_run(self.run_dir)
        changes = dict(overrides or {})
        if steps is not None:
            changes["steps"] = int(steps)
        new_config = resume_overrides(config, changes) if changes else config
        self.online = is_online(config)
        if self.dataset is None and not self.online:
            self.dataset = resolve(config.dataset)
        if self.resume and not self.online:
            check_fingerprint(self.run_dir, config, self.info, self.dataset)
        if not self.online:
            new_config = with_env(new_config, self.dataset)
        self.changed = new_config != config
        if self.resume or self.changed:  # (a fresh run from start_run was checked there)
            meta = (
                self.info.get("dataset_metadata") if self.dataset is None else self.dataset.metadata
            )
            check_buildable(new_config, self.spec, meta)
        self.config = new_config

    def _restore(self) -> None:
        """The newest intact checkpoint's weights, trainer state and RNG (a resume), or
        normalisers fitted on the data (a fresh offline run)."""
        config, run_dir = self.config, self.run_dir
        self.start, self.trainer_state = 0, {}
        found = None
        if self.resume:
            clean_partial(run_dir)
            found = load_newest_intact(run_dir, self.device)
        if found is not None:
            ckpt, tensors, self.trainer_state, problems = found
            for problem in problems:
                say(f"skipping checkpoint: {problem}")
            if problems:
                say(f"resuming from the newest intact checkpoint, {ckpt.name}")
            load_weights(self.agent, tensors, ckpt)
            self.agent.load_train_state_dict(self.trainer_state["agent"])
            set_rng_state(self.trainer_state["rng"], self.generator)
            self.start = int(self.trainer_state["step"])
            if self.start > config.steps:
                raise ConfigError(
                    f"{run_dir}: the run is at step {self.start:,} already; --steps must be "
                    f">= {self.start}"
                )
        else:
            if self.resume:
                say(
                    f"{run_dir}: no checkpoint to resume from (a run saves every "
                    f"{config.save_every:,} steps and at its end); starting from step 0"
                )
            if not self.online:
                self.agent.fit_normalizers(self.dataset)
        # (Runs of under 1,000 steps, tests and demos, restart in moments: no word for them.)
        if self.start == 0 and config.save_every >= config.steps >= 1_000:
            say(
                f"save_every {config.save_every:,} >= steps {config.steps:,}: the only "
                "checkpoint is the final one, so a run stopped before it starts again from "
                "step 0 (--set save_every=N to save sooner)"
            )

    def todo(self) -> bool:
        """Whether anything is left to do; says so when the run is finished already."""
        config = self.config
        final_evaluated = any(e["step"] == config.steps for e in self.selection.evals)
        if self.start >= config.steps and (final_evaluated or not self.can_evaluate):
            say(
                f"{self.run_dir}: finished ({self.start:,} of {config.steps:,} steps); nothing "
                "to do (raise the budget with --steps N to train on)"
            )
            return False
        return True

    def _data(self) -> None:
        """Batches: the dataset's sampler, or for an online run the replay buffer that the
        agent's exploring actions fill (restored from the checkpoint on a resume)."""
        agent, config = self.agent, self.config
        if self.online:

            def policy(obs: torch.Tensor, goal: Any, gen: torch.Generator | None) -> torch.Tensor:
                return agent.explore(obs, goal, gen)

            columns = dict(agent.replay_columns) or None
            self.batches: Any = OnlineSource(
                policy, config, self.spec, self.device, columns=columns
            )
            if "source" in self.trainer_state:
                self.batches.load_state_dict(self.trainer_state["source"])
            agent.attach_buffer(self.batches.buffer)
        else:
            self.batches = agent.batch_sampler(self.dataset, self.device)

    # ------------------------------------------------------------------ the steps
    def _save(self, step: int) -> None:
        save_checkpoint(
            self.run_dir,
            step,
            self.agent,
            {
                "agent": self.agent.train_state_dict(),
                "rng": rng_state(self.generator),
                **({"source": self.batches.state_dict()} if self.online else {}),
            },
            keep=self.config.keep_checkpoints,
            protect=self.protect,
        )

    def _evaluate(self, step: int) -> dict[str, Any]:
        """Checkpoint, then evaluate, log and record for checkpoint selection."""
        from diffrl.evaluate import evaluate

        # The checkpoint first: whatever evaluation does, the model at `step` is on disk, and
        # whichever evaluation is selected later can be loaded.
        self._save(step)
        if not self.can_evaluate:
            return {}
        config, agent = self.config, self.agent
        agent.eval()
        result = evaluate(
            agent,
            config,
            config.eval_episodes,
            eval_seed(config.seed, "training"),
            self.device,
            self.info.get("dataset_metadata"),
            progress=self.progress,
            sweep=self.sweep,
        )
        agent.train()
        # Online runs: where the evaluation stands in environment steps too (learning curves
        # are drawn against them).
        where = {"env_steps": self.batches.env_steps} if self.online else {}
        self.metrics.log({"step": step, **where, **_flatten("eval/", result)})
        window = self.window
        mean = window["sum"] / window["count"] if window["count"] else None
        window["sum"], window["count"] = 0.0, 0
        self.selection.add(step, result, mean)
        self.protect = self.selection.write(self.run_dir / "checkpoints")
        return result

    def _update(self, batch_size: int) -> dict[str, float]:
        """One gradient step; its metrics summed for the next log line and the selection
        metric's window."""
        out = self.agent.update(self.batches.sample(batch_size, self.generator))
        for key, value in out.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        if self.selection.metric in out:
            self.window["sum"] += out[self.selection.metric]
            self.window["count"] += 1
        self.count += 1
        return out

    def _log(self, step: int, out: dict[str, float], bar: Any) -> None:
        """The means since the last line, the speed, an online run's progress; the bar's
        postfix shows the loss (or the first metric)."""
        now = time.perf_counter()
        record = {"step": step, **{k: v / self.count for k, v in self.sums.items()}}
        record["steps_per_second"] = self.count / max(now - self.t_last, 1e-9)
        if self.online:
            record.update(self.batches.progress())
        self.metrics.log(record)
        # The algorithm's "loss" if it reports one, else its first metric.
        shown = "loss" if "loss" in record else next(iter(out), None)
        postfix = {}
        if shown is not None and shown in record:
            postfix[shown] = f"{record[shown]:.4g}"
        if self.online:
            postfix["env_steps"] = f"{record['env_steps']:,}"
            if "episode_return" in record:
                postfix["return"] = f"{record['episode_return']:.4g}"
        if postfix:
            bar.set_postfix(postfix, refresh=False)  # drawn at the next redraw
        self.sums, self.count, self.t_last = {}, 0, now

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        from diffrl.evaluate import Sweep
        from diffrl.precision import precision_scope
        from diffrl.runtime import threads_tick

        config, agent, run_dir = self.config, self.agent, self.run_dir
        if not self.can_evaluate:
            say(
                f"{config.dataset}: its metadata names no environment, so this run trains "
                "without evaluation (give one with --set env_id=ENV_ID, now or with --resume)"
            )
        self._data()
        self.sweep = (
            Sweep(config.eval_sweep, config, self.spec, self.device) if config.eval_sweep else None
        )
        self.metrics = Metrics(run_dir, resume_step=self.start if self.resume else None)
        self.protect: tuple[str, ...] = tuple(
            checkpoint_name(e["step"]) for e in self.selection.choices().values()
        )
        # The selection metric's mean over the steps since the previous evaluation.
        self.window = {"sum": 0.0, "count": 0}
        self.sums: dict[str, float] = {}
        self.count = 0
        self.t_last = time.perf_counter()
        last_eval: dict[str, Any] = {}
        if self.progress and agent.compiles(self.device):
            # Otherwise the bar sits at 0 for a minute or more on a first run, looking stuck.
            say(
                f"{config.algo}: the first steps compile graphs with torch.compile (up to a few "
                "minutes the first time; cached for later runs; --set compile=false to skip)"
            )
        bar = None
        start = step = self.start
        # bf16 products where the run asks for them (diffrl/precision.py; checked at start).
        with _StopSignals() as stop, precision_scope(config.precision, self.device):
            try:
                for name, first, last, batch_size in self.stages:
                    if last <= start:
                        continue  # finished before the checkpoint we resume from
                    agent.begin_stage(
                        name,
                        run_dir=run_dir,
                        progress=self.progress,
                        stop=lambda: stop.signum is not None,
                    )
                    if stop.signum is not None:
                        break  # asked to stop during the stage's preparation
                    bar = progress_bar(
                        total=last - first + 1,
                        initial=max(0, start - first + 1),
                        desc=f"{config.algo} [{name}]" if len(self.stages) > 1 else config.algo,
                        unit="step",
                        dynamic_ncols=True,
                        disable=not self.progress,
                    )
                    for step in range(max(first, start + 1), last + 1):
                        threads_tick()  # threads follow the machine's load (diffrl/runtime.py)
                        out = self._update(batch_size)
                        bar.update(1)
                        if step % config.log_every == 0 or step == last:
                            self._log(step, out, bar)
                        if stop.signum is not None:
                            break
                        if step == config.steps:
                            continue  # the final checkpoint and evaluation follow the loop
                        if config.eval_every and step % config.eval_every == 0:
                            last_eval = self._evaluate(step)
                        elif step % config.save_every == 0:
                            self._save(step)
                    bar.close()
                    if stop.signum is not None:
                        break
                if stop.signum is not None:
                    if step > start:
                        self._save(step)
                    raise TrainingInterrupted(run_dir, step, stop.signum)
                last_eval = self._evaluate(config.steps)
            finally:
                if bar is not None:
                    bar.close()
                self.metrics.close()
                if self.online:
                    self.batches.close()
        return last_eval
