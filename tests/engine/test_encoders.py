"""Encoders on tiny random configs: layout vs the reference checkpoints, wiring, ReStyle iteration, bad input.

Numerics against the reference implementations live in test_encoder_checkpoints.py (recipe checkpoints).
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from engine.encoders import (
    Encoder,
    Encoder4Editing,
    GradualStyleEncoder,
    Iteration,
    build_network,
    num_ws_for_resolution,
)
from engine.irse import body_specs, make_body, make_input_layer, run_body, stage_ends
from engine.stylegan2 import Generator

S = 64                      # tiny input size (heads read 4x4 / 8x8 / 16x16 maps)
TINY = dict(widths=(8, 16, 24, 32), units=(1, 2, 2, 1), input_size=S)


def tiny_generator(resolution: int = 32, w_dim: int = 32, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(resolution, w_dim=w_dim, z_dim=w_dim, n_mapping=2, channel_max=16).eval()


def tiny_net(kind: str, G: Generator, seed: int = 1, **kw):
    torch.manual_seed(seed)
    net = build_network(kind, num_ws=G.num_ws, w_dim=G.w_dim, **{**TINY, **kw}).eval()
    # Random BN statistics so that eval-mode BatchNorm is not the identity.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def tiny_encoder(kind: str, G: Generator, n_iters: int = 2, seed: int = 1, **kw) -> Encoder:
    latent_avg = torch.randn(G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(7))
    return Encoder(tiny_net(kind, G, seed, **kw), kind, latent_avg=latent_avg, decoder=G, n_iters=n_iters).eval()


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(3)) * 2 - 1


# ------------------------------------------------------------------------------------------------ reference layout


@pytest.mark.parametrize(
    "kind, keys_json",
    [
        ("restyle_psp", "restyle_psp_ffhq.keys.json"),
        ("restyle_e4e", "restyle_psp_ffhq.keys.json"),  # ReStyle-e4e has the ReStyle-pSp layout (same modules)
        ("e4e", "e4e_ffhq.keys.json"),
        ("psp", "e4e_ffhq.keys.json"),  # pSp and e4e share every module
    ],
)
def test_full_size_state_dict_matches_reference_checkpoint(fixtures_dir, kind, keys_json):
    layout = json.loads((fixtures_dir / keys_json).read_text())["state_dict"]
    ref = {k[len("encoder."):]: tuple(v["shape"]) for k, v in layout.items() if k.startswith("encoder.")}
    with torch.device("meta"):
        net = build_network(kind)
    mine = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sorted(mine) == sorted(ref)
    assert mine == ref
    assert (net.num_ws, net.w_dim, net.input_size) == (18, 512, 256)


def test_irse_body_stage_outputs():
    widths, units = (8, 16, 24, 32), (2, 1, 3, 1)
    specs = body_specs(widths, units)
    assert [s.stride for s in specs] == [2, 1, 2, 2, 1, 1, 2]
    assert stage_ends(units) == [1, 2, 5, 6]
    body = make_body(specs).eval()
    x = make_input_layer(3, 8).eval()(torch.randn(1, 3, 64, 64))
    c1, c2, c3 = run_body(body, x, stage_ends(units)[1:])
    assert c1.shape == (1, 16, 16, 16) and c2.shape == (1, 24, 8, 8) and c3.shape == (1, 32, 4, 4)
    with torch.no_grad():
        assert torch.equal(body(x), c3)
    with pytest.raises(ValueError, match="same non-zero length"):
        body_specs((8, 16), (1,))


def test_num_ws_for_resolution():
    assert [num_ws_for_resolution(r) for r in (1024, 256, 32)] == [18, 14, 8]
    with pytest.raises(ValueError, match="power of two"):
        num_ws_for_resolution(100)


# ------------------------------------------------------------------------------------------------ single-pass


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_single_pass_shapes_and_batch_independence(G, images, kind):
    E = tiny_encoder(kind, G)
    assert (E.kind, E.num_ws, E.w_dim, E.input_size, E.n_iters) == (kind, G.num_ws, G.w_dim, S, 1)
    assert E.latent_avg.shape == (G.num_ws, G.w_dim)
    with torch.no_grad():
        ws = E(images)
        one = E(images[1:2])
    assert ws.shape == (2, G.num_ws, G.w_dim) and ws.dtype == torch.float32
    assert torch.isfinite(ws).all()
    torch.testing.assert_close(one[0], ws[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ws[0], ws[1])  # depends on the image


def test_latent_avg_is_added(G, images):
    E = tiny_encoder("psp", G)
    with torch.no_grad():
        for head in E.encoder.styles:
            head.linear.weight.zero_()
            head.linear.bias.zero_()
        ws = E(images)
        torch.testing.assert_close(ws, E.latent_avg.expand(2, -1, -1), rtol=0, atol=0)
        E.start_from_latent_avg = False
        assert torch.count_nonzero(E(images)) == 0


@pytest.mark.parametrize("base, progressive", [("psp", "e4e"), ("restyle_psp", "restyle_e4e")])
def test_e4e_rows_are_w0_plus_deltas(G, images, base, progressive):
    """Same weights: the e4e-style network's row i equals the pSp-style row 0 plus row i (i >= 1)."""
    a = tiny_net(base, G, seed=4)
    b = tiny_net(progressive, G, seed=5)
    b.load_state_dict(a.state_dict())
    x = images if a.in_channels == 3 else torch.cat([images, images.flip(0)], 1)
    with torch.no_grad():
        pa, pb = a(x), b(x)
    torch.testing.assert_close(pb[:, 0], pa[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(pb[:, 1:], pa[:, :1] + pa[:, 1:], rtol=1e-6, atol=1e-6)


def test_psp_heads_read_the_pyramid(G, images):
    """Coarse heads see the 1/16 body map, middle ones the 1/8 FPN map, fine ones the 1/4 FPN map."""
    net = tiny_net("psp", G)
    assert isinstance(net, GradualStyleEncoder) and G.num_ws == 8
    assert [h.spatial for h in net.styles] == [4, 4, 4, 8, 8, 8, 8, 16]
    with torch.no_grad():
        out = net(images)
        c1, c2, c3 = run_body(net.body, net.input_layer(images), stage_ends(net.units)[1:])
        p2 = F.interpolate(c3, size=c2.shape[-2:], mode="bilinear", align_corners=True) + net.latlayer1(c2)
        p1 = F.interpolate(p2, size=c1.shape[-2:], mode="bilinear", align_corners=True) + net.latlayer2(c1)
        torch.testing.assert_close(out[:, 1], net.styles[1](c3))
        torch.testing.assert_close(out[:, 5], net.styles[5](p2))
        torch.testing.assert_close(out[:, 7], net.styles[7](p1))


def test_e4e_with_fewer_ws_than_fpn_levels():
    """A 16px generator has 6 ws: the fine FPN level is never used and must not be required."""
    net = build_network("e4e", num_ws=6, w_dim=16, **TINY).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, S, S)).shape == (1, 6, 16)
    assert isinstance(net, Encoder4Editing)


