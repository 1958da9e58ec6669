"""StyleGAN2 generator (config F), state_dict-compatible with rosinality/stylegan2-pytorch `Generator`.

Keys and shapes are identical to rosinality's `Generator(size, style_dim, n_mlp, channel_multiplier)`:
`style.{1..n}` (mapping; `style.0` is the parameter-free PixelNorm), `input.input`, `conv1`, `to_rgb1`,
`convs.{i}`, `to_rgbs.{i}`, `noises.noise_{i}`, and the FIR kernels `*.blur.kernel` / `*.upsample.kernel`
(buffers read from the checkpoint). `latent_avg` [w_dim] is a non-persistent buffer: rosinality keeps it
beside `g_ema`, not inside it, so the loader sets it.

Noise is always the fixed `noises.noise_*` buffers: the same ws give the same image.

Precision policy: the convolutions run in the dtype of the module's parameters (`G.half()` /
`G.to(torch.bfloat16)`, on CUDA or CPU; `engine.runtime.Precision` picks it). float32 models compute everything
in float32, exactly as before half precision was guarded. float16/bfloat16 models follow NVIDIA's fp16
StyleGAN2 scheme (StyleGAN2-ADA): the latents, the mapping network and the styles stay float32 (`latent_dtype`,
`latent_avg` too); each modulated conv pre-normalises styles and filters by their max |value| before the half
conv and computes the demodulation in float32 (`ModulatedConv2d._forward_half`); float16 activations are
clamped to +-`half_clamp` (256, NVIDIA's conv_clamp; bfloat16 has float32's range and is never clamped); the
RGB skip image is accumulated in float32 and cast to the model dtype at the end. Measured errors vs float32:
tests/engine/test_half_precision.py and `python -m engine.bench --errors`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.ops import HALF_DTYPES, Blur, FusedLeakyReLU, Upsample, apply_keeping_latent_avg_fp32, fused_leaky_relu

_HALF_DTYPES = HALF_DTYPES
_TINY = 1e-30  # floor of the pre-normalisation gains (an all-zero style or filter stays zero, no 0/0)
HALF_CONV_CLAMP = 256.0  # float16 activation clamp (NVIDIA's conv_clamp): keeps every conv sum below 65504
_CHANNEL_BASE = 16384  # channels = channel_multiplier * 16384 / resolution above 32x32 (rosinality's table)


def _no_grad_through(*tensors: torch.Tensor | None) -> bool:
    """True when no gradient is recorded through any of `tensors`: in-place updates are then safe."""
    if not torch.is_grad_enabled():
        return True
    return not any(t is not None and t.requires_grad for t in tensors)


class PixelNorm(nn.Module):
    """x / sqrt(mean(x^2 over dim 1) + 1e-8); no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight * lr_mul / sqrt(in_dim), bias * lr_mul.

    Parameters `weight` [out_dim, in_dim] and `bias` [out_dim]; with `activation=True` the bias goes into a
    fused leaky ReLU (gain √2)."""

    def __init__(
        self,
        in_dim: int,              # input features
        out_dim: int,             # output features
        bias_init: float = 0.0,   # initial bias value (1 for style modulation)
        lr_mul: float = 1.0,      # learning-rate multiplier (0.01 in the mapping network)
        activation: bool = False, # fused leaky ReLU after the layer
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in_dim] -> [..., out_dim], computed in x's dtype (float32 styles from a half model's
        parameters; for float32 models the cast is a no-op)."""
        weight, bias = self.weight.to(x.dtype), self.bias.to(x.dtype)
        if self.activation:
            return fused_leaky_relu(F.linear(x, weight * self.scale), bias * self.lr_mul)
        return F.linear(x, weight * self.scale, bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (per-sample weights, grouped conv), optional demodulation and 2x upsampling.

    Parameters: `weight` [1, out, in, k, k]; `modulation` (EqualLinear w_dim -> in, bias 1); with upsampling a
    `blur` (Blur, kernel buffer) after a stride-2 transposed conv."""

    def __init__(
        self,
        in_channels: int,                       # input feature maps
        out_channels: int,                      # output feature maps
        kernel_size: int,                       # spatial kernel size (3 for convs, 1 for toRGB)
        w_dim: int,                             # dimensionality of the style vector w
        demodulate: bool = True,                # normalise each output filter to unit norm
        upsample: bool = False,                 # 2x upsampling (transposed conv + blur)
        blur_kernel: Sequence[float] = (1, 3, 3, 1),  # FIR taps of the blur
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self._half_cache: tuple | None = None  # see `_half_filter`

    def _demodulation_from_styles(self, style: torch.Tensor) -> torch.Tensor:
        """1 / ||modulated filter|| per sample and output channel, [N, out], without building the filters:
        sum_{i,k} (scale * W[o,i,k] * s[n,i])^2 = scale^2 * (s^2 @ sum_k W^2)[n, o]. float32 models only
        (the half-precision path normalises first, see `_forward_half`)."""
        w2 = self.weight[0].square().sum(dim=(2, 3))                      # [out, in]
        energy = (style.square() @ w2.t()) * self.scale ** 2              # [N, out]
        return torch.rsqrt(energy + 1e-8)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [N, in, H, W], w [N, w_dim] -> [N, out, H', W'] (H' = 2H with upsampling); channels_last output.

        N = 1: the style is folded into the filter (rosinality's fused order: modulate, demodulate by the
        filter norm, convolve). N > 1: the same maths with the style applied to the input and the
        demodulation to the output (one shared filter, no grouped conv), which keeps the activations in
        channels_last layout (2-7x faster convs on CPU than NCHW).

        float16/bfloat16 parameters: see `_forward_half` (w float32 there; the output of a layer without
        demodulation, i.e. toRGB, is float32)."""
        n, c = x.shape[:2]
        style = self.modulation(w)                                            # [N, in]
        if self.weight.dtype in _HALF_DTYPES:
            return self._forward_half(x, style)
        if n == 1:
            weight = self.scale * self.weight[0] * style.reshape(1, c, 1, 1)  # [out, in, k, k]
            if self.demodulate:
                demod = torch.rsqrt(weight.square().sum(dim=(1, 2, 3)) + 1e-8)
                weight = weight * demod.reshape(self.out_channels, 1, 1, 1)
            return self._convolve(x, weight)
        weight = self.scale * self.weight[0]
        out = self._convolve(x * style.reshape(n, c, 1, 1), weight, blur=False)
        if self.demodulate:
            out = out * self._demodulation_from_styles(style).reshape(n, self.out_channels, 1, 1)
        return self.blur(out) if self.upsample else out

    def _convolve(self, x: torch.Tensor, weight: torch.Tensor, blur: bool = True) -> torch.Tensor:
        """x [N, in, H, W] with filters [out, in, k, k]: conv (same padding), or with upsampling a stride-2
        transposed conv followed by the FIR blur (`blur=False` leaves the blur to the caller)."""
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            return self.blur(out) if blur else out
        return F.conv2d(x, weight.contiguous(memory_format=torch.channels_last), padding=self.padding)

    def _forward_half(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """float16/bfloat16 modulated conv guarded against overflow (NVIDIA's StyleGAN2-ADA fp16 scheme).

        x [N, in, H, W] in the half dtype, style [N, in] (float32 when w is). Styles are pre-normalised by their
        per-sample max |s| and the filters by their per-output-channel max |W| times 1/sqrt(fan_in)
        (`_half_filter`), so every modulated input stays <= |x| and every filter tap <= 1/sqrt(fan_in): a conv
        sum is at most |x|max * sqrt(fan_in) (~17e3 for |x| <= 256 at 3x3x512, below float16's 65504). The
        demodulation coefficients come from the normalised factors in float32 (the normalisation cancels there
        exactly); a layer without demodulation (toRGB) multiplies the two gains back in float32 and returns
        float32. The style scales the activations for every N (one shared, cached filter): cheaper than a
        per-sample filter at the low resolutions, a few percent of the conv at the high ones.
        """
        n, c = x.shape[:2]
        w_n, w_gain, w2 = self._half_filter()
        style = style.float()
        s_gain = style.abs().amax(dim=1, keepdim=True).clamp_min(_TINY)       # [N, 1] max_i |s[n, i]|
        s_n = style / s_gain                                                  # |s_n| <= 1
        out = self._convolve(x * s_n.to(x.dtype).reshape(n, c, 1, 1), w_n, blur=False)
        if self.demodulate:
            demod = torch.rsqrt(s_n.square() @ w2.t() + 1e-8)                 # [N, out]: 1 / filter norm
            out = out * demod.to(out.dtype).reshape(n, self.out_channels, 1, 1)
            return self.blur(out) if self.upsample else out
        out = self.blur(out) if self.upsample else out
        return out.float() * (s_gain * w_gain).reshape(n, self.out_channels, 1, 1)  # scale*W*s = gains * w_n * s_n

    def _apply(self, fn, *args, **kwargs):
        self._half_cache = None  # a cast or move replaces the weight: the cached filters go with it
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_half_cache"] = None  # copies and pickles rebuild the cache on their first half forward
        return state

    def _half_filter(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w_n [out, in, k, k] in the weight dtype, w_gain [out] float32, w2 [out, in] float32) with
        w_n = scale * W / max|W[o]| (|w_n| <= 1/sqrt(fan_in)), w_gain = max|W[o]|, w2 = sum_k w_n^2 (float32).

        Depends on the weight only: cached until the module is cast or moved, the weight's storage is replaced or
        modified in place (its version counter: `load_state_dict` copies); never cached while a gradient is
        recorded through the weight."""
        weight = self.weight
        cache = self._half_cache
        if cache is not None and cache[0].data_ptr() == weight.data_ptr() and cache[1] == weight._version \
                and cache[0].dtype == weight.dtype and cache[0].device == weight.device:
            return cache[2]
        w = weight[0]
        w_gain = w.abs().amax(dim=(1, 2, 3)).float().clamp_min(_TINY)
        w_n = w * (self.scale / w_gain).to(w.dtype).reshape(-1, 1, 1, 1)
        w2 = w_n.float().square().sum(dim=(2, 3))
        if not self.upsample:
            w_n = w_n.contiguous(memory_format=torch.channels_last)
        value = (w_n, w_gain, w2)
        if not (torch.is_grad_enabled() and weight.requires_grad):
            # the detached alias keeps the cached storage alive, so its address cannot be reused by another tensor
            self._half_cache = (weight.detach(), weight._version, value)
        return value

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"demodulate={self.demodulate}, upsample={self.upsample}")


class NoiseInjection(nn.Module):
    """x + weight * noise, with a learned scalar `weight` [1] and a given noise map [1 or N, 1, H, W]."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        scaled = self.weight * noise.to(x.dtype)  # [1 or N, 1, H, W]: small
        if _no_grad_through(x, scaled):
            return x.add_(scaled)  # x is the conv output just produced: in place spares a full-size copy
        return x + scaled


class ConstantInput(nn.Module):
    """The learned 4x4 starting tensor `input` [1, C, 4, 4], repeated over the batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.input.repeat(batch_size, 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> noise -> bias + leaky ReLU (`conv`, `noise`, `activate` submodules); in float16 the
    activation is clamped to +-`half_clamp` (overflow guard, see `HALF_CONV_CLAMP`)."""

    def __init__(
        self,
        in_channels: int,                       # input feature maps
        out_channels: int,                      # output feature maps
        kernel_size: int,                       # spatial kernel size
        w_dim: int,                             # dimensionality of w
        upsample: bool = False,                 # 2x upsampling before the conv output
        blur_kernel: Sequence[float] = (1, 3, 3, 1),  # FIR taps
        half_clamp: float | None = HALF_CONV_CLAMP,  # float16 activation clamp (None: off); never in fp32/bf16
    ):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, w_dim,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)
        self.half_clamp = half_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # conv output is a fresh intermediate: noise and activation may update it in place (inference only)
        out = self.activate(self.noise(self.conv(x, w), noise), inplace=True)
        if out.dtype == torch.float16 and self.half_clamp is not None:
            c = self.half_clamp
            return out.clamp_(-c, c) if _no_grad_through(out) else out.clamp(-c, c)
        return out


class ToRGB(nn.Module):
    """1x1 modulated conv to 3 channels (no demodulation) + `bias` [1, 3, 1, 1] + upsampled skip image.

    Half-precision models return (and take the skip image in) float32: the RGB sum over all blocks is
    accumulated in float32, as in NVIDIA's fp16 synthesis (3 channels: cheap)."""

    def __init__(
        self,
        in_channels: int,                       # input feature maps
        w_dim: int,                             # dimensionality of w
        upsample: bool = True,                  # add the 2x FIR-upsampled previous RGB image
        blur_kernel: Sequence[float] = (1, 3, 3, 1),  # FIR taps of the skip upsampler
    ):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w)
        if _no_grad_through(out, self.bias, skip):
            out.add_(self.bias.to(out.dtype))
            return out if skip is None else out.add_(self.upsample(skip))
        out = out + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def channels_at(resolution: int, channel_multiplier: float, channel_max: int) -> int:
    """Feature maps at a resolution: rosinality's table (512 up to 32x32, then multiplier*16384/res),
    capped at `channel_max`."""
    ch = 512 if resolution <= 32 else int(channel_multiplier * _CHANNEL_BASE / resolution)
    return max(1, min(channel_max, ch))


