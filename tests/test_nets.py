"""Tests for diffrl.nets: embeddings against hand computations, parameter counts against counts
derived independently from the official layer shapes, and behavioural properties of the nets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from diffrl.errors import ConfigError
from diffrl.nets import (
    DiffusionMLP,
    GaussianFourierEmbedding,
    ResidualTemporalBlock,
    SinusoidalPosEmb,
    TemporalUnet,
    TwinQ,
    ValueMLP,
    ValueUnet,
    mlp,
)
from diffrl.nets.onednn import Linear as OneDNNLinear
from diffrl.precision import Float32Linear


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Parameter counts of single layers, from their weight and bias shapes.
def linear(i: int, o: int) -> int:
    return i * o + o


def conv(i: int, o: int, k: int) -> int:
    return i * o * k + o


def group_norm(c: int) -> int:
    return 2 * c


# ----------------------------------------------------------------------------- embeddings


def test_sinusoidal_matches_hand_computation() -> None:
    dim, half = 8, 4
    t = [0.0, 1.0, 2.0, 7.0]
    out = SinusoidalPosEmb(dim)(torch.tensor(t))
    assert out.shape == (4, dim)
    for b, tb in enumerate(t):
        for k in range(half):
            f = 10000.0 ** (-k / (half - 1))
            assert out[b, k].item() == pytest.approx(math.sin(tb * f), abs=1e-6)
            assert out[b, half + k].item() == pytest.approx(math.cos(tb * f), abs=1e-6)
    # Literal values: sin(1), cos(1), and the slowest frequency 1e-4 at t = 2.
    assert out[1, 0].item() == pytest.approx(0.8414709848, abs=1e-6)
    assert out[1, half].item() == pytest.approx(0.5403023059, abs=1e-6)
    assert out[2, half - 1].item() == pytest.approx(math.sin(2e-4), abs=1e-8)


def test_sinusoidal_long_equals_float() -> None:
    emb = SinusoidalPosEmb(16)
    steps = torch.arange(5)
    assert torch.equal(emb(steps), emb(steps.float()))


@pytest.mark.parametrize("dim", [2, 7])
def test_sinusoidal_rejects_bad_dim(dim: int) -> None:
    with pytest.raises(ConfigError, match=str(dim)):
        SinusoidalPosEmb(dim)


def test_gaussian_fourier_matches_hand_computation_and_is_saved() -> None:
    torch.manual_seed(0)
    emb = GaussianFourierEmbedding(6, scale=30.0)
    assert "W" in emb.state_dict() and emb.W.shape == (3,)
    assert n_params(emb) == 0  # fixed features: nothing for an optimiser to update
    t = [0.0, 0.25, 0.9]
    out = emb(torch.tensor(t))
    assert out.shape == (3, 6)
    for b, tb in enumerate(t):
        for k in range(3):
            w = emb.W[k].item()
            assert out[b, k].item() == pytest.approx(math.sin(2 * math.pi * tb * w), abs=1e-4)
            assert out[b, 3 + k].item() == pytest.approx(math.cos(2 * math.pi * tb * w), abs=1e-4)

    torch.manual_seed(1)
    other = GaussianFourierEmbedding(6, scale=30.0)
    assert not torch.equal(other(torch.tensor(t)), out)
    other.load_state_dict(emb.state_dict())
    assert torch.equal(other(torch.tensor(t)), out)


def test_gaussian_fourier_scale() -> None:
    torch.manual_seed(0)
    std = GaussianFourierEmbedding(8192, scale=30.0).W.std().item()
    assert 28.0 < std < 32.0


# ----------------------------------------------------------------------------- MLPs


def test_mlp_builder_layers() -> None:
    net = mlp(5, [7, 9], 2, activation=nn.ReLU, out_activation=nn.Tanh)
    kinds = [type(m) for m in net]
    # Hidden layers: oneDNN's Linear (nets/onednn.py). The output layer is a Float32Linear: an
    # nn.Linear that stays float32 under bf16 autocast.
    assert kinds == [OneDNNLinear, nn.ReLU, OneDNNLinear, nn.ReLU, Float32Linear, nn.Tanh]
    assert all(isinstance(net[i], nn.Linear) for i in (0, 2, 4))
    assert n_params(net) == linear(5, 7) + linear(7, 9) + linear(9, 2)
    assert net(torch.randn(4, 5)).shape == (4, 2)
    assert [type(m) for m in mlp(5, [], 2)] == [Float32Linear]
    with pytest.raises(ConfigError, match="in_dim"):
        mlp(0, [4], 2)


def test_diffusion_mlp_shape_and_official_parameter_count() -> None:
    obs_dim, act_dim, t_dim, hidden = 11, 3, 16, 256  # hopper
    net = DiffusionMLP(obs_dim, act_dim)
    # Official agents/model.py MLP: time_mlp = Linear(16, 32), Linear(32, 16);
    # mid_layer = Linear(3 + 16 + 11, 256), Linear(256, 256) x 2; final_layer = Linear(256, 3).
    official = (
        linear(t_dim, 2 * t_dim)
        + linear(2 * t_dim, t_dim)
        + linear(act_dim + t_dim + obs_dim, hidden)
        + 2 * linear(hidden, hidden)
        + linear(hidden, act_dim)
    )
    assert official == 141_363
    assert n_params(net) == official

    x = torch.randn(8, act_dim)
    obs = torch.randn(8, obs_dim)
    t = torch.randint(0, 5, (8,))
    out = net(x, t, obs)
    assert out.shape == (8, act_dim)
    # Every input is used.
    assert not torch.allclose(out, net(x, t, obs + 1.0))
    assert not torch.allclose(out, net(x, (t + 1) % 5, obs))
    assert not torch.allclose(out, net(x + 1.0, t, obs))


def test_diffusion_mlp_rejects_wrong_dims() -> None:
    net = DiffusionMLP(11, 3)
    with pytest.raises(ConfigError, match="11"):
        net(torch.randn(2, 3), torch.zeros(2), torch.randn(2, 10))


# ----------------------------------------------------------------------------- critics


def test_twin_q_heads_are_independent() -> None:
    torch.manual_seed(0)
    q = TwinQ(11, 3)
    hidden = 256
    one_head = linear(14, hidden) + 2 * linear(hidden, hidden) + linear(hidden, 1)
    assert n_params(q) == 2 * one_head
    shared = {id(p) for p in q.q1_model.parameters()} & {id(p) for p in q.q2_model.parameters()}
    assert not shared

    obs, act = torch.randn(16, 11), torch.randn(16, 3)
    q1, q2 = q(obs, act)
    assert q1.shape == (16, 1) and q2.shape == (16, 1)
    assert not torch.allclose(q1, q2)
    assert torch.equal(q.q1(obs, act), q1)
    assert torch.equal(q.q2(obs, act), q2)
    assert torch.equal(q.q_min(obs, act), torch.minimum(q1, q2))
    # Both branches of the min occur, so q_min is not just one head.
    assert (q1 < q2).any() and (q2 < q1).any()

    (q1.sum() + q2.sum()).backward()
    for p in q.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0

    # A loss on one head leaves the other head's gradients untouched.
    q.zero_grad(set_to_none=True)
    q.q1(obs, act).sum().backward()
    assert all(p.grad is not None for p in q.q1_model.parameters())
    assert all(p.grad is None for p in q.q2_model.parameters())


def test_value_mlp_shape() -> None:
    v = ValueMLP(11, hidden=64, n_layers=2)
    assert v(torch.randn(5, 11)).shape == (5, 1)
    assert n_params(v) == linear(11, 64) + linear(64, 64) + linear(64, 1)


# ----------------------------------------------------------------------------- U-Net


def official_unet_count(
    transition_dim: int, dim: int, dim_mults: tuple[int, ...], k: int = 5, cond_dim: int = 0
) -> int:
    """Parameter count of Diffuser's TemporalUnet (plus Decision Diffuser's condition MLP),
    summed from the layer shapes in jannerm/diffuser models/temporal.py."""

    def conv_block(i: int, o: int) -> int:
        return conv(i, o, k) + group_norm(o)

    embed = 2 * dim if cond_dim else dim

    def res(i: int, o: int) -> int:
        skip = conv(i, o, 1) if i != o else 0
        return conv_block(i, o) + conv_block(o, o) + linear(embed, o) + skip

    dims = [transition_dim] + [dim * m for m in dim_mults]
    pairs = list(zip(dims[:-1], dims[1:], strict=True))
    total = linear(dim, 4 * dim) + linear(4 * dim, dim)
    if cond_dim:
        total += linear(cond_dim, dim) + linear(dim, 4 * dim) + linear(4 * dim, dim)
    for i, (a, b) in enumerate(pairs):
        total += res(a, b) + res(b, b)
        if i < len(pairs) - 1:
            total += conv(b, b, 3)  # Downsample1d
    total += 2 * res(dims[-1], dims[-1])
    for a, b in reversed(pairs[1:]):
        total += res(2 * b, a) + res(a, a) + conv(a, a, 4)  # ConvTranspose1d(a, a, 4)
    total += conv_block(dim, dim) + conv(dim, transition_dim, 1)
    return total


def test_residual_block_matches_functional_definition() -> None:
    # Diffuser: out = B2(B1(x) + Linear(Mish(emb))) + Conv1x1(x),
    # with B = Conv1d -> GroupNorm(8) -> Mish.
    torch.manual_seed(0)
    block = ResidualTemporalBlock(6, 16, embed_dim=10, kernel_size=5)
    x, emb = torch.randn(3, 6, 12), torch.randn(3, 10)

    def conv_block(seq: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
        c, g = seq[0], seq[1]
        h = F.conv1d(h, c.weight, c.bias, padding=2)
        return F.mish(F.group_norm(h, 8, g.weight, g.bias))

    lin, res = block.time_mlp[1], block.residual_conv
    h = (
        conv_block(block.blocks[0].block, x)
        + F.linear(F.mish(emb), lin.weight, lin.bias)[..., None]
    )
    expected = conv_block(block.blocks[1].block, h) + F.conv1d(x, res.weight, res.bias)
    assert torch.allclose(block(x, emb), expected, atol=1e-5)
    # Same widths: the residual is the identity (no 1x1 convolution).
    assert isinstance(ResidualTemporalBlock(16, 16, 10).residual_conv, nn.Identity)


def test_unet_parameter_count_matches_official() -> None:
    net = TemporalUnet(32, 14)  # Diffuser hopper: dim 32, mults (1, 2, 4, 8)
    assert n_params(net) == official_unet_count(14, 32, (1, 2, 4, 8)) == 3_956_302
    maze = TemporalUnet(128, 6, dim_mults=(1, 4, 8))
    assert n_params(maze) == official_unet_count(6, 32, (1, 4, 8))
    dd = TemporalUnet(100, 11, dim=32, dim_mults=(1, 4, 8), cond_dim=1)
    assert n_params(dd) == official_unet_count(11, 32, (1, 4, 8), cond_dim=1)


@pytest.mark.parametrize("dim_mults", [(1, 2, 4, 8), (1, 4, 8)])
def test_unet_is_fully_convolutional(dim_mults: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = TemporalUnet(32, 14, dim=16, dim_mults=dim_mults)
    t = torch.randint(0, 20, (2,))
    for horizon in (16, 32, 64):
        x = torch.randn(2, horizon, 14)
        assert net(x, t).shape == x.shape


def test_unet_horizon_not_divisible() -> None:
    message = "horizon 30 is not divisible by the U-Net's down-sampling factor 8"
    with pytest.raises(ConfigError) as err:
        TemporalUnet(30, 14)
    assert str(err.value) == message
    net = TemporalUnet(32, 14, dim=8)
    with pytest.raises(ConfigError) as err:
        net(torch.randn(1, 30, 14), torch.zeros(1))
    assert str(err.value) == message
    # Factor 4 for three resolutions: 36 is fine there.
    maze = TemporalUnet(36, 4, dim=8, dim_mults=(1, 4, 8))
    assert maze.downsample_factor == 4
    assert maze(torch.randn(1, 36, 4), torch.zeros(1)).shape == (1, 36, 4)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dim": 12}, "dim 12"),
        ({"kernel_size": 4}, "kernel_size 4"),
        ({"dim_mults": ()}, "dim_mults"),
        ({"cond_dim": -1}, "cond_dim"),
    ],
)
def test_unet_rejects_bad_config(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TemporalUnet(32, 14, **kwargs)


def test_unet_rejects_wrong_transition_dim() -> None:
    net = TemporalUnet(16, 14, dim=8)
    with pytest.raises(ConfigError, match="14"):
        net(torch.randn(2, 16, 13), torch.zeros(2))


def test_unet_gradient_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = TemporalUnet(16, 6, dim=8, cond_dim=2)
    x = torch.randn(3, 16, 6)
    out = net(x, torch.randint(0, 10, (3,)), torch.randn(3, 2))
    # A random projection, so no parameter can get an exactly cancelling gradient by symmetry.
    (out * torch.randn_like(out)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unet_time_axis_is_local() -> None:
    # Perturbing one time step moves the outputs around that step far more than far away;
    # this fails if time and channels were mixed up (a reshape instead of a transpose).
    torch.manual_seed(0)
    net = TemporalUnet(64, 14)
    x = torch.randn(4, 64, 14)
    t = torch.randint(0, 20, (4,))
    x2 = x.clone()
    x2[:, 40] += torch.randn(4, 14)
    with torch.no_grad():
        change = (net(x2, t) - net(x, t)).abs().mean(dim=(0, 2))  # (H,)
    assert 34 <= change.argmax().item() <= 46
    assert change[38:43].mean() > 3 * change[:5].mean()


def test_unet_condition_and_dropout() -> None:
    torch.manual_seed(0)
    net = TemporalUnet(16, 5, dim=8, cond_dim=1)
    x = torch.randn(2, 16, 5)
    t = torch.tensor([3, 7])
    c1, c2 = torch.tensor([[0.2], [0.9]]), torch.tensor([[-1.0], [2.0]])
    with torch.no_grad():
        # The condition matters when kept ...
        assert not torch.allclose(net(x, t, c1), net(x, t, c2))
        keep = torch.zeros(2, dtype=torch.bool)
        assert torch.equal(net(x, t, c1, keep), net(x, t, c1))
        # ... and not at all when dropped; dropping equals passing no condition.
        drop = torch.ones(2)
        dropped = net(x, t, c1, drop)
        assert torch.equal(dropped, net(x, t, c2, drop))
        assert torch.equal(dropped, net(x, t))
        # Per-sample: only the first sample's condition is dropped.
        mixed = torch.tensor([True, False])
        a, b = net(x, t, c1, mixed), net(x, t, c2, mixed)
        assert torch.equal(a[0], b[0])
        assert not torch.allclose(a[1], b[1])
    with pytest.raises(ConfigError, match="cond_dim 0"):
        TemporalUnet(16, 5, dim=8)(x, t, c1)


# ----------------------------------------------------------------------------- value guide


def test_value_unet_shape_and_official_count() -> None:
    torch.manual_seed(0)
    dim, td, k = 32, 14, 5
    net = ValueUnet(32, td)
    x = torch.randn(3, 32, td)
    assert net(x, torch.randint(0, 20, (3,))).shape == (3, 1)

    # jannerm/diffuser ValueFunction at horizon 32: every resolution down-samples, then
    # ResBlock(256, 128), down, ResBlock(128, 64), down; 32 -> 1 step, so fc_dim = 64.
    def res(i: int, o: int) -> int:
        blocks = conv(i, o, k) + group_norm(o) + conv(o, o, k) + group_norm(o)
        return blocks + linear(dim, o) + (conv(i, o, 1) if i != o else 0)

    dims = [td, 32, 64, 128, 256]
    total = linear(dim, 4 * dim) + linear(4 * dim, dim)
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        total += res(a, b) + res(b, b) + conv(b, b, 3)
    total += res(256, 128) + conv(128, 128, 3) + res(128, 64) + conv(64, 64, 3)
    fc = 64
    total += linear(fc + dim, fc // 2) + linear(fc // 2, 1)
    assert n_params(net) == total


@pytest.mark.parametrize(("horizon", "dim_mults"), [(64, (1, 2, 4, 8)), (128, (1, 4, 8))])
def test_value_unet_other_horizons(horizon: int, dim_mults: tuple[int, ...]) -> None:
    net = ValueUnet(horizon, 4, dim=8, dim_mults=dim_mults)
    assert net(torch.randn(2, horizon, 4), torch.zeros(2)).shape == (2, 1)
    with pytest.raises(ConfigError, match=f"built for horizon {horizon}"):
        net(torch.randn(2, 2 * horizon, 4), torch.zeros(2))


# ---------------------------------------------------------------- U-Net fast paths
@pytest.mark.parametrize(
    "c_in, c_out, k, stride, pad, length",
    [(16, 24, 5, 1, 2, 4), (16, 8, 5, 1, 2, 1), (8, 8, 3, 2, 1, 2), (8, 16, 5, 1, 2, 2)],
)
def test_short_conv_dense_map_equals_conv(c_in, c_out, k, stride, pad, length) -> None:
    from diffrl.nets.unet import Conv1d

    torch.manual_seed(0)
    conv = Conv1d(c_in, c_out, k, stride=stride, padding=pad)
    x = torch.randn(5, c_in, length)
    want = F.conv1d(x, conv.weight, conv.bias, stride, pad)
    with torch.no_grad():
        got = conv(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # Frozen weights, input gradient wanted (the value guide): dense path, same gradient.
    conv.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    g = torch.randn_like(want)
    (grad,) = torch.autograd.grad(conv(xg), xg, g)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.conv1d(xr, conv.weight, conv.bias, stride, pad), xr, g)
    torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-5)
    # A weight change (EMA lerp_, load_state_dict) rebuilds the map.
    with torch.no_grad():
        conv.weight.mul_(2.0)
        torch.testing.assert_close(
            conv(x), F.conv1d(x, conv.weight, conv.bias, stride, pad), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize(
    "batch, c_in, c_out, k, stride, pad, length",
    [
        (4, 14, 32, 5, 1, 2, 32),  # the U-Net's first block at H 32
        (4, 256, 256, 5, 1, 2, 4),  # few rows, a dense map too large: im2col
        (3, 8, 16, 3, 2, 1, 9),  # down-sampling (stride 2)
        (4, 16, 8, 1, 1, 0, 8),  # 1x1 residual convolution
        (64, 8, 8, 5, 1, 2, 32),  # many rows: the native convolution
    ],
)
def test_small_batch_conv_im2col_equals_conv(batch, c_in, c_out, k, stride, pad, length) -> None:
    from diffrl.nets.unet import Conv1d

    torch.manual_seed(0)
    conv = Conv1d(c_in, c_out, k, stride=stride, padding=pad)
    x = torch.randn(batch, c_in, length)
    want = F.conv1d(x, conv.weight, conv.bias, stride, pad)
    with torch.no_grad():
        got = conv(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    l_out = want.shape[-1]
    assert (None in conv._cache) == (batch * l_out <= Conv1d.IM2COL_ROWS)
    conv.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    g = torch.randn_like(want)
    (grad,) = torch.autograd.grad(conv(xg), xg, g)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.conv1d(xr, conv.weight, conv.bias, stride, pad), xr, g)
    torch.testing.assert_close(grad, ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("batch, length", [(4, 1), (4, 4), (3, 16), (64, 8)])
@pytest.mark.parametrize("k, stride, pad", [(4, 2, 1), (2, 2, 0), (3, 2, 1)])
def test_small_batch_conv_transpose_equals_native(batch, length, k, stride, pad) -> None:
    from diffrl.nets.unet import ConvTranspose1d

    torch.manual_seed(0)
    up = ConvTranspose1d(12, 8, k, stride=stride, padding=pad)
    x = torch.randn(batch, 12, length)
    want = F.conv_transpose1d(x, up.weight, up.bias, stride, pad)
    with torch.no_grad():
        got = up(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # im2col where the output is exactly stride x length long and the rows are few.
    assert (up._cache is not None) == (k - 2 * pad == stride and batch * length <= 256)
    up.requires_grad_(False)
    xg, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    g = torch.randn_like(want)
    (grad,) = torch.autograd.grad(up(xg), xg, g)
    (ref,) = torch.autograd.grad(F.conv_transpose1d(xr, up.weight, up.bias, stride, pad), xr, g)
    torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-5)


def test_short_conv_trains_through_the_plain_convolution() -> None:
    from diffrl.nets.unet import Conv1d

    conv = Conv1d(4, 4, 5, padding=2)
    conv(torch.randn(3, 4, 2)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert not conv._cache  # no matrix was built for a training step


@pytest.mark.parametrize("shape", [(4, 32, 4), (4, 16, 1), (4, 64, 2), (4, 16, 8)])
def test_group_norm_short_path_equals_native(shape: tuple[int, int, int]) -> None:
    from diffrl.nets.unet import GroupNorm

    torch.manual_seed(0)
    ours, native = GroupNorm(8, shape[1]), nn.GroupNorm(8, shape[1])
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
        native.load_state_dict(ours.state_dict())
    x = torch.randn(*shape) * 3 + 1
    g = torch.randn(*shape)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ours(xa), native(xb)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    ga = torch.autograd.grad(ya, (xa, ours.weight, ours.bias), g)
    gb = torch.autograd.grad(yb, (xb, native.weight, native.bias), g)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_mish_eager_equals_native_forward_and_backward() -> None:
    from diffrl.nets.activations import mish_eager

    x = torch.cat([torch.linspace(-100, 100, 2001), torch.randn(1000) * 3])
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = mish_eager(xa), F.mish(xb)
    torch.testing.assert_close(ya, yb, atol=2e-6, rtol=1e-5)
    g = torch.randn_like(x)
    (ga,) = torch.autograd.grad(ya, xa, g)
    (gb,) = torch.autograd.grad(yb, xb, g)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(mish_eager(x), F.mish(x), atol=2e-6, rtol=1e-5)


def test_compiled_mish_compiles_twice_at_most_over_many_batch_sizes() -> None:
    """An evaluation passes through a batch size per number of episodes still running (times
    IDQL's candidates); a kernel per size cost 1-3 s each and ended at dynamo's recompile limit.
    The first size gets a static kernel, the next ones share one dynamic kernel."""
    from torch._dynamo.utils import counters

    from diffrl.nets import activations

    torch._dynamo.reset()
    counters.clear()
    saved = activations._State.forward, activations._State.forward_and_slope
    activations._State.forward = None
    activations.set_fast_mish(True)  # off for the rest of the suite (tests/conftest.py)
    try:
        for n in (5, 256, 192, 128, 64, 7, 3, 100, 33, 17):
            x = torch.randn(n, 16)
            torch.testing.assert_close(activations.mish(x), F.mish(x))
        assert 1 <= counters["stats"]["unique_graphs"] <= 2
    finally:
        activations.set_fast_mish(False)
        activations._State.forward, activations._State.forward_and_slope = saved
