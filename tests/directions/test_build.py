"""`python -m directions build` end to end on tiny random models written as real checkpoint files."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from directions import build


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny generator (rosinality .pt), tiny e4e encoder (pSp-family .pt) and tiny CLIP config, as files."""
    from engine.encoders import build_network
    from engine.stylegan2 import Generator

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    G = Generator(resolution=32, w_dim=32, z_dim=32, n_mapping=2, channel_multiplier=1, channel_max=32)
    latent_avg = 0.1 * torch.randn(G.w_dim)
    gen = root / "tiny_G.pt"
    torch.save({"g_ema": G.state_dict(), "latent_avg": latent_avg}, gen)

    net = build_network("e4e", num_ws=G.num_ws, w_dim=G.w_dim, widths=(8, 16, 24, 32), units=(1, 1, 1, 1),
                        input_size=64)
    sd = {f"encoder.{k}": v for k, v in net.state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in G.state_dict().items()})
    enc = root / "tiny_e4e.pt"
    torch.save({"state_dict": sd, "opts": {"encoder_type": "Encoder4Editing", "input_nc": 3},
                "latent_avg": latent_avg[None].repeat(G.num_ws, 1)}, enc)

    clip = root / "tiny-build-clip.json"
    clip.write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    return dict(generator=gen, encoder=enc, clip=clip, num_ws=G.num_ws, w_dim=G.w_dim)


def text_argv(models, out, *extra):
    return ["--name", "smile", "--text", "a person with {} smile", "--degrees", "no", "50%", "100%",
            "--steps", "4", "--generator", str(models["generator"]), "--clip-model", str(models["clip"]),
            "--clip-pretrained", "none", "--rank", "2", "--out", str(out), "--device", "cpu", *extra]


def test_build_text_end_to_end(models, tmp_path, caplog, capsys):
    from directions import files
    from engine.checkpoints import file_sha256

    out = tmp_path / "smile.safetensors"
    assert build.main(text_argv(models, out, "--identities", "2", "--batch-size", "2")) == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out
    # issue 11: a progress bar while anchoring (2 identities x 4 steps x 2 chunks of prompts)
    assert re.search(r"anchor 'smile': +100%.*16/16", captured.err), captured.err
    d = files.load(out)
    assert d.name == "smile"
    assert d.delta.shape == (models["num_ws"], models["w_dim"]) and torch.isfinite(d.delta).all()
    assert d.delta.abs().max() > 0
    m = d.meta
    assert m["method"] == "rpca" and m["rank"] == 2 and m["anchors"] == 4 and m["identities"] == 2
    assert m["template"] == "a person with {} smile" and m["degrees"] == ["no", "50%", "100%"]
    assert m["prompts"][2] == "a person with 100% smile" and m["seeds"] == [0, 1]
    assert m["generator_sha256"] == file_sha256(models["generator"])
    assert m["lmbda"] == pytest.approx(1 / math.sqrt(max(4, models["w_dim"])))
    assert m["alpha_range"] == list(build.TEXT_ALPHA_RANGE) and "created" in m
    assert m["identity_used"] is False and m["id_lambda"] == 0.0 and m["clip_normalize"] is True
    assert "identity loss skipped" in caplog.text
    d.check_compatible(models["num_ws"], models["w_dim"], file_sha256(models["generator"]))


def test_build_text_is_reproducible_and_matches_library(models, tmp_path):
    """The file's delta is from_anchors of the text anchors [w0, w_no, w_50, w_100] (official order)."""
    from directions import files
    from directions.clip_loader import load_clip
    from directions.subspace import from_anchors
    from directions.text import anchor_text
    from engine.checkpoints import load_generator

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert build.main(text_argv(models, a, "--method", "pca", "--clip-no-normalize")) == 0
    assert build.main(text_argv(models, b, "--method", "pca", "--clip-no-normalize")) == 0
    da, db = files.load(a), files.load(b)
    assert torch.equal(da.delta, db.delta)
    G = load_generator(models["generator"])
    clip = load_clip(str(models["clip"]), pretrained=None, normalize=False)
    res = anchor_text(G, clip, "a person with {} smile", degrees=("no", "50%", "100%"), steps=4)
    torch.testing.assert_close(da.delta, from_anchors(res.with_start(), rank=2, method="pca"))
    assert "lmbda" not in da.meta and da.meta["clip_normalize"] is False


