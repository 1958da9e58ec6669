"""StyleGAN2 generator and ops on tiny random configs: maths vs hand computations, mapping, truncation, errors.

Numerics of the full config-f network against the reference implementation: test_generator_checkpoints.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gen_helpers import make_tiny_generator
from engine.ops import Blur, Upsample, fused_leaky_relu, make_kernel, upfirdn2d
from engine.stylegan2 import Generator, ModulatedConv2d, channels_at


# ------------------------------------------------------------------------------------------------------ ops


def naive_upfirdn2d(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Textbook definition: zero-insert, pad (negative = crop), full 2-D convolution with k, decimate."""
    x0, x1, y0, y1 = pad
    n, c, h, w = x.shape
    kh, kw = k.shape
    u = np.zeros((n, c, h * up, w * up), dtype=np.float64)
    u[:, :, ::up, ::up] = x
    hp, wp = h * up + y0 + y1, w * up + x0 + x1
    p = np.zeros((n, c, hp, wp))
    for i in range(hp):
        for j in range(wp):
            si, sj = i - y0, j - x0
            if 0 <= si < h * up and 0 <= sj < w * up:
                p[:, :, i, j] = u[:, :, si, sj]
    oh, ow = hp - kh + 1, wp - kw + 1
    out = np.zeros((n, c, oh, ow))
    for a in range(kh):
        for b in range(kw):
            out += p[:, :, a : a + oh, b : b + ow] * k[kh - 1 - a, kw - 1 - b]  # convolution: flipped taps
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(
    "up, down, pad, ksize",
    [(1, 1, (1, 1, 1, 1), 4), (2, 1, (2, 1, 2, 1), 4), (1, 2, (1, 1, 1, 1), 4), (2, 1, (-1, 2, 3, -2), 3),
     (3, 2, (1, 2, 0, 1), 4), (1, 1, (0, 0, 0, 0), 5)],
)
def test_upfirdn2d_matches_definition(up, down, pad, ksize):
    g = torch.Generator().manual_seed(up * 10 + down + ksize)
    x = torch.randn(2, 3, 7, 9, generator=g)
    k = torch.randn(ksize, ksize, generator=g)  # asymmetric: a missing kernel flip would show
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = naive_upfirdn2d(x.double().numpy(), k.double().numpy(), up, down, pad)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_upfirdn2d_two_tuple_pad_and_bad_input():
    x = torch.randn(1, 2, 5, 5)
    k = make_kernel([1, 3, 3, 1])
    torch.testing.assert_close(upfirdn2d(x, k, pad=(2, 1)), upfirdn2d(x, k, pad=(2, 1, 2, 1)))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        upfirdn2d(x[0], k)
    with pytest.raises(ValueError, match="2 or 4"):
        upfirdn2d(x, k, pad=(1, 1, 1))


