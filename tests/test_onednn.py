"""diffrl.nets.onednn: products with a constant matrix through oneDNN agree with torch.addmm."""

from __future__ import annotations

import pytest
import torch

from diffrl.nets import onednn
from diffrl.nets.onednn import ConstantProduct, onednn_available

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="no oneDNN in this torch build")


@needs_onednn
@pytest.mark.parametrize("rows", [1, 4, 64])
@pytest.mark.parametrize("bias", [True, False])
def test_product_and_input_gradient_match_addmm(rows: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(0)
    matrix = torch.randn(320, 96, generator=g)
    b = torch.randn(96, generator=g) if bias else None
    product = ConstantProduct(matrix, b, rows=64)
    assert product.onednn  # 64 x 320 x 96 multiply-adds is above MIN_MACS
    x = torch.randn(rows, 320, generator=g, requires_grad=True)
    y = product(x)
    want = x @ matrix + (b if bias else 0.0)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-4)
    w = torch.randn(rows, 96, generator=g)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    torch.testing.assert_close(grad, w @ matrix.t(), rtol=1e-5, atol=1e-4)


@needs_onednn
def test_strided_input_and_no_grad() -> None:
    matrix = torch.randn(128, 128)
    product = ConstantProduct(matrix, None, rows=128)
    x = torch.randn(128, 128).t()  # a transposed view, as im2col's columns can be
    with torch.no_grad():
        torch.testing.assert_close(product(x), x @ matrix, rtol=1e-5, atol=1e-4)


def test_small_products_and_other_dtypes_use_addmm(monkeypatch: pytest.MonkeyPatch) -> None:
    small = ConstantProduct(torch.randn(8, 8), torch.randn(8), rows=4)
    assert not small.onednn  # 256 multiply-adds: oneDNN's per-call cost would dominate
    half = ConstantProduct(torch.randn(256, 256, dtype=torch.bfloat16), None, rows=256)
    assert not half.onednn  # bfloat16 reaches oneDNN through addmm already
    monkeypatch.setenv("DIFFRL_ONEDNN", "0")
    assert not ConstantProduct(torch.randn(256, 256), None, rows=256).onednn


@needs_onednn
def test_autocast_falls_back_to_addmm(monkeypatch: pytest.MonkeyPatch) -> None:
    product = ConstantProduct(torch.randn(256, 256), None, rows=256)
    calls = []
    monkeypatch.setattr(onednn, "_LINEAR", lambda *a: calls.append(a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = product(torch.randn(16, 256))
    assert y.dtype == torch.bfloat16 and not calls


@needs_onednn
@pytest.mark.parametrize("compiled", [False, True])
def test_linear_matches_f_linear_with_every_gradient(
    compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffrl.nets.onednn import linear

    real = onednn._LINEAR

    g = torch.Generator().manual_seed(1)
    # 64 x 256 x 256: at LINEAR_MIN_MACS, so oneDNN's route is taken.
    x = torch.randn(64, 256, generator=g, requires_grad=True)
    w = torch.randn(256, 256, generator=g, requires_grad=True)
    b = torch.randn(256, generator=g, requires_grad=True)
    calls = []
    if not compiled:  # count the eager route's oneDNN calls (forward + two gradients)
        monkeypatch.setattr(onednn, "_LINEAR", lambda *a: calls.append(1) or real(*a))
    fn = torch.compile(linear) if compiled else linear
    y = fn(x, w, b)
    want = torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-3)
    upstream = torch.randn(64, 256, generator=g)
    got = torch.autograd.grad((y * upstream).sum(), (x, w, b))
    ref = torch.autograd.grad((want * upstream).sum(), (x, w, b))
    for a, r in zip(got, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-3)
    assert compiled or len(calls) == 3


def test_small_linear_layers_use_f_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffrl.nets.onednn import linear

    calls = []
    monkeypatch.setattr(onednn, "_LINEAR", lambda *a: calls.append(1))
    x = torch.randn(32, 256)  # one action's few rows
    linear(x, torch.randn(256, 256), None)
    linear(torch.randn(256, 14), torch.randn(256, 14), None)  # a narrow first layer
    linear(torch.randn(64, 128), torch.randn(128, 128), None)  # 1M multiply-adds
    assert not calls


def test_linear_layer_is_an_nn_linear_with_the_same_state_dict() -> None:
    from diffrl.nets.onednn import Linear

    plain = torch.nn.Linear(64, 64)
    ours = Linear(64, 64)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(32, 64)
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)
    assert isinstance(ours, torch.nn.Linear)
