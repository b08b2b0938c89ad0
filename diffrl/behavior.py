"""Behaviour policies for any Gymnasium environment: SAC (stable-baselines3) with snapshots.

`diffrl behavior train ENV_ID` trains SAC and keeps, in its run directory,
    step_XXXXXXX.zip   a snapshot at the first episode end after every `snapshot_every` steps
                       (stable-baselines3's format; optimiser state included)
    evals.csv          step, mean/std return of deterministic and stochastic episodes, seconds
    transitions/       every environment step the run took, in order, as chunk_A_B.npz files
                       (steps A+1..B): observations, actions, rewards, next_observations,
                       terminals, timeouts; a medium-replay dataset is a prefix of them
    state.json         the commit point: the snapshots that are complete
    config, metrics    as in every diffrl run (`diffrl.run.RunDir`): the run's settings, and
                       each evaluation as
                       {"step": ..., "eval/return_mean": ..., ...} (TensorBoard when installed)
Snapshots are taken at episode ends, so no episode straddles a snapshot and a resumed run starts
a fresh episode without cutting one. A killed run resumes from its last snapshot: the model
(with optimiser and entropy coefficient) is reloaded and the replay buffer refilled from the
recorded transitions, so nothing the run learned from is lost.

Snapshots are read without unpickling. stable-baselines3's own `SAC.load` unpickles part of a
zip (its spaces, schedules and last observations are cloudpickled), so a snapshot from someone
else could run code. diffrl instead builds a fresh SAC and takes from the zip only what resuming
needs: the weights and optimiser states (`set_parameters`, which reads them with
`torch.load(weights_only=True)`), the entropy coefficient (the same) and the plain-JSON counters
and hyperparameters (`num_timesteps`, `gamma`, `tau`, ...). `load_sac` below.

stable-baselines3 is an optional dependency: `pip install -e ".[behavior]"`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffrl.envs import make_env
from diffrl.errors import DiffrlError
from diffrl.fileio import atomic_write, atomic_write_json, atomic_write_text
from diffrl.progress import bar as progress_bar

EVAL_FIELDS = ["step", "det_mean", "det_std", "stoch_mean", "stoch_std", "seconds"]
KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def _require_sb3():
    try:
        import stable_baselines3
    except ImportError:
        raise DiffrlError(
            "behaviour policies need stable-baselines3: pip install -e '.[behavior]'"
        ) from None
    return stable_baselines3


@dataclass(frozen=True)
class BehaviorConfig:
    env_id: str
    seed: int = 0
    steps: int = 1_000_000
    snapshot_every: int = 20_000
    eval_episodes: int = 5
    learning_starts: int = 10_000
    buffer_size: int = 1_000_000
    threads: int = 1
    learning_rate: float = 3e-4  # SB3's default; lower it to fine-tune a good snapshot


# Hyperparameters read back from a snapshot's plain-JSON `data` (never its pickled entries).
_SAC_HYPERPARAMETERS = (
    "buffer_size",
    "learning_starts",
    "batch_size",
    "tau",
    "gamma",
    "gradient_steps",
    "ent_coef",
    "target_entropy",
    "target_update_interval",
)
_SAC_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")


def load_sac(sb3: Any, path: Path, env: Any, learning_rate: float, **overrides: Any) -> Any:
    """A SAC model restored from an SB3 snapshot zip without unpickling anything in it.

    `overrides` (e.g. learning_starts, buffer_size from diffrl's config) win over the
    snapshot's own values. A zip that is not such a snapshot is a one-line DiffrlError.
    """
    import torch

    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
            names = zf.namelist()
            variables = (
                torch.load(
                    io.BytesIO(zf.read("pytorch_variables.pth")),
                    map_location="cpu",
                    weights_only=True,
                )
                if "pytorch_variables.pth" in names
                else {}
            )
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError) as exc:
        raise DiffrlError(f"{path}: not a stable-baselines3 snapshot ({exc})") from None
    except Exception:  # torch's weights_only refusal: a pickled object in the file
        raise DiffrlError(f"{path}: refused: pytorch_variables.pth is not plain tensors") from None

    def plain(key: str) -> Any:
        value = data.get(key)
        return None if isinstance(value, dict) and ":serialized:" in value else value

    kwargs = {k: plain(k) for k in _SAC_HYPERPARAMETERS if plain(k) is not None}
    kwargs.update(overrides)
    model = sb3.SAC(
        "MlpPolicy",
        env,
        learning_rate=learning_rate,
        device="cpu",
        verbose=0,
        policy_kwargs=plain("policy_kwargs") or None,
        **kwargs,
    )
    try:
        model.set_parameters(str(path), exact_match=True, device="cpu")
    except Exception as exc:
        raise DiffrlError(f"{path}: its weights do not fit a fresh SAC ({exc})") from None
    for name, value in variables.items():  # log_ent_coef (or a fixed ent_coef_tensor)
        getattr(model, name).data.copy_(value)
    for key in _SAC_COUNTERS:
        if isinstance(plain(key), int):
            setattr(model, key, plain(key))
    return model


def snapshot_name(step: int) -> str:
    return f"step_{step:07d}.zip"


def _atomic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def read_transitions(run_dir: str | Path, up_to: int | None = None) -> dict[str, np.ndarray]:
    """All recorded transitions (steps 1..up_to) of a behaviour run, concatenated."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    up_to = state["steps_done"] if up_to is None else up_to
    parts: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    for chunk in state["chunks"]:
        if chunk["start"] >= up_to:
            break
        with np.load(run_dir / "transitions" / chunk["file"]) as data:
            n = min(chunk["end"], up_to) - chunk["start"]
            for k in KEYS:
                parts[k].append(data[k][:n])
    if not parts["observations"]:
        raise DiffrlError(f"{run_dir}: no transitions recorded up to step {up_to}")
    return {k: np.concatenate(v) for k, v in parts.items()}


def read_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "state.json"
    if not path.exists():
        raise DiffrlError(f"{run_dir}: not a behaviour run (no state.json)")
    return json.loads(path.read_text())


def read_evals(run_dir: str | Path) -> list[dict[str, float]]:
    path = Path(run_dir) / "evals.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _write_evals(run_dir: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EVAL_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: (int(row[k]) if k == "step" else round(row[k], 1)) for k in EVAL_FIELDS}
        )
    atomic_write_text(run_dir / "evals.csv", buf.getvalue())


