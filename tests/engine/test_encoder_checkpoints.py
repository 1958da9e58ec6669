"""pSp / e4e / ReStyle checkpoint loading: reference numerics on recipe checkpoints, tiny round trips, errors.

The two reference tests build a full-size recipe checkpoint (~1 GB) once per test class, run the forward passes
once in the class fixture, delete the file and keep only the outputs; each test then asserts one output group.
"""
from __future__ import annotations

import argparse
import gc
import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.checkpoints import CheckpointError
from engine.encoder_checkpoints import load_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_ckpt import build_recipe_checkpoint, load_recipe  # noqa: E402
from test_encoders import S, tiny_encoder, tiny_generator  # noqa: E402

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ reference numerics


def _max_err(actual, ref) -> float:
    return float(np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(ref, dtype=np.float64)).max())


@pytest.fixture(scope="class")
def restyle_run(fixtures_dir, tmp_path_factory):
    """Load the recipe ReStyle-pSp checkpoint and run the reference protocol once (avg image + 5 iterations)."""
    path = build_recipe_checkpoint(fixtures_dir / "restyle_psp_ffhq.keys.json",
                                   tmp_path_factory.mktemp("restyle") / "restyle_psp_recipe.pt", const_kernel=True)
    ref = dict(np.load(fixtures_dir / "restyle_psp_reference_constkernel.npz"))
    E = load_encoder(path)
    path.unlink()
    image = torch.from_numpy(ref["image"])
    with torch.no_grad():
        avg = E.average_image()
        _, iters = E(image, return_iters=True)  # default n_iters from opts (5)
    out = dict(
        kind=E.kind, n_iters=E.n_iters, num_ws=E.num_ws, w_dim=E.w_dim, latent_avg=E.latent_avg.numpy().copy(),
        avg_image=avg.numpy(), avg_image_pool64=F.avg_pool2d(avg, 4).numpy(),
        ws_iters=np.stack([it.ws[0].numpy() for it in iters]),
        # recon = decoder output pooled 1024 -> 256; a further 4x4 mean is the reference's 16x16 pool of the full image
        y_hat_pool64_iters=np.stack([F.avg_pool2d(it.recon, 4)[0].numpy() for it in iters]),
    )
    del E, iters
    gc.collect()
    return out, ref


class TestReStylePspReference:
    def test_architecture_from_opts(self, restyle_run, fixtures_dir):
        out, _ = restyle_run
        assert (out["kind"], out["n_iters"], out["num_ws"], out["w_dim"]) == ("restyle_psp", 5, 18, 512)
        fill = load_recipe(fixtures_dir / "recipe.py").fill
        np.testing.assert_array_equal(out["latent_avg"], fill("latent_avg", [18, 512]).numpy())

    def test_average_image(self, restyle_run):
        out, ref = restyle_run
        for key in ("avg_image", "avg_image_pool64"):
            log.info("%s max abs err %.3g", key, _max_err(out[key], ref[key]))
            np.testing.assert_allclose(out[key], ref[key], rtol=1e-4, atol=2e-4)

    def test_all_five_iterations(self, restyle_run):
        out, ref = restyle_run
        assert out["ws_iters"].shape == ref["ws_iters"].shape == (5, 18, 512)
        for i in range(5):
            log.info("iteration %d: ws max abs err %.3g, y_hat_pool64 max abs err %.3g", i + 1,
                     _max_err(out["ws_iters"][i], ref["ws_iters"][i]),
                     _max_err(out["y_hat_pool64_iters"][i], ref["y_hat_pool64_iters"][i]))
            np.testing.assert_allclose(out["ws_iters"][i], ref["ws_iters"][i], rtol=1e-4, atol=2e-4,
                                       err_msg=f"ws after iteration {i + 1}")
            np.testing.assert_allclose(out["y_hat_pool64_iters"][i], ref["y_hat_pool64_iters"][i], rtol=1e-4,
                                       atol=2e-4, err_msg=f"reconstruction after iteration {i + 1}")
        # the iterations really differ (the test would not notice a loop that stops after one pass otherwise)
        assert np.abs(ref["ws_iters"][4] - ref["ws_iters"][0]).max() > 100 * 2e-4


@pytest.fixture(scope="class")
def e4e_run(fixtures_dir, tmp_path_factory):
    path = build_recipe_checkpoint(fixtures_dir / "e4e_ffhq.keys.json",
                                   tmp_path_factory.mktemp("e4e") / "e4e_recipe.pt", const_kernel=True)
    ref = dict(np.load(fixtures_dir / "e4e_reference_constkernel.npz"))
    E = load_encoder(path)
    path.unlink()
    with torch.no_grad():
        ws = E(torch.from_numpy(ref["image"]))
        img_pool64 = F.avg_pool2d(E.decode(ws), 16)
    out = dict(kind=E.kind, n_iters=E.n_iters, ws=ws.numpy(), img_pool64=img_pool64.numpy())
    del E
    gc.collect()
    return out, ref


