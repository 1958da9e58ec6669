"""`python -m directions show|list|apply|build` with the official directions and a tiny generator checkpoint."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from noisy_generator import noisy_generator

from directions import __main__ as cli
from directions.files import Direction, layer_energy, load, make_meta, save

REPO = Path(__file__).resolve().parents[2]
RES, W_DIM = 32, 8  # tiny generator: num_ws = 2·log2(32) − 2 = 8


def _tiny_generator(seed=0):
    return noisy_generator(RES, W_DIM, seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A rosinality-format checkpoint {'g_ema', 'latent_avg'}, a latent, and a matching direction."""
    from engine.checkpoints import file_sha256

    root = tmp_path_factory.mktemp("tiny")
    G = _tiny_generator()
    ckpt = root / "tiny_g.pt"
    torch.save({"g_ema": G.state_dict(), "latent_avg": torch.zeros(W_DIM)}, ckpt)
    g = torch.Generator().manual_seed(3)
    latent = torch.randn(G.num_ws, W_DIM, generator=g)
    np.save(root / "face.npy", latent.numpy())
    sha = file_sha256(ckpt)
    direction = Direction("wave", torch.randn(G.num_ws, W_DIM, generator=g),
                          make_meta("rpca", rank=4, generator="tiny_g", generator_sha256=sha))
    save(direction, root / "dirs" / "wave.safetensors")
    return dict(root=root, ckpt=ckpt, G=G, latent=latent, direction=direction, sha=sha)


