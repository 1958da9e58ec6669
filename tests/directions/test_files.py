"""Direction files: safetensors round trip, official micromotion / InterFaceGAN imports, compatibility, apply."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from directions.files import (
    Direction,
    DirectionError,
    UnsafeDirectionError,
    apply,
    default_dir,
    find_direction,
    layer_energy,
    list_directions,
    load,
    load_folder,
    make_meta,
    save,
)

# SOURCES.md: L2 norm of each official d_latent [1, 18, 512]
OFFICIAL_NORMS = {"smile": 1.9990, "angry": 2.4150, "aging": 1.7806, "eyesClose": 1.0578, "headsTurn": 88.2998}
OFFICIAL_MAX = {"smile": 0.2532, "angry": 0.1483, "aging": 0.1541, "eyesClose": 0.0791, "headsTurn": 9.5191}
SHA_A = "a" * 64
SHA_B = "b" * 64


def _direction(num_ws=6, w_dim=16, seed=0, **meta):
    g = torch.Generator().manual_seed(seed)
    return Direction("smile", torch.randn(num_ws, w_dim, generator=g), make_meta("rpca", **meta))


def test_round_trip(tmp_path):
    d = _direction(rank=4, lmbda=0.044, anchors=11, template="a person with {} smile", degrees=["no", "100%"],
                   generator="stylegan2-ffhq", generator_sha256=SHA_A, alpha_range=(-2, 6), source="text")
    path = save(d, tmp_path / "sub" / "smile")
    assert path.name == "smile.safetensors" and path.is_file()
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temp file
    back = load(path)
    assert back.name == "smile"
    assert torch.equal(back.delta, d.delta) and back.delta.dtype == torch.float32
    for key in ("method", "rank", "lmbda", "anchors", "template", "degrees", "generator", "generator_sha256", "source"):
        assert back.meta[key] == d.meta[key], key
    assert back.alpha_range == (-2.0, 6.0)
    assert back.meta["created"].startswith("20") and back.meta["format_version"] == 1
    # the metadata is one JSON entry of the safetensors header
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()["micromotion"])["name"] == "smile"
        assert list(fh.keys()) == ["delta"]


def test_direction_validates_delta():
    with pytest.raises(DirectionError, match=r"\[num_ws, w_dim\]"):
        Direction("x", torch.zeros(2, 3, 4))
    with pytest.raises(DirectionError, match="NaN"):
        Direction("x", torch.full((2, 3), float("nan")))
    d = Direction("x", torch.zeros(1, 2, 3, dtype=torch.float64, requires_grad=True))
    assert d.delta.shape == (2, 3) and d.delta.dtype == torch.float32 and not d.delta.requires_grad


def test_save_refuses_non_json_meta(tmp_path):
    d = Direction("x", torch.zeros(2, 3), {"bad": object()})
    with pytest.raises(DirectionError, match="JSON"):
        save(d, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", sorted(OFFICIAL_NORMS))
def test_official_directions_load(official_directions_dir, name):
    d = load(official_directions_dir / f"{name}.pt")
    assert d.name == name
    assert d.delta.shape == (18, 512) and d.delta.dtype == torch.float32
    assert d.delta.device.type == "cpu" and not d.delta.requires_grad
    assert float(d.delta.norm()) == pytest.approx(OFFICIAL_NORMS[name], abs=1e-3)
    assert float(d.delta.abs().max()) == pytest.approx(OFFICIAL_MAX[name], abs=1e-3)
    assert d.meta["method"] == "imported" and "micromotion" in d.meta["source"]
    e = layer_energy(d)
    assert e.shape == (18,)
    assert float(e.pow(2).sum().sqrt()) == pytest.approx(float(d.delta.norm()), rel=1e-5)
    d.check_compatible(18, 512)  # no recorded sha: only the shape is checked


def test_official_layout_without_suffix(tmp_path, official_directions_dir):
    """pregen_latents/<name>/d_latent as the official repository stores it."""
    folder = tmp_path / "pregen_latents" / "smile"
    folder.mkdir(parents=True)
    (folder / "d_latent").write_bytes((official_directions_dir / "smile.pt").read_bytes())
    d = load(folder / "d_latent")
    assert d.name == "smile" and d.delta.shape == (18, 512)
    assert load(folder).name == "smile"
    assert find_direction("smile", [tmp_path / "pregen_latents"]) == folder / "d_latent"


def test_interfacegan_boundaries(tmp_path):
    g = torch.Generator().manual_seed(1)
    b = torch.randn(1, 512, generator=g)
    np.save(tmp_path / "age.npy", b.numpy())
    torch.save(b.clone(), tmp_path / "pose.pt")
    torch.save({"boundary": torch.randn(1, 18, 512)}, tmp_path / "wplus.pt")
    for name in ("age.npy", "pose.pt"):
        d = load(tmp_path / name)
        assert d.delta.shape == (1, 512) and d.broadcast and d.meta["layers"] == "all"
        torch.testing.assert_close(d.delta, b)
        full = d.delta_for(14, 512)  # one offset on every layer of any generator depth
        assert full.shape == (14, 512) and torch.equal(full[0], full[13])
    assert load(tmp_path / "wplus.pt").delta.shape == (18, 512)
    np.save(tmp_path / "v.npy", b[0].numpy())  # bare [512]
    assert load(tmp_path / "v.npy").delta.shape == (1, 512)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "not a direction file"),
        (b"hello world, not a tensor", "not a direction file"),
        (b"PK\x03\x04" + b"\x00" * 40, "cannot read this torch"),
    ],
)
def test_garbage_files_give_one_line_error(tmp_path, content, match):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(DirectionError, match=match) as info:
        load(p)
    assert "\n" not in str(info.value)


def test_truncated_and_foreign_files(tmp_path):
    path = save(_direction(), tmp_path / "d.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DirectionError, match="corrupt") as info:
        load(tmp_path / "cut.safetensors")
    assert "\n" not in str(info.value)
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DirectionError, match="no 'delta'"):
        load(tmp_path / "other.safetensors")
    torch.save({"a": torch.zeros(1, 4), "b": torch.zeros(1, 4)}, tmp_path / "two.pt")
    with pytest.raises(DirectionError, match="no single direction tensor"):
        load(tmp_path / "two.pt")
    torch.save(torch.zeros(2, 3, 4, 5), tmp_path / "4d.pt")
    with pytest.raises(DirectionError, match="shape"):
        load(tmp_path / "4d.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load(tmp_path / "missing.safetensors")


class _Evil:
    """Unpickling this would create `marker` (a file): proof of whether code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw-pickle-4", "object-npy"])