class TestE4eReference:
    def test_kind(self, e4e_run):
        out, _ = e4e_run
        assert (out["kind"], out["n_iters"]) == ("e4e", 1)

    def test_ws(self, e4e_run):
        out, ref = e4e_run
        log.info("e4e ws max abs err %.3g", _max_err(out["ws"], ref["ws"]))
        np.testing.assert_allclose(out["ws"], ref["ws"], rtol=1e-5, atol=1e-5)

    def test_image(self, e4e_run):
        out, ref = e4e_run
        log.info("e4e img_pool64 max abs err %.3g", _max_err(out["img_pool64"], ref["img_pool64"]))
        np.testing.assert_allclose(out["img_pool64"], ref["img_pool64"], rtol=1e-4,
                                   atol=1e-4 * np.abs(ref["img_pool64"]).max())


# ------------------------------------------------------------------------------------------------ tiny round trips

TYPES = {
    # encoder_type, input_nc -> kind
    ("GradualStyleEncoder", 3): "psp",
    ("Encoder4Editing", 3): "e4e",
    ("BackboneEncoder", 6): "restyle_psp",
    ("ProgressiveBackboneEncoder", 6): "restyle_e4e",
    ("GradualStyleEncoder", 6): "restyle_psp",
}


def tiny_checkpoint(path: Path, encoder_type: str = "BackboneEncoder", input_nc: int = 6, seed: int = 1,
                    opts_extra: dict | None = None, **top):
    """A pSp-format file holding a tiny encoder + generator; returns (path, the Encoder it was made from)."""
    kind = TYPES[(encoder_type, input_nc)]
    G = tiny_generator()
    kw = {"fpn": True} if (kind == "restyle_psp" and encoder_type == "GradualStyleEncoder") else {}
    E = tiny_encoder(kind, G, n_iters=2, seed=seed, **kw)
    opts = {"encoder_type": encoder_type, "input_nc": input_nc, "output_size": G.resolution,
            "start_from_latent_avg": True, "n_iters_per_batch": 2, "device": "cuda:0"}
    opts.update(opts_extra or {})
    ckpt = {"state_dict": E.state_dict(), "opts": opts, "latent_avg": E.latent_avg.clone()}
    ckpt.update(top)
    torch.save({k: v for k, v in ckpt.items() if v is not None}, path)
    return path, E


@pytest.mark.parametrize("encoder_type, input_nc", list(TYPES), ids=[f"{t}-{n}" for t, n in TYPES])
def test_tiny_round_trip(tmp_path, encoder_type, input_nc):
    import engine

    path, E0 = tiny_checkpoint(tmp_path / "enc.pt", encoder_type, input_nc)
    E = engine.load_encoder(str(path))  # the public entry point (engine.checkpoints forwards to this module)
    assert E.kind == TYPES[(encoder_type, input_nc)] == E0.kind
    assert type(E.encoder) is type(E0.encoder)
    assert (E.num_ws, E.w_dim, E.input_size) == (E0.num_ws, E0.w_dim, S)
    assert E.n_iters == (2 if E.kind.startswith("restyle") else 1)
    assert not E.training and E.source_path == str(path)
    x = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(E(x, n_iters=1), E0(x, n_iters=1), rtol=0, atol=0)
        torch.testing.assert_close(E.decoder(E0.latent_avg[None]), E0.decoder(E0.latent_avg[None]), rtol=0, atol=0)


def test_source_sha256_hashes_the_loaded_file_once(tmp_path):
    """`engine.checkpoints.source_sha256`: an encoder's weights file hashed on first ask and kept; None for a
    network built in memory (the hash every reenactment and build output records)."""
    import hashlib

    import engine
    from engine.checkpoints import source_sha256

    path, E0 = tiny_checkpoint(tmp_path / "enc.pt", "BackboneEncoder", 6)
    E = engine.load_encoder(str(path))
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    assert source_sha256(E) == want
    path.unlink()                                    # kept on the module: not read again
    assert source_sha256(E) == want
    assert source_sha256(E0) is None


def test_restyle_default_iterations_and_plain_latent_avg(tmp_path):
    """No n_iters_per_batch in opts → the reference default 5; a [w_dim] latent_avg is repeated over num_ws."""
    path, E0 = tiny_checkpoint(tmp_path / "enc.pt", opts_extra={"n_iters_per_batch": None})
    ck = torch.load(path, weights_only=True)
    del ck["opts"]["n_iters_per_batch"]
    ck["latent_avg"] = E0.latent_avg[0].clone()
    torch.save(ck, path)
    E = load_encoder(path)
    assert E.n_iters == 5
    torch.testing.assert_close(E.latent_avg, E0.latent_avg[:1].expand(E.num_ws, -1), rtol=0, atol=0)


