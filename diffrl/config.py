"""One configuration vocabulary for every algorithm.

Every algorithm's config is a frozen dataclass that extends `TrainConfig`, so `dataset`, `seed`,
`steps`, `batch_size`, `eval_every`, ... mean the same thing everywhere. Presets per dataset live
in the algorithm's file; `--set key=value` overrides go through `apply_overrides`, which checks
names and types. Field help comes from ``field(metadata={"help": ...})``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from diffrl.errors import ConfigError


def doc(  # noqa: A002 - `help` mirrors argparse's name
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with a help string (shown by `diffrl config ALGO`) and its valid range.

    `ge` / `gt` / `le` bound a number (None allowed where the type is optional); `choices`
    lists a string's values. `TrainConfig.__post_init__` checks them for every algorithm, so an
    impossible value is one line at `--set` time, before anything is written.
    """
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "choices": choices}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


# The largest run seed: evaluation seeds add offsets and episode indices to it (train.py,
# evaluate.py, report.py) and numpy takes seeds below 2**32.
MAX_SEED = 2**31 - 1

# `precision` values (diffrl/precision.py); here so configs need no torch.
PRECISIONS = ("fp32", "bf16")

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _num(x: float) -> str:
    """A bound as a person writes it: 2147483647, 0.5, 1e-06."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def check_fields(config: Any) -> None:
    """Raise ConfigError for the first field outside its declared range (see `doc`)."""
    rules: dict[str, dict[str, Any]] = {}
    # A subclass that redeclares a field (another default) keeps its bases' ranges too.
    for cls in reversed(type(config).__mro__):
        for name, f in getattr(cls, "__dataclass_fields__", {}).items():
            rules.setdefault(name, {}).update(f.metadata)
    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), rules.get(f.name, {})
        if value is None or isinstance(value, bool):
            continue
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(
                f"config key '{f.name}' must be one of {' | '.join(meta['choices'])}, got {value!r}"
            )
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if not isinstance(v, (int, float)):
                continue
            if "ge" in meta and not v >= meta["ge"]:
                raise ConfigError(f"config key '{f.name}' must be >= {_num(meta['ge'])}, got {v!r}")
            if "gt" in meta and not v > meta["gt"]:
                raise ConfigError(f"config key '{f.name}' must be > {_num(meta['gt'])}, got {v!r}")
            if "le" in meta and not v <= meta["le"]:
                raise ConfigError(f"config key '{f.name}' must be <= {_num(meta['le'])}, got {v!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Fields shared by all algorithms."""

    algo: str = doc("", "algorithm name (set by `diffrl train ALGO`)")
    dataset: str = doc(
        "", "built-in dataset name, a file path or a Minari id ('' = an online run in env_id)"
    )
    env_id: str = doc(
        "", "environment for evaluation (and online data) ('' = from the dataset's metadata)"
    )
    seed: int = doc(0, "seed for weights, batches and sampling noise", ge=0, le=MAX_SEED)
    steps: int = doc(100_000, "total gradient steps", ge=1)
    batch_size: int = doc(256, "transitions (or windows) per gradient step", ge=1)
    log_every: int = doc(100, "write metrics every N steps", ge=1)
    eval_every: int = doc(10_000, "evaluate every N steps (0 = only at the end)", ge=0)
    eval_episodes: int = doc(10, "episodes per evaluation (environments with rollouts)", ge=1)
    save_every: int = doc(5_000, "checkpoint every N steps (and at the end)", ge=1)
    keep_checkpoints: int = doc(
        2, "how many step checkpoints to keep (the final one is kept)", ge=1
    )
    device: str = doc("auto", "auto | cpu | cuda | cuda:N")
    eval_goal: str = doc(
        "",
        "goal-reaching tasks: '' = the environment's own goal each episode, 'dataset' = the "
        "dataset's evaluation goal (maze2d: D4RL's fixed goal), or X,Y,... for every episode",
    )
    buffer_size: int = doc(1_000_000, "online runs: replay buffer capacity (transitions)", ge=1)
    warmup_steps: int = doc(
        1_000, "online runs: environment steps with uniform random actions first", ge=0
    )
    env_steps_per_update: int = doc(
        1, "online runs: environment steps (per environment) before each update", ge=0
    )
    num_envs: int = doc(1, "online runs: environments stepped together", ge=1)
    truncated_terminal: bool = doc(
        False,
        "online runs: treat time-limit truncations as terminal (no bootstrap through them), as "
        "older Gym code does; False bootstraps (Gymnasium's terminated / truncated)",
    )
    eval_sweep: str = doc(
        "",
        "evaluate at every value of one acting-time key, KEY=V1,V2,... (the best value's result "
        "is the evaluation's score; '' = off)",
    )
    precision: str = doc(
        "fp32",
        "matrix products in fp32, or bf16 (bfloat16 products, float32 weights, optimiser, "
        "losses, targets and output layers; needs AVX-512 BF16 / AMX or a bf16 GPU)",
        choices=PRECISIONS,
    )

    # Keys `diffrl train --resume RUN --set KEY=V` may change: they leave the model and its
    # training as they are (where to evaluate, how often, on what device, for how long).
    # Algorithms add their acting-time keys (sampler, guidance scale, ...); `compile` is
    # here for the configs that have it (whether torch.compile runs changes no result).
    RESUME_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"env_id", "steps", "log_every", "eval_every", "eval_episodes", "save_every"}
        | {"keep_checkpoints", "device", "eval_sweep", "eval_goal", "precision", "compile"}
    )
    # Renamed keys still read from an old run's stored config or --set: old name -> a function
    # giving the new keys' values (a one-line notice is printed when one is used).
    LEGACY_KEYS: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        check_fields(self)
        if self.eval_sweep:
            parse_sweep(self, self.eval_sweep)
        if not _DEVICE.match(self.device):
            raise ConfigError(
                f"config key 'device': unknown device '{self.device}' "
                "(use auto, cpu, cuda, cuda:N or mps)"
            )


