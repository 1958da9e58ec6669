"""fp16 and bf16 against fp32 on CPU: the recipe config-f generator, large styles, the overflow guard, encoders.

Tolerances (|half - fp32| of the image, relative to the fp32 image's peak |value|, because every rounding error
scales with the values it rounds; a trained generator's images peak at ~1, the recipe's at ~3):

* bf16: max <= 3 %, mean <= 0.4 % of the peak. bf16 keeps 8 significant bits (unit roundoff u = 2^-8 = 0.39 %):
  ~1 u on average, and ~8 u for the single worst of ~400k pixels, each the sum of roundings through 13 layers.
  Measured on the recipe checkpoint at 256 px: max 0.73 %, mean 0.11 %; styles scaled to |s| <= 50: max 1.7 %,
  mean 0.20 %.
* fp16: max <= 0.4 %, mean <= 0.05 % of the peak (the same 8 u / 1 u with u = 2^-11). Measured at 32 px: max
  0.04 %, mean 0.012 %; large styles max 0.18 %, mean 0.018 %; a single 3x3 512-channel layer at trained
  magnitudes: max 0.11 %, mean 0.02 %.
* never inf or NaN.

Resolutions: bf16 renders 256 px (`out_resolution`, the live size); fp16 renders 32 px because this CPU has no
fp16 arithmetic (no oneDNN fp16 kernels: reference convolutions, ~20x slower than bf16); 1024 px figures come from
tests/engine/half_error_table.py.

"Large styles": the fixture ws scaled until the largest style of the styled convs is 50. Assumption (no trained
weights here): a trained FFHQ config-f generator's w have a spread of ~1-3 per coordinate and its conv styles reach
tens; the recipe's modulation weights are ~1/sqrt(512) of a trained net's, so the ws are scaled up (~x300) to put
the styles at trained magnitudes.

Encoders (IR-SE50 from the fixture recipe; latent units): bound max <= 0.05, mean <= 0.01 (a twentieth / a
hundredth of the assumed per-coordinate w spread of ~1). e4e holds it in bf16 and fp16; the ReStyle-pSp network
holds it in fp16 but not in bf16 (its deep body amplifies rounding ~25x on the recipe weights), which is why the
CPU "auto" policy keeps the encoders fp32 (engine.runtime.Precision).
"""
from __future__ import annotations

import copy
import gc
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.checkpoints import load_generator
from engine.encoder_checkpoints import load_encoder
from engine.precision_errors import conv_styles, image_error, scale_for_style_max
from engine.runtime import Precision, prepare
from engine.stylegan2 import HALF_CONV_CLAMP, ModulatedConv2d, StyledConv
from gen_helpers import make_tiny_generator
from recipe_ckpt import build_recipe_checkpoint

log = logging.getLogger(__name__)

TOLERANCE = {  # (max, mean) of |half - fp32| / max|fp32|
    "bf16": (0.03, 0.004),
    "fp16": (0.004, 0.0005),
}
RESOLUTION = {"bf16": 256, "fp16": 32}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
STYLE_MAX = 50.0
LATENT_TOLERANCE = (0.05, 0.01)  # encoders: max, mean |ws_half - ws_fp32| in latent units


def assert_within(err: dict, precision: str, what: str) -> None:
    max_rel, mean_rel = TOLERANCE[precision]
    log.info("%s %s: max %.4g mean %.4g (peak %.3g: %.3f %% / %.3f %%)", precision, what, err["max"], err["mean"],
             err["peak"], 100 * err["max"] / err["peak"], 100 * err["mean"] / err["peak"])
    assert err["finite"], f"{precision} {what}: inf/NaN in the output"
    assert err["max"] <= max_rel * err["peak"], f"{precision} {what}: max {err['max']:.4g} (peak {err['peak']:.3g})"
    assert err["mean"] <= mean_rel * err["peak"], f"{precision} {what}: mean error {err['mean']:.4g}"


# ------------------------------------------------------------------------------------------------ recipe generator


@pytest.fixture(scope="module")
def recipe_G(stylegan2_recipe_ckpt):
    return load_generator(stylegan2_recipe_ckpt)


@pytest.fixture(scope="module")
def recipe_cases(recipe_G, fixtures_dir):
    """{'ws': fixture ws [2, 18, 512], 'large styles': the same scaled to conv styles of at most STYLE_MAX}."""
    ws = torch.from_numpy(np.load(fixtures_dir / "stylegan2_reference_constkernel.npz")["ws"])
    k = scale_for_style_max(recipe_G, ws, STYLE_MAX)
    return {"ws": ws, "large styles": ws * k}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_generator_half_matches_fp32_on_recipe_checkpoint(recipe_G, recipe_cases, precision):
    r = RESOLUTION[precision]
    ws = torch.cat(list(recipe_cases.values()))  # one batch: [fixture ws, large-style ws]
    Gh = prepare(copy.deepcopy(recipe_G), "cpu", precision)
    with torch.no_grad():
        ref = recipe_G(ws, out_resolution=r)
        out = Gh(ws, out_resolution=r)
    assert out.dtype == DTYPES[precision] and out.shape == ref.shape == (4, 3, r, r)
    for i, name in enumerate(recipe_cases):
        assert_within(image_error(ref[2 * i: 2 * i + 2], out[2 * i: 2 * i + 2]), precision, f"{name} {r}px")