def test_make_kernel_and_fir_modules():
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)
    torch.testing.assert_close(k, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    up = Upsample([1, 3, 3, 1])
    torch.testing.assert_close(up.kernel, k * 4)
    x = torch.randn(1, 3, 8, 8)
    assert up(x).shape == (1, 3, 16, 16)
    # a constant image stays constant in the interior after FIR upsampling (gain factor**2 compensates zeros)
    const = up(torch.ones(1, 1, 8, 8))
    torch.testing.assert_close(const[..., 2:-2, 2:-2], torch.ones_like(const[..., 2:-2, 2:-2]))
    blur = Blur([1, 3, 3, 1], pad=(2, 1), upsample_factor=2)
    torch.testing.assert_close(blur.kernel, k * 4)
    assert blur(torch.randn(1, 2, 9, 9)).shape == (1, 2, 9, 9)


def test_fused_leaky_relu_hand_computation_and_inplace():
    x = torch.tensor([[-2.0, -0.5, 0.0, 1.5]]).reshape(1, 4, 1, 1).repeat(2, 1, 3, 3)
    b = torch.tensor([0.5, 0.25, -1.0, 0.0])
    expected = x + b.reshape(1, 4, 1, 1)
    expected = torch.where(expected >= 0, expected, 0.2 * expected) * math.sqrt(2)
    torch.testing.assert_close(fused_leaky_relu(x, b), expected)
    y = x.clone()
    with torch.no_grad():
        out = fused_leaky_relu(y, b, inplace=True)
    torch.testing.assert_close(out, expected)
    assert out.data_ptr() == y.data_ptr()  # really in place under no_grad
    xg = x.clone().requires_grad_(True)
    out = fused_leaky_relu(xg, b, inplace=True)  # gradient recorded: must not touch xg
    torch.testing.assert_close(xg.detach(), x)
    out.sum().backward()
    assert xg.grad is not None


# ------------------------------------------------------------------------------------------------------ conv


@pytest.mark.parametrize("n", [1, 3])  # N = 1: style folded into the filter; N > 1: style on the activations
@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_per_sample_formula(n, upsample, demodulate):
    torch.manual_seed(n + 2 * upsample)
    conv = ModulatedConv2d(6, 5, 3, w_dim=8, upsample=upsample, demodulate=demodulate)
    x = torch.randn(n, 6, 8, 8)
    w = torch.randn(n, 8)
    out = conv(x, w)
    assert out.shape == (n, 5, 16 if upsample else 8, 16 if upsample else 8)
    for i in range(n):  # one sample at a time, written out from the StyleGAN2 paper's equations
        s = F.linear(w[i], conv.modulation.weight * conv.modulation.scale, conv.modulation.bias)
        wt = conv.weight[0] * conv.scale * s.reshape(1, 6, 1, 1)
        if demodulate:
            wt = wt / torch.sqrt(wt.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if upsample:
            y = F.conv_transpose2d(x[i : i + 1], wt.transpose(0, 1), stride=2)
            y = upfirdn2d(y, conv.blur.kernel, pad=conv.blur.pad)
        else:
            y = F.conv2d(x[i : i + 1], wt, padding=1)
        torch.testing.assert_close(out[i : i + 1], y, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------ generator


def test_generator_attributes_and_channels():
    G = make_tiny_generator()
    assert (G.resolution, G.num_ws, G.w_dim, G.z_dim) == (32, 8, 16, 16)
    assert G.latent_avg.shape == (16,)
    assert "latent_avg" not in G.state_dict()  # set by the loader from the checkpoint's top level
    assert len([k for k in G.state_dict() if k.startswith("noises.")]) == G.num_layers == 7
    assert [channels_at(r, 2, 512) for r in (4, 32, 64, 128, 256, 512, 1024)] == [512, 512, 512, 256, 128, 64, 32]
    assert [channels_at(r, 1, 512) for r in (32, 64, 256)] == [512, 256, 64]
    for bad in (0, 4, 48, 100):
        with pytest.raises(ValueError, match="power of two"):
            Generator(bad)


def test_forward_shape_determinism_and_batch_independence(tiny_generator):
    G = tiny_generator
    g = torch.Generator().manual_seed(5)
    ws = torch.randn(3, G.num_ws, G.w_dim, generator=g)
    with torch.no_grad():
        img = G(ws)
        again = G(ws)
        single = G(ws[1:2])
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32 and img.is_contiguous()
    assert torch.isfinite(img).all()
    torch.testing.assert_close(img, again, rtol=0, atol=0)  # fixed noise: deterministic
    torch.testing.assert_close(img[1:2], single, rtol=1e-4, atol=1e-5 * float(img.abs().max()))
    assert (img[0] - img[1]).abs().max() > 1e-3  # different ws, different images
    # the per-layer ws entries are really used: changing only the last one changes the image
    ws2 = ws.clone()
    ws2[:, -1] += 1.0
    with torch.no_grad():
        assert (G(ws2) - img).abs().max() > 1e-4


def test_fixed_noise_buffers_are_used(tiny_generator):
    G = tiny_generator
    ws = G.latent_avg.expand(1, G.num_ws, G.w_dim).clone()
    with torch.no_grad():
        before = G(ws)
        G.noises.noise_6.mul_(-1.0)
        after = G(ws)
    assert (before - after).abs().max() > 1e-4


def test_grad_path_equals_inference_path(tiny_generator):
    G = tiny_generator
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast = G(ws)  # in-place elementwise path
    wsg = ws.clone().requires_grad_(True)
    slow = G(wsg)  # out-of-place path, gradients recorded
    torch.testing.assert_close(slow.detach(), fast, rtol=1e-6, atol=1e-6)
    slow.square().mean().backward()
    assert wsg.grad is not None and wsg.grad.abs().sum() > 0


def test_mapping_depends_on_z_and_matches_hand_computation():
    G = make_tiny_generator(seed=3, z_dim=8, w_dim=16, n_mapping=3)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        w = G.mapping(z)
    # hand computation: PixelNorm, then n_mapping x (linear with equalised lr, bias * lr_mul, lrelu(0.2) * sqrt 2)
    x = z / torch.sqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    for layer in list(G.style)[1:]:
        in_dim = layer.weight.shape[1]
        x = x @ (layer.weight * 0.01 / math.sqrt(in_dim)).t() + layer.bias * 0.01
        x = torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2)
    assert w.shape == (4, 16)
    torch.testing.assert_close(w, x, rtol=1e-5, atol=1e-6)
    spread = (w[:, None] - w[None]).abs().amax(dim=-1)
    assert (spread + torch.eye(4) * 1e9).min() > 1e-3 * w.abs().max()  # every pair of z gives a different w
    # PixelNorm: scaling z does not change w
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(3.0 * z), w, rtol=1e-5, atol=1e-6)


def test_truncation_arithmetic(tiny_generator):
    G = tiny_generator
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(11))
    avg = G.latent_avg
    with torch.no_grad():
        w = G.mapping(z)
        wt = G.mapping(z, truncation=0.7)
    torch.testing.assert_close(wt, avg + 0.7 * (w - avg))
    torch.testing.assert_close(G.truncate(w, 0.0), avg.expand_as(w))
    assert G.truncate(w, 1.0) is w
    ws = w[:, None].repeat(1, G.num_ws, 1)
    torch.testing.assert_close(G.truncate(ws, 0.5), avg + 0.5 * (ws - avg))
    with pytest.raises(ValueError, match=r"\[\.\.\., 16\]"):
        G.truncate(torch.zeros(2, 5), 0.5)


