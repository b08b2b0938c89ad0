"""Run directories: creating, checking, loading; metrics, checkpoint selection. No training.

Run directory layout:
    config.json        the resolved config (algorithm defaults <- dataset preset <- CLI)
    run.json           data spec (dims, action bounds), dataset metadata and fingerprint, versions
    metrics.jsonl      one JSON object per logged step ({"step": ..., "loss": ...}); evaluation
                       results as {"step": ..., "eval/...": ...}
    selection.json     every evaluation's score (and selection metric); `best` / `selected`
    checkpoints/       step_XXXXXXXX/{model.safetensors, trainer.safetensors, trainer.json,
                       manifest.json}; `latest` / `best` / `selected` pointers (checkpoint.py)
    tb/                TensorBoard events (when tensorboard is installed)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import diffrl
from diffrl import envs
from diffrl.algos import DataSpec, get_algo
from diffrl.checkpoint import (
    TRAINER_JSON,
    CheckpointError,
    checkpoint_name,
    list_checkpoints,
    load_model,
    resolve_checkpoint,
    verify_checkpoint,
)
from diffrl.config import apply_overrides, from_dict, renamed, to_dict
from diffrl.datasets import resolve
from diffrl.errors import ConfigError, DiffrlError
from diffrl.evaluate import eval_score
from diffrl.fileio import atomic_write_json, atomic_write_text, fsync_dir
from diffrl.precision import check_precision

# Evaluation seeds: a run's seed plus an offset per purpose, so that no two purposes share
# episodes (episode i of an evaluation is seeded offset + seed + i).
EVAL_SEED_OFFSETS = {
    "training": 10_000,  # the evaluations during training (model selection, curves)
    "eval": 20_000,  # `diffrl eval` and `Run.evaluate` without --seed
    "final": 30_000,  # `diffrl report --final-episodes N`: never seen by training's choices
}


def eval_seed(seed: int, purpose: str) -> int:
    """The first episode seed of an evaluation for `purpose` (EVAL_SEED_OFFSETS)."""
    return int(seed) + EVAL_SEED_OFFSETS[purpose]


class RunDir:
    """A run directory's files: the only code that knows their names and formats.

    Sweep, report, plotting, branch, the training loop and the CLI ask it; a file read here that
    is missing or cut short (a run killed mid-write) reads as nothing rather than as an error,
    except the config, without which a directory is not a run.
    """

    CONFIG = "config.json"  # the resolved config
    INFO = "run.json"  # data spec, dataset metadata and fingerprint, versions
    METRICS = "metrics.jsonl"  # one JSON object per logged step
    SELECTION = "selection.json"  # every evaluation's score and selection metric
    EVAL = "eval.json"  # the latest `diffrl eval` record
    TRIAL = "trial.json"  # a sweep's record of the trial run here (starts, worker, label)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def is_run(cls, folder: str | Path, files: Any = None) -> bool:
        """Whether `folder` holds a run that has started logging (config beside metrics);
        `files`: the folder's file names where the caller listed them already."""
        names = set(files) if files is not None else {p.name for p in Path(folder).iterdir()}
        return cls.CONFIG in names and cls.METRICS in names

    def has_config(self) -> bool:
        return (self.path / self.CONFIG).exists()

    def has_checkpoint(self) -> bool:
        return bool(list_checkpoints(self.path)) or (self.path / "checkpoints" / "latest").exists()

    def checkpoint_step(self) -> int:
        """The step of the newest checkpoint (0 without one)."""
        steps = list_checkpoints(self.path)
        return max(steps) if steps else 0

    def raw_config(self) -> dict[str, Any]:
        """The config as stored (a dict; `load_config` builds the dataclass)."""
        path = self.path / self.CONFIG
        if not path.exists():
            raise DiffrlError(f"{self.path}: not a diffrl run directory (no {self.CONFIG})")
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DiffrlError(f"{self.path}: cannot read the run's config ({exc})") from None

    def write_config(self, config: Any) -> None:
        """Store a config dataclass (or a plain dict), atomically."""
        data = config if isinstance(config, dict) else to_dict(config)
        atomic_write_json(self.path / self.CONFIG, data)

    def metrics(self) -> list[dict[str, Any]]:
        """Every logged record, in order (a line cut short by a kill skipped); [] if none."""
        path = self.path / self.METRICS
        rows = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def last_logged_step(self) -> int:
        """The newest logged step (the metrics file's tail, read cheaply), else the newest
        checkpoint's."""
        path = self.path / self.METRICS
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().decode(errors="replace").strip().splitlines()
            for line in reversed(lines):
                try:
                    return int(json.loads(line)["step"])
                except (ValueError, KeyError, TypeError):
                    continue
        except OSError:
            pass
        return self.checkpoint_step()

    def evaluations(self) -> list[dict[str, Any]]:
        """The recorded evaluations [{"step", "score", ...}] (from checkpoint selection)."""
        try:
            data = json.loads((self.path / self.SELECTION).read_text())
            return list(data.get("evaluations", []))
        except (OSError, ValueError, AttributeError):
            return []

    def selection_choices(self) -> dict[str, dict[str, Any]]:
        """The checkpoints that selection chose ({"best": {...}, "selected": {...}})."""
        try:
            data = json.loads((self.path / self.SELECTION).read_text())
            return dict(data.get("choices", {}))
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def write_eval(self, record: dict[str, Any]) -> Path:
        """Store a `diffrl eval` record, atomically; its path."""
        atomic_write_json(self.path / self.EVAL, record)
        return self.path / self.EVAL

    def trial(self) -> dict[str, Any]:
        """A sweep's trial record ({} if there is none or it cannot be read)."""
        try:
            data = json.loads((self.path / self.TRIAL).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write_trial(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / self.TRIAL, record)

    def final_eval_file(self, episodes: int, multi_task: bool = False) -> Path:
        """Where `diffrl report --final-episodes N` caches its evaluation of the run."""
        return self.path / f"final_eval_{episodes}{'_multi' if multi_task else ''}.json"

    def forget_unsaved(self) -> None:
        """Remove what a run that never saved a checkpoint logged (it starts afresh)."""
        for name in (self.METRICS, self.SELECTION, self.EVAL):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / "tb", ignore_errors=True)
        shutil.rmtree(self.path / "checkpoints", ignore_errors=True)


