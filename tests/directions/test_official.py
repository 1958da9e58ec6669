"""directions.official: install the paper's five directions from a 127.0.0.1 mirror laid out as <name>/d_latent."""
from __future__ import annotations

import hashlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import torch

from directions import files, official
from directions.__main__ import main as directions_main
from engine import weights

NAMES = ("smile", "angry", "aging", "eyesClose", "headsTurn")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, official_directions_dir):
    """A copy of the official files as <root>/<name>/d_latent, served over HTTP on 127.0.0.1."""
    root = tmp_path / "pregen_latents"
    for name in NAMES:
        (root / name).mkdir(parents=True)
        shutil.copyfile(official_directions_dir / f"{name}.pt", root / name / "d_latent")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.shutdown()
    httpd.server_close()


def _source(official_directions_dir, name):
    t = torch.load(official_directions_dir / f"{name}.pt", map_location="cpu", weights_only=True)
    return t.detach()[0]


def _check_installed(paths, folder, official_directions_dir, base):
    assert [p.name for p in paths] == [f"{n}.safetensors" for n in NAMES]
    assert all(p.parent == folder for p in paths)
    for name, path in zip(NAMES, paths):
        d = files.load(path)
        assert d.name == name
        assert d.delta.shape == (18, 512) and d.delta.dtype == torch.float32
        assert torch.equal(d.delta, _source(official_directions_dir, name))
        m = d.meta
        assert m["method"] == "official" and m["generator"] == "stylegan2-ffhq config-f"
        assert m["source"] == f"{base}/{name}/d_latent"
        assert m["official_url"] == weights.MANIFEST[f"micromotion-{name}"].url
        assert weights.MICROMOTION_COMMIT in m["official_url"] and m["official_url"].endswith(f"/{name}/d_latent")
        sha = hashlib.sha256((official_directions_dir / f"{name}.pt").read_bytes()).hexdigest()
        assert m["source_sha256"] == sha == weights.MANIFEST[f"micromotion-{name}"].sha256
        assert d.alpha_range == (0.0, 10.0) and m["alpha_default"] == 5.0
        assert "MIT" in m["license"] and "NVIDIA" in m["license"]
        assert ("note" in m) == (name == "headsTurn")


def test_manifest_entries_match_the_reference_copies(official_directions_dir):
    assert set(weights.MICROMOTION_DIRECTION_NAMES) == {f"micromotion-{n}" for n in NAMES}
    assert not set(weights.MICROMOTION_DIRECTION_NAMES) & set(weights.DEFAULT_NAMES)
    for name in NAMES:
        e = weights.MANIFEST[f"micromotion-{name}"]
        data = (official_directions_dir / f"{name}.pt").read_bytes()
        assert len(data) == 37624 and hashlib.sha256(data).hexdigest() == e.sha256
        assert e.kind == "direction" and "git blob" in e.sha256_note
        assert e.url == ("https://raw.githubusercontent.com/wuqiuche/micromotion-styleGAN/"
                         f"d4ff949b0d08814f49603850bb50a98346905a7b/pregen_latents/{name}/d_latent")


def test_install_writes_five_direction_files_then_skips(home, mirror, official_directions_dir):
    paths = official.install_official(base_url=mirror.base, progress=False)
    folder = home / "directions"
    _check_installed(paths, folder, official_directions_dir, mirror.base)
    assert sorted(p.name for p in (home / "weights").iterdir()) == sorted(
        f"micromotion-{n}.d_latent.pt" for n in NAMES)
    mtimes = {p: p.stat().st_mtime_ns for p in paths}

    again = official.install(base_url=mirror.base, progress=False)
    assert [r.status for r in again] == ["unchanged"] * len(NAMES)
    assert {p: p.stat().st_mtime_ns for p in paths} == mtimes
    assert [files._default_name(p) for p in files.list_directions(folder)] == sorted(NAMES)


def test_cli_installs_a_subset_into_dir_and_reports(home, mirror, official_directions_dir, tmp_path, capsys):
    out_dir = tmp_path / "dirs"
    assert directions_main(["install-official", "smile", "eyes_close", "--dir", str(out_dir),
                            "--base-url", mirror.base + "/", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "smile: installed" in out and "eyesClose: installed" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["eyesClose.safetensors", "smile.safetensors"]
    d = files.load(out_dir / "eyesClose.safetensors")
    assert torch.equal(d.delta, _source(official_directions_dir, "eyesClose"))
    assert directions_main(["install-official", "--dir", str(out_dir), "--base-url", mirror.base,
                            "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("already installed") == 2 and out.count(": installed") == 3
    _check_installed([out_dir / f"{n}.safetensors" for n in NAMES], out_dir, official_directions_dir, mirror.base)


def test_tampered_file_is_a_hash_error_and_writes_nothing(home, mirror, capsys):
    path = mirror.root / "aging" / "d_latent"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(weights.HashMismatchError, match="sha256"):
        official.install_official(base_url=mirror.base, progress=False)
    assert not (home / "directions").exists()
    assert not (home / "weights" / "micromotion-aging.d_latent.pt").exists()
    assert not list((home / "weights").glob("*.part"))

    assert directions_main(["install-official", "--base-url", mirror.base, "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sha256 of the downloaded micromotion-aging") and "\n" not in err
    assert not (home / "directions").exists()


def test_tampered_cache_is_downloaded_again(home, mirror, official_directions_dir):
    official.install_official(["smile"], base_url=mirror.base, progress=False)
    cached = home / "weights" / "micromotion-smile.d_latent.pt"
    cached.write_bytes(b"not the official file")
    (path,) = official.install_official(["smile"], base_url=mirror.base, progress=False)
    assert cached.read_bytes() == (official_directions_dir / "smile.pt").read_bytes()
    assert torch.equal(files.load(path).delta, _source(official_directions_dir, "smile"))


def test_a_users_own_file_of_that_name_is_not_overwritten(home, mirror, official_directions_dir):
    folder = home / "directions"
    mine = files.Direction("smile", torch.ones(18, 512), files.make_meta(method="rpca", rank=4))
    files.save(mine, folder / "smile.safetensors")
    before = (folder / "smile.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        official.install_official(["smile", "angry"], base_url=mirror.base, progress=False)
    assert (folder / "smile.safetensors").read_bytes() == before
    assert not (folder / "angry.safetensors").exists()
    (done,) = official.install(["smile"], base_url=mirror.base, progress=False, force=True)
    assert done.status == "updated"
    assert torch.equal(files.load(done.path).delta, _source(official_directions_dir, "smile"))


def test_unknown_name_is_one_line(home, capsys):
    with pytest.raises(ValueError, match="smile, angry, aging, eyesClose, headsTurn"):
        official.install_official(["frown"], progress=False)
    assert directions_main(["install-official", "frown", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown official direction 'frown'" in err and "\n" not in err


def test_stream_effect_finds_installed_official_directions_by_name(home, mirror, official_directions_dir):
    from stream.loader import load_direction_files
    from stream.options import EffectConfig

    official.install_official(base_url=mirror.base, progress=False)
    G = SimpleNamespace(num_ws=18, w_dim=512, source_sha256="0" * 64)
    (name, delta, meta), = load_direction_files(EffectConfig(directions=("headsTurn",)), G)[0]
    assert name == "headsTurn" and meta["method"] == "official"
    assert torch.equal(delta, _source(official_directions_dir, "headsTurn"))
    every, skipped = load_direction_files(EffectConfig(), G)  # () -> every file in $MICROMOTION_HOME/directions
    assert sorted(x[0] for x in every) == sorted(NAMES) and skipped == []