def evaluate_policy(model: Any, env_id: str, episodes: int, seed: int) -> dict[str, float]:
    """Mean/std return of `episodes` deterministic and `episodes` stochastic episodes."""
    env = make_env(env_id)
    out: dict[str, float] = {}
    for name, deterministic in (("det", True), ("stoch", False)):
        returns = []
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done, total = False, 0.0
            while not done:
                action, _ = model.predict(obs, deterministic=deterministic)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        out[f"{name}_mean"] = float(np.mean(returns))
        out[f"{name}_std"] = float(np.std(returns))
    env.close()
    return out


class BehaviorTrainer:
    """SAC training with episode-aligned snapshots, evaluation and full transition recording."""

    def __init__(self, run_dir: str | Path, config: BehaviorConfig | None = None) -> None:
        self.run_dir = Path(run_dir)
        state_path = self.run_dir / "state.json"
        if state_path.exists():
            self.state = read_state(self.run_dir)
            saved = BehaviorConfig(**self.state["config"])
            if config is not None and config.env_id != saved.env_id:
                raise DiffrlError(
                    f"{self.run_dir}: holds a run on {saved.env_id}, not {config.env_id}"
                )
            # On resume only the step budget, the snapshot interval and the learning rate may
            # change (the last two to fine-tune a run from a good snapshot); the rest is the run.
            new = config or saved
            changes = {
                "steps": new.steps,
                "snapshot_every": new.snapshot_every,
                "learning_rate": new.learning_rate,
            }
            self.config = BehaviorConfig(**{**self.state["config"], **changes})
            if self.config.learning_rate != saved.learning_rate:
                self.state.setdefault("learning_rate_changes", []).append(
                    {"step": self.state["steps_done"], "learning_rate": self.config.learning_rate}
                )
        else:
            if config is None:
                raise DiffrlError(f"{self.run_dir}: no behaviour run here to resume")
            self.config = config
            self.state = {
                "config": config.__dict__,
                "steps_done": 0,
                "snapshots": [],
                "chunks": [],
                "resumes": 0,
                "seconds": 0.0,
            }
        self.state["config"] = self.config.__dict__

    # -- bookkeeping ------------------------------------------------------------------------
    def _commit(self) -> None:
        atomic_write_json(self.run_dir / "state.json", self.state)

    def _restore_imported_prefix(self) -> None:
        """Re-create the first chunk of an imported run from its source if it is missing.

        Lets a run directory travel without the (large) prefix that `import_run` copied from a
        folder that stays available, e.g. shared/behavior/.
        """
        source = self.state.get("imported_from")
        chunks = self.state["chunks"]
        if not source or not chunks or (self.run_dir / "transitions" / chunks[0]["file"]).exists():
            return
        path = Path(source) / "transitions.npz"
        if not path.exists():
            raise DiffrlError(
                f"{self.run_dir}: transitions/{chunks[0]['file']} is missing and {path} is not "
                "there to re-create it"
            )
        arrays = _prefix(Path(source), chunks[0]["end"])
        _atomic_npz(self.run_dir / "transitions" / chunks[0]["file"], arrays)

    def _drop_missing_chunks(self) -> None:
        """Forget transition chunks whose files are gone (a run dir that travelled with its
        snapshot but not all its recordings): the model resumes from its snapshot and its replay
        buffer is refilled from the chunks that remain. The gap is recorded in state.json."""
        present = []
        for chunk in self.state["chunks"]:
            if (self.run_dir / "transitions" / chunk["file"]).exists():
                present.append(chunk)
            else:
                self.state.setdefault("dropped_chunks", []).append(chunk)
        if len(present) != len(self.state["chunks"]):
            self.state["chunks"] = present
            self._commit()

    def _clean_orphans(self) -> None:
        """Remove files written after the last commit (a kill between writes)."""
        keep = {s["file"] for s in self.state["snapshots"]}
        for p in self.run_dir.glob("step_*.zip"):
            if p.name not in keep:
                p.unlink()
        chunks = {c["file"] for c in self.state["chunks"]}
        for p in (self.run_dir / "transitions").glob("*"):
            if p.name not in chunks:
                p.unlink()
        evals = [r for r in read_evals(self.run_dir) if r["step"] <= self.state["steps_done"]]
        if (self.run_dir / "evals.csv").exists():
            _write_evals(self.run_dir, evals)

    # -- training ---------------------------------------------------------------------------
    def _make_model(self, sb3: Any, env: Any) -> Any:
        cfg = self.config
        if self.state["snapshots"]:
            last = self.run_dir / self.state["snapshots"][-1]["file"]
            # learning_rate as a constructor argument: SB3 builds its schedule from it, and every
            # gradient step sets the optimisers' rate from that schedule.
            model = load_sac(
                sb3,
                last,
                env,
                cfg.learning_rate,
                learning_starts=cfg.learning_starts,
                buffer_size=cfg.buffer_size,
            )
            self._refill_buffer(model)
            return model
        return sb3.SAC(
            "MlpPolicy",
            env,
            learning_rate=cfg.learning_rate,
            learning_starts=cfg.learning_starts,
            buffer_size=cfg.buffer_size,
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )

    def _refill_buffer(self, model: Any) -> None:
        """Put the last `buffer_size` recorded transitions back into SAC's replay buffer."""
        data = read_transitions(self.run_dir)
        buf = model.replay_buffer
        n = min(len(data["rewards"]), buf.buffer_size)
        rows = slice(len(data["rewards"]) - n, None)
        buf.observations[:n, 0] = data["observations"][rows]
        buf.next_observations[:n, 0] = data["next_observations"][rows]
        buf.actions[:n, 0] = model.policy.scale_action(data["actions"][rows])
        buf.rewards[:n, 0] = data["rewards"][rows]
        buf.dones[:n, 0] = data["terminals"][rows] | data["timeouts"][rows]
        buf.timeouts[:n, 0] = data["timeouts"][rows]
        buf.pos = n % buf.buffer_size
        buf.full = n == buf.buffer_size

    def train(self, progress: bool = True) -> dict[str, Any]:
        """Train (or continue) the behaviour policy; one process at a time (`run_lock`)."""
        from diffrl.fileio import run_lock

        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(self.run_dir):
            return self._train(progress)

    def _train(self, progress: bool) -> dict[str, Any]:
        sb3 = _require_sb3()
        import torch
        from stable_baselines3.common.callbacks import BaseCallback

        cfg = self.config
        torch.set_num_threads(cfg.threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "transitions").mkdir(exist_ok=True)
        self._clean_orphans()
        self._restore_imported_prefix()
        self._drop_missing_chunks()
        if self.state["steps_done"] >= cfg.steps:
            return self.state
        if self.state["steps_done"] > 0:
            self.state["resumes"] += 1
        from diffrl.run import RunDir

        RunDir(self.run_dir).write_config({"algo": "sac-behavior", **cfg.__dict__})
        env = make_env(cfg.env_id)
        model = self._make_model(sb3, env)
        # A fresh episode after every (re)start; seeds differ per resume.
        stream = cfg.seed + 1000 * self.state["resumes"]
        model.set_random_seed(stream)
        env.reset(seed=stream)
        trainer = self
        t_start = time.perf_counter()
        seconds_before = self.state["seconds"]
        rows: dict[str, list] = {k: [] for k in KEYS}
        from diffrl.run import Metrics

        self._metrics = Metrics(self.run_dir, resume_step=self.state["steps_done"])
        bar = progress_bar(
            total=cfg.steps,
            initial=self.state["steps_done"],
            desc=f"sac-behavior [{cfg.env_id}]",
            unit="step",
            disable=not progress,
            dynamic_ncols=True,
        )

        class Recorder(BaseCallback):
            def _on_step(self) -> bool:
                info = self.locals["infos"][0]
                done = bool(self.locals["dones"][0])
                truncated = bool(info.get("TimeLimit.truncated", False))
                rows["observations"].append(np.array(self.model._last_obs[0], np.float32))
                rows["actions"].append(np.array(self.locals["actions"][0], np.float32))
                rows["rewards"].append(float(self.locals["rewards"][0]))
                nxt = info["terminal_observation"] if done else self.locals["new_obs"][0]
                rows["next_observations"].append(np.array(nxt, np.float32))
                rows["terminals"].append(done and not truncated)
                rows["timeouts"].append(done and truncated)
                bar.update(1)
                step = self.model.num_timesteps
                last_snap = trainer.state["steps_done"]
                due = step - last_snap >= cfg.snapshot_every or step >= cfg.steps
                if done and due:
                    trainer._snapshot(self.model, step, rows, seconds_before, t_start)
                    for v in rows.values():
                        v.clear()
                    bar.set_postfix({"return": f"{trainer.state['snapshots'][-1]['det_mean']:.4g}"})
                    return step < cfg.steps
                return True

        # SB3's default logger makes an empty /tmp/SB3-<date> folder at every learn(); diffrl
        # logs through its own metrics file, so SB3 gets a logger that writes nowhere.
        from stable_baselines3.common.logger import Logger

        model.set_logger(Logger(folder=None, output_formats=[]))
        try:
            # learn() counts on from num_timesteps; the budget is a ceiling, snapshots end it.
            model.learn(
                total_timesteps=cfg.steps + 10_000,
                callback=Recorder(),
                reset_num_timesteps=False,
                progress_bar=False,
            )
        finally:
            bar.close()
            env.close()
            self._metrics.close()
        return self.state

    def _snapshot(
        self, model: Any, step: int, rows: dict[str, list], seconds_before: float, t0: float
    ) -> None:
        cfg = self.config
        start = self.state["steps_done"]
        arrays = {
            "observations": np.stack(rows["observations"]),
            "actions": np.stack(rows["actions"]),
            "rewards": np.asarray(rows["rewards"], np.float32),
            "next_observations": np.stack(rows["next_observations"]),
            "terminals": np.asarray(rows["terminals"], bool),
            "timeouts": np.asarray(rows["timeouts"], bool),
        }
        chunk = f"chunk_{start:07d}_{step:07d}.npz"
        _atomic_npz(self.run_dir / "transitions" / chunk, arrays)
        snap = snapshot_name(step)
        tmp = self.run_dir / f".{snap}.tmp"
        model.save(tmp)  # SB3 appends .zip when missing
        written = tmp if tmp.exists() else tmp.with_name(tmp.name + ".zip")
        os.replace(written, self.run_dir / snap)
        result = evaluate_policy(model, cfg.env_id, cfg.eval_episodes, seed=10_000 + step)
        seconds = seconds_before + time.perf_counter() - t0
        evals = [r for r in read_evals(self.run_dir) if r["step"] < step]
        evals.append({"step": step, **result, "seconds": seconds})
        _write_evals(self.run_dir, evals)
        self.state["chunks"].append({"file": chunk, "start": start, "end": step})
        self.state["snapshots"].append({"file": snap, "step": step, **result})
        self.state["steps_done"] = step
        self.state["seconds"] = seconds
        self._commit()
        self._metrics.log(
            {
                "step": step,
                "eval/episodes": cfg.eval_episodes,
                "eval/return_mean": result["det_mean"],
                "eval/return_std": result["det_std"],
                "eval/stochastic_return_mean": result["stoch_mean"],
                "eval/stochastic_return_std": result["stoch_std"],
                "seconds": seconds,
            }
        )


