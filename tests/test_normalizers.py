"""Normalisers: round trips on tensors and numpy, state_dict reloads, limits in [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from diffrl.data import (
    GaussianNormalizer,
    IdentityNormalizer,
    LimitsNormalizer,
    make_normalizer,
)
from diffrl.errors import ConfigError

KINDS = ["gaussian", "limits", "none"]


def data() -> np.ndarray:
    """(200, 4) with a constant third column."""
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[1.0, -3.0, 0.0, 10.0], scale=[0.1, 2.0, 1.0, 5.0], size=(200, 4))
    x[:, 2] = 7.0
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_tensor_and_numpy(kind: str) -> None:
    x = data()
    norm = make_normalizer(kind, x, 4)
    # Tensors of any leading shape come back as tensors on the same device.
    t = torch.from_numpy(x).reshape(10, 20, 4)
    z = norm.normalize(t)
    assert isinstance(z, torch.Tensor) and z.shape == t.shape and z.dtype == torch.float32
    torch.testing.assert_close(norm.unnormalize(z), t, rtol=1e-5, atol=1e-5)
    # numpy in, numpy out, same dtype.
    zn = norm.normalize(x)
    assert isinstance(zn, np.ndarray) and zn.dtype == np.float32
    np.testing.assert_allclose(zn, z.reshape(200, 4).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize(zn), x, rtol=1e-5, atol=1e-5)
    assert np.isfinite(zn).all()


def test_gaussian_statistics() -> None:
    x = data()
    z = GaussianNormalizer.fit(x).normalize(x)
    varying = [0, 1, 3]
    np.testing.assert_allclose(z[:, varying].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, varying].std(0), 1.0, atol=1e-4)
    # A constant dimension gets std = 1 (no division by zero, no blow-up off the data) -> 0.
    norm = GaussianNormalizer.fit(x)
    std = x.astype(np.float64).std(0)
    torch.testing.assert_close(norm.std[varying], torch.tensor(std[varying], dtype=torch.float32))
    assert norm.std[2] == 1.0
    np.testing.assert_array_equal(z[:, 2], 0.0)


def test_limits_maps_data_to_unit_box() -> None:
    x = data()
    norm = LimitsNormalizer.fit(x)
    z = norm.normalize(x)
    varying = [0, 1, 3]
    np.testing.assert_allclose(z[:, varying].min(0), -1.0, atol=1e-6)
    np.testing.assert_allclose(z[:, varying].max(0), 1.0, atol=1e-6)
    assert (np.abs(z) <= 1.0 + 1e-6).all()
    np.testing.assert_array_equal(z[:, 2], 0.0)  # constant dimension: 0, not NaN
    np.testing.assert_array_equal(norm.unnormalize(z)[:, 2], 7.0)
    zt = norm.normalize(torch.from_numpy(x))
    torch.testing.assert_close(zt, torch.from_numpy(z))


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_reload(kind: str) -> None:
    x = data()
    fitted = make_normalizer(kind, x, 4)
    empty = make_normalizer(kind, None, 4)
    if kind != "none":
        # Unfitted, it is a different map; the checkpoint restores the fitted one.
        assert not np.allclose(empty.normalize(x), fitted.normalize(x))
    empty.load_state_dict(fitted.state_dict())
    np.testing.assert_array_equal(empty.normalize(x), fitted.normalize(x))
    # Inside an agent the statistics travel with its state_dict.
    agent = nn.Module()
    agent.obs_norm = fitted
    keys = set(agent.state_dict())
    expected = {"gaussian": {"mean", "std"}, "limits": {"low", "high"}, "none": set()}[kind]
    assert keys == {f"obs_norm.{k}" for k in expected}


def test_buffers_move_with_the_module() -> None:
    norm = GaussianNormalizer.fit(data()).to(torch.float64)
    assert norm.mean.dtype == torch.float64
    # float32 input still gets float32 output (the statistics are cast to the input).
    out = norm.normalize(torch.zeros(3, 4))
    assert out.dtype == torch.float32


def test_errors() -> None:
    with pytest.raises(ConfigError) as err:
        make_normalizer("minmax", data(), 4)
    assert str(err.value) == "unknown normalizer 'minmax' (valid: gaussian, limits, none)"
    norm = GaussianNormalizer(4)
    with pytest.raises(ValueError, match="last dim must be 4"):
        norm.normalize(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="expected 4"):
        make_normalizer("gaussian", data()[:, :3], 4)
    assert isinstance(make_normalizer("none", None, 4), IdentityNormalizer)