def test_direction_file_with_code_is_refused_because_it_contains_code(tmp_path, fmt):
    import pickle

    marker = tmp_path / "PWNED"
    payload = {"delta": torch.zeros(1, 18, 512), "x": _Evil(marker)}
    path = tmp_path / ("evil.npy" if fmt == "object-npy" else "evil.pt")
    if fmt == "zip":
        torch.save(payload, path)
    elif fmt == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif fmt == "raw-pickle-4":
        path.write_bytes(pickle.dumps(payload, protocol=4))  # STACK_GLOBAL, not GLOBAL
    else:
        np.save(path, np.array([_Evil(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeDirectionError, match=r"refused: the file contains code \(posix\.system\)") as info:
        load(path)
    msg = str(info.value)
    assert "\n" not in msg and "nothing from the file was run" in msg and "official source" in msg
    assert "corrupt" not in msg and "re-download" not in msg
    assert not marker.exists()


def test_refusal_does_not_depend_on_torchs_error_text(tmp_path, monkeypatch):
    """The verdict comes from what the unpickler is asked to resolve, before torch.load is ever called."""
    marker = tmp_path / "PWNED"
    torch.save({"delta": torch.zeros(1, 512), "x": _Evil(marker)}, tmp_path / "evil.pt")
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(
        __import__("pickle").UnpicklingError("wording of some future torch release")))
    with pytest.raises(UnsafeDirectionError):
        load(tmp_path / "evil.pt")
    assert calls == [] and not marker.exists()


def test_numpy_inside_a_pt_and_object_arrays_are_named_not_called_code(tmp_path):
    torch.save({"delta": np.zeros((1, 512), np.float32)}, tmp_path / "np.pt")
    with pytest.raises(DirectionError, match=r"does not take \(numpy") as info:
        load(tmp_path / "np.pt")
    assert not isinstance(info.value, UnsafeDirectionError)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionError, match="object array") as info:
        load(tmp_path / "obj.npy")
    assert not isinstance(info.value, UnsafeDirectionError)


def test_incompatible_direction_refused():
    d = _direction(num_ws=18, w_dim=512, generator="stylegan2-ffhq", generator_sha256=SHA_A)
    d.check_compatible(18, 512, SHA_A)
    d.check_compatible(18, 512)  # unknown sha on the generator side: shape check only
    with pytest.raises(DirectionError, match=r"18×512.*generator is 14×512.*stylegan2-ffhq"):
        d.check_compatible(14, 512, SHA_A)
    with pytest.raises(DirectionError, match="generator is 18×256"):
        d.check_compatible(18, 256)
    with pytest.raises(DirectionError, match=r"made for generator \(stylegan2-ffhq, sha256 aaaaaaaaaaaa…\)"):
        d.check_compatible(18, 512, SHA_B)
    with pytest.raises(DirectionError):
        d.delta_for(18, 512, SHA_B)
    assert torch.equal(d.delta_for(18, 512, SHA_A), d.delta)


def test_apply_is_v0_plus_alpha_t_delta():
    g = torch.Generator().manual_seed(2)
    ws = torch.randn(1, 6, 16, generator=g)
    d = _direction()
    out = apply(ws, d, alpha=5.0, t=0.3)
    torch.testing.assert_close(out, ws + 1.5 * d.delta[None])
    t = torch.linspace(0, 1, 7)
    clip = apply(ws, d, 5.0, t)  # one code per frame
    assert clip.shape == (7, 6, 16)
    torch.testing.assert_close(clip[0], ws[0])
    torch.testing.assert_close(clip[-1], ws[0] + 5.0 * d.delta)
    batch = torch.randn(3, 6, 16, generator=g)
    torch.testing.assert_close(apply(batch, d.delta, 2.0, torch.tensor([0.0, 0.5, 1.0]))[1],
                               batch[1] + d.delta)
    single = Direction("ifg", torch.ones(1, 16))
    torch.testing.assert_close(apply(ws, single, 1.0, 1.0), ws + 1.0)
    assert apply(ws[0], d, 1.0).shape == (6, 16)
    ws64 = ws.double()
    assert apply(ws64, d, 1.0).dtype == torch.float64


def test_apply_shape_errors():
    d = _direction()
    with pytest.raises(ValueError, match="does not fit"):
        apply(torch.zeros(1, 5, 16), d, 1.0)
    with pytest.raises(ValueError, match="does not fit"):
        apply(torch.zeros(1, 6, 8), d, 1.0)
    with pytest.raises(ValueError, match="ws must be"):
        apply(torch.zeros(16), d, 1.0)
    with pytest.raises(ValueError, match="times for 3 codes"):
        apply(torch.zeros(3, 6, 16), d, 1.0, torch.zeros(4))


def test_layer_energy():
    delta = torch.zeros(3, 4)
    delta[0] = torch.tensor([3.0, 4.0, 0.0, 0.0])
    delta[2, 1] = -2.0
    assert layer_energy(delta).tolist() == [5.0, 0.0, 2.0]
    with pytest.raises(ValueError):
        layer_energy(torch.zeros(4))


def test_list_find_and_default_dir(tmp_path, monkeypatch, official_directions_dir):
    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path / "home"))
    assert default_dir() == tmp_path / "home" / "directions"
    assert list_directions() == []  # missing folder → empty
    save(_direction(), default_dir() / "smile.safetensors")
    (default_dir() / "notes.txt").write_text("not a direction")
    assert [p.name for p in list_directions()] == ["smile.safetensors"]
    assert find_direction("smile") == default_dir() / "smile.safetensors"
    assert find_direction("angry", [default_dir(), official_directions_dir]) == official_directions_dir / "angry.pt"
    assert [p.stem for p in list_directions(official_directions_dir)] == sorted(OFFICIAL_NORMS, key=str)
    with pytest.raises(FileNotFoundError, match=r"'frown' not found.*available: smile"):
        find_direction("frown")
    monkeypatch.delenv("MICROMOTION_HOME")
    assert str(default_dir()).endswith(".cache/micromotion/directions")