# ------------------------------------------------------------------------------------------------ ReStyle


@pytest.mark.parametrize("kind", ["restyle_psp", "restyle_e4e"])
def test_restyle_iterations_are_restyle_steps_from_the_average(G, images, kind):
    E = tiny_encoder(kind, G, n_iters=2)
    with torch.no_grad():
        avg = E.average_image()
        assert avg.shape == (1, 3, S, S)
        torch.testing.assert_close(avg, F.adaptive_avg_pool2d(G(E.latent_avg[None]), (S, S)))
        ws_default = E(images)
        ws_final, iters = E(images, return_iters=True)
        assert len(iters) == 2 and all(isinstance(it, Iteration) for it in iters)
        torch.testing.assert_close(ws_final, ws_default, rtol=0, atol=0)

        ws = E.latent_avg[None].expand(2, -1, -1)
        recon = avg.expand(2, -1, -1, -1)
        for it in iters:
            ws_next, recon_next = E.restyle_step(images, ws, recon)
            # residual on the current latent, the encoder seeing image ⊕ current reconstruction
            torch.testing.assert_close(ws_next - ws, E.encoder(torch.cat([images, recon], 1)), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(recon_next, F.adaptive_avg_pool2d(G(ws_next), (S, S)))
            torch.testing.assert_close(it.ws, ws_next, rtol=0, atol=0)
            torch.testing.assert_close(it.recon, recon_next, rtol=0, atol=0)
            ws, recon = ws_next, recon_next
        assert not torch.allclose(iters[0].ws, iters[1].ws)  # every iteration moves the latent


def test_restyle_n_iters_honoured(G, images):
    E = tiny_encoder("restyle_psp", G, n_iters=2)
    with torch.no_grad():
        one = E(images, n_iters=1)
        _, iters = E(images, n_iters=3, return_iters=True)
        two = E(images)
    assert len(iters) == 3
    torch.testing.assert_close(one, iters[0].ws, rtol=0, atol=0)
    torch.testing.assert_close(two, iters[1].ws, rtol=0, atol=0)
    assert not torch.allclose(one, two)


def test_restyle_step_continues_from_a_previous_frame(G, images):
    """Temporal ReStyle: start frame t from frame t-1's latent and reconstruction."""
    E = tiny_encoder("restyle_e4e", G)
    with torch.no_grad():
        ws_prev, iters = E(images[:1], n_iters=2, return_iters=True)
        frame = (images[:1] + 0.05 * images[1:]).clamp(-1, 1)
        ws_new, recon_new = E.restyle_step(frame, ws_prev, iters[-1].recon)
        cold = E(frame, n_iters=1)
    assert ws_new.shape == (1, G.num_ws, G.w_dim) and recon_new.shape == (1, 3, S, S)
    assert not torch.allclose(ws_new, cold)  # it really starts from the given latent, not the average


def test_average_image_cached_and_recomputed_after_dtype_change():
    E = tiny_encoder("restyle_psp", tiny_generator())
    a = E.average_image()
    assert E.average_image() is a
    E.double()
    b = E.average_image()
    assert b.dtype == torch.float64 and b is not a
    torch.testing.assert_close(b.float(), a, rtol=1e-5, atol=1e-5)


def test_decoder_smaller_than_input_is_upsampled_by_the_face_pool(images):
    G = tiny_generator(resolution=16, w_dim=16)
    E = tiny_encoder("restyle_psp", G)
    with torch.no_grad():
        start = E.latent_avg[None].expand(2, -1, -1)
        ws, recon = E.restyle_step(images, start, E.average_image().expand(2, -1, -1, -1))
    assert recon.shape == (2, 3, S, S)
    assert torch.equal(recon[:, :, ::4, ::4], G(ws))  # adaptive pooling of a 16px image to 64 repeats pixels


def test_full_input_size_256(G):
    E = tiny_encoder("e4e", G, input_size=256)
    with torch.no_grad():
        ws = E(torch.zeros(1, 3, 256, 256))
    assert ws.shape == (1, G.num_ws, G.w_dim) and E.input_size == 256


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(1, 3, 32, 32),
        torch.zeros(1, 4, S, S),
        torch.zeros(3, S, S),
        torch.zeros(1, 3, S, S, dtype=torch.uint8),
    ],
    ids=["size", "channels", "no-batch", "uint8"],
)
def test_bad_images_rejected_with_clear_message(G, bad):
    E = tiny_encoder("psp", G)
    with pytest.raises(ValueError, match=rf"\[N, 3, {S}, {S}\]|floating point"):
        E(bad)