@pytest.mark.parametrize(
    "shape",
    [(2, 7, 16), (2, 8, 15), (8, 16), (1, 2, 8, 16)],
)
def test_ws_of_wrong_shape_is_a_one_line_error(tiny_generator, shape):
    with pytest.raises(ValueError) as info:
        tiny_generator(torch.zeros(shape))
    msg = str(info.value)
    assert "\n" not in msg
    assert "ws must have shape [N, 8, 16]" in msg and f"got {list(shape)}" in msg and "num_ws" in msg


def test_z_of_wrong_shape_is_a_one_line_error(tiny_generator):
    with pytest.raises(ValueError, match=r"z must have shape \[N, 16\].*got \[2, 15\]"):
        tiny_generator.mapping(torch.zeros(2, 15))


def test_bfloat16_model_runs_in_its_dtype(tiny_generator):
    G32 = tiny_generator
    ws = torch.randn(2, G32.num_ws, G32.w_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = G32(ws)
        Gb = make_tiny_generator().to(torch.bfloat16)
        out = Gb(ws)  # float32 ws are cast to the model dtype at the entry (N > 1 path)
        out1 = Gb(ws[:1])  # N = 1 path (style folded into the filter)
    assert out1.dtype == torch.bfloat16
    assert (out1.float() - ref[:1]).abs().max() < 0.05 * ref.abs().max() + 0.05
    assert out.dtype == torch.bfloat16
    z = torch.randn(2, Gb.z_dim)
    with torch.no_grad():
        assert Gb.mapping(z).dtype == torch.float32  # latents stay float32 whatever the model dtype
        torch.testing.assert_close(Gb.mapping(z), G32.mapping(z), rtol=0.05, atol=0.05)
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_model_on_cuda_matches_float32():
    G32 = make_tiny_generator(channel_max=64, resolution=64).cuda()
    G16 = make_tiny_generator(channel_max=64, resolution=64).cuda().half()
    ws = torch.randn(4, G32.num_ws, G32.w_dim, device="cuda", generator=None)
    with torch.no_grad():
        ref = G32(ws)
        out = G16(ws)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 2e-2 * ref.abs().max() + 1e-2


def test_out_resolution_equals_a_smaller_generator_with_the_same_weights(tiny_generator):
    """Stopping early returns exactly what a lower-resolution generator holding the same layers renders."""
    G = tiny_generator
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = G(ws)
        assert torch.equal(G(ws, out_resolution=G.resolution), full)
        r = G.resolution // 2
        small = Generator(resolution=r, w_dim=G.w_dim, z_dim=G.z_dim, n_mapping=G.n_mapping,
                          channel_multiplier=G.channel_multiplier, channel_max=G.channel_max)
        own = small.state_dict()
        small.load_state_dict({k: v for k, v in G.state_dict().items() if k in own}, strict=True)
        expected = small(ws[:, : small.num_ws])
        early = G(ws, out_resolution=r)
    assert early.shape == (2, 3, r, r)
    torch.testing.assert_close(early, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(F.interpolate(full, size=r, mode="area"), early, atol=1e-3)  # really stopped early


@pytest.mark.parametrize("bad", [3, 12, 64])
def test_out_resolution_must_be_a_block_size(tiny_generator, bad):
    ws = torch.zeros(1, tiny_generator.num_ws, tiny_generator.w_dim)
    with pytest.raises(ValueError, match="out_resolution must be a power of two"):
        tiny_generator(ws, out_resolution=bad)