# ------------------------------------------------------------------------------------------------ malformed metadata


@pytest.mark.parametrize("bad", ["ab", [1], [3, 1], ["a", "b"], [0, float("nan")], [True, 2]])
def test_malformed_alpha_range_is_ignored_with_a_warning(tmp_path, caplog, bad):
    d = _direction()
    d.meta["alpha_range"] = bad
    d.meta["alpha_default"] = "five"
    from safetensors.torch import save_file

    meta = json.dumps({**d.meta, "name": "smile"})  # allow_nan: NaN is written as in hand-edited files
    save_file({"delta": d.delta}, str(tmp_path / "smile.safetensors"), metadata={"micromotion": meta})
    with caplog.at_level("WARNING", logger="directions.files"):
        got = load(tmp_path / "smile.safetensors")
    assert got.alpha_range is None and "alpha_range" not in got.meta and "alpha_default" not in got.meta
    assert "malformed alpha_range" in caplog.text and "malformed alpha_default" in caplog.text
    torch.testing.assert_close(got.delta, d.delta)


# ------------------------------------------------------------------------------------------------ folders


def _save_as(d: Direction, path):
    """Write a direction under an arbitrary file name (a user's copy keeps the metadata name)."""
    tmp = save(d, path.parent / "_tmp.safetensors")
    tmp.rename(path)
    return path