def test_bad_arguments(G, images):
    E = tiny_encoder("restyle_psp", G)
    P = tiny_encoder("e4e", G)
    with pytest.raises(ValueError, match="positive integer"):
        E(images, n_iters=0)
    with pytest.raises(ValueError, match="positive integer"):
        E(images, n_iters=1.5)
    with pytest.raises(ValueError, match="needs a ReStyle encoder"):
        P(images, n_iters=3)
    with pytest.raises(ValueError, match="needs a ReStyle encoder"):
        P.restyle_step(images, P.latent_avg[None].expand(2, -1, -1), images)
    ws = E.latent_avg[None].expand(2, -1, -1)
    with pytest.raises(ValueError, match=rf"ws must be \[2, {G.num_ws}, {G.w_dim}\]"):
        E.restyle_step(images, ws[:, :3], images)
    with pytest.raises(ValueError, match="recon has 1 images"):
        E.restyle_step(images, ws, images[:1])
    with pytest.raises(ValueError, match="recon must be"):
        E.restyle_step(images, ws, images[:, :, :32])


def test_bad_construction(G):
    net = tiny_net("restyle_psp", G)
    with pytest.raises(ValueError, match="needs its decoder"):
        Encoder(net, "restyle_psp", latent_avg=torch.zeros(G.w_dim))
    with pytest.raises(ValueError, match="decoder takes W\\+"):
        Encoder(net, "restyle_psp", latent_avg=torch.zeros(G.w_dim), decoder=tiny_generator(resolution=64))
    with pytest.raises(ValueError, match="latent_avg must be"):
        Encoder(net, "restyle_psp", latent_avg=torch.zeros(3, G.w_dim), decoder=G)
    with pytest.raises(ValueError, match="unknown encoder kind"):
        Encoder(net, "restyle", latent_avg=torch.zeros(G.w_dim), decoder=G)
    with pytest.raises(ValueError, match="needs a Encoder4Editing network"):
        Encoder(net, "e4e", latent_avg=torch.zeros(G.w_dim))
    with pytest.raises(ValueError, match="takes 6 input channels"):
        Encoder(build_network("restyle_psp", fpn=True, in_channels=3, num_ws=G.num_ws, w_dim=G.w_dim, **TINY),
                "restyle_psp", latent_avg=torch.zeros(G.w_dim), decoder=G)
    with pytest.raises(ValueError, match="power of two >= 32"):
        build_network("psp", input_size=48)


# ------------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["e4e", "restyle_psp"])
def test_cuda_matches_cpu_and_half_keeps_float32_latents(images, kind):
    E = tiny_encoder(kind, tiny_generator())
    with torch.no_grad():
        ref = E(images, n_iters=2 if E.is_restyle else None)
        Ec = E.cuda()
        out = Ec(images.cuda(), n_iters=2 if E.is_restyle else None)
        torch.testing.assert_close(out.cpu(), ref, rtol=1e-2, atol=1e-2)  # cuDNN may use TF32
        Eh = Ec.half()
        half = Eh(images.cuda(), n_iters=2 if E.is_restyle else None)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert (half.cpu() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05
