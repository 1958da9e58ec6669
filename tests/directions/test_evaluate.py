"""Edit evaluation (identity and attribute change per direction and α, with InterFaceGAN and GANSpace baselines)
and GANSpace's PCA, on tiny random generators: these check the wiring and the maths, not face quality."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from noisy_generator import noisy_generator

from directions import ganspace
from directions.evaluate import Edit, evaluate, format_table, sample_latents, scaled_delta, write_outputs

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ GANSpace


def _planted(dim=24, stds=(5.0, 3.0, 2.0), noise=0.2, seed=0):
    """A Gaussian with three planted axes (random orthonormal) of the given stds over isotropic noise."""
    rng = np.random.default_rng(seed)
    axes = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :len(stds)].T  # [3, dim] orthonormal
    mean = rng.normal(size=dim)

    def sampler(n, generator):
        coef = torch.randn(n, len(stds), generator=generator).numpy() * np.array(stds)
        iso = torch.randn(n, dim, generator=generator).numpy() * noise
        return mean + coef @ axes + iso
    return axes, np.array(stds), mean, sampler


def test_ganspace_recovers_planted_axes():
    axes, stds, mean, sampler = _planted()
    gs = ganspace.fit(None, n_samples=20_000, k=6, seed=0, batch=3000, progress=False, sampler=sampler)
    cos = np.abs(gs.components[:3] @ axes.T)
    assert np.all(np.diag(cos) > 0.999), cos
    np.testing.assert_allclose(gs.std[:3], np.sqrt(stds ** 2 + 0.2 ** 2), rtol=0.03)
    assert np.all(gs.std[3:] < 0.25)                       # the rest is the isotropic noise
    np.testing.assert_allclose(gs.mean, mean, atol=0.1)
    np.testing.assert_allclose(gs.components @ gs.components.T, np.eye(6), atol=1e-5)
    assert gs.explained[:3].sum() > 0.97 and gs.n_samples == 20_000


def test_ganspace_streaming_equals_one_shot_and_is_seeded():
    _, _, _, sampler = _planted(dim=10, seed=1)
    a = ganspace.fit(None, n_samples=5000, k=4, seed=3, batch=700, progress=False, sampler=sampler)
    x = sampler(5000, torch.Generator().manual_seed(3))   # what fit(batch=5000) draws
    b = ganspace.fit(None, n_samples=5000, k=4, seed=3, batch=5000, progress=False, sampler=sampler)
    c = ganspace.fit(None, n_samples=5000, k=4, seed=3, batch=700, progress=False, sampler=sampler)
    np.testing.assert_array_equal(a.components, c.components)   # same seed, same batches: identical
    ref = ganspace.pca(x, 4)
    np.testing.assert_allclose(b.components, ref.components, atol=1e-5)   # streamed moments = one-shot PCA
    np.testing.assert_allclose(b.std, ref.std, rtol=1e-6)


def test_ganspace_direction_layers_and_sense():
    _, _, _, sampler = _planted(dim=16)
    gs = ganspace.fit(None, n_samples=2000, k=5, seed=0, progress=False, sampler=sampler)
    d = gs.direction(1, (2, 5), num_ws=8, name="x", sense=-1.0)
    assert d.delta.shape == (8, 16) and d.name == "x"
    expect = -gs.std[1] * gs.components[1]
    np.testing.assert_allclose(d.delta[2:5].numpy(), np.tile(expect, (3, 1)), rtol=1e-6)
    assert float(d.delta[:2].abs().sum()) == 0 and float(d.delta[5:].abs().sum()) == 0
    assert d.meta["layer_range"] == [2, 5] and d.meta["component"] == 1
    every = gs.direction(0)                                  # no range: one offset for every layer
    assert every.broadcast and every.delta_for(8, 16).shape == (8, 16)
    with pytest.raises(ValueError, match="5 components"):
        gs.direction(5)


def test_ganspace_named_edit_and_file_roundtrip(tmp_path, caplog):
    rng = np.random.default_rng(0)
    comps = np.linalg.qr(rng.normal(size=(64, 64)))[0][:60].astype(np.float32)
    gs = ganspace.GanSpace(np.zeros(64, np.float32), comps, np.linspace(3, 1, 60).astype(np.float32),
                           np.full(60, 1 / 60, np.float32), 1000, 0)
    smile = gs.named("smile", num_ws=18)                    # (46, 4, 5, -20): negative sense, layer 4 only
    np.testing.assert_allclose(smile.delta[4].numpy(), -gs.std[46] * comps[46], rtol=1e-6)
    assert float(smile.delta.abs().sum(1).nonzero().squeeze()) == 4
    with caplog.at_level("WARNING"):
        yaw = gs.named("pose_yaw", num_ws=8)                 # published range 0-18 clipped to 8 layers
    assert "clipped" in caplog.text and yaw.delta.shape == (8, 64)
    with pytest.raises(ValueError, match="unknown GANSpace edit"):
        gs.named("nose_size", 18)
    path = gs.save(tmp_path / "pca.pt")
    back = ganspace.GanSpace.load(path)
    np.testing.assert_array_equal(back.components, gs.components)
    np.testing.assert_array_equal(back.std, gs.std)
    assert back.n_samples == 1000
    torch.save({"mean": torch.zeros(1, 64), "comp": torch.from_numpy(comps)[:, None], "std": torch.ones(60)},
               tmp_path / "e4e_style.pt")                      # the layout encoder4editing ships
    e4e = ganspace.GanSpace.load(tmp_path / "e4e_style.pt")
    assert e4e.components.shape == (60, 64) and e4e.explained.sum() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ evaluate


@pytest.fixture(scope="module")
def tiny():
    G = noisy_generator(32, 16, seed=0)
    g = torch.Generator().manual_seed(5)
    edits = [Edit("micromotion", "smile", torch.randn(G.num_ws, G.w_dim, generator=g)),
             Edit("interfacegan", "smile", torch.nn.functional.normalize(torch.randn(1, G.w_dim, generator=g), dim=1)),
             Edit("ganspace", "pc0", torch.randn(G.num_ws, G.w_dim, generator=g))]
    return G, edits


@pytest.fixture(scope="module")
def measures():
    from directions.attributes import GeometryScorer
    from directions.embedders import DlibEmbedder

    return [DlibEmbedder()], [GeometryScorer()]


def test_evaluate_records_every_edit_and_alpha(tiny, measures):
    G, edits = tiny
    embedders, scorers = measures
    ws = sample_latents(G, 3, seed=0)
    doc = evaluate(G, edits, [0.0, 2.0], ws, embedders, scorers, batch=2, progress=False, config={"seed": 0})
    assert len(doc["results"]) == len(edits) * 2
    json.dumps(doc, allow_nan=False)                                  # JSON-ready, no NaN
    cols = [f"geometry/{a}" for a in scorers[0].attributes]
    assert doc["matrix"]["columns"] == cols and doc["matrix"]["alpha"] == 2.0
    assert doc["matrix"]["rows"] == ["micromotion/smile", "interfacegan/smile", "ganspace/pc0"]
    for r in doc["results"]:
        ident = r["identity"]["dlib"]
        assert ident["n"] == 3 and len(ident["values"]) == 3
        if r["alpha"] == 0:                                           # no edit: nothing changes, exactly
            assert ident["values"] == [0.0, 0.0, 0.0] and r["step_norm"] == 0
            assert all(v["mean"] == 0 for v in r["attributes"].values())
        else:
            assert ident["mean"] > 0 and r["step_norm"] > 0
    ifg = next(r for r in doc["results"] if r["method"] == "interfacegan" and r["alpha"] == 2.0)
    assert ifg["step_norm"] == pytest.approx(2.0 * np.sqrt(G.num_ws), rel=1e-5)  # unit normal on every layer
    table = format_table(doc)
    assert "interfacegan/smile" in table and "id:dlib" in table and "geometry/smile" in table


def test_evaluate_is_reproducible_from_the_seed(tiny, measures):
    G, edits = tiny
    embedders, scorers = measures
    run = lambda seed: evaluate(G, edits[:1], [1.5], sample_latents(G, 2, seed=seed), embedders, scorers,
                                progress=False)["results"]
    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a != c


def test_unit_scale_and_errors(tiny):
    G, edits = tiny
    assert float(scaled_delta(edits[0], G.num_ws, "unit").norm()) == pytest.approx(1.0)
    assert float(scaled_delta(edits[1], G.num_ws, "raw").norm()) == pytest.approx(np.sqrt(G.num_ws), rel=1e-5)
    ws = sample_latents(G, 1)
    with pytest.raises(ValueError, match="matrix α"):
        evaluate(G, edits, [1.0], ws, matrix_alpha=2.0, progress=False)
    with pytest.raises(ValueError, match="num_ws, w_dim"):
        evaluate(G, edits, [1.0], ws[:, :2], progress=False)
    with pytest.raises(ValueError, match="unknown scale"):
        evaluate(G, edits, [1.0], ws, scale="huge", progress=False)


def test_outputs_table_json_and_plots(tiny, measures, tmp_path):
    from PIL import Image

    G, edits = tiny
    embedders, scorers = measures
    doc = evaluate(G, edits, [0.0, 1.0], sample_latents(G, 2), embedders, scorers, progress=False)
    paths = write_outputs(doc, tmp_path / "out")
    assert set(paths) == {"json", "table", "matrix", "identity"}
    assert json.loads(paths["json"].read_text())["results"] == json.loads(json.dumps(doc))["results"]
    for key in ("matrix", "identity"):
        with Image.open(paths[key]) as im:
            assert im.format == "PNG" and min(im.size) > 200
            assert len(np.unique(np.asarray(im.convert("L")))) > 20     # drawn, not blank


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    from directions.files import Direction, make_meta, save

    root = tmp_path_factory.mktemp("evalcli")
    G = noisy_generator(32, 16, seed=1)
    torch.save({"g_ema": G.state_dict(), "latent_avg": G.latent_avg}, root / "tiny_g.pt")
    g = torch.Generator().manual_seed(2)
    for name in ("smile", "aging"):
        save(Direction(name, torch.randn(G.num_ws, G.w_dim, generator=g), make_meta("rpca")),
             root / "dirs" / f"{name}.safetensors")
    boundary = torch.nn.functional.normalize(torch.randn(1, G.w_dim, generator=g), dim=1)
    np.save(root / "smile_boundary.npy", boundary.numpy())            # InterFaceGAN layout [1, w_dim]
    from engine.encoders import build_network

    net = build_network("e4e", num_ws=G.num_ws, w_dim=G.w_dim, widths=(8, 16, 24, 32), units=(1, 1, 1, 1),
                        input_size=64)
    sd = {f"encoder.{k}": v for k, v in net.state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in G.state_dict().items()})
    torch.save({"state_dict": sd, "opts": {"encoder_type": "Encoder4Editing", "input_nc": 3},
                "latent_avg": G.latent_avg[None].repeat(G.num_ws, 1)}, root / "tiny_e4e.pt")
    return root


def _eval_args(root, out, seed=0):
    return ["eval", "--generator", str(root / "tiny_g.pt"), "--dir", str(root / "dirs"),
            "--interfacegan", f"smile={root / 'smile_boundary.npy'}",
            "--ganspace", "pc0=0", "pc1=1:2-6:-", "--ganspace-samples", "3000", "--seed", str(seed),
            "--faces", "2", "--alphas", "0", "2", "--embedder", "dlib", "--scorer", "geometry",
            "--out", str(out), "--device", "cpu", "-q"]


def test_cli_eval_writes_table_json_and_pngs_with_baselines(tiny_files, tmp_path, capsys):
    from directions import __main__ as cli

    assert cli.main(_eval_args(tiny_files, tmp_path / "a")) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert {r["method"] for r in doc["results"]} == {"micromotion", "interfacegan", "ganspace"}
    assert doc["matrix"]["rows"] == ["micromotion/aging", "micromotion/smile", "interfacegan/smile",
                                     "ganspace/pc0", "ganspace/pc1"]
    assert doc["config"]["source"] == "random" and doc["config"]["faces"] == 2
    assert doc["config"]["faces_detected"] == 0                       # a tiny random generator draws noise
    assert "wiring" in doc["config"]["note"] and "note: dlib's face detector found a face in only 0" in out
    assert doc["config"]["edits"]["ganspace/pc1"]["layer_range"] == [2, 6]
    for name in ("eval.txt", "eval_matrix.png", "eval_identity.png"):
        assert (tmp_path / "a" / name).stat().st_size > 1000
    assert "ganspace/pc1" in out and "json:" in out
    # same seed → same numbers, in a fresh run
    assert cli.main(_eval_args(tiny_files, tmp_path / "b")) == 0
    again = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert again["results"] == doc["results"]


def test_cli_eval_user_errors_are_one_line(tiny_files, tmp_path, capsys):
    from directions import __main__ as cli

    args = _eval_args(tiny_files, tmp_path)
    bad = args[:args.index("--ganspace") + 1] + ["pc0=0:4"] + args[args.index("--ganspace") + 3:]
    assert cli.main(bad) == 2
    assert "layers must be START-END" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["eval", "--generator", str(tiny_files / "tiny_g.pt"), "--dir", str(empty), "-q"]) == 2
    assert "install-official" in capsys.readouterr().err


def test_ganspace_spec_parsing():
    from directions.eval_cli import parse_ganspace_spec

    assert parse_ganspace_spec("46:4-5:-") == ("component", 46, (4, 5), -1.0)
    assert parse_ganspace_spec("0") == ("component", 0, None, 1.0)
    assert parse_ganspace_spec("smile") == ("edit", "smile", None, 1.0)
    assert parse_ganspace_spec("-eye_openness") == ("edit", "eye_openness", None, -1.0)
    with pytest.raises(ValueError):
        parse_ganspace_spec("smile:1-2")


def test_cli_eval_on_photos_aligns_and_inverts(tiny_files, tmp_path, faces_dir, capsys):
    import cv2

    from directions import __main__ as cli

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("01", "pope"):
        cv2.imwrite(str(photos / f"{name}.png"), cv2.resize(cv2.imread(str(faces_dir / f"{name}.jpg")), (256, 256)))
    cv2.imwrite(str(photos / "zz_blank.png"), np.full((64, 64, 3), 90, np.uint8))   # no face: skipped
    args = ["eval", "--generator", str(tiny_files / "tiny_g.pt"), "--direction", "smile", "--dir",
            str(tiny_files / "dirs"), "--photos", str(photos), "--encoder", str(tiny_files / "tiny_e4e.pt"),
            "--alphas", "1", "--scorer", "--out", str(tmp_path / "out"), "--device", "cpu", "-q"]
    assert cli.main(args) == 0
    doc = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert doc["config"]["source"] == "photos" and doc["config"]["photo_files"] == ["01.png", "pope.png"]
    assert doc["config"]["faces"] == 2 and doc["matrix"]["columns"] == []
    assert doc["results"][0]["identity"]["dlib"]["n"] == 2
    assert not (tmp_path / "out" / "eval_matrix.png").exists()           # no scorer: no matrix to draw


def test_eval_door_loads_a_folder_as_every_door_does(tmp_path):
    """`python -m directions eval` takes its micromotion directions through `load_folder`: a copied file of the same
    direction, a stray file and one made for another generator are skipped (not two 'smile' rows, not a crash)."""
    import argparse
    import types

    from directions.eval_cli import _micromotion_edits
    from directions.files import Direction, make_meta, save

    g = torch.Generator().manual_seed(0)
    smile = Direction("smile", torch.randn(6, 16, generator=g), make_meta("rpca"))
    save(smile, tmp_path / "smile.safetensors")
    save(Direction("smile", torch.randn(6, 16, generator=g), make_meta("rpca")), tmp_path / "copy.safetensors")
    save(Direction("blink", torch.randn(6, 16, generator=g), make_meta("rpca")), tmp_path / "blink.safetensors")
    save(Direction("wide", torch.randn(6, 32, generator=g), make_meta("rpca")), tmp_path / "wide.safetensors")
    (tmp_path / "notes.pt").write_bytes(b"not a direction at all")
    G = types.SimpleNamespace(num_ws=6, w_dim=16, source_sha256=None)
    args = argparse.Namespace(dir=str(tmp_path), direction=None, interfacegan=[], ganspace=[])
    edits = _micromotion_edits(args, G)
    assert sorted(e.name for e in edits) == ["blink", "smile"]
    torch.testing.assert_close(next(e for e in edits if e.name == "smile").delta, smile.delta)
