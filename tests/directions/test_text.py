"""Text anchoring: prompts, the StyleCLIP schedule, CLIP loading (torchvision fallback, offline tags),
the ArcFace identity term, and the W+ optimisation on a tiny random generator and a tiny random CLIP."""
from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F

from directions.text import DEFAULT_DEGREES, anchor_text, format_prompts, get_lr, random_start

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_G():
    from engine.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(resolution=32, w_dim=32, z_dim=32, n_mapping=2, channel_multiplier=1, channel_max=32)
    return G.eval()


@pytest.fixture(scope="module")
def tiny_clip_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clip") / "tiny-test-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_config):
    from directions.clip_loader import load_clip

    return load_clip(tiny_clip_config, pretrained=None)


DEGREES = ("no", "50%", "100%")


@pytest.fixture(scope="module")
def anchors(tiny_G, tiny_clip):
    return anchor_text(tiny_G, tiny_clip, "a person with {} smile", degrees=DEGREES, steps=12, seed=0)


# ---------------------------------------------------------------------------------------------- prompts


def test_format_prompts_placeholders_and_braces():
    assert format_prompts("a person with {} smile", ("no", "50%")) == ["a person with no smile",
                                                                       "a person with 50% smile"]
    assert format_prompts("{degree} smile, {degree}!", ("big",)) == ["big smile, big!"]
    # other braces are data, left as written (no str.format)
    assert format_prompts("a {b} face, {degree} smile, {}", ("no",)) == ["a {b} face, no smile, {}"]
    assert format_prompts("{__import__('os').getcwd()} {}", ("x",)) == ["{__import__('os').getcwd()} x"]
    assert len(format_prompts("{} smile")) == len(DEFAULT_DEGREES) == 11


@pytest.mark.parametrize("template", ["a person smiling", "{0} smile", "{deg} smile", "{0.__class__}", "  "])
def test_template_without_placeholder_is_an_error(template):
    with pytest.raises(ValueError, match="placeholder|empty"):
        format_prompts(template, DEGREES)


def test_no_degrees_is_an_error():
    with pytest.raises(ValueError, match="degrees"):
        format_prompts("{} smile", ())


def test_get_lr_matches_styleclip_ramp():
    assert get_lr(0.0, 0.1) == 0.0
    assert get_lr(0.025, 0.1) == pytest.approx(0.05)          # half-way through the ramp-up
    assert get_lr(0.5, 0.1) == pytest.approx(0.1)             # plateau
    assert get_lr(0.875, 0.1) == pytest.approx(0.05)          # half-way down the cosine
    assert get_lr(39 / 40, 0.1) == pytest.approx(0.1 * (0.5 - 0.5 * torch.cos(torch.tensor(0.1 * torch.pi)).item()))


# ---------------------------------------------------------------------------------------------- CLIP loading


def test_torchvision_fallback_nms_is_correct():
    from directions.clip_loader import ensure_torchvision_importable, nms_reference

    ensure_torchvision_importable()
    import torchvision  # noqa: F401  (must import on this torch)

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5], [21, 21, 29, 29]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.3, 0.6])
    # by hand: 1 (0.95) suppresses 0 (IoU 0.68) and 3; 4 (0.6) suppresses 2 (IoU 0.64)
    assert nms_reference(boxes, scores, 0.5).tolist() == [1, 4]
    # at 0.7: 0 survives 1 (0.68), 3 falls to 0 (IoU 0.95), 2 survives 4 (0.64)
    assert nms_reference(boxes, scores, 0.7).tolist() == [1, 0, 4, 2]
    assert torch.ops.torchvision.nms(boxes, scores, 0.5).tolist() == [1, 4]
    assert nms_reference(boxes[:0], scores[:0], 0.5).numel() == 0
    assert ensure_torchvision_importable() in (True, False)  # idempotent


