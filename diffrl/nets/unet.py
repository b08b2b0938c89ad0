"""Diffuser's temporal U-Net and its value guide.

Janner et al. 2022, "Planning with Diffusion for Flexible Behavior Synthesis"; official code
jannerm/diffuser ``diffuser/models/temporal.py`` (TemporalUnet, ValueFunction) and
``helpers.py``. Return conditioning with classifier-free guidance follows Decision Diffuser
(Ajay et al. 2023; anuragajay/decision-diffuser ``code/diffuser/models/temporal.py``).

Layers, widths and their order are the originals' (attention is left out: Diffuser's configs
keep it off), so parameter counts match. Deviations:

- :class:`ValueUnet` sizes its final MLP from the length the convolutions really leave. The
  original computes it from a horizon that it halves one time fewer than it down-samples, which
  happens to agree at the horizon Diffuser uses (32 with four resolutions) and fails elsewhere.
- The condition embedding is dropped by an explicit ``drop_mask`` from the caller instead of a
  Bernoulli draw inside the network, so training code owns the randomness (and its seed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffrl.errors import ConfigError
from diffrl.nets.activations import Mish
from diffrl.nets.embeddings import SinusoidalPosEmb
from diffrl.nets.onednn import ConstantProduct, Linear
from diffrl.precision import Float32Linear

N_GROUPS = 8  # GroupNorm groups in every Conv1dBlock, as in Diffuser


class Conv1d(nn.Conv1d):
    """`nn.Conv1d` with two faster routes where no weight gradient is wanted.

    Planning runs the networks under no grad, or with frozen weights for the value guide's
    input gradient; training runs the plain convolution. Both routes compute the same function
    to float rounding (tested against `F.conv1d`) from matrices built once per weight version
    (EMA updates and loads bump it). Shapes: (B, C_in, L) -> (B, C_out, L_out).

    - **Dense map** on sequences shorter than the kernel. Deep in the U-Net the sequence is
      shorter than the kernel (H 4 under a kernel of 5 at the bottom of the locomotion U-Net,
      2 and 1 in the value function's tail), so a convolution spends 30-80 % of its
      multiplications on zero padding. There the convolution, a linear map of the flattened
      (C_in L) input, is applied as that map: (B, C_in L) @ M + b, M (C_in L, C_out L_out) the
      convolution applied to the identity basis; 1.6x faster forward at (64, 256, 4) on one
      core. M holds L L_out / kernel_size times the weights, so below a batch of 16 it is used
      only where it stays small (at (4, 256, 4) its 4 MiB made it 1.4x slower than im2col).
    - **im2col** for few rows (B L_out <= 256: a few plans, the fast preset): oneDNN's
      convolution costs 50-150 us a call whatever the size, so the padded input unfolded to
      (B L_out, C_in k) times the weights as a (C_in k, C_out) matrix is 1.1-2.3x faster there,
      the input gradient included; with many rows the native convolution is faster.
    """

    #: im2col at or below this many output rows (B L_out), measured on 2 cores.
    IM2COL_ROWS = 256
    #: dense map from this batch size on, or below it up to this size (bytes); at (256, 256,
    #: 4): batch 4 dense 103 / im2col 72 us, batch 16 169 / 170, batch 64 422 / 593.
    DENSE_BATCH = 16
    DENSE_BYTES = 1 << 20

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._cache: dict[object, tuple[tuple[object, ...], ConstantProduct]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.groups != 1
            or self.dilation[0] != 1
            or self.padding_mode != "zeros"
            or (torch.is_grad_enabled() and self.weight.requires_grad)
        ):
            return super().forward(x)
        batch, length = x.shape[0], x.shape[-1]
        (k,), (stride,), (pad,) = self.kernel_size, self.stride, self.padding  # type: ignore[misc]
        l_out = (length + 2 * pad - k) // stride + 1
        rows = batch * l_out
        if length < k:
            dense_bytes = self.in_channels * length * self.out_channels * l_out * x.element_size()
            if batch >= self.DENSE_BATCH or dense_bytes <= self.DENSE_BYTES:
                out = self._product(length, x, batch)(x.reshape(batch, -1))
                return out.view(batch, self.out_channels, l_out)
        if rows > self.IM2COL_ROWS:
            return super().forward(x)
        product = self._product(None, x, rows)
        cols = F.pad(x, (pad, pad)).unfold(2, k, stride)  # (B, C_in, L_out, k)
        out = product(cols.transpose(1, 2).reshape(rows, -1))
        return out.view(batch, l_out, self.out_channels).transpose(1, 2)

    def _product(self, length: int | None, x: torch.Tensor, rows: int) -> ConstantProduct:
        """The dense map for `length` (None: the im2col weight matrix) with its bias row, as a
        product (diffrl/nets/onednn.py) packed for `rows` input rows."""
        w, b = self.weight, self.bias
        key = (w._version, w.data_ptr(), None if b is None else b._version, x.device, x.dtype)
        cached = self._cache.get(length)
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            w = w.to(x.dtype)
            bias = None if b is None else b.to(x.dtype)
            if length is None:  # (C_in k, C_out): rows ordered as unfold's (C_in, k)
                matrix = w.reshape(self.out_channels, -1).t().contiguous()
            else:
                c = self.in_channels
                basis = torch.eye(c * length, device=x.device, dtype=x.dtype).view(-1, c, length)
                out = F.conv1d(basis, w, None, self.stride, self.padding)
                matrix = out.reshape(c * length, -1).contiguous()
                bias = None if bias is None else bias.repeat_interleave(out.shape[-1])
        product = ConstantProduct(matrix, bias, rows)
        self._cache[length] = (key, product)
        return product


class Float32Conv1d(Conv1d):
    """`Conv1d` that stays in its weights' dtype under autocast: an output layer (the same
    parameters and state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))