class Generator(nn.Module):
    """StyleGAN2 generator: `G(ws [N, num_ws, w_dim]) -> images [N, 3, R, R]` (about [-1, 1] when trained).

    `G.mapping(z [N, z_dim], truncation=1.0) -> w [N, w_dim]`; `G.truncate(ws, psi)` moves toward
    `latent_avg`. Attributes: `resolution`, `num_ws` (= 2 log2(R) - 2), `w_dim`, `z_dim`.
    """

    def __init__(
        self,
        resolution: int,                         # output resolution R (power of two, >= 8)
        w_dim: int = 512,                        # dimensionality of w / W+ (rosinality's style_dim)
        z_dim: int = 512,                        # dimensionality of the mapping input z
        n_mapping: int = 8,                      # number of mapping-network layers (rosinality's n_mlp)
        channel_multiplier: float = 2,           # config-f width above 32x32 (2 for FFHQ 1024)
        lr_mlp: float = 0.01,                    # learning-rate multiplier of the mapping layers
        channel_max: int = 512,                  # cap on feature maps per layer (small for test models)
        blur_kernel: Sequence[float] = (1, 3, 3, 1),  # FIR taps for up-sampling
        half_clamp: float | None = HALF_CONV_CLAMP,    # float16 activation clamp (None: off); fp32/bf16 never clamp
    ):
        super().__init__()
        log2 = int(round(math.log2(resolution))) if resolution > 0 else 0
        if resolution < 8 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        self.resolution = int(resolution)
        self.w_dim = int(w_dim)
        self.z_dim = int(z_dim)
        self.n_mapping = int(n_mapping)
        self.channel_multiplier = channel_multiplier
        self.channel_max = int(channel_max)
        self.half_clamp = half_clamp
        self.num_ws = 2 * log2 - 2
        self.num_layers = 2 * log2 - 3  # styled convs = fixed noise maps
        self.channels = {2 ** i: channels_at(2 ** i, channel_multiplier, channel_max) for i in range(2, log2 + 1)}

        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mlp, activation=True)
                for i in range(n_mapping)
            ],
        )
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, w_dim, blur_kernel=blur_kernel, half_clamp=half_clamp)
        self.to_rgb1 = ToRGB(c4, w_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            size = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, size, size))
        in_ch = c4
        for i in range(3, log2 + 1):
            out_ch = self.channels[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, w_dim, upsample=True, blur_kernel=blur_kernel,
                                         half_clamp=half_clamp))
            self.convs.append(StyledConv(out_ch, out_ch, 3, w_dim, blur_kernel=blur_kernel, half_clamp=half_clamp))
            self.to_rgbs.append(ToRGB(out_ch, w_dim, blur_kernel=blur_kernel))
            in_ch = out_ch
        self.register_buffer("latent_avg", torch.zeros(w_dim), persistent=False)

    # -- properties -----------------------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.input.input.dtype

    @property
    def device(self) -> torch.device:
        return self.input.input.device

    @property
    def latent_dtype(self) -> torch.dtype:
        """dtype of the latent computations (mapping, styles, RGB accumulation): float32 for a float16/bfloat16
        model, else the model's dtype."""
        return torch.float32 if self.dtype in _HALF_DTYPES else self.dtype

    def _apply(self, fn, *args, **kwargs):
        """Module casts move `latent_avg` with the model but keep it float32 when the model goes half."""
        return apply_keeping_latent_avg_fp32(self, super()._apply, fn, *args, **kwargs)

    def noise_maps(self) -> list[torch.Tensor]:
        """The fixed noise buffers, one per styled conv: [1, 1, r, r]."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    # -- mapping --------------------------------------------------------------------------------------------------

    def mapping(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """z [N, z_dim] -> w [N, w_dim] in z's dtype (computed in `latent_dtype`: float32 for a half model);
        truncation psi < 1 moves w toward `latent_avg` (psi = 1: unchanged)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"z must have shape [N, {self.z_dim}] (N, z_dim of this generator), got {list(z.shape)}"
            )
        w = self.truncate(self.style(z.to(self.latent_dtype)), truncation)
        return w.to(z.dtype) if z.is_floating_point() else w  # latents stay in the caller's dtype (float32)

    def truncate(self, ws: torch.Tensor, psi: float) -> torch.Tensor:
        """latent_avg + psi * (ws - latent_avg) for ws [..., w_dim] (w or W+); psi = 1 returns ws itself."""
        if ws.shape[-1] != self.w_dim:
            raise ValueError(f"truncate expects [..., {self.w_dim}] (w_dim), got {list(ws.shape)}")
        if psi == 1:
            return ws
        avg = self.latent_avg.to(ws.dtype)
        return avg + psi * (ws - avg)

    @torch.no_grad()
    def estimate_latent_avg(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Mean of `mapping(z)` over n seeded z ~ N(0, I): [w_dim] (for checkpoints without latent_avg)."""
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed))
        return self.style(z.to(device=self.device, dtype=self.latent_dtype)).mean(0)

    # -- synthesis ------------------------------------------------------------------------------------------------

    def _check_ws(self, ws: torch.Tensor) -> None:
        if not torch.is_tensor(ws) or ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            got = list(ws.shape) if hasattr(ws, "shape") else type(ws).__name__
            raise ValueError(
                f"ws must have shape [N, {self.num_ws}, {self.w_dim}] (N, num_ws, w_dim of this "
                f"{self.resolution}px generator), got {got}; expand a single w with w[:, None].repeat(1, {self.num_ws}, 1)"
            )

    def synthesis(self, ws: torch.Tensor, out_resolution: int | None = None) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> images [N, 3, r, r] in the module's dtype, fixed noise.

        Half models (float16/bfloat16) take ws and compute the styles in float32, run the convs in their dtype
        (pre-normalised modulation, float32 demodulation; float16 activations clamped to +-`half_clamp`) and
        accumulate the RGB skip image in float32, cast to the model dtype at the end.

        r = `out_resolution` (a power of two from 4 to `resolution`; None = `resolution`). A smaller r stops the
        synthesis after that block and returns its skip-connection RGB image: the same picture without the finer
        blocks' detail, at a fraction of the cost (the real-time path renders the size it pastes). The w rows of
        the skipped blocks are ignored.
        """
        self._check_ws(ws)
        r = self.resolution if out_resolution is None else int(out_resolution)
        if r not in self.channels:
            raise ValueError(f"out_resolution must be a power of two from 4 to {self.resolution}, got {out_resolution}")
        ws = ws.to(self.latent_dtype)
        noise = self.noise_maps()
        x = self.input(ws.shape[0]).contiguous(memory_format=torch.channels_last)  # faster convs, see ModulatedConv2d
        x = self.conv1(x, ws[:, 0], noise[0])
        img = self.to_rgb1(x, ws[:, 1])
        n_blocks = int(round(math.log2(r))) - 2  # block b renders 2 ** (b + 3)
        for b, to_rgb in enumerate(self.to_rgbs[:n_blocks]):
            i = 2 * b + 1
            x = self.convs[2 * b](x, ws[:, i], noise[i])
            x = self.convs[2 * b + 1](x, ws[:, i + 1], noise[i + 1])
            img = to_rgb(x, ws[:, i + 2], img)
        return img.to(self.dtype).contiguous()  # plain NCHW in the model dtype (3 channels: a cheap copy)

    def forward(self, ws: torch.Tensor, out_resolution: int | None = None) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> images [N, 3, r, r] (see `synthesis`)."""
        return self.synthesis(ws, out_resolution)

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, num_ws={self.num_ws}, w_dim={self.w_dim}, z_dim={self.z_dim}, "
                f"n_mapping={self.n_mapping}, channel_multiplier={self.channel_multiplier}, "
                f"channel_max={self.channel_max}")


__all__ = ["Generator", "ModulatedConv2d", "StyledConv", "ToRGB", "EqualLinear", "PixelNorm", "channels_at"]
