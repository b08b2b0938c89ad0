from __future__ import annotations

import pytest

from diffrl.config import apply_overrides, from_dict, parse_set_args, to_dict
from diffrl.errors import ConfigError
from diffrl.run import make_config


def test_preset_then_overrides_then_types():
    cfg = make_config("diffusion-bc", "toy-bandit", {"steps": "123", "lr": "1e-3"})
    assert cfg.diffusion_steps == 50 and cfg.hidden == 128  # toy preset
    assert cfg.steps == 123 and cfg.lr == pytest.approx(1e-3)
    assert from_dict(type(cfg), to_dict(cfg)) == cfg


def test_paper_defaults_without_preset():
    cfg = make_config("diffusion-bc", "some-file.hdf5")
    assert (cfg.diffusion_steps, cfg.beta_schedule, cfg.hidden, cfg.t_dim) == (5, "vp", 256, 16)
    assert (cfg.lr, cfg.batch_size) == (3e-4, 256)


def test_unknown_key_suggests_the_close_one():
    cfg = make_config("diffusion-bc", "toy-bandit")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'diffusion_step' .*'diffusion_steps'"
    ):
        apply_overrides(cfg, {"diffusion_step": "3"})


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("steps", "ten", "config key 'steps' expects int, got 'ten'"),
        ("steps", "1.5", "config key 'steps' expects int, got '1.5'"),
        ("lr_decay", "maybe", "config key 'lr_decay' expects bool, got 'maybe'"),
        ("lr", "fast", "config key 'lr' expects float, got 'fast'"),
    ],
)
def test_bad_values_are_named(key, value, msg):
    cfg = make_config("diffusion-bc", "toy-bandit")
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, {key: value})
    assert str(err.value) == msg


def test_set_args_parsing():
    assert parse_set_args(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="--set expects key=value, got 'oops'"):
        parse_set_args(["oops"])


def test_unknown_algorithm():
    with pytest.raises(ConfigError, match="unknown algorithm 'diffusion-xx'"):
        make_config("diffusion-xx", "toy-bandit")


def test_bad_sampler_fails_before_training(tmp_path):
    from diffrl.algos import DataSpec, get_algo

    cfg = make_config("diffusion-bc", "toy-bandit", {"sampler": "ddim", "sampling_steps": "80"})
    spec = DataSpec(2, 2, (-1.0, -1.0), (1.0, 1.0))
    with pytest.raises(ConfigError, match=r"sampling_steps must be in 1\.\.50"):
        get_algo("diffusion-bc").Agent(cfg, spec)
    with pytest.raises(ConfigError, match="config key 'steps' must be >= 1, got 0"):
        make_config("diffusion-bc", "toy-bandit", {"steps": "0"})