def _table_rows(text):
    return [(int(m[1]), float(m[2]), float(m[3])) for m in re.finditer(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)%", text, re.M)]


# ------------------------------------------------------------------------------------------------ show / list


@pytest.mark.parametrize("name", ["smile", "headsTurn"])
def test_show_official_direction(official_directions_dir, tmp_path, capsys, name):
    png = tmp_path / "plot" / f"{name}.png"
    rc = cli.main(["show", str(official_directions_dir / f"{name}.pt"), "--png", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    energy = layer_energy(load(official_directions_dir / f"{name}.pt"))
    rows = _table_rows(out)
    assert [r[0] for r in rows] == list(range(18))
    np.testing.assert_allclose([r[1] for r in rows], energy.numpy(), atol=6e-5)
    assert sum(r[2] for r in rows) == pytest.approx(100.0, abs=0.5)
    assert all(r[1] > 0 for r in rows)
    norm = float(energy.pow(2).sum().sqrt())
    assert f"|delta| {norm:.4f}" in out
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
        assert len(set(np.asarray(im.convert("L")).ravel().tolist())) > 5  # not a blank canvas


def test_show_by_name_in_dir(official_directions_dir, capsys):
    assert cli.main(["show", "eyesClose", "--dir", str(official_directions_dir)]) == 0
    assert "direction 'eyesClose': 18 layer(s) x 512, |delta| 1.0578" in capsys.readouterr().out


def test_list(official_directions_dir, tmp_path, capsys):
    assert cli.main(["list", "--dir", str(official_directions_dir)]) == 0
    out = capsys.readouterr().out
    for name, norm in [("smile", "1.9990"), ("angry", "2.4150"), ("aging", "1.7806"), ("eyesClose", "1.0578"),
                       ("headsTurn", "88.2998")]:
        assert re.search(rf"^{name}\s+18\s+512\s+{norm}\s+imported", out, re.M), name
    (tmp_path / "broken.pt").write_bytes(b"junk")
    assert cli.main(["list", "--dir", str(tmp_path)]) == 0
    assert re.search(r"^broken\s+unreadable: .*not a direction file", capsys.readouterr().out, re.M)
    assert cli.main(["list", "--dir", str(tmp_path / "none")]) == 0
    assert "no directions in" in capsys.readouterr().out


def test_list_of_an_empty_folder_says_how_to_get_directions(tmp_path, monkeypatch, capsys):
    """Issue 11: it suggested only `build --text`, not the paper's directions."""
    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path / "home"))
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "`python -m directions install-official`" in out and "`python -m directions setup`" in out
    assert "python -m directions build" in out
    assert cli.main(["list", "--dir", str(tmp_path / "mine")]) == 0
    assert f"`python -m directions install-official --dir {tmp_path / 'mine'}`" in capsys.readouterr().out


def test_list_survives_malformed_metadata_and_names_a_duplicate(tmp_path, capsys):
    """Issue 15: alpha_range "ab" in a file's metadata stopped `directions list`; a copied file is named."""
    from safetensors.torch import save_file
    import json

    delta = torch.randn(4, 8)
    meta = json.dumps({"name": "smile", "method": "rpca", "alpha_range": "ab"})
    save_file({"delta": delta}, str(tmp_path / "smile.safetensors"), metadata={"micromotion": meta})
    save_file({"delta": delta}, str(tmp_path / "smile (1).safetensors"), metadata={"micromotion": meta})
    assert cli.main(["list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^smile\s+4\s+8\s+[0-9.]+\s+rpca\s+-\s+smile\.safetensors$", out, re.M), out
    assert re.search(r"^smile \(1\)\s+skipped \(duplicate\): .*smile\.safetensors", out, re.M), out


def test_show_missing_and_corrupt(tmp_path, capsys):
    assert cli.main(["show", "nothing-here", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: direction 'nothing-here' not found") and err.count("\n") == 1
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    assert cli.main(["show", str(tmp_path / "bad.safetensors")]) == 2
    assert "corrupt" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ apply


def test_render_clip_is_g_of_v_plus_alpha_t_delta(tiny):
    G, ws = tiny["G"], tiny["latent"][None]
    delta = tiny["direction"].delta
    frames = list(cli.render_clip(G, ws, delta, alpha=2.0, frames=5, batch=2, progress=False))
    assert len(frames) == 5 and frames[0].shape == (RES, RES, 3) and frames[0].dtype == np.uint8
    with torch.no_grad():
        first = cli.images_to_uint8(G(ws))[0]
        mid = cli.images_to_uint8(G(ws + 2.0 * 0.5 * delta))[0]
        last = cli.images_to_uint8(G(ws + 2.0 * delta))[0]
    np.testing.assert_array_equal(frames[0], first)
    np.testing.assert_array_equal(frames[2], mid)
    np.testing.assert_array_equal(frames[-1], last)
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 1.0  # the edit moves the image


def _read_video(path):
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        return frames, stream.codec_context.name, float(stream.average_rate)


def test_apply_writes_video_with_right_frame_count(tiny, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = cli.main(["apply", "--latent", str(tiny["root"] / "face.npy"), "--direction", "wave",
                   "--dir", str(tiny["root"] / "dirs"), "--generator", str(tiny["ckpt"]), "--alpha", "3",
                   "--frames", "12", "--fps", "10", "--out", str(out), "--device", "cpu", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert f"{out}  (12 frames, {RES}x{RES}" in capsys.readouterr().out
    frames, codec, fps = _read_video(out)
    assert len(frames) == 12 and frames[0].shape == (RES, RES, 3)
    assert codec in ("h264", "mpeg4") and fps == pytest.approx(10.0)
    assert not list(tmp_path.glob(".*partial*"))
    # decoded frames follow the rendered ones (lossy codec: compare loosely) and the clip moves
    G, ws, delta = tiny["G"], tiny["latent"][None], tiny["direction"].delta
    rendered = list(cli.render_clip(G, ws, delta, 3.0, 12, progress=False))
    err_same = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, rendered)])
    err_shift = np.abs(frames[0].astype(int) - rendered[-1].astype(int)).mean()
    assert err_same < 0.5 * err_shift, (err_same, err_shift)


def test_apply_shows_progress_and_suggests_a_close_name(tiny, tmp_path, capsys):
    """Issue 11: a long `apply` prints a progress bar (on stderr) while it renders; a typo gets "did you mean"."""
    base = ["apply", "--latent", str(tiny["root"] / "face.npy"), "--dir", str(tiny["root"] / "dirs"),
            "--generator", str(tiny["ckpt"]), "--frames", "6", "--batch", "2", "--device", "cpu"]
    assert cli.main(base + ["--direction", "wave", "--out", str(tmp_path / "a.mp4")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"render: +100%.*6/6", err), err
    assert cli.main(base + ["--direction", "wvae", "--out", str(tmp_path / "b.mp4")]) == 2
    err = capsys.readouterr().err
    assert "direction 'wvae' (did you mean 'wave'?) not found" in err and err.count("\n") == 1
    assert not (tmp_path / "b.mp4").exists()


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_encode_video_codecs(tmp_path, codec):
    g = np.random.default_rng(0)
    frames = [np.full((32, 48, 3), 16 * i, np.uint8) + g.integers(0, 8, (32, 48, 3), dtype=np.uint8) for i in range(7)]
    n, used = cli.encode_video(iter(frames), tmp_path / f"{codec}.mp4", fps=12, codec=codec)
    assert (n, used) == (7, codec)
    back, name, fps = _read_video(tmp_path / f"{codec}.mp4")
    assert len(back) == 7 and back[0].shape == (32, 48, 3) and fps == pytest.approx(12.0)
    assert name == {"libx264": "h264", "mpeg4": "mpeg4"}[codec]
    means = [float(f.mean()) for f in back]
    assert means == sorted(means) and means[-1] - means[0] > 80  # the brightness ramp survives encoding


def test_apply_refuses_incompatible_direction(tiny, tmp_path, official_directions_dir, capsys):
    out = tmp_path / "clip.mp4"
    base = ["apply", "--latent", str(tiny["root"] / "face.npy"), "--generator", str(tiny["ckpt"]),
            "--frames", "3", "--out", str(out), "--device", "cpu", "-q"]
    # official 18×512 direction against an 8×8 generator
    assert cli.main(base + ["--direction", str(official_directions_dir / "smile.pt")]) == 2
    err = capsys.readouterr().err
    assert "18×512" in err and f"generator is {tiny['G'].num_ws}×{W_DIM}" in err
    # right shape, recorded for another generator file
    other = Direction("wave", tiny["direction"].delta, {**tiny["direction"].meta, "generator_sha256": "0" * 64})
    save(other, tmp_path / "other.safetensors")
    assert cli.main(base + ["--direction", str(tmp_path / "other.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "was made for generator (tiny_g, sha256 000000000000…)" in err and tiny["sha"][:12] in err
    assert not out.exists()


def test_apply_bad_latent_and_existing_output_kept(tiny, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"previous clip")
    rc = cli.main(["apply", "--latent", str(tmp_path / "bad.npy"), "--direction", "wave", "--dir",
                   str(tiny["root"] / "dirs"), "--generator", str(tiny["ckpt"]), "--out", str(out), "-q",
                   "--device", "cpu"])
    assert rc == 2 and "latent has shape [3, 5]" in capsys.readouterr().err
    assert out.read_bytes() == b"previous clip"

    def failing():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError):
        cli.encode_video(failing(), out, fps=5)
    assert out.read_bytes() == b"previous clip" and not list(tmp_path.glob(".*partial*"))


def test_apply_missing_generator_weights_names_the_command(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path / "home"))
    rc = cli.main(["apply", "--latent", str(tiny["root"] / "face.npy"), "--direction", "wave", "--dir",
                   str(tiny["root"] / "dirs"), "--out", str(tmp_path / "c.mp4"), "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "python -m engine.weights download stylegan2-ffhq" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------ build dispatch


def test_build_dispatches_to_build_module(capsys):
    rc = cli.main(["build", "--name", "x", "--text", "a template without placeholder"])
    assert rc == 2
    assert "placeholder" in capsys.readouterr().err


def test_build_missing_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "directions.build", None)  # import → ImportError
    assert cli.main(["build", "--name", "x", "--text", "{} smile"]) == 2
    err = capsys.readouterr().err
    assert "`build` is unavailable" in err and err.count("\n") == 1


def test_module_entry_point_runs(official_directions_dir):
    r = subprocess.run([sys.executable, "-m", "directions", "show", str(official_directions_dir / "angry.pt")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "|delta| 2.4150" in r.stdout