# The samplers' names (diffrl.diffusion.factory builds them); here so configs need no torch.
SAMPLERS = ("ddpm", "ddim", "dpm-solver")


@dataclass(frozen=True)
class SamplingConfig(TrainConfig):
    """The sampler keys every diffusion algorithm shares (one name per concept); an algorithm
    redeclares a field to change its default."""

    sampler: str = doc("ddpm", "sampler used to act: ddpm | ddim | dpm-solver", choices=SAMPLERS)
    sampling_steps: int = doc(
        0, "model evaluations per sample when acting (0 = the sampler's default)", ge=0
    )
    ddim_eta: float = doc(
        0.0, "DDIM's noise scale when sampler=ddim: 0 deterministic, 1 DDPM's variance", ge=0, le=1
    )
    clip_x0: bool = doc(True, "clamp every x0 estimate of the sampler to the action box")

    RESUME_KEYS: ClassVar[frozenset[str]] = TrainConfig.RESUME_KEYS | {
        "sampler",
        "sampling_steps",
        "ddim_eta",
        "clip_x0",
    }


def field_help(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field of a config class."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        rows.append((f.name, _type_name(hints[f.name]), f.default, f.metadata.get("help", "")))
    return rows


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _parse_value(key: str, raw: Any, tp: Any) -> Any:
    """Convert a `--set` string (or a JSON value) to the field's type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            return None
        tp, origin = args[0], typing.get_origin(args[0])
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            low = str(raw).lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw) if isinstance(raw, str) else raw
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if tp is float:
            return float(raw)
        if tp is str:
            return str(raw)
        if origin is tuple:
            items = json.loads(raw) if isinstance(raw, str) and raw.startswith("[") else raw
            if isinstance(items, str):
                items = [x for x in items.split(",") if x]
            (elem,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
            return tuple(_parse_value(key, x, elem) for x in items)
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    else:
        raise ConfigError(f"config key '{key}': unsupported type {tp}")
    raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {raw!r}")


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of `config` with `overrides` (strings or JSON values) converted and applied."""
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    changes = {}
    overrides = renamed(type(config), overrides)
    for key, raw in overrides.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key '{key}' for {type(config).__name__}{hint} "
                f"(see `diffrl config {config.algo or 'ALGO'}`)"
            )
        changes[key] = _parse_value(key, raw, hints[key])
    return dataclasses.replace(config, **changes)


_NOTIFIED: set[tuple[str, str]] = set()


def renamed(cls: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with renamed keys (`cls.LEGACY_KEYS`) turned into today's, with a notice."""
    legacy = cls.LEGACY_KEYS
    if not any(k in legacy for k in overrides):
        return overrides
    out: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key in legacy:
            new = legacy[key](raw)
            shown = ", ".join(f"{k}={v!r}" for k, v in new.items())
            if (key, shown) not in _NOTIFIED:  # one line per process, however often it is read
                _NOTIFIED.add((key, shown))
                sys.stderr.write(f"notice: config key '{key}' is renamed; read as {shown}\n")
            out.update(new)
        else:
            out[key] = raw
    return out


def acting_keys(config: Any) -> list[str]:
    """The algorithm's acting-time keys: what `diffrl eval --set/--sweep` may vary."""
    return sorted(type(config).RESUME_KEYS - TrainConfig.RESUME_KEYS)


def acting_settings(config: Any) -> dict[str, Any]:
    """{key: value} of the algorithm's acting-time keys (what `diffrl bench` reports)."""
    values = dataclasses.asdict(config)
    return {k: values[k] for k in acting_keys(config)}


def parse_sweep(config: Any, text: str) -> tuple[str, list[Any]]:
    """'KEY=V1,V2,...' -> (KEY, [config with KEY=V1, ...]); one line for anything else."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not sep or not key or not values:
        raise ConfigError(f"a sweep is KEY=V1,V2,...; got {text!r}")
    allowed = acting_keys(config)
    if key not in allowed:
        raise ConfigError(
            f"cannot sweep '{key}' for {config.algo}: not an acting-time key "
            f"(these are: {', '.join(allowed) or 'none'})"
        )
    return key, [apply_overrides(config, {key: v, "eval_sweep": ""}) for v in values]


def parse_set_args(pairs: list[str] | None) -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; a pair without '=' is a ConfigError."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def to_dict(config: Any) -> dict[str, Any]:
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config saved by `to_dict` (unknown keys are an error: the file is not ours)."""
    base = cls()
    return apply_overrides(base, {k: v for k, v in data.items()})
