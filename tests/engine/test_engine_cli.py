"""`python -m engine render|invert` with tiny checkpoints written to tmp."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisy_generator import noisy_generator

from engine import __main__ as cli

REPO = Path(__file__).resolve().parents[2]
RES, W_DIM = 16, 8  # tiny generator: num_ws = 2 log2(16) - 2 = 6


def _tiny_generator(seed=0):
    return noisy_generator(RES, W_DIM, seed)


@pytest.fixture(scope="module")
def gen_ckpt(tmp_path_factory):
    G = _tiny_generator()
    latent_avg = torch.randn(W_DIM, generator=torch.Generator().manual_seed(5))
    path = tmp_path_factory.mktemp("g") / "tiny_g.pt"
    torch.save({"g_ema": G.state_dict(), "latent_avg": latent_avg}, path)
    return path


@pytest.fixture(scope="module")
def loaded_g(gen_ckpt):
    from engine.checkpoints import load_generator

    return load_generator(gen_ckpt)


def _expected_png(G, ws):
    with torch.no_grad():
        return cli.images_to_uint8(G(ws))


def _read_png(path):
    return np.asarray(Image.open(path).convert("RGB"))


# ---------------------------------------------------------------------------------------------- render


def test_render_wplus_latent(tmp_path, gen_ckpt, loaded_g, capsys):
    ws = torch.randn(loaded_g.num_ws, W_DIM, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "l.npy", ws.numpy())
    out = tmp_path / "img.png"
    assert cli.main(["render", "--generator", str(gen_ckpt), "--latent", str(tmp_path / "l.npy"), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    got = _read_png(out)
    want = _expected_png(loaded_g, ws[None])[0]
    assert got.shape == (RES, RES, 3)
    assert got.std() > 5  # not a flat image
    np.testing.assert_array_equal(got, want)


def test_render_batch_single_w_and_truncation(tmp_path, gen_ckpt, loaded_g):
    w = torch.randn(W_DIM, generator=torch.Generator().manual_seed(2))
    np.save(tmp_path / "w.npy", w.numpy())
    assert cli.main(["render", "--generator", str(gen_ckpt), "--latent", str(tmp_path / "w.npy"),
                     "--out", str(tmp_path / "w.png"), "--truncation", "0.5"]) == 0
    ws = loaded_g.truncate(w[None, None].repeat(1, loaded_g.num_ws, 1), 0.5)
    np.testing.assert_array_equal(_read_png(tmp_path / "w.png"), _expected_png(loaded_g, ws)[0])
    untruncated = _expected_png(loaded_g, w[None, None].repeat(1, loaded_g.num_ws, 1))[0]
    assert np.abs(untruncated.astype(int) - _read_png(tmp_path / "w.png")).max() > 0

    batch = torch.randn(2, loaded_g.num_ws, W_DIM, generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "b.npy", batch.numpy())
    assert cli.main(["render", "--generator", str(gen_ckpt), "--latent", str(tmp_path / "b.npy"),
                     "--out", str(tmp_path / "b.png")]) == 0
    want = _expected_png(loaded_g, batch)
    for i in range(2):
        np.testing.assert_array_equal(_read_png(tmp_path / f"b_{i:03d}.png"), want[i])


@pytest.mark.parametrize("shape", [(5, W_DIM), (1, 7, W_DIM), (W_DIM + 1,), (2, 3, 4, 5)])
def test_render_wrong_latent_shape_is_one_line(tmp_path, gen_ckpt, capsys, shape):
    np.save(tmp_path / "bad.npy", np.zeros(shape, np.float32))
    out = tmp_path / "never.png"
    assert cli.main(["render", "--generator", str(gen_ckpt), "--latent", str(tmp_path / "bad.npy"),
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: latent") and f"[6, {W_DIM}]" in err and str(list(shape)) in err
    assert "\n" not in err
    assert not out.exists()


def test_render_bad_inputs(tmp_path, gen_ckpt, capsys):
    np.save(tmp_path / "nan.npy", np.full((6, W_DIM), np.nan, np.float32))
    assert cli.main(["render", "--generator", str(gen_ckpt), "--latent", str(tmp_path / "nan.npy"),
                     "--out", str(tmp_path / "x.png")]) == 1
    assert "NaN" in capsys.readouterr().err
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert cli.main(["render", "--generator", str(gen_ckpt), "--latent", str(tmp_path / "junk.npy"),
                     "--out", str(tmp_path / "x.png")]) == 1
    assert "cannot read latent" in capsys.readouterr().err
    np.save(tmp_path / "ok.npy", np.zeros((6, W_DIM), np.float32))
    assert cli.main(["render", "--generator", str(tmp_path / "missing.pt"), "--latent", str(tmp_path / "ok.npy"),
                     "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing.pt" in err and "\n" not in err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(gen_ckpt.read_bytes()[:500])
    assert cli.main(["render", "--generator", str(corrupt), "--latent", str(tmp_path / "ok.npy"),
                     "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "x.png").exists()


def test_render_missing_weights_name_prints_the_download_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path / "home"))
    np.save(tmp_path / "ok.npy", np.zeros((18, 512), np.float32))
    assert cli.main(["render", "--generator", "stylegan2-ffhq", "--latent", str(tmp_path / "ok.npy"),
                     "--out", str(tmp_path / "x.png")]) == 1
    assert "python -m engine.weights download stylegan2-ffhq" in capsys.readouterr().err


def test_render_nvidia_pkl_through_the_cli(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_nvidia_pkl_helpers", Path(__file__).with_name("test_nvidia_pkl.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)  # the NVIDIA-structure writer and reference maths (import-mode independent)
    make_nv_generator, nv_synthesis, write_pkl = helpers.make_nv_generator, helpers.nv_synthesis, helpers.write_pkl

    G = make_nv_generator("raise SystemExit", resolution=16)
    pkl = write_pkl(tmp_path / "g.pkl", G)
    ws = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(9))
    np.save(tmp_path / "l.npy", ws.numpy())
    assert cli.main(["render", "--generator", str(pkl), "--latent", str(tmp_path / "l.npy"),
                     "--out", str(tmp_path / "nv.png")]) == 0
    want = cli.images_to_uint8(nv_synthesis(G, ws))[0].astype(int)
    assert np.abs(_read_png(tmp_path / "nv.png").astype(int) - want).max() <= 1


# ---------------------------------------------------------------------------------------------- invert


@pytest.fixture(scope="module")
def enc_ckpt(tmp_path_factory):
    """A tiny ReStyle-pSp checkpoint in the real file layout ({'state_dict', 'opts', 'latent_avg'})."""
    from engine.encoders import build_network

    torch.manual_seed(0)
    net = build_network("restyle_psp", num_ws=6, w_dim=W_DIM, widths=(8, 12, 16, 24), units=(1, 1, 1, 1),
                        input_size=32, se_reduction=4)
    G = _tiny_generator(seed=1)
    sd = {f"encoder.{k}": v for k, v in net.state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in G.state_dict().items()})
    opts = {"encoder_type": "BackboneEncoder", "input_nc": 6, "n_iters_per_batch": 3, "output_size": RES,
            "start_from_latent_avg": True}
    path = tmp_path_factory.mktemp("e") / "tiny_restyle.pt"
    torch.save({"state_dict": sd, "opts": opts, "latent_avg": torch.randn(6, W_DIM)}, path)
    return path


@pytest.fixture
def face_png(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    path = tmp_path / "face.png"
    Image.fromarray(img).save(path)
    return path


def test_invert_matches_the_encoder(tmp_path, enc_ckpt, face_png, capsys):
    from engine.checkpoints import load_encoder

    out = tmp_path / "face.npy"
    recon = tmp_path / "recon.png"
    assert cli.main(["invert", "--encoder", str(enc_ckpt), "--image", str(face_png), "--out", str(out),
                     "--recon", str(recon)]) == 0
    assert "3 iteration" in capsys.readouterr().out
    ws = np.load(out)
    E = load_encoder(enc_ckpt)
    assert ws.shape == (1, E.num_ws, E.w_dim) and ws.dtype == np.float32
    x = torch.from_numpy(np.asarray(Image.open(face_png).convert("RGB").resize((32, 32), Image.BICUBIC),
                                    dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        want = E(x).numpy()
        np.testing.assert_allclose(ws, want, rtol=1e-5, atol=1e-5)
        one = E(x, n_iters=1).numpy()
    assert np.abs(one - ws).max() > 1e-4  # iterations matter
    assert cli.main(["invert", "--encoder", str(enc_ckpt), "--image", str(face_png), "--out", str(out),
                     "--iters", "1"]) == 0
    np.testing.assert_allclose(np.load(out), one, rtol=1e-5, atol=1e-5)
    assert _read_png(recon).shape == (RES, RES, 3)


def test_invert_bad_inputs_are_one_line(tmp_path, enc_ckpt, gen_ckpt, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "o.npy"
    assert cli.main(["invert", "--encoder", str(enc_ckpt), "--image", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read image") and "\n" not in err
    assert cli.main(["invert", "--encoder", str(enc_ckpt), "--image", str(tmp_path / "none.png"),
                     "--out", str(out)]) == 1
    assert "image not found" in capsys.readouterr().err
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "ok.png")
    assert cli.main(["invert", "--encoder", str(gen_ckpt), "--image", str(tmp_path / "ok.png"),
                     "--out", str(out)]) == 1  # a generator is not an encoder
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not out.exists()


def test_help_says_invert_does_not_align():
    proc = subprocess.run([sys.executable, "-m", "engine", "invert", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "NO face alignment" in text and "python -m stream" in text