def _prefix(source: Path, step: int) -> dict[str, np.ndarray]:
    """The first `step` transitions of `source`/transitions.npz; a cut episode ends in a timeout."""
    with np.load(source / "transitions.npz") as data:
        arrays = {k: np.asarray(data[k][:step]) for k in KEYS}
    if len(arrays["rewards"]) < step:
        raise DiffrlError(f"{source}/transitions.npz holds fewer than {step} steps")
    arrays["rewards"] = arrays["rewards"].astype(np.float32)
    if not (arrays["terminals"][-1] or arrays["timeouts"][-1]):
        arrays["timeouts"][-1] = True
    return arrays


def import_run(
    source: str | Path, run_dir: str | Path, up_to: int | None = None, env_id: str | None = None
) -> Path:
    """Start a behaviour run from an existing SB3 run in the shared/behavior layout
    (step_XXXXXXX.zip, evals.csv, transitions.npz), so `train` continues it.

    The snapshot at `up_to` (default: the last) becomes this run's first snapshot and the
    transitions up to it its first chunk. A transition file that ends mid-episode has its last
    row marked as a timeout, so every recorded episode is whole.
    """
    source, run_dir = Path(source), Path(run_dir)
    snaps = sorted(source.glob("step_*.zip"))
    if not snaps:
        raise DiffrlError(f"{source}: no step_XXXXXXX.zip snapshots")
    if up_to is not None:
        snaps = [s for s in snaps if int(s.stem.split("_")[1]) <= up_to]
    snap = snaps[-1]
    step = int(snap.stem.split("_")[1])
    if (run_dir / "state.json").exists():
        raise DiffrlError(f"{run_dir}: already holds a behaviour run")
    arrays = _prefix(source, step)
    env_id = env_id or source.name  # shared/behavior/<EnvId>/ names the environment
    try:
        import gymnasium as gym

        gym.spec(env_id)
    except Exception:
        raise DiffrlError(
            f"{source}: cannot tell the environment from the folder name; pass --env-id"
        ) from None
    (run_dir / "transitions").mkdir(parents=True, exist_ok=True)
    chunk = f"chunk_{0:07d}_{step:07d}.npz"
    _atomic_npz(run_dir / "transitions" / chunk, arrays)
    dest = run_dir / snapshot_name(step)
    dest.write_bytes(snap.read_bytes())
    evals = [r for r in read_evals(source) if r["step"] <= step]
    _write_evals(run_dir, evals)
    last = evals[-1] if evals else {}
    state = {
        "config": BehaviorConfig(env_id=env_id, steps=step).__dict__,
        "steps_done": step,
        "snapshots": [
            {"file": dest.name, "step": step, **{k: last.get(k) for k in EVAL_FIELDS[1:5]}}
        ],
        "chunks": [{"file": chunk, "start": 0, "end": step}],
        "resumes": 0,
        "seconds": float(last.get("seconds", 0.0)),
        "imported_from": str(source),
    }
    atomic_write_json(run_dir / "state.json", state)
    return run_dir