class ConvTranspose1d(nn.ConvTranspose1d):
    """`nn.ConvTranspose1d` run as im2col on few rows where no weight gradient is wanted.

    Output index o = l s - p + j, so output phase r of block i (o = i s + r) reads the inputs
    i + d for a small window of offsets d: the padded input unfolded to (B L, C_in w) times a
    (C_in w, C_out s) matrix gives every phase at once. The matrix is the transposed
    convolution applied to the identity basis of one window, built once per weight version.
    Only where the output is exactly s L long (k - 2 p = s, the U-Net's up-sampling: k 4, s 2,
    p 1); otherwise, with many rows, or in training the native op. oneDNN's per-call cost
    makes this 2-3x faster at 4 plans. Shapes: (B, C_in, L) -> (B, C_out, s L).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._cache: tuple[tuple[object, ...], ConstantProduct] | None = None

    def _window(self) -> tuple[int, int]:
        (k,), (s,), (p,) = self.kernel_size, self.stride, self.padding  # type: ignore[misc]
        return -((k - 1 - p) // s), (s - 1 + p) // s  # offsets d_min (<= 0), d_max

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        (k,), (s,), (p,) = self.kernel_size, self.stride, self.padding  # type: ignore[misc]
        batch, length = x.shape[0], x.shape[-1]
        if (
            output_size is not None
            or self.groups != 1
            or self.dilation[0] != 1
            or self.output_padding[0] != 0
            or k - 2 * p != s
            or batch * length > Conv1d.IM2COL_ROWS
            or (torch.is_grad_enabled() and self.weight.requires_grad)
        ):
            return super().forward(x, output_size)
        lo, hi = self._window()
        product = self._product(x)
        cols = F.pad(x, (-lo, hi)).unfold(2, hi - lo + 1, 1).transpose(1, 2)
        out = product(cols.reshape(batch * length, -1))
        out = out.view(batch, length, self.out_channels, s).permute(0, 2, 1, 3)
        return out.reshape(batch, self.out_channels, length * s)

    def _product(self, x: torch.Tensor) -> ConstantProduct:
        w, b = self.weight, self.bias
        key = (w._version, w.data_ptr(), None if b is None else b._version, x.device, x.dtype)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        (s,), (p,) = self.stride, self.padding  # type: ignore[misc]
        lo, hi = self._window()
        c, width = self.in_channels, hi - lo + 1
        with torch.no_grad():
            basis = torch.eye(c * width, device=x.device, dtype=x.dtype).view(-1, c, width)
            out = F.conv_transpose1d(basis, w.to(x.dtype), None, s, p)  # (c w, C_out, L')
            centre = -lo * s  # the window's centre block starts at output index -lo s
            matrix = out[:, :, centre : centre + s].reshape(c * width, -1).contiguous()
            bias = None if b is None else b.to(x.dtype).repeat_interleave(s)
        product = ConstantProduct(matrix, bias, x.shape[0] * x.shape[-1])
        self._cache = (key, product)
        return product


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` whose backward pass is fast on short sequences.

    PyTorch's CPU GroupNorm backward is slow when the sequence is short and the channels many
    (0.73 ms at (64, 256, 4) against 0.09 ms at (64, 32, 32), one core). A group's channels are
    contiguous in (B, C, L), so the same normalisation is GroupNorm over (B, G, C / G * L)
    followed by the per-channel affine map, whose backward takes the fast path (0.22 ms there).
    Used where a gradient flows and L <= 4; elsewhere the native op, which is faster then.
    Shapes: (B, C, L) -> (B, C, L).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.dim() == 3 and x.shape[-1] <= 4 and self.affine):
            return super().forward(x)
        b, g = x.shape[0], self.num_groups
        y = F.group_norm(x.reshape(b, g, -1), g, eps=self.eps).view_as(x)
        return torch.addcmul(self.bias[:, None], y, self.weight[:, None])


class Conv1dBlock(nn.Module):
    """Conv1d(k, same padding) -> GroupNorm(8) -> Mish.

    Shapes: (B, in_channels, H) -> (B, out_channels, H).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            GroupNorm(N_GROUPS, out_channels),
            Mish(compiled=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResidualTemporalBlock(nn.Module):
    """Two Conv1dBlocks; the embedding is added (broadcast over time) after the first.

    out = block2(block1(x) + Linear(Mish(emb))[..., None]) + residual(x), where residual is a
    1x1 convolution when the channel count changes and the identity otherwise.

    Shapes: x (B, in_channels, H), emb (B, embed_dim) -> (B, out_channels, H).
    """

    def __init__(
        self, in_channels: int, out_channels: int, embed_dim: int, kernel_size: int = 5
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size),
                Conv1dBlock(out_channels, out_channels, kernel_size),
            ]
        )
        self.time_mlp = nn.Sequential(Mish(compiled=False), Linear(embed_dim, out_channels))
        self.residual_conv: nn.Module = (
            Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x) + self.time_mlp(emb)[:, :, None]
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