def test_box_resample_equals_styleclip_upsample_avgpool():
    from directions.clip_loader import box_resample_matrix

    img = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref = F.avg_pool2d(F.interpolate(img, scale_factor=7, mode="nearest"), kernel_size=64 // 32)
    R = box_resample_matrix(64, 224, dtype=torch.float64)
    ours = torch.einsum("ih,nchw,jw->ncij", R, img, R)
    torch.testing.assert_close(ours, ref)
    # rows are averaging weights for any size
    torch.testing.assert_close(box_resample_matrix(37, 224).sum(1), torch.ones(224))


def test_preprocess_normalises_and_keeps_grad(tiny_clip):
    x = torch.zeros(1, 3, 48, 48, requires_grad=True)  # mid-grey
    y = tiny_clip.preprocess(x)
    assert y.shape == (1, 3, 32, 32)
    expect = (0.5 - tiny_clip.preprocess.mean) / tiny_clip.preprocess.std
    torch.testing.assert_close(y[:, :, :1, :1], expect)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_preprocess_without_normalisation_is_styleclip_input():
    from directions.clip_loader import ClipPreprocess

    img = torch.rand(1, 3, 64, 64) * 2 - 1
    raw = ClipPreprocess(224, normalize=False)(img)
    ref = F.avg_pool2d(F.interpolate(img, scale_factor=7, mode="nearest"), kernel_size=2)
    torch.testing.assert_close(raw, ref)


def test_uncached_tag_is_a_clear_error_without_network(tmp_path):
    from directions.clip_loader import ClipWeightsMissing, load_clip

    with pytest.raises(ClipWeightsMissing) as err:
        load_clip("ViT-B-32", pretrained="openai", cache_dir=str(tmp_path))
    msg = str(err.value)
    assert "ViT-B-32/openai" in msg and str(tmp_path) in msg and "local weights file" in msg


def test_unknown_model_or_tag(tmp_path):
    from directions.clip_loader import load_clip

    with pytest.raises(ValueError, match="unknown CLIP model"):
        load_clip("ViT-Nope-1", pretrained=None)
    with pytest.raises(ValueError, match="Hugging Face hub.*--clip-download"):
        load_clip("hf-hub:org/some-clip", pretrained=None)
    # OpenAI's spelling is accepted and reaches the (offline) tag lookup
    with pytest.raises(FileNotFoundError, match="ViT-B-32/openai"):
        load_clip("ViT-B/32", pretrained="openai", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="neither a file nor an open_clip pretrained tag"):
        load_clip("ViT-B-32", pretrained="no_such_tag", cache_dir=str(tmp_path))


def test_local_weights_file_is_loaded(tiny_clip, tmp_path):
    from directions.clip_loader import load_clip

    path = tmp_path / "tiny-test-clip2.json"
    path.write_text(json.dumps(TINY_CLIP))
    weights = tmp_path / "weights.pt"
    torch.save(tiny_clip.model.state_dict(), weights)
    again = load_clip(str(path), pretrained=str(weights))
    toks = ["a person with no smile"]
    torch.testing.assert_close(again.encode_text(toks), tiny_clip.encode_text(toks))


# ---------------------------------------------------------------------------------------------- anchoring


def test_anchor_text_shapes_and_start(anchors, tiny_G):
    K = len(DEGREES)
    assert anchors.latents.shape == (K, tiny_G.num_ws, tiny_G.w_dim)
    assert anchors.latents.dtype == torch.float32
    assert anchors.losses.shape == anchors.clip_losses.shape == (12, K)
    assert anchors.prompts == ["a person with no smile", "a person with 50% smile", "a person with 100% smile"]
    torch.testing.assert_close(anchors.w0, random_start(tiny_G, 0, 0.7)[0])
    # truncated toward latent_avg: every layer holds the same w
    assert torch.equal(anchors.w0, anchors.w0[:1].expand_as(anchors.w0))
    assert anchors.with_start().shape == (K + 1, tiny_G.num_ws, tiny_G.w_dim)
    assert torch.equal(anchors.with_start()[0], anchors.w0)
    assert (anchors.latents - anchors.w0).abs().amax(dim=(1, 2)).min() > 1e-3  # every code moved
    assert not anchors.identity_used and torch.all(anchors.id_losses == 0)


def test_anchor_text_loss_decreases(anchors):
    first, last = anchors.losses[0], anchors.losses[-1]
    assert torch.all(last < first), (first, last)
    assert torch.all(anchors.clip_losses[-1] < anchors.clip_losses[0] - 1e-3)
    # the L2 term is zero at the start (w == w0) and the first step has lr 0 (ramp-up)
    torch.testing.assert_close(anchors.losses[0], anchors.clip_losses[0])
    torch.testing.assert_close(anchors.losses[1], anchors.clip_losses[1])


def test_anchor_text_seeded_and_reproducible(anchors, tiny_G, tiny_clip):
    same = anchor_text(tiny_G, tiny_clip, "a person with {} smile", degrees=DEGREES, steps=12, seed=0)
    assert torch.equal(same.latents, anchors.latents)
    assert torch.equal(same.w0, anchors.w0)
    other = anchor_text(tiny_G, tiny_clip, "a person with {} smile", degrees=DEGREES, steps=12, seed=1)
    assert not torch.allclose(other.w0, anchors.w0)
    assert (other.latents - anchors.latents).abs().max() > 1e-2


def test_batch_equals_per_prompt_loop(anchors, tiny_G, tiny_clip):
    loop = anchor_text(tiny_G, tiny_clip, "a person with {} smile", degrees=DEGREES, steps=12, seed=0, batch=False)
    moved = (anchors.latents - anchors.w0).abs().mean()
    assert (loop.latents - anchors.latents).abs().mean() < 0.02 * moved
    torch.testing.assert_close(loop.losses, anchors.losses, rtol=1e-3, atol=1e-3)


def test_progress_is_called_per_step(tiny_G, tiny_clip):
    calls = []
    anchor_text(tiny_G, tiny_clip, "{} smile", degrees=("no", "100%"), steps=3, progress=calls.append, batch=False)
    assert calls == [1] * 6


def test_generator_is_left_as_it_was(tiny_G, tiny_clip):
    before = [p.requires_grad for p in tiny_G.parameters()]
    anchor_text(tiny_G, tiny_clip, "{} smile", degrees=("no",), steps=2)
    assert [p.requires_grad for p in tiny_G.parameters()] == before
    assert all(p.grad is None for p in tiny_G.parameters())


# ---------------------------------------------------------------------------------------------- identity


def test_identity_missing_weights_warns_once_and_is_skipped(tiny_G, tiny_clip, tmp_path, caplog):
    from directions.identity import IdentityLoss

    with caplog.at_level(logging.WARNING, logger="directions"):
        idl = IdentityLoss(tmp_path / "model_ir_se50.pth")
        res = anchor_text(tiny_G, tiny_clip, "{} smile", degrees=("no", "100%"), steps=3, identity=idl)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "identity" in r.getMessage()]
    assert len(warnings) == 1
    assert "skipped" in warnings[0].getMessage() and "model_ir_se50.pth" in warnings[0].getMessage()
    assert not idl.available and not res.identity_used
    assert torch.all(res.id_losses == 0)