def test_large_styles_reach_trained_magnitudes(recipe_G, recipe_cases):
    """The stress case really puts the styles at tens (and the plain fixture ws do not)."""
    with torch.no_grad():
        plain = max(float(s.abs().max()) for s in conv_styles(recipe_G, recipe_cases["ws"]))
        large = [s.abs() for s in conv_styles(recipe_G, recipe_cases["large styles"])]
    assert plain < 2.0
    assert abs(max(float(s.max()) for s in large) - STYLE_MAX) < 0.01
    assert min(float(s.max()) for s in large) > 20  # every styled conv sees styles of tens, not just one


# ------------------------------------------------------------------------------------------------ the guard


def _trained_magnitude_conv() -> tuple[ModulatedConv2d, torch.Tensor, torch.Tensor]:
    """A 3x3 512->512 modulated conv at trained magnitudes: filters N(0.25, 1) (unit-variance weights with a DC
    component), styles 50-70, activations up to the float16 clamp (256)."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(512, 512, 3, w_dim=512).eval().requires_grad_(False)
    conv.modulation.bias.fill_(60.0)
    conv.weight.add_(0.25)
    x = torch.rand(2, 512, 8, 8) * HALF_CONV_CLAMP
    w = torch.randn(2, 512) * 3
    return conv, x, w


def test_unguarded_fp16_modulated_conv_overflows_and_the_guard_does_not():
    conv, x, w = _trained_magnitude_conv()
    with torch.no_grad():
        ref = conv(x, w)
        style = conv.modulation(w)
        # what this module computed for a batch before the guard: style on the fp16 activations, conv, demodulate
        unguarded = F.conv2d(x.half() * style.half()[:, :, None, None], (conv.scale * conv.weight[0]).half(),
                             padding=1)
        guarded = prepare(copy.deepcopy(conv), "cpu", "fp16")(x.half(), w)
    assert not torch.isfinite(unguarded).all()  # the conv sums pass 65504 before demodulation
    assert_within(image_error(ref, guarded), "fp16", "trained-magnitude conv")


def test_float16_activations_are_clamped_only_in_float16():
    torch.manual_seed(1)
    layer = StyledConv(8, 8, 3, w_dim=8).eval().requires_grad_(False)
    x = torch.randn(1, 8, 8, 8) * 2000  # the demodulated conv keeps the input's scale: outputs far above 256
    w = torch.randn(1, 8)
    noise = torch.zeros(1, 1, 8, 8)
    with torch.no_grad():
        ref = layer(x, w, noise)
        out16 = copy.deepcopy(layer).half()(x.half(), w, noise)
        outb = copy.deepcopy(layer).bfloat16()(x.bfloat16(), w, noise)
    assert ref.abs().max() > 2 * HALF_CONV_CLAMP and outb.float().abs().max() > 2 * HALF_CONV_CLAMP  # never clamped
    assert float(out16.abs().max()) == HALF_CONV_CLAMP
    clamped = ref.clamp(-HALF_CONV_CLAMP, HALF_CONV_CLAMP)
    outside = ref.abs() > HALF_CONV_CLAMP * 1.01
    assert outside.any() and torch.equal(out16.float()[outside], clamped[outside])
    # elsewhere the fp16 value, within the fp16 bound of the layer's own scale (the sums reach ~|x|)
    assert (out16.float() - clamped).abs().max() <= TOLERANCE["fp16"][0] * ref.abs().max()


def test_half_generator_latents_stay_float32_and_the_filter_cache_follows_the_weights():
    G = make_tiny_generator(channel_max=32)
    other = make_tiny_generator(seed=5, channel_max=32)
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(2))
    Gb = copy.deepcopy(G).to(torch.bfloat16)
    assert Gb.latent_avg.dtype == torch.float32 and torch.equal(Gb.latent_avg, G.latent_avg)
    assert Gb.latent_dtype == torch.float32 and Gb.mapping(torch.randn(2, G.z_dim)).dtype == torch.float32
    with torch.no_grad():
        before = Gb(ws)
        Gb.load_state_dict(other.to(torch.bfloat16).state_dict())  # in-place copies: the cached filters must go
        after = Gb(ws)
        fresh = copy.deepcopy(other).to(torch.bfloat16)(ws)
    assert before.dtype == torch.bfloat16 and torch.isfinite(before).all()
    assert torch.equal(after, fresh) and not torch.equal(after, before)


# ------------------------------------------------------------------------------------------------ recipe encoders


@pytest.fixture(scope="module")
def recipe_encoders(fixtures_dir, tmp_path_factory):
    """{'e4e': E, 'restyle_psp': E} from the fixture recipe (files deleted after loading) and the face image."""
    out = {}
    for kind, keys in (("e4e", "e4e_ffhq"), ("restyle_psp", "restyle_psp_ffhq")):
        path = build_recipe_checkpoint(fixtures_dir / f"{keys}.keys.json",
                                       tmp_path_factory.mktemp("half") / f"{keys}.pt", const_kernel=True)
        out[kind] = load_encoder(path)
        path.unlink()
        gc.collect()
    image = torch.from_numpy(np.load(fixtures_dir / "restyle_psp_reference_constkernel.npz")["image"])
    return out, image


def _latent_error(ref, out, precision: str, what: str) -> dict:
    err = image_error(ref, out)
    log.info("%s %s latent error: max %.4g mean %.4g (peak %.3g)", precision, what, err["max"], err["mean"],
             err["peak"])
    assert err["finite"], f"{precision} {what}: inf/NaN"
    return err


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_e4e_half_matches_fp32_on_recipe_checkpoint(recipe_encoders, precision):
    encoders, image = recipe_encoders
    E = encoders["e4e"]
    with torch.no_grad():
        ref = E(image)
        out = prepare(copy.deepcopy(E), "cpu", precision)(image)
    assert out.dtype == torch.float32
    err = _latent_error(ref, out, precision, "e4e ws")
    assert err["max"] <= LATENT_TOLERANCE[0] and err["mean"] <= LATENT_TOLERANCE[1]


@pytest.mark.slow
def test_restyle_encoder_network_half_vs_fp32_on_recipe_checkpoint(recipe_encoders):
    """The ReStyle-pSp network on image ⊕ average image: fp16 holds the latent bound; bf16 stays finite and
    bounded but breaks it (the reason CPU "auto" keeps encoders fp32)."""
    encoders, image = recipe_encoders
    E = encoders["restyle_psp"]
    with torch.no_grad():
        x = torch.cat([image, E.average_image()], dim=1)
        ref = E.encoder(x)
        errs = {p: _latent_error(ref, prepare(copy.deepcopy(E.encoder), "cpu", p)(x.to(DTYPES[p])), p, "ReStyle codes")
                for p in ("fp16", "bf16")}
    assert errs["fp16"]["max"] <= LATENT_TOLERANCE[0] and errs["fp16"]["mean"] <= LATENT_TOLERANCE[1]
    assert errs["bf16"]["max"] <= 0.5 and errs["bf16"]["mean"] <= 0.1  # measured 0.21 / 0.045: a regression guard


@pytest.mark.slow
def test_restyle_bf16_iteration_end_to_end_is_finite_and_close_in_image_space(recipe_encoders):
    """One full ReStyle iteration in bf16 (decoder average image at 1024 + encoder), decoded at 256 px."""
    encoders, image = recipe_encoders
    E = encoders["restyle_psp"]
    Eb = prepare(copy.deepcopy(E), "cpu", "bf16")
    with torch.no_grad():
        ref = E(image, n_iters=1)
        out = Eb(image, n_iters=1)
        img_ref = E.decoder(ref, out_resolution=256)
        img = Eb.decoder(out, out_resolution=256)
    _latent_error(ref, out, "bf16", "ReStyle 1 iteration ws")
    err = image_error(img_ref, img)
    log.info("bf16 ReStyle 1 iteration image 256px: max %.4g mean %.4g (peak %.3g)", err["max"], err["mean"],
             err["peak"])
    assert err["finite"]
    max_rel, mean_rel = TOLERANCE["bf16"]  # twice the generator's bound: the latent error adds to the decoder's
    assert err["max"] <= 2 * max_rel * err["peak"] and err["mean"] <= 2 * mean_rel * err["peak"]


# ------------------------------------------------------------------------------------------------ auto policy


def test_cpu_auto_policy_runs_generator_bf16_and_encoder_fp32(monkeypatch):
    """What `python -m stream` gets with precision "auto" on a bf16 CPU: a ReStyle encoder whose network stays fp32
    around a bf16 decoder; a full iteration and a video-style restyle_step run and give float32 latents."""
    from engine import runtime  # noqa: PLC0415
    from test_encoders import S, tiny_encoder, tiny_generator  # noqa: PLC0415

    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    E = prepare(tiny_encoder("restyle_psp", tiny_generator()), "cpu", Precision.resolve("auto", "cpu"))
    assert next(E.encoder.parameters()).dtype == torch.float32
    assert E.decoder.dtype == torch.bfloat16 and E.latent_avg.dtype == torch.float32
    images = torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        ws, iters = E(images, return_iters=True)
        ws2, recon2 = E.restyle_step(images, ws, iters[-1].recon)
    assert ws.dtype == ws2.dtype == torch.float32 and recon2.dtype == torch.bfloat16
    assert torch.isfinite(ws).all() and torch.isfinite(ws2).all()