def test_load_folder_skips_duplicates_strays_and_misfits_with_a_warning(tmp_path, caplog):
    smile = _direction(seed=1)
    blink = Direction("blink", torch.randn(6, 16), make_meta("rpca"))
    other = Direction("wide", torch.randn(6, 32), make_meta("rpca"))    # made for a w_dim 32 generator
    save(smile, tmp_path / "smile.safetensors")
    _save_as(_direction(seed=2), tmp_path / "smile (1).safetensors")     # a copy: same name, sorts first
    save(blink, tmp_path / "blink.safetensors")
    save(other, tmp_path / "wide.safetensors")
    (tmp_path / "notes.pt").write_bytes(b"not a direction at all")
    (tmp_path / "readme.txt").write_text("ignored: not a direction suffix")
    with caplog.at_level("WARNING", logger="directions.files"):
        found = load_folder(tmp_path, num_ws=6, w_dim=16)
    assert found.names == ["blink", "smile"]
    assert found.paths["smile"] == tmp_path / "smile.safetensors"
    torch.testing.assert_close(found.directions[1].delta, smile.delta)    # the file named after it, not the copy
    skipped = {s.path.name: s for s in found.skipped}
    assert set(skipped) == {"smile (1).safetensors", "wide.safetensors", "notes.pt"}
    assert skipped["smile (1).safetensors"].kind == "duplicate" and "smile.safetensors" in skipped[
        "smile (1).safetensors"].reason
    assert skipped["wide.safetensors"].kind == "incompatible" and "16" in skipped["wide.safetensors"].reason
    assert skipped["notes.pt"].kind == "unreadable"
    for name in skipped:
        assert name in caplog.text
    assert all("\n" not in s.reason for s in found.skipped)
    # without a generator layout nothing is incompatible; the duplicate is still skipped
    assert load_folder(tmp_path).names == ["blink", "smile", "wide"]


def test_load_folder_named_directions_must_load(tmp_path):
    save(_direction(), tmp_path / "smile.safetensors")
    _save_as(_direction(seed=3), tmp_path / "copy.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert load_folder(tmp_path, ["smile"], num_ws=6, w_dim=16).names == ["smile"]
    with pytest.raises(DirectionError, match=r"two of the directions asked for are named 'smile'"):
        load_folder(tmp_path, ["smile", "copy"])
    with pytest.raises(DirectionError, match="not a direction file"):
        load_folder(tmp_path, ["junk"])
    with pytest.raises(DirectionError, match="generator is 6×32"):
        load_folder(tmp_path, ["smile"], num_ws=6, w_dim=32)
    with pytest.raises(FileNotFoundError, match="'frown' not found"):
        load_folder(tmp_path, ["frown"])
    assert load_folder(tmp_path / "missing").directions == []