def test_identity_term_with_a_tiny_arcface(tiny_G, tiny_clip):
    from directions.identity import ArcFaceIRSE, IdentityLoss

    torch.manual_seed(0)
    net = ArcFaceIRSE(units=(1, 1, 1, 1), widths=(8, 8, 16, 16), embed_dim=16)
    idl = IdentityLoss(None, network=net)
    res = anchor_text(tiny_G, tiny_clip, "{} smile", degrees=("no", "100%"), steps=6, identity=idl,
                      id_lambda=0.5)
    assert res.identity_used
    assert torch.all(res.id_losses[0].abs() < 1e-5)      # G(w0) vs itself
    assert torch.all(res.id_losses[-1] > 1e-7)           # moved away from the start face
    torch.testing.assert_close(res.losses[0], res.clip_losses[0] + 0.5 * res.id_losses[0])


def test_arcface_layout_matches_irse50_keys(fixtures_dir):
    """IR-SE50 body/stem keys and shapes equal those of the pSp-family checkpoints (same ArcFace blocks)."""
    from directions.identity import ArcFaceIRSE

    with torch.device("meta"):
        net = ArcFaceIRSE()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    ref = json.loads((fixtures_dir / "restyle_psp_ffhq.keys.json").read_text())["state_dict"]
    body = {k[len("encoder."):]: tuple(v["shape"]) for k, v in ref.items() if k.startswith("encoder.body.")}
    assert {k: v for k, v in ours.items() if k.startswith("body.")} == body
    assert ours["input_layer.0.weight"] == (64, 3, 3, 3)
    assert ours["output_layer.3.weight"] == (512, 512 * 7 * 7)
    assert {"output_layer.0.running_var", "output_layer.4.weight", "output_layer.4.running_mean"} <= set(ours)


