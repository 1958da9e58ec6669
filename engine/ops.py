"""Pure-PyTorch reference ops of StyleGAN2: FIR up/down-sampling (`upfirdn2d`), fused leaky ReLU, blur.

The maths follows rosinality's CPU fallbacks (`upfirdn2d_native`, `fused_leaky_relu` on CPU), which is also
what NVIDIA's reference `upfirdn2d` computes: zero-insertion upsampling, padding (negative = crop), a true
2-D convolution with the FIR kernel (i.e. correlation with the flipped kernel), then decimation.
No compiled extensions: everything runs wherever torch runs, in the dtype of the input.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

HALF_DTYPES = (torch.float16, torch.bfloat16)   # the half precisions of the engine's fp16/bf16 policy
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activation's second moment at 1 for unit-variance inputs


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """FIR kernel [kh, kw] float32 normalised to sum 1; a 1-D `k` becomes the separable outer(k, k)."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def _pad4(pad: Sequence[int]) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from a 2-tuple (same padding on both axes) or a 4-tuple."""
    if len(pad) == 2:
        return int(pad[0]), int(pad[1]), int(pad[0]), int(pad[1])
    if len(pad) == 4:
        return tuple(int(p) for p in pad)  # type: ignore[return-value]
    raise ValueError(f"pad must have 2 or 4 entries, got {len(pad)}")


def upfirdn2d(
    x: torch.Tensor,        # input images [N, C, H, W], any float dtype
    kernel: torch.Tensor,   # FIR kernel [kh, kw] (converted to x's dtype/device)
    up: int = 1,            # integer upsampling factor (zero insertion), both axes
    down: int = 1,          # integer downsampling factor (keep every down-th sample), both axes
    pad: Sequence[int] = (0, 0),  # (before, after) for both axes, or (x0, x1, y0, y1); negative values crop
) -> torch.Tensor:
    """Upsample, pad, FIR-filter, downsample. Returns [N, C, H', W'] with
    H' = (H * up + y0 + y1 - kh) // down + 1 (likewise W')."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [N, C, H, W], got shape {list(x.shape)}")
    if kernel.ndim != 2:
        raise ValueError(f"upfirdn2d expects a 2-D FIR kernel, got shape {list(kernel.shape)}")
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    px0, px1, py0, py1 = _pad4(pad)

    out = x
    if up > 1:  # zero insertion: every sample followed by (up - 1) zeros on both axes
        out = out.reshape(n, c, h, 1, w, 1)
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
        out = out.reshape(n, c, h * up, w * up)
    if px0 == px1 >= 0 and py0 == py1 >= 0:
        conv_padding = (py0, px0)  # symmetric: let the conv pad (no extra full-size copy)
    else:
        conv_padding = (0, 0)
        out = F.pad(out, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
        out = out[
            :,
            :,
            max(-py0, 0) : out.shape[2] - max(-py1, 0),
            max(-px0, 0) : out.shape[3] - max(-px1, 0),
        ]
    # conv2d correlates; flipping the kernel makes it the convolution the FIR filter is defined by.
    # One depthwise conv (groups=C) in channels_last layout: oneDNN runs that ~15x faster on CPU than a
    # single-channel conv over N*C images; the result is identical.
    weight = torch.flip(kernel, [0, 1]).to(dtype=out.dtype, device=out.device)
    weight = weight.reshape(1, 1, kh, kw).expand(c, 1, kh, kw).contiguous()
    out = F.conv2d(out.contiguous(memory_format=torch.channels_last), weight, padding=conv_padding, groups=c)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out  # channels_last strides; the following convs and elementwise ops take it as is


def fused_leaky_relu(
    x: torch.Tensor,                    # [N, C, ...] (channels on dim 1)
    bias: torch.Tensor | None = None,   # [C], added before the activation
    negative_slope: float = LRELU_SLOPE,
    scale: float = LRELU_GAIN,
    inplace: bool = False,              # overwrite x when no gradient is recorded (spares full-size copies)
) -> torch.Tensor:
    """`leaky_relu(x + bias) * scale` with the bias broadcast over dim 1; same dtype as `x`.

    `inplace=True` works on `x` itself when no gradient is recorded through `x` or `bias` (inference), which
    spares three full-size allocations at high resolution; otherwise it computes out of place.
    """
    grad = torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))
    if inplace and not grad:
        if bias is not None:
            x.add_(bias.to(x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2)))
        return F.leaky_relu_(x, negative_slope).mul_(scale)
    if bias is not None:
        x = x + bias.to(x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))
    return F.leaky_relu(x, negative_slope=negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias + leaky ReLU(0.2) + gain √2 (parameter `bias` [channels])."""

    def __init__(
        self,
        channels: int,                      # number of channels (dim 1 of the input)
        bias: bool = True,                  # learn a per-channel bias
        negative_slope: float = LRELU_SLOPE,
        scale: float = LRELU_GAIN,
    ):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale, inplace=inplace)


class Blur(nn.Module):
    """FIR filter with fixed padding; the kernel is a buffer `kernel` [k, k] (stored in checkpoints)."""

    def __init__(
        self,
        kernel: Sequence[float],   # 1-D taps, e.g. (1, 3, 3, 1); normalised to sum 1
        pad: Sequence[int],        # (before, after) padding, see `upfirdn2d`
        upsample_factor: int = 1,  # when the blur follows a stride-f transposed conv: gain f**2
    ):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor ** 2
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x (or `factor`x) FIR upsampling; buffer `kernel` [k, k] with gain factor**2."""

    def __init__(
        self,
        kernel: Sequence[float],  # 1-D taps, normalised to sum 1 then multiplied by factor**2
        factor: int = 2,          # upsampling factor
    ):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * factor ** 2
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


__all__ = ["Blur", "FusedLeakyReLU", "Upsample", "fused_leaky_relu", "make_kernel", "upfirdn2d"]


def apply_keeping_latent_avg_fp32(module: nn.Module, apply, fn, *args, **kwargs):
    """`module._apply` for a network with a `latent_avg` buffer: casts and moves run as usual (`apply` is the
    parent's `_apply`), but a half-precision cast leaves `latent_avg` float32 on the new device (latents are
    float32 whatever the network dtype)."""
    avg = module.latent_avg
    out = apply(fn, *args, **kwargs)
    moved = module._buffers["latent_avg"]
    if moved.dtype in HALF_DTYPES and avg.dtype == torch.float32:
        module._buffers["latent_avg"] = avg.to(moved.device)
    return out
