"""`engine.load_generator`: the full config-f recipe checkpoint against the reference outputs, tiny round trips,
configuration inference, name resolution and one-line errors for bad files.

The reference files (../shared/fixtures/README.md) hold outputs of rosinality's Generator run with the weights
of `recipe.py`; each file costs one batched 1024x1024 forward here (module-scoped).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.checkpoints import CheckpointError, infer_generator_config, load_generator, read_checkpoint
from gen_helpers import make_tiny_generator
from recipe_ckpt import load_recipe

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ full config F


@pytest.fixture(scope="module")
def G_const(stylegan2_recipe_ckpt):
    return load_generator(stylegan2_recipe_ckpt)


def _reference_run(G, ref: dict) -> dict:
    """Everything the reference file holds, computed by our G with one batched 1024 forward.

    Batch = the two `ws` rows + one truncated row: with the recipe weights the mapping output does not depend
    on z (fixtures README, caveat 1), so both truncated rows are identical in the reference, which is checked.
    """
    assert np.array_equal(ref["img_trunc_pool64"][0], ref["img_trunc_pool64"][1])
    ws = torch.from_numpy(ref["ws"])
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        w_from_z = G.mapping(z)
        trunc_ws = G.mapping(z, truncation=0.7)[:, None].repeat(1, G.num_ws, 1)
        img = G(torch.cat([ws, trunc_ws[:1]]))
    pool = F.avg_pool2d(img, 16)
    return {
        "w_from_z": w_from_z.numpy(),
        "trunc_ws": trunc_ws.numpy(),
        "img_pool64": pool[:2].numpy(),
        "img_crop": img[:2, :, 496:528, 496:528].numpy(),
        "img_trunc_pool64": pool[2:].expand(2, -1, -1, -1).numpy(),
        "shape_full": np.array([2, *img.shape[1:]]),
        "latent_avg": G.latent_avg.numpy(),
    }


@pytest.fixture(scope="module")
def const_outputs(G_const, fixtures_dir):
    ref = dict(np.load(fixtures_dir / "stylegan2_reference_constkernel.npz"))
    return _reference_run(G_const, ref), ref


@pytest.fixture(scope="module")
def randkernel_outputs(stylegan2_recipe_ckpt_randkernel, fixtures_dir):
    ref = dict(np.load(fixtures_dir / "stylegan2_reference.npz"))
    return _reference_run(load_generator(stylegan2_recipe_ckpt_randkernel), ref), ref


def test_config_f_recipe_checkpoint_loads_strictly(G_const, stylegan2_recipe_ckpt, fixtures_dir):
    G = G_const
    assert (G.resolution, G.num_ws, G.w_dim, G.z_dim, G.n_mapping) == (1024, 18, 512, 512, 8)
    assert G.channel_multiplier == 2 and G.channel_max == 512 and not G.training
    ckpt = read_checkpoint(stylegan2_recipe_ckpt)
    sd = G.state_dict()
    assert list(sd) == list(ckpt["g_ema"])  # same keys in the same order
    for k, v in ckpt["g_ema"].items():
        assert torch.equal(sd[k], v), k
    recipe = load_recipe(fixtures_dir / "recipe.py")
    assert torch.equal(G.latent_avg, recipe.fill("latent_avg", [512]))
    assert G.source_path == str(stylegan2_recipe_ckpt)
    assert G.source_sha256 == hashlib.sha256(Path(stylegan2_recipe_ckpt).read_bytes()).hexdigest()


def test_reference_constkernel(const_outputs):
    out, ref = const_outputs
    np.testing.assert_array_equal(out["latent_avg"], ref["latent_avg"])
    np.testing.assert_array_equal(out["shape_full"], ref["shape_full"])
    np.testing.assert_allclose(out["w_from_z"], ref["w_from_z"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["trunc_ws"], ref["trunc_ws"], rtol=1e-5, atol=1e-7)
    for key in ("img_pool64", "img_crop", "img_trunc_pool64"):
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-4, atol=2e-4, err_msg=key)


def test_reference_random_kernels(randkernel_outputs):
    """Kernels are read from the checkpoint: the random-kernel file matches too (values up to ~±410)."""
    out, ref = randkernel_outputs
    np.testing.assert_allclose(out["w_from_z"], ref["w_from_z"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["trunc_ws"], ref["trunc_ws"], rtol=1e-5, atol=1e-7)
    for key in ("img_pool64", "img_crop", "img_trunc_pool64"):
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-4, atol=1e-4 * np.abs(ref[key]).max(), err_msg=key)


# ------------------------------------------------------------------------------------------------ tiny round trips


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _tiny_ckpt(tmp_path: Path, G=None, name: str = "tiny.pt", **extra) -> Path:
    G = G or make_tiny_generator()
    return _save({"g_ema": G.state_dict(), "latent_avg": G.latent_avg.clone(), **extra}, tmp_path / name)


def _same_outputs(G1, G2, seed: int = 0):
    ws = torch.randn(2, G1.num_ws, G1.w_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(G1(ws), G2(ws), rtol=0, atol=0)


def test_tiny_rosinality_round_trip(tmp_path):
    G = make_tiny_generator(seed=4)
    path = _tiny_ckpt(tmp_path, G)
    H = load_generator(path)
    assert (H.resolution, H.num_ws, H.w_dim, H.z_dim) == (G.resolution, G.num_ws, G.w_dim, G.z_dim)
    assert not H.training and not any(p.requires_grad for p in H.parameters())
    torch.testing.assert_close(H.latent_avg, G.latent_avg, rtol=0, atol=0)
    assert H.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    _same_outputs(G, H)


def test_configuration_is_inferred_from_keys_and_shapes(tmp_path):
    # channels: 4..32 -> 32 (channel_max), 64 -> 1/64 * 16384 / 64 = 4; z_dim != w_dim; 3 mapping layers
    G = make_tiny_generator(seed=5, resolution=64, channel_max=32, channel_multiplier=1 / 64, z_dim=8, w_dim=12,
                            n_mapping=3)
    assert G.channels[64] == 4 and G.channels[32] == 32
    cfg = infer_generator_config(G.state_dict())
    assert cfg == dict(resolution=64, w_dim=12, z_dim=8, n_mapping=3, channel_multiplier=1 / 64, channel_max=32)
    H = load_generator(_tiny_ckpt(tmp_path, G))
    assert H.num_ws == 10 and H.channels == G.channels
    _same_outputs(G, H)


def test_bare_state_dict_and_train_checkpoint_without_latent_avg(tmp_path, caplog):
    G = make_tiny_generator(seed=6)
    bare = _save(G.state_dict(), tmp_path / "bare.pt")
    train = _save({"g": G.state_dict(), "d": {"convs.0.0.weight": torch.zeros(1)}, "g_ema": G.state_dict(),
                   "g_optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
                   "args": argparse.Namespace(size=32, channel_multiplier=2), "ada_aug_p": 0.0},
                  tmp_path / "train_ckpt.pt")
    for path in (bare, train):
        with caplog.at_level(logging.WARNING, logger="engine.checkpoints"):
            H = load_generator(path)
        assert "no latent_avg" in caplog.text
        torch.testing.assert_close(H.latent_avg, H.estimate_latent_avg(4096, seed=0))
        _same_outputs(G, H)


def test_manifest_name_resolves_through_engine_weights(tmp_path, monkeypatch):
    from engine import weights

    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError) as info:
        load_generator("stylegan2-ffhq")
    assert "python -m engine.weights download stylegan2-ffhq" in str(info.value)
    cached = weights.path_for("stylegan2-ffhq")
    cached.parent.mkdir(parents=True)
    G = make_tiny_generator(seed=7)
    _tiny_ckpt(cached.parent, G, name=cached.name)
    H = load_generator("stylegan2-ffhq")
    assert H.source_path == str(cached)
    _same_outputs(G, H)


def test_package_exports_are_lazy():
    code = ("import sys, engine; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert engine.load_generator.__module__ == 'engine.checkpoints'; "
            "assert issubclass(engine.CheckpointError, ValueError); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------------------------------------ bad input


def _error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_truncated_checkpoint(tmp_path):
    good = _tiny_ckpt(tmp_path)
    data = good.read_bytes()
    bad = tmp_path / "stylegan2-ffhq-config-f.pt"  # the manifest file name: the fix names the download
    bad.write_bytes(data[: len(data) // 2])
    msg = _error(bad)
    assert str(bad) in msg and "truncated or corrupt" in msg
    assert "python -m engine.weights download stylegan2-ffhq" in msg


@pytest.mark.parametrize("content", [b"", random.Random(0).randbytes(4096), b"<html>404 not found</html>" * 10],
                         ids=["empty", "random-bytes", "html-page"])
def test_corrupt_files(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    msg = _error(bad)
    assert str(bad) in msg and ("truncated or corrupt" in msg or "empty" in msg)
    assert "python -m engine.weights download" in msg


def test_encoder_checkpoint_given_as_generator(tmp_path):
    G = make_tiny_generator()
    sd = {"encoder.input_layer.0.weight": torch.zeros(4, 3, 3, 3)}
    sd.update({f"decoder.{k}": v for k, v in G.state_dict().items()})
    path = _save({"state_dict": sd, "opts": {"encoder_type": "Encoder4Editing"},
                  "latent_avg": torch.zeros(G.num_ws, G.w_dim)}, tmp_path / "e4e.pt")
    msg = _error(path)
    assert "encoder checkpoint" in msg and "not a StyleGAN2 generator" in msg and "load_encoder" in msg


@pytest.mark.parametrize(
    "obj, expected",
    [(torch.zeros(3), "a Tensor, not a dict"),
     ({"d": {"convs.0.0.weight": torch.zeros(1)}}, "without 'g_ema'"),
     ({"mapping.fc0.weight": torch.zeros(2, 2), "synthesis.b4.const": torch.zeros(1)}, "NVIDIA-layout"),
     ({"foo": torch.zeros(1)}, "top-level keys 'foo'")],
)
def test_other_architectures(tmp_path, obj, expected):
    msg = _error(_save(obj, tmp_path / "other.pt"))
    assert expected in msg and "expected a rosinality .pt" in msg


def test_missing_unexpected_and_misshaped_keys(tmp_path):
    G = make_tiny_generator()
    base = G.state_dict()

    sd = dict(base)
    del sd["convs.3.conv.modulation.bias"]
    msg = _error(_save({"g_ema": sd, "latent_avg": G.latent_avg}, tmp_path / "missing.pt"))
    assert "1 missing key(s): convs.3.conv.modulation.bias" in msg

    sd = {k: v for k, v in base.items() if not k.startswith("noises.")}
    msg = _error(_save({"g_ema": sd, "latent_avg": G.latent_avg}, tmp_path / "nonoise.pt"))
    assert "7 missing key(s): noises.noise_0" in msg and "+2 more" in msg

    sd = dict(base)
    sd["convs.2.conv.weight"] = torch.zeros(1, 16, 16, 1, 1)
    sd["extra.thing"] = torch.zeros(2)
    msg = _error(_save({"g_ema": sd, "latent_avg": G.latent_avg}, tmp_path / "shape.pt"))
    assert "1 mis-shaped key(s)" in msg and "convs.2.conv.weight [1, 16, 16, 1, 1] vs [1, 16, 16, 3, 3]" in msg
    assert "1 unexpected key(s): extra.thing" in msg


def test_latent_avg_of_wrong_shape(tmp_path):
    G = make_tiny_generator()
    msg = _error(_save({"g_ema": G.state_dict(), "latent_avg": torch.zeros(G.num_ws, G.w_dim)}, tmp_path / "la.pt"))
    assert "latent_avg has shape [8, 16], expected [16]" in msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises((FileNotFoundError, CheckpointError)) as info:
        load_generator(tmp_path / "nope.pt")
    assert "nope.pt" in str(info.value)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_generator(tmp_path)


def test_pkl_goes_to_the_restricted_nvidia_loader(tmp_path):
    bad = tmp_path / "network.pkl"
    bad.write_bytes(random.Random(1).randbytes(2048))
    with pytest.raises(CheckpointError) as info:
        load_generator(bad)
    assert "network.pkl" in str(info.value) and "\n" not in str(info.value)