def test_arcface_loader_names_bad_keys(tmp_path):
    from directions.identity import load_arcface

    bad = tmp_path / "model_ir_se50.pth"
    torch.save({"input_layer.0.weight": torch.zeros(64, 3, 3, 3), "extra.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="missing .*unexpected extra.weight"):
        load_arcface(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read ArcFace weights"):
        load_arcface(junk)


def test_torchscript_archive_detection(tmp_path):
    from directions.clip_loader import is_torchscript_archive

    scripted = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(scripted))
    plain = tmp_path / "plain.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), plain)
    assert is_torchscript_archive(scripted)
    assert not is_torchscript_archive(plain)
    assert not is_torchscript_archive(tmp_path / "missing.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_anchor_text_on_cuda_matches_cpu(tiny_G, tiny_clip_config, anchors):
    import copy

    from directions.clip_loader import load_clip

    G = copy.deepcopy(tiny_G).cuda()
    clip = load_clip(tiny_clip_config, pretrained=None, device="cuda")  # same seeded init as the CPU one
    res = anchor_text(G, clip, "a person with {} smile", degrees=DEGREES, steps=12, seed=0)
    assert res.latents.device.type == "cpu" and res.latents.shape == anchors.latents.shape
    torch.testing.assert_close(res.w0, anchors.w0, rtol=1e-4, atol=1e-4)
    moved = (anchors.latents - anchors.w0).abs().mean()
    assert (res.latents - anchors.latents).abs().mean() < 0.05 * moved


def test_arcface_roundtrip_through_a_weights_file(tmp_path):
    from directions.identity import ArcFaceIRSE, IdentityLoss, load_arcface

    cfg = dict(units=(1, 1, 1, 1), widths=(8, 16, 16, 32), embed_dim=16)
    torch.manual_seed(3)
    net = ArcFaceIRSE(**cfg).eval()
    for m in net.modules():  # non-trivial running stats, so a wrong load would show
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "arcface.pth"
    torch.save(net.state_dict(), path)
    loaded = load_arcface(path, **cfg)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
        f = loaded(x)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(2))  # L2-normalised embeddings
    idl = IdentityLoss(None, network=loaded)
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(idl(y, y), torch.zeros(1), atol=1e-5, rtol=0)
    other = torch.rand(3, 3, 64, 64) * 2 - 1
    losses = idl(other, y)
    assert losses.shape == (3,) and torch.all(losses > 0) and torch.all(losses <= 2)


def test_chunks_and_out_of_memory_fallback(anchors, tiny_G, tiny_clip):
    from directions.text import _optimise_in_chunks

    calls = []

    def run(idx):
        calls.append(list(idx))
        if len(idx) > 2:
            raise torch.OutOfMemoryError("simulated")
        return idx

    assert _optimise_in_chunks(run, 7, 8) == [[0, 1], [2, 3], [4, 5], [6]]
    assert calls[:3] == [[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3], [0, 1]]  # halved on each OOM, then kept
    with pytest.raises(torch.OutOfMemoryError):
        _optimise_in_chunks(lambda idx: (_ for _ in ()).throw(torch.OutOfMemoryError("x")), 3, 3)
    # chunks of 2 give the one-batch anchors (independent per-prompt problems)
    two = anchor_text(tiny_G, tiny_clip, "a person with {} smile", degrees=DEGREES, steps=12, seed=0, batch=2)
    moved = (anchors.latents - anchors.w0).abs().mean()
    assert (two.latents - anchors.latents).abs().mean() < 0.02 * moved
    with pytest.raises(ValueError, match="chunk size"):
        anchor_text(tiny_G, tiny_clip, "{} smile", degrees=DEGREES, steps=1, batch=0)