def say(message: str) -> None:
    """A line for the person at the terminal (stderr, above any progress bar)."""
    tqdm.write(message, file=sys.stderr)


def plan_stages(agent: Any, config: Any) -> list[tuple[str, int, int, int]]:
    """(name, first step, last step, batch size) of each training stage.

    `agent.stages() -> [(name, steps, batch_size), ...]` (e.g. a behaviour model, then a
    critic and an energy model; by default one stage); their steps add up to `config.steps`.
    """
    listed = agent.stages()
    out, first = [], 1
    for name, n, batch_size in listed:
        out.append((name, first, first + n - 1, batch_size or config.batch_size))
        first += n
    if first - 1 != config.steps:
        raise ConfigError(f"{config.algo}: stages add up to {first - 1} steps, not {config.steps}")
    return out


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; a clear error for an unavailable cuda."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available here")
    if name == "mps" and not (torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but Apple's MPS is not available here")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device '{name}': this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def make_config(algo: str, dataset: str, overrides: dict[str, Any] | None = None) -> Any:
    """Algorithm defaults <- the dataset's preset <- `overrides` (CLI flags and --set).

    An online run has no dataset (''): its preset is the environment's (`overrides['env_id']`).
    """
    module = get_algo(algo)
    overrides = dict(overrides or {})
    config = module.Config(algo=algo, dataset=dataset)
    config = apply_overrides(config, module.presets(dataset or str(overrides.get("env_id", ""))))
    return apply_overrides(config, overrides)


def is_online(config: Any) -> bool:
    """An online run: no dataset; data come from stepping `env_id`."""
    return not config.dataset


def _jsonable(meta: dict) -> dict:
    out = {}
    for k, v in meta.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = str(v)
    return out


def default_run_dir(config: Any) -> Path:
    source = config.dataset or config.env_id
    name = Path(source).stem if Path(source).suffix else source
    name = name.replace("/", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / config.algo / f"{name}-s{config.seed}-{stamp}"


def with_env(config: Any, dataset: Any) -> Any:
    """`config` with env_id filled in from the dataset's metadata or name where it is ''."""
    if config.env_id:
        return config
    env_id = dataset.metadata.get("env_id") or envs.gym_id_for(config.dataset) or ""
    return dataclasses.replace(config, env_id=str(env_id))


def check_setting(config: Any, spec: DataSpec, metadata: dict | None) -> None:
    """Where a run meets an environment (a start, a resume, an evaluation with other keys):
    the environment fits the data and the evaluation goal fits the environment."""
    from diffrl.evaluate import check_eval_goal

    if config.env_id:
        envs.check_env(config.env_id, spec.obs_dim, spec.act_dim)
    check_eval_goal(config, metadata)


def check_buildable(config: Any, spec: DataSpec, metadata: dict | None = None) -> None:
    """Everything that can fail before the first step, checked before anything is written:
    the device, the environment and evaluation goal, the agent (its networks and settings) and
    its stages. `metadata`: the dataset's (eval_goal=dataset reads it)."""
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    check_setting(config, spec, metadata)
    agent = get_algo(config.algo).Agent(config, spec).to(device)
    plan_stages(agent, config)


def start_run(config: Any, run_dir: str | Path | None = None) -> tuple[Path, Any]:
    """Create a run directory for a fresh run; return it and the dataset (loaded once).

    The config, device, environment and agent are checked first, so a run that cannot start
    leaves nothing behind. A directory that holds a run's files but no checkpoint (a run that
    failed at start-up) is reused; one with a checkpoint is refused.
    """
    if is_online(config):
        if not config.env_id:
            raise ConfigError("a run needs a dataset, or an environment to learn in online (--env)")
        dataset = None
        spec = DataSpec.from_env(config.env_id)
    else:
        dataset = resolve(config.dataset)
        config = with_env(config, dataset)
        spec = DataSpec.from_dataset(dataset)
    check_buildable(config, spec, None if dataset is None else dataset.metadata)
    path = Path(run_dir) if run_dir is not None else default_run_dir(config)
    run = RunDir(path)
    if run.has_checkpoint():
        raise DiffrlError(
            f"{path}: already holds a run; continue it with `diffrl train --resume {path}` "
            "or choose another --run-dir"
        )
    if run.has_config():
        say(f"{path}: holds a run that never saved a checkpoint; starting it afresh")
        run.forget_unsaved()
    path.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    data: dict[str, Any] = (
        {"online": {"env_id": config.env_id}}
        if dataset is None
        else {
            "dataset_metadata": _jsonable(dataset.metadata),
            "dataset_stats": _jsonable(dataset.stats()),
            "dataset_fingerprint": dataset.fingerprint(),
        }
    )
    atomic_write_json(
        path / RunDir.INFO,
        {
            "data_spec": dataclasses.asdict(spec),
            **data,
            "diffrl_version": diffrl.__version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "created": datetime.now().isoformat(timespec="seconds"),
        },
    )
    return path, dataset


def check_fingerprint(run_dir: Path, config: Any, info: dict, dataset: Any) -> None:
    """Refuse to resume on data that differs from the data the run started on."""
    recorded = info.get("dataset_fingerprint")
    if not recorded:
        return  # a run made before fingerprints were recorded
    now = dataset.fingerprint()
    if now != recorded:

        def text(fp: dict) -> str:
            return (
                f"{fp['transitions']:,} transitions, {fp['episodes']:,} episodes, "
                f"rows {fp['sha256_rows']}"
            )

        raise DiffrlError(
            f"{run_dir}: the dataset '{config.dataset}' changed since the run started "
            f"(then: {text(recorded)}; now: {text(now)}); restore that data or start a new run"
        )


def resume_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """`config` with `overrides` that leave the model as it is; one line for any other key."""
    fields = {f.name for f in dataclasses.fields(config)}
    allowed = type(config).RESUME_KEYS & fields
    overrides = renamed(type(config), overrides)  # an old name must not slip past the check
    for key in overrides:
        if key not in allowed and key in fields:
            raise ConfigError(
                f"--resume cannot change '{key}': it changes the model or how it is trained; "
                f"start a new run instead (keys a resume may change: {', '.join(sorted(allowed))})"
            )
    return apply_overrides(config, overrides)


def load_config(run_dir: str | Path) -> Any:
    """The config of an existing run directory (its config.json, old key names read too)."""
    raw = RunDir(run_dir).raw_config()
    return from_dict(get_algo(raw.get("algo", "")).Config, raw)


def load_run(run_dir: str | Path) -> tuple[Any, DataSpec, dict]:
    """(config, data spec, run info) of an existing run directory."""
    path = Path(run_dir)
    config = load_config(path)
    try:
        info = json.loads((path / RunDir.INFO).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DiffrlError(f"{path}: cannot read the run's config ({exc})") from None
    spec_d = info["data_spec"]
    spec = DataSpec(
        obs_dim=spec_d["obs_dim"],
        act_dim=spec_d["act_dim"],
        action_low=tuple(spec_d["action_low"]),
        action_high=tuple(spec_d["action_high"]),
    )
    return config, spec, info


# Keys a branch keeps: another algorithm or other data is another run, not a branch of this one.
BRANCH_FIXED = ("algo", "dataset")


def branch_run(
    src: str | Path, dst: str | Path, at: str = "latest", overrides: dict[str, Any] | None = None
) -> int:
    """Start run directory `dst` from `src`'s checkpoint `at`, with `overrides` for what follows.

    `dst` gets that checkpoint (weights and trainer state), `src`'s config with `overrides`,
    its history up to the checkpoint (metrics, evaluations) and the caches an agent keeps in the
    run directory (`*.safetensors`, e.g. tables made from a first stage's weights: fingerprinted,
    so one that no longer fits is made again). `diffrl train --resume dst` trains on from there;
    `src` is not changed. Use it where the steps up to the checkpoint are the same under the new
    settings (e.g. a first training stage when only a later one changes). Returns the step.
    """
    src, dst = Path(src), Path(dst)
    config, spec, info = load_run(src)
    ckpt = resolve_checkpoint(src, at)
    if ckpt is None:
        raise DiffrlError(
            f"{src}: has no checkpoint yet"
            if not list_checkpoints(src)
            else f"{src}: no checkpoint is '{at}' yet; use --checkpoint latest or a step"
        )
    step = int(ckpt.name.split("_")[1])
    if not (ckpt / TRAINER_JSON).exists():
        raise DiffrlError(
            f"{ckpt}: holds weights only (no trainer state), so training cannot go on from it; "
            "branch from a checkpoint saved while the run trained"
        )
    verify_checkpoint(ckpt)
    overrides = renamed(type(config), dict(overrides or {}))
    for key in BRANCH_FIXED:
        if key in overrides:
            raise ConfigError(
                f"a branch keeps the run's {key} ('{getattr(config, key)}'); "
                "start a new run for another one"
            )
    new = apply_overrides(config, overrides)
    if new.steps <= step:
        raise ConfigError(
            f"the branch starts at step {step:,} and its config has steps={new.steps:,}: "
            "give it more (--set steps=N)"
        )
    # The new settings must fit the checkpoint's weights and make a run that can train.
    agent = get_algo(new.algo).Agent(new, spec)
    tensors, _ = load_model(ckpt, torch.device("cpu"))
    misfit = weights_misfit(agent, tensors)
    if misfit:
        # Name the keys that change the networks, each tried alone (not every key given).
        module = get_algo(new.algo)
        culprits = [
            k
            for k, v in overrides.items()
            if weights_misfit(module.Agent(apply_overrides(config, {k: v}), spec), tensors)
        ] or list(overrides)
        raise ConfigError(
            f"--set {', '.join(sorted(culprits))}: the networks no longer fit {ckpt}'s weights "
            f"({misfit}); a branch can change how training goes on, not the model"
        )
    plan_stages(agent, new)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DiffrlError(f"{dst}: already exists and is not empty; choose another directory")

    # Everything is made in a hidden directory beside dst and renamed at the end: a branch
    # killed half-way leaves no run directory that looks whole.
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.branch.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, tmp / "checkpoints" / ckpt.name)
    (tmp / "checkpoints" / "latest").write_text(ckpt.name + "\n")
    atomic_write_json(tmp / RunDir.CONFIG, to_dict(new))
    origin = {"run": str(src), "step": step, "set": {k: str(v) for k, v in overrides.items()}}
    atomic_write_json(tmp / RunDir.INFO, {**info, "branched_from": origin})
    for cache in src.glob("*.safetensors"):
        # Caches are replaced by rename, never written in place, so a hard link is safe.
        try:
            os.link(cache, tmp / cache.name)
        except OSError:
            shutil.copy2(cache, tmp / cache.name)
    if (src / RunDir.METRICS).exists():
        (tmp / RunDir.METRICS).write_text(metrics_until(src / RunDir.METRICS, step))
    if (src / RunDir.SELECTION).exists():
        try:
            sel = json.loads((src / RunDir.SELECTION).read_text())
        except (OSError, json.JSONDecodeError):
            sel = {}
        evals = [e for e in sel.get("evaluations", []) if e.get("step", 0) <= step]
        if evals:
            # Only the evaluations: the next one the branch makes chooses best / selected
            # again among them (their checkpoints, but for this one, stay in src).
            atomic_write_json(tmp / RunDir.SELECTION, {"evaluations": evals})
    (tmp / "train.log").write_text(
        f"branched from {src} at step {step} with {json.dumps(origin['set'])}\n"
    )
    fsync_dir(tmp)
    if dst.exists():
        dst.rmdir()  # empty, checked above
    os.rename(tmp, dst)
    fsync_dir(dst.parent)
    return step


def load_agent(
    run_dir: str | Path,
    which: str = "latest",
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
) -> tuple[Any, Any, dict, int]:
    """(agent, config, run info, step) restored from a checkpoint, ready to act."""
    config, spec, info = load_run(run_dir)
    if overrides:
        changed = apply_overrides(config, overrides)
        if (changed.env_id, changed.eval_goal) != (config.env_id, config.eval_goal):
            check_setting(changed, spec, info.get("dataset_metadata"))
        config = changed
    dev = resolve_device(device or config.device)
    check_precision(config.precision, dev)
    module = get_algo(config.algo)
    agent = module.Agent(config, spec).to(dev)
    ckpt = resolve_checkpoint(run_dir, which)
    if ckpt is None:
        if which == "selected" and not agent.selection_metric:
            raise DiffrlError(
                f"{config.algo} has no offline selection rule, so no checkpoint is 'selected'; "
                "use --checkpoint latest, best or a step"
            )
        if not list_checkpoints(run_dir):
            raise DiffrlError(f"{run_dir}: has no checkpoint yet")
        raise DiffrlError(
            f"{run_dir}: no checkpoint is '{which}' yet (no evaluation has chosen one); "
            "use --checkpoint latest or a step"
        )
    try:
        tensors, step = load_model(ckpt, dev)
    except CheckpointError as exc:
        others = [s for s in list_checkpoints(run_dir) if checkpoint_name(s) != ckpt.name]
        hint = f"; other checkpoints: steps {', '.join(map(str, others))} (--checkpoint STEP)"
        raise CheckpointError(str(exc) + (hint if others else "")) from None
    load_weights(agent, tensors, ckpt)
    agent.eval()
    return agent, config, info, step


def weights_misfit(agent: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> str:
    """What keeps `tensors` from loading into `agent` ('' when they fit): names or shapes."""
    own = agent.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shapes = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    parts = [
        f"{what} {names[:3]}"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("shapes", shapes))
        if names
    ]
    return ", ".join(parts)


def load_weights(agent: torch.nn.Module, tensors: dict, ckpt: Path) -> None:
    misfit = weights_misfit(agent, tensors)
    if misfit:
        raise DiffrlError(f"{ckpt}: weights do not match the config ({misfit})")
    agent.load_state_dict(tensors)


def metrics_until(path: Path, step: int) -> str:
    """metrics.jsonl's lines logged at or before `step` (a line cut short by a kill dropped)."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
        except json.JSONDecodeError:
            continue
    return "".join(kept)


class Metrics:
    """metrics.jsonl (+ TensorBoard when installed)."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / RunDir.METRICS
        if resume_step is not None and self.path.exists():
            # Drop what was logged after the checkpoint we resume from: those steps are redone.
            atomic_write_text(self.path, metrics_until(self.path, resume_step))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a")  # noqa: SIM115 - closed in close()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
        except ImportError:
            pass

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


class Selection:
    """selection.json: every evaluation with its score and the agent's selection metric.

    Two checkpoints are kept and named in `checkpoints/`: `best` (the highest evaluation
    score, "online" selection) and, for `Selecting` agents (a `selection_metric` such as a
    behaviour-cloning loss), `selected` (the evaluation whose window mean of that metric ranks
    `selection_rank`-th smallest, the official "offline" rule).
    """

    def __init__(self, run_dir: Path, agent: Any, config: Any, resume_step: int | None) -> None:
        self.path = run_dir / RunDir.SELECTION
        self.metric = agent.selection_metric
        self.top_k = int(agent.selection_rank)
        self.evals: list[dict[str, Any]] = []
        if resume_step is not None and self.path.exists():
            try:
                old = json.loads(self.path.read_text()).get("evaluations", [])
            except (OSError, json.JSONDecodeError):
                old = []
            self.evals = [e for e in old if e.get("step", 0) <= resume_step]

    def add(self, step: int, result: dict[str, Any], metric_mean: float | None) -> None:
        self.evals = [e for e in self.evals if e["step"] != step]
        entry: dict[str, Any] = {"step": step, "score": eval_score(result)}
        if self.metric:
            entry[self.metric] = metric_mean
        self.evals.append(entry)

    def choices(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        scored = [e for e in self.evals if e["score"] is not None]
        if scored:
            out["best"] = max(scored, key=lambda e: e["score"])
        if self.metric:
            ranked = sorted(
                (e for e in self.evals if e.get(self.metric) is not None),
                key=lambda e: e[self.metric],
            )
            if ranked:
                out["selected"] = ranked[min(self.top_k, len(ranked) - 1)]
        return out

    def write(self, ckpt_root: Path) -> tuple[str, ...]:
        """Write selection.json and the pointers; return the checkpoint names to protect."""
        choices = self.choices()
        rule = {"best": "highest evaluation score"}
        if self.metric:
            rule["selected"] = f"{self.metric} window mean ranked {self.top_k} (0 = smallest)"
        atomic_write_json(self.path, {"rules": rule, "choices": choices, "evaluations": self.evals})
        for name, entry in choices.items():
            if (ckpt_root / checkpoint_name(entry["step"])).exists():
                atomic_write_text(ckpt_root / name, checkpoint_name(entry["step"]) + "\n")
        return tuple(checkpoint_name(e["step"]) for e in choices.values())