def downsample1d(channels: int) -> Conv1d:
    """Halve the length: Conv1d(3, stride 2, padding 1); H -> ceil(H / 2)."""
    return Conv1d(channels, channels, 3, stride=2, padding=1)


def upsample1d(channels: int) -> ConvTranspose1d:
    """Double the length: ConvTranspose1d(4, stride 2, padding 1); H -> 2 H."""
    return ConvTranspose1d(channels, channels, 4, stride=2, padding=1)


def _time_mlp(dim: int) -> nn.Sequential:
    """Diffuser's time embedding: sinusoidal(dim) -> Linear(4 dim) -> Mish -> Linear(dim)."""
    return nn.Sequential(
        SinusoidalPosEmb(dim),
        Linear(dim, 4 * dim),
        Mish(compiled=False),
        Linear(4 * dim, dim),
    )


def _check_arch(
    horizon: int, transition_dim: int, dim: int, dim_mults: Sequence[int], kernel_size: int
) -> None:
    for name, value in (("horizon", horizon), ("transition_dim", transition_dim), ("dim", dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if len(dim_mults) == 0 or any(not isinstance(m, int) or m <= 0 for m in dim_mults):
        raise ConfigError(f"dim_mults must be positive integers, got {tuple(dim_mults)}")
    if dim % N_GROUPS:
        # Every Conv1dBlock normalises its channels in groups of N_GROUPS.
        raise ConfigError(f"U-Net dim {dim} must be a multiple of {N_GROUPS} (GroupNorm groups)")
    if kernel_size < 1 or kernel_size % 2 == 0:
        # An even kernel with padding k // 2 would lengthen the sequence by one.
        raise ConfigError(f"kernel_size {kernel_size} must be a positive odd integer")


def _to_channels_first(x: torch.Tensor, transition_dim: int, name: str) -> torch.Tensor:
    """(B, H, transition_dim) -> (B, transition_dim, H): convolutions run along time."""
    if x.dim() != 3 or x.shape[-1] != transition_dim:
        raise ConfigError(
            f"{name} expects x of shape (B, H, {transition_dim}), got {tuple(x.shape)}"
        )
    return x.transpose(1, 2)


def _time_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Accept (B,) or a 0-d t (same step for the whole batch)."""
    return t.expand(batch) if t.dim() == 0 else t


class TemporalUnet(nn.Module):
    """Diffuser's 1-d U-Net over the time axis of a trajectory, optionally return-conditioned.

    Channel widths dims = [transition_dim, dim * m for m in dim_mults], one resolution per pair
    (dim_in, dim_out) of consecutive widths.

    - time embedding: sinusoidal(dim) -> Linear(4 dim) -> Mish -> Linear(dim)
    - condition (``cond_dim > 0``, Decision Diffuser): cond -> Linear(dim) -> Mish ->
      Linear(4 dim) -> Mish -> Linear(dim), concatenated to the time embedding, so every
      residual block sees an embedding of 2 dim.
    - down: per resolution ResBlock(dim_in, dim_out), ResBlock(dim_out, dim_out), keep the
      output as a skip, then halve the length (all but the last resolution).
    - mid: two ResBlocks at the widest width.
    - up: for the resolutions in reverse, the first one excepted: concatenate the skip of the
      same length, ResBlock(2 dim_out, dim_in), ResBlock(dim_in, dim_in), double the length.
      There is one up stage per down-sampling, so every up stage up-samples. The skip of the
      full-resolution stage is not used (as in the original).
    - out: Conv1dBlock(dim, dim) -> Conv1d(dim, transition_dim, 1).

    The net is fully convolutional in time: any horizon divisible by ``downsample_factor``
    = 2 ** (len(dim_mults) - 1) works, whatever ``horizon`` it was built with (``horizon`` is
    only checked). Other horizons would leave skips and up-sampled tensors of different
    lengths, so they raise ConfigError.

    Classifier-free guidance: ``drop_mask`` (B,) marks the samples whose condition embedding is
    replaced by zeros (the "null" condition; train with p = 0.25 in Decision Diffuser), and
    ``cond=None`` drops it for the whole batch. At sampling the caller evaluates both and mixes
    eps_uncond + w (eps_cond - eps_uncond).

    Shapes
    ------
    x : (B, H, transition_dim), t : (B,), cond : (B, cond_dim) or None, drop_mask : (B,) or None
    -> (B, H, transition_dim)
    """

    def __init__(
        self,
        horizon: int,
        transition_dim: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        kernel_size: int = 5,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        _check_arch(horizon, transition_dim, dim, dim_mults, kernel_size)
        if not isinstance(cond_dim, int) or cond_dim < 0:
            raise ConfigError(f"cond_dim must be a non-negative integer, got {cond_dim!r}")
        self.horizon = horizon
        self.transition_dim = transition_dim
        self.dim = dim
        self.dim_mults = tuple(dim_mults)
        self.cond_dim = cond_dim
        self.downsample_factor = 2 ** (len(dim_mults) - 1)
        self.check_horizon(horizon)

        dims = [transition_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))
        n_res = len(in_out)

        self.time_mlp = _time_mlp(dim)
        self.cond_mlp: nn.Sequential | None = None
        embed_dim = dim
        if cond_dim > 0:
            self.cond_mlp = nn.Sequential(
                Linear(cond_dim, dim),
                Mish(compiled=False),
                Linear(dim, 4 * dim),
                Mish(compiled=False),
                Linear(4 * dim, dim),
            )
            embed_dim = 2 * dim

        def res(c_in: int, c_out: int) -> ResidualTemporalBlock:
            return ResidualTemporalBlock(c_in, c_out, embed_dim, kernel_size)

        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            is_last = i == n_res - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        res(d_in, d_out),
                        res(d_out, d_out),
                        nn.Identity() if is_last else downsample1d(d_out),
                    ]
                )
            )

        mid = dims[-1]
        self.mid_block1 = res(mid, mid)
        self.mid_block2 = res(mid, mid)

        self.ups = nn.ModuleList()
        for d_in, d_out in reversed(in_out[1:]):
            self.ups.append(
                nn.ModuleList([res(2 * d_out, d_in), res(d_in, d_in), upsample1d(d_in)])
            )

        self.final_conv = nn.Sequential(
            Conv1dBlock(dim, dim, kernel_size),
            Float32Conv1d(dim, transition_dim, 1),  # float32 under bf16 (diffrl/precision.py)
        )

    def check_horizon(self, horizon: int) -> None:
        """Raise ConfigError unless ``horizon`` is divisible by the down-sampling factor."""
        if horizon <= 0 or horizon % self.downsample_factor:
            raise ConfigError(
                f"horizon {horizon} is not divisible by the U-Net's down-sampling factor "
                f"{self.downsample_factor}"
            )

    def embed(
        self,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The embedding every residual block receives: (B, dim), or (B, 2 dim) with a condition.

        t : (B,); cond : (B, cond_dim) or None; drop_mask : (B,) bool/float, 1 = drop.
        """
        emb = self.time_mlp(t)  # (B, dim)
        if self.cond_mlp is None:
            if cond is not None or drop_mask is not None:
                raise ConfigError("this TemporalUnet has cond_dim 0 and takes no condition")
            return emb
        if cond is None:
            # No condition = the null condition, the same zeros a dropped sample gets.
            return torch.cat([emb, torch.zeros_like(emb)], dim=-1)
        if cond.dim() != 2 or cond.shape != (emb.shape[0], self.cond_dim):
            raise ConfigError(
                f"cond must have shape (B, {self.cond_dim}) with B = {emb.shape[0]}, "
                f"got {tuple(cond.shape)}"
            )
        c = self.cond_mlp(cond)  # (B, dim)
        if drop_mask is not None:
            if drop_mask.shape != (emb.shape[0],):
                raise ConfigError(
                    f"drop_mask must have shape ({emb.shape[0]},), got {tuple(drop_mask.shape)}"
                )
            # Multiplying (rather than indexing) keeps one graph for the whole batch.
            c = c * (1.0 - drop_mask.to(c.dtype))[:, None]
        return torch.cat([emb, c], dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = _to_channels_first(x, self.transition_dim, "TemporalUnet")  # (B, C, H)
        self.check_horizon(h.shape[2])
        emb = self.embed(_time_batch(t, h.shape[0]), cond, drop_mask)

        skips: list[torch.Tensor] = []
        for res1, res2, down in self.downs:
            h = res2(res1(h, emb), emb)
            skips.append(h)
            h = down(h)

        h = self.mid_block2(self.mid_block1(h, emb), emb)

        for res1, res2, up in self.ups:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(res2(res1(h, emb), emb))

        return self.final_conv(h).transpose(1, 2)  # (B, H, transition_dim)


class ValueUnet(nn.Module):
    """Diffuser's value guide V(tau_t, t): the U-Net's down half, two narrowing blocks, an MLP.

    - per resolution: ResBlock(dim_in, dim_out), ResBlock(dim_out, dim_out), then halve the
      length (at every resolution, the last one included, as in the original).
    - mid: ResBlock(mid, mid / 2) -> halve -> ResBlock(mid / 2, mid / 4) -> halve.
    - head: flatten to (B, mid / 4 * L) and concatenate the time embedding ->
      Linear(fc / 2) -> Mish -> Linear(1).

    Because it flattens the time axis, the head's size depends on the horizon: unlike
    :class:`TemporalUnet`, a ValueUnet only accepts the horizon it was built with (the
    official network's limit, Diffuser issue #74). With ``pooled=True`` the head averages over
    time instead (Linear(mid / 4 + dim, mid / 4) -> Mish -> Linear(1)), so any horizon works.
    Trained on noised trajectories (random t) to predict the return of the window.

    Shapes
    ------
    x : (B, horizon, transition_dim), t : (B,)  ->  (B, 1)
    """

    def __init__(
        self,
        horizon: int,
        transition_dim: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        kernel_size: int = 5,
        pooled: bool = False,
    ) -> None:
        super().__init__()
        _check_arch(horizon, transition_dim, dim, dim_mults, kernel_size)
        dims = [transition_dim, *(dim * m for m in dim_mults)]
        mid, mid2, mid4 = dims[-1], dims[-1] // 2, dims[-1] // 4
        if mid % (4 * N_GROUPS):
            raise ConfigError(
                f"ValueUnet's widest width {mid} (dim * dim_mults[-1]) must be a multiple of "
                f"{4 * N_GROUPS} so that it can be quartered into GroupNorm groups"
            )
        self.horizon = horizon
        self.transition_dim = transition_dim
        self.pooled = pooled

        def res(c_in: int, c_out: int) -> ResidualTemporalBlock:
            return ResidualTemporalBlock(c_in, c_out, dim, kernel_size)

        self.time_mlp = _time_mlp(dim)
        self.blocks = nn.ModuleList(
            nn.ModuleList([res(d_in, d_out), res(d_out, d_out), downsample1d(d_out)])
            for d_in, d_out in zip(dims[:-1], dims[1:], strict=True)
        )
        self.mid_block1 = res(mid, mid2)
        self.mid_down1 = downsample1d(mid2)
        self.mid_block2 = res(mid2, mid4)
        self.mid_down2 = downsample1d(mid4)

        length = horizon
        for _ in range(len(dims) - 1 + 2):  # every down-sampling maps L -> ceil(L / 2)
            length = (length + 1) // 2
        features = mid4 if pooled else mid4 * length
        hidden = mid4 if pooled else features // 2
        self.final_block = nn.Sequential(
            Linear(features + dim, hidden),
            Mish(compiled=False),
            Float32Linear(hidden, 1),  # float32 under bf16 (diffrl/precision.py)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = _to_channels_first(x, self.transition_dim, "ValueUnet")  # (B, C, H)
        if not self.pooled and h.shape[2] != self.horizon:
            raise ConfigError(
                f"ValueUnet was built for horizon {self.horizon}, got horizon {h.shape[2]}"
            )
        emb = self.time_mlp(_time_batch(t, h.shape[0]))  # (B, dim)
        for res1, res2, down in self.blocks:
            h = down(res2(res1(h, emb), emb))
        h = self.mid_down1(self.mid_block1(h, emb))
        h = self.mid_down2(self.mid_block2(h, emb))
        h = h.mean(dim=2) if self.pooled else h.flatten(1)
        return self.final_block(torch.cat([h, emb], dim=-1))