def test_build_video_end_to_end(models, tmp_path, faces_dir, capsys):
    import cv2

    from directions import files

    face = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (256, 256), interpolation=cv2.INTER_AREA)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i in range(4):
        canvas = np.full((256, 300, 3), 90, np.uint8)
        canvas[:, 4 + 10 * i:260 + 10 * i] = face
        cv2.imwrite(str(frames_dir / f"{i:03d}.png"), canvas)
    out = tmp_path / "turn.safetensors"
    argv = ["--name", "turn", "--frames-dir", str(frames_dir), "--encoder", str(models["encoder"]),
            "--generator", str(models["generator"]), "--n-frames", "3", "--rank", "2", "--out", str(out),
            "--device", "cpu"]
    assert build.main(argv) == 0
    err = capsys.readouterr().err
    # issue 11: progress bars while aligning the frames and inverting the chosen ones
    assert re.search(r"align: +100%.*4/4", err) and re.search(r"invert: +100%.*3/3", err), err
    d = files.load(out)
    assert d.delta.shape == (models["num_ws"], models["w_dim"])
    assert d.meta["source"] == "frames" and d.meta["frames"] == ["000.png", "002.png", "003.png"]
    # the same anchors as directions.video.anchor_video picks and inverts in one call
    import engine
    from directions.subspace import from_anchors
    from directions.video import anchor_video
    from stream.face.clip import aligned_crops_from_source

    crops, _ = aligned_crops_from_source(frames_dir, size=256, is_folder=True, progress=False)
    anchors = anchor_video(crops, engine.load_encoder(str(models["encoder"])), n=3)
    torch.testing.assert_close(d.delta, from_anchors(anchors, rank=2, method="rpca"))
    assert build.main(argv + ["--force", "-q"]) == 0
    assert "align" not in capsys.readouterr().err  # --quiet: no bars
    assert d.meta["anchors"] == 3 and d.meta["encoder_kind"] == "e4e"
    assert d.meta["alpha_range"] == list(build.VIDEO_ALPHA_RANGE)


def test_bad_template_fails_before_loading_anything(models, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    argv = text_argv(models, out)
    argv[argv.index("--text") + 1] = "a person smiling"
    argv[argv.index("--generator") + 1] = str(tmp_path / "no_such_generator.pt")  # never reached
    assert build.main(argv) == 2
    err = capsys.readouterr().err
    assert "no placeholder" in err and err.count("\n") == 1
    assert not out.exists()


def test_existing_output_is_kept_without_force(models, tmp_path, capsys):
    out = tmp_path / "smile.safetensors"
    out.write_bytes(b"precious")
    assert build.main(text_argv(models, out)) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_fewer_anchors_than_rank_is_an_error(models, tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    assert build.main(text_argv(models, out, "--rank", "9")) == 2  # 4 anchors < rank 9
    assert "fewer than the rank" in capsys.readouterr().err
    assert not out.exists()


def test_missing_generator_is_a_clear_error(models, tmp_path, capsys):
    argv = text_argv(models, tmp_path / "g.safetensors")
    argv[argv.index("--generator") + 1] = str(tmp_path / "nope.pt")
    assert build.main(argv) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_add_arguments_on_a_subparser():
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    build.add_arguments(sub.add_parser("build"))
    args = parser.parse_args(["build", "--name", "s", "--text", "{} smile"])
    assert args.steps == 40 and args.rank == 4 and args.method == "rpca" and args.n_frames == 7
    assert args.degrees[0] == "no" and args.degrees[-1] == "100%" and args.clip_pretrained == "openai"
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--name", "s", "--text", "{}", "--video", "c.mp4"])


def test_python_m_directions_build_dispatches_here(models, tmp_path):
    """`python -m directions build ...` (helper's __main__) parses our options and runs `build.run`."""
    from directions import files
    from directions.__main__ import main as directions_main

    out = tmp_path / "cli.safetensors"
    assert directions_main(["build", *text_argv(models, out, "--steps", "2", "--method", "none")]) == 0
    d = files.load(out)
    assert d.meta["method"] == "none" and "rank" not in d.meta and d.meta["steps"] == 2


def test_input_errors_come_before_model_loading(models, tmp_path, capsys):
    missing_gen = str(tmp_path / "never_loaded.pt")
    cases = [
        (["--video", str(tmp_path / "nope.mp4")], "nope.mp4 does not exist"),
        (["--frames-dir", str(tmp_path / "nodir")], "nodir does not exist"),
        (["--text", "{} smile", "--arcface", str(tmp_path / "ir50.pth")], "ir50.pth does not exist"),
        (["--text", "{} smile", "--clip-model", "ViT-B-32", "--clip-pretrained", "openai"], "not cached"),
    ]
    try:  # a machine that has the real CLIP weights cached cannot show the "not cached" error
        from directions.clip_loader import resolve_pretrained

        resolve_pretrained("ViT-B-32", "openai")
        cases.pop()
    except FileNotFoundError:
        pass
    for source, expect in cases:
        argv = ["--name", "x", *source, "--generator", missing_gen, "--out", str(tmp_path / "x.safetensors")]
        assert build.main(argv) == 2
        err = capsys.readouterr().err
        assert expect in err and "never_loaded" not in err, err
