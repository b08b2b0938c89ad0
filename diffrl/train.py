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

from diffrl.algos import Remembering, Staged, explore_on, get_algo
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
    from diffrl.evaluate import Sweep, evaluate
    from diffrl.precision import check_precision, precision_scope
    from diffrl.runtime import threads_tick, tune_cpu_allocator

    tune_cpu_allocator()
    run_dir = Path(run_dir)
    config, spec, info = load_run(run_dir)
    changes = dict(overrides or {})
    if steps is not None:
        changes["steps"] = int(steps)
    new_config = resume_overrides(config, changes) if changes else config
    online = is_online(config)
    if dataset is None and not online:
        dataset = resolve(config.dataset)
    if resume and not online:
        check_fingerprint(run_dir, config, info, dataset)
    if not online:
        new_config = with_env(new_config, dataset)
    changed = new_config != config
    if resume or changed:  # (a fresh run from start_run was checked there)
        meta = info.get("dataset_metadata") if dataset is None else dataset.metadata
        check_buildable(new_config, spec, meta)  # before the run's config is touched
    config = new_config
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    module = get_algo(config.algo)

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    agent = module.Agent(config, spec).to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    stages = plan_stages(agent, config)

    start = 0
    found = None
    trainer: dict[str, Any] = {}
    if resume:
        clean_partial(run_dir)
        found = load_newest_intact(run_dir, device)
    if found is not None:
        ckpt, tensors, trainer, problems = found
        for problem in problems:
            say(f"skipping checkpoint: {problem}")
        if problems:
            say(f"resuming from the newest intact checkpoint, {ckpt.name}")
        load_weights(agent, tensors, ckpt)
        agent.load_train_state_dict(trainer["agent"])
        set_rng_state(trainer["rng"], generator)
        start = int(trainer["step"])
        if start > config.steps:
            raise ConfigError(
                f"{run_dir}: the run is at step {start:,} already; --steps must be >= {start}"
            )
    else:
        if resume:
            say(
                f"{run_dir}: no checkpoint to resume from (a run saves every "
                f"{config.save_every:,} steps and at its end); starting from step 0"
            )
        if not online:
            agent.fit_normalizers(dataset)
    # (Runs of under 1,000 steps, tests and demos, restart in moments: no word for them.)
    if start == 0 and config.save_every >= config.steps >= 1_000:
        say(
            f"save_every {config.save_every:,} >= steps {config.steps:,}: the only checkpoint "
            "is the final one, so a run stopped before it starts again from step 0 "
            "(--set save_every=N to save sooner)"
        )
    if changed:
        RunDir(run_dir).write_config(config)
    agent.train()
    selection = Selection(run_dir, agent, config, resume_step=start if resume else None)
    final_evaluated = any(e["step"] == config.steps for e in selection.evals)
    can_evaluate = bool(config.env_id)
    if start >= config.steps and (final_evaluated or not can_evaluate):
        say(
            f"{run_dir}: finished ({start:,} of {config.steps:,} steps); nothing to do "
            "(raise the budget with --steps N to train on)"
        )
        return {}
    if not can_evaluate:
        say(
            f"{config.dataset}: its metadata names no environment, so this run trains without "
            "evaluation (give one with --set env_id=ENV_ID, now or with --resume)"
        )
    if online:

        def policy(obs: torch.Tensor, goal: Any, gen: torch.Generator | None) -> torch.Tensor:
            return explore_on(agent, obs, goal, gen)

        columns = agent.replay_columns if isinstance(agent, Remembering) else None
        batches: Any = OnlineSource(policy, config, spec, device, columns=columns)
        if "source" in trainer:
            batches.load_state_dict(trainer["source"])
        if isinstance(agent, Remembering):
            agent.attach_buffer(batches.buffer)
    else:
        batches = agent.batch_sampler(dataset, device)
    sweep = Sweep(config.eval_sweep, config, spec, device) if config.eval_sweep else None
    metrics = Metrics(run_dir, resume_step=start if resume else None)
    protect: tuple[str, ...] = tuple(
        checkpoint_name(e["step"]) for e in selection.choices().values()
    )

    def save(step: int) -> None:
        save_checkpoint(
            run_dir,
            step,
            agent,
            {
                "agent": agent.train_state_dict(),
                "rng": rng_state(generator),
                **({"source": batches.state_dict()} if online else {}),
            },
            keep=config.keep_checkpoints,
            protect=protect,
        )

    # The selection metric's mean over the steps since the previous evaluation.
    window = {"sum": 0.0, "count": 0}

    def run_eval(step: int) -> dict[str, Any]:
        nonlocal protect
        # The checkpoint first: whatever evaluation does, the model at `step` is on disk, and
        # whichever evaluation is selected later can be loaded.
        save(step)
        if not can_evaluate:
            return {}
        agent.eval()
        result = evaluate(
            agent,
            config,
            config.eval_episodes,
            eval_seed(config.seed, "training"),
            device,
            info.get("dataset_metadata"),
            progress=progress,
            sweep=sweep,
        )
        agent.train()
        # Online runs: where the evaluation stands in environment steps too (learning curves
        # are drawn against them).
        where = {"env_steps": batches.env_steps} if online else {}
        metrics.log({"step": step, **where, **_flatten("eval/", result)})
        mean = window["sum"] / window["count"] if window["count"] else None
        window["sum"], window["count"] = 0.0, 0
        selection.add(step, result, mean)
        protect = selection.write(run_dir / "checkpoints")
        return result

    last_eval: dict[str, Any] = {}
    sums: dict[str, float] = {}
    count = 0
    t_last = time.perf_counter()
    if progress and getattr(config, "compile", False) and device.type == "cpu":
        # Otherwise the bar sits at 0 for a minute or more on a first run, looking stuck.
        say(
            f"{config.algo}: the first steps compile graphs with torch.compile (up to a few "
            "minutes the first time; cached for later runs; --set compile=false to skip)"
        )
    bar = None
    step = start
    # bf16 products where the run asks for them (diffrl/precision.py; checked when it started).
    with _StopSignals() as stop, precision_scope(config.precision, device):
        try:
            for name, first, last, batch_size in stages:
                if last <= start:
                    continue  # finished before the checkpoint we resume from
                if isinstance(agent, Staged):
                    agent.begin_stage(
                        name,
                        run_dir=run_dir,
                        progress=progress,
                        stop=lambda: stop.signum is not None,
                    )
                    if stop.signum is not None:
                        break  # asked to stop during the stage's preparation
                bar = progress_bar(
                    total=last - first + 1,
                    initial=max(0, start - first + 1),
                    desc=f"{config.algo} [{name}]" if len(stages) > 1 else config.algo,
                    unit="step",
                    dynamic_ncols=True,
                    disable=not progress,
                )
                for step in range(max(first, start + 1), last + 1):
                    threads_tick()  # threads follow the machine's load (diffrl/runtime.py)
                    out = agent.update(batches.sample(batch_size, generator))
                    for key, value in out.items():
                        sums[key] = sums.get(key, 0.0) + value
                    if selection.metric in out:
                        window["sum"] += out[selection.metric]
                        window["count"] += 1
                    count += 1
                    bar.update(1)
                    if step % config.log_every == 0 or step == last:
                        now = time.perf_counter()
                        record = {"step": step, **{k: v / count for k, v in sums.items()}}
                        record["steps_per_second"] = count / max(now - t_last, 1e-9)
                        if online:
                            record.update(batches.progress())
                        metrics.log(record)
                        # The algorithm's "loss" if it reports one, else its first metric.
                        shown = "loss" if "loss" in record else next(iter(out), None)
                        postfix = {}
                        if shown is not None and shown in record:
                            postfix[shown] = f"{record[shown]:.4g}"
                        if online:
                            postfix["env_steps"] = f"{record['env_steps']:,}"
                            if "episode_return" in record:
                                postfix["return"] = f"{record['episode_return']:.4g}"
                        if postfix:
                            bar.set_postfix(postfix, refresh=False)  # drawn at the next redraw
                        sums, count, t_last = {}, 0, now
                    if stop.signum is not None:
                        break
                    if step == config.steps:
                        continue  # the final checkpoint and evaluation follow the loop
                    if config.eval_every and step % config.eval_every == 0:
                        last_eval = run_eval(step)
                    elif step % config.save_every == 0:
                        save(step)
                bar.close()
                if stop.signum is not None:
                    break
            if stop.signum is not None:
                if step > start:
                    save(step)
                raise TrainingInterrupted(run_dir, step, stop.signum)
            last_eval = run_eval(config.steps)
        finally:
            if bar is not None:
                bar.close()
            metrics.close()
            if online:
                batches.close()
    return last_eval