def fork_run(source: str | Path, run_dir: str | Path, step: int, seed: int | None = None) -> Path:
    """Start a new behaviour run from snapshot `step` of the run in `source`.

    The new run holds that snapshot, the recorded transitions up to it (hard links where the
    file system allows, else copies) and the evaluations up to it; `train` continues it on its
    own random stream (`seed`, default the source's seed + 1), so a fork of a good snapshot is
    a second chance at the same point, e.g. with a lower learning rate.
    """
    source, run_dir = Path(source), Path(run_dir)
    state = read_state(source)
    snaps = [s for s in state["snapshots"] if s["step"] == step]
    if not snaps:
        have = ", ".join(str(s["step"]) for s in state["snapshots"])
        raise DiffrlError(f"{source}: no snapshot at step {step} (snapshots: {have})")
    if (run_dir / "state.json").exists():
        raise DiffrlError(f"{run_dir}: already holds a behaviour run")
    chunks = [c for c in state["chunks"] if c["end"] <= step]
    if not chunks or chunks[-1]["end"] != step:
        raise DiffrlError(f"{source}: the recorded transitions do not end at step {step}")
    (run_dir / "transitions").mkdir(parents=True, exist_ok=True)
    for chunk in chunks:
        src, dst = source / "transitions" / chunk["file"], run_dir / "transitions" / chunk["file"]
        if not src.exists():
            continue  # e.g. an imported prefix that train() re-creates from its source
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copy2(source / snaps[0]["file"], run_dir / snaps[0]["file"])
    evals = [r for r in read_evals(source) if r["step"] <= step]
    _write_evals(run_dir, evals)
    config = dict(state["config"])
    config["seed"] = config["seed"] + 1 if seed is None else seed
    config["steps"] = max(config["steps"], step)
    snaps_upto = [s for s in state["snapshots"] if s["step"] <= step]
    new_state = {
        **{k: v for k, v in state.items() if k in ("imported_from", "learning_rate_changes")},
        "config": config,
        "steps_done": step,
        "snapshots": snaps_upto,
        "chunks": chunks,
        "resumes": 0,
        "seconds": float(evals[-1]["seconds"]) if evals else 0.0,
        "forked_from": {"run": str(source), "step": step},
    }
    atomic_write_json(run_dir / "state.json", new_state)
    return run_dir