def test_missing_latent_avg_falls_back_to_the_decoder_average(tmp_path, caplog):
    path, E0 = tiny_checkpoint(tmp_path / "enc.pt", encoder_type="Encoder4Editing", input_nc=3, latent_avg=None)
    with caplog.at_level(logging.WARNING):
        E = load_encoder(path)
    assert "no latent_avg" in caplog.text
    expected = E.decoder.estimate_latent_avg()
    torch.testing.assert_close(E.latent_avg, expected[None].expand(E.num_ws, -1), rtol=1e-5, atol=1e-6)


def test_opts_as_namespace_loads_with_weights_only(tmp_path):
    path, E0 = tiny_checkpoint(tmp_path / "enc.pt", encoder_type="Encoder4Editing", input_nc=3)
    ck = torch.load(path, weights_only=True)
    assert isinstance(ck["opts"], dict)  # what all three reference coaches write: vars(opts)
    ck["opts"] = argparse.Namespace(**ck["opts"])
    torch.save(ck, path)
    E = load_encoder(path)
    assert E.kind == "e4e" and E.opts["encoder_type"] == "Encoder4Editing"


# ------------------------------------------------------------------------------------------------ errors


class _Evil:
    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


def _mutate(path: Path, fn) -> Path:
    ck = torch.load(path, weights_only=True)
    fn(ck)
    torch.save(ck, path)
    return path


@pytest.fixture()
def good(tmp_path):
    return tiny_checkpoint(tmp_path / "enc.pt")[0]


def test_generator_checkpoint_passed_as_encoder(tmp_path):
    G = tiny_generator()
    path = tmp_path / "gen.pt"
    torch.save({"g_ema": G.state_dict(), "latent_avg": torch.zeros(G.w_dim)}, path)
    with pytest.raises(CheckpointError, match=r"is a StyleGAN2 generator checkpoint, not a pSp/e4e/ReStyle.*"
                                              r"load_generator") as exc:
        load_encoder(path)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "mutation, message",
    [
        (lambda ck: ck["state_dict"].pop("encoder.styles.1.linear.bias"),
         r"missing key.*encoder\.styles\.1\.linear\.bias"),
        (lambda ck: ck["state_dict"].__setitem__("encoder.extra.weight", torch.zeros(1)),
         r"unexpected key.*encoder\.extra\.weight"),
        (lambda ck: ck["state_dict"].__setitem__("encoder.body.2.res_layer.1.weight", torch.zeros(3, 3, 3, 3)),
         r"mis-shaped key.*encoder\.body\.2\.res_layer\.1\.weight \[3, 3, 3, 3\]"),
        (lambda ck: ck["state_dict"].__setitem__("discriminator.w", torch.zeros(1)), r"outside encoder\./decoder\."),
        (lambda ck: ck["state_dict"].pop("decoder.convs.0.conv.weight"),
         r"missing key.*decoder\.convs\.0\.conv\.weight"),
        (lambda ck: ck["state_dict"].pop("decoder.conv1.conv.weight"), r"'decoder\.\*' entries are not a StyleGAN2"),
        (lambda ck: ck["opts"].__setitem__("encoder_type", "ResNetBackboneEncoder"),
         r"ResNet-34 backbone\) is not supported"),
        (lambda ck: ck["opts"].__setitem__("encoder_type", "Whatever"), r"unknown opts\['encoder_type'\]"),
        (lambda ck: ck["opts"].__setitem__("encoder_type", "Encoder4Editing"),
         r"Encoder4Editing with 6 input channels"),
        (lambda ck: ck["opts"].__setitem__("input_nc", 3), r"opts\['input_nc'\] = 3 but the first conv takes 6"),
        (lambda ck: ck["opts"].__setitem__("output_size", 1024), r"opts\['output_size'\] = 1024 but the decoder"),
        (lambda ck: ck.pop("opts"), r"has no 'opts'"),
        (lambda ck: ck.__setitem__("latent_avg", torch.zeros(5, 7)), r"latent_avg has shape \[5, 7\]"),
        (lambda ck: ck.__setitem__("opts", {**ck["opts"], "evil": _Evil()}), r"contains code \(builtins\.print\)"),
    ],
    ids=["missing", "unexpected", "misshaped", "foreign-prefix", "decoder-missing", "decoder-not-generator", "resnet",
         "unknown-type",
         "type-vs-channels", "input_nc", "output_size", "no-opts", "latent_avg", "malicious-object"],
)
def test_bad_checkpoints_raise_one_line(good, mutation, message, capsys):
    _mutate(good, mutation)
    with pytest.raises(CheckpointError, match=message) as exc:
        load_encoder(good)
    assert "\n" not in str(exc.value)
    assert "code from the checkpoint ran" not in capsys.readouterr().out


def test_truncated_and_garbage_files(good, tmp_path):
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_encoder(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_encoder(junk)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CheckpointError):
        load_encoder(raw)


def test_manifest_name_without_download_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path / "home"))
    from engine.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=r"python -m engine\.weights download restyle-psp-ffhq"):
        load_encoder("restyle-psp-ffhq")
