"""Identity embedders (dlib with its real weights; ArcFace wiring), attribute scorers, and `python -m directions
identity` on the reference photos and altered copies of them."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch

from directions.embedders import (DlibEmbedder, box_from_points, cosine_similarity, identity_change, normalise,
                                  to_bgr_uint8)

log = logging.getLogger(__name__)
pytestmark = pytest.mark.usefixtures("one_thread")
FACES = ("01", "david", "mona_lisa", "pope", "van_gouh")


@pytest.fixture(scope="module")
def dlib_embedder():
    return DlibEmbedder()


def _variants(img):
    """The copies a face must still match: mirrored, half size, JPEG quality 30."""
    h, w = img.shape[:2]
    yield "flip", img[:, ::-1].copy()
    yield "half", cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 30])
    yield "jpeg30", cv2.imdecode(buf, cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def photo_set(faces_dir, tmp_path_factory):
    """The five reference faces plus three altered copies of each (lossless .bmp files), and a face-less image."""
    root = tmp_path_factory.mktemp("identity")
    paths, owners = [], []
    for name in FACES:
        src = faces_dir / f"{name}.jpg"
        paths.append(str(src))
        owners.append(name)
        for tag, img in _variants(cv2.imread(str(src))):
            p = root / f"{name}_{tag}.bmp"
            cv2.imwrite(str(p), img)
            paths.append(str(p))
            owners.append(name)
    blank = root / "no_face.png"
    cv2.imwrite(str(blank), np.full((96, 128, 3), 127, np.uint8))
    return paths, owners, str(blank)


def test_identity_cli_own_copies_beat_every_other_face(photo_set, tmp_path, capsys):
    """Each face scores higher against its own flipped, rescaled and re-compressed copies than against any image
    of another face (their copies included)."""
    from directions import __main__ as cli

    paths, owners, blank = photo_set
    out = tmp_path / "sim.json"
    assert cli.main(["identity", *paths, blank, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["images"] == [*paths, blank] and doc["embedder"] == "dlib"
    assert doc["no_face"] == {blank: "no face found"} and f"no face: {blank}" in printed
    sim = np.array([[np.nan if v is None else v for v in row] for row in doc["similarity"]])
    assert np.isnan(sim[-1]).all() and np.isnan(sim[:, -1]).all()
    sim, own = sim[:-1, :-1], np.array(owners)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    margins = {}
    for name in FACES:
        mine = np.flatnonzero(own == name)
        others = np.flatnonzero(own != name)
        orig = mine[0]
        worst_own = sim[orig, mine[1:]].min()            # original vs its own copies
        best_other = sim[np.ix_(mine, others)].max()     # any image of this face vs any image of another
        margins[name] = (float(worst_own), float(best_other), float(worst_own - best_other))
        assert worst_own > best_other, (name, margins[name])
    log.warning("dlib identity margins (own copy min, other face max, margin): %s",
                {k: tuple(round(x, 4) for x in v) for k, v in margins.items()})


def test_dlib_boxes_modes_agree(faces_dir, dlib_embedder):
    """Aligned crop with the fixed box, a MediaPipe-landmark box on the photo, and dlib's own detector find the
    same person (cos > 0.97) on 01.jpg, which is an FFHQ-aligned photo."""
    img = cv2.imread(str(faces_dir / "01.jpg"))
    small = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
    aligned = dlib_embedder.embed([small])
    detected = dlib_embedder.embed([img], "detect")
    boxed = dlib_embedder.embed([img], [box_from_points(np.array([[230, 270], [800, 945]]))])
    none = dlib_embedder.embed([img], [None])
    assert aligned.found.all() and detected.found.all() and boxed.found.all()
    assert not none.found.any() and np.isnan(none.vectors).all()
    assert float(cosine_similarity(aligned.vectors, detected.vectors)[0, 0]) > 0.97
    assert float(cosine_similarity(aligned.vectors, boxed.vectors)[0, 0]) > 0.97
    np.testing.assert_allclose(np.linalg.norm(aligned.vectors, axis=1), 1.0, rtol=1e-5)
    # a generator-style tensor in [-1, 1] RGB gives the same vector as the uint8 BGR crop it encodes
    t = torch.from_numpy(small[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    np.testing.assert_allclose(dlib_embedder.embed(t).vectors, aligned.vectors, atol=1e-5)
    with pytest.raises(ValueError, match="one \\(or None\\) per image"):
        dlib_embedder.embed([img, img], [None])


def test_maths_helpers():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    np.testing.assert_allclose(normalise(a), [[0.6, 0.8], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(a, a), [[1.0, 0.6], [0.6, 1.0]], atol=1e-7)
    np.testing.assert_allclose(identity_change(a, a[::-1]), [0.4, 0.4], atol=1e-7)
    assert identity_change(a, a).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="uint8"):
        to_bgr_uint8([np.zeros((4, 4, 3), np.float32)])


def test_arcface_embedder_wiring():
    from directions.embedders import ArcFaceEmbedder
    from directions.identity import ArcFaceIRSE

    torch.manual_seed(0)
    emb = ArcFaceEmbedder(network=ArcFaceIRSE(units=(1, 1, 1, 1), widths=(8, 8, 16, 16), embed_dim=32))
    crops = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(3)]
    e = emb.embed(crops)
    assert e.vectors.shape == (3, 32) and e.found.all()
    np.testing.assert_allclose(np.linalg.norm(e.vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(emb.embed(crops[:1]).vectors, e.vectors[:1], atol=1e-5)
    with pytest.raises(ValueError, match="FFHQ-aligned crops only"):
        emb.embed(crops, "detect")


def test_arcface_missing_weights_names_the_download(home):
    from directions.embedders import make_embedder
    from engine.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="python -m engine.weights download arcface-ir-se50"):
        make_embedder("arcface")


# ------------------------------------------------------------------------------------------------ scorers


@pytest.fixture(scope="module")
def aligned_faces(faces_dir):
    from stream.face.align import align_face
    from stream.face.landmarks import FaceMeshLandmarker

    crops = []
    with FaceMeshLandmarker(max_faces=1, video_mode=False) as lm:
        for name in ("david", "pope"):
            img = cv2.imread(str(faces_dir / f"{name}.jpg"))
            for im in (img, img[:, ::-1].copy()):
                crops.append(align_face(im, lm.detect(im)[0], size=256).crop)
    return crops


def test_geometry_scorer_sees_head_turn_mirror(aligned_faces):
    from directions.attributes import GeometryScorer

    g = GeometryScorer()
    s = g.score(aligned_faces)
    yaw = s[:, g.attributes.index("headsTurn")]
    # david and pope look to one side: mirroring flips the sign of the yaw proxy, and keeps its size roughly
    for i in (0, 2):
        assert abs(yaw[i]) > 0.1 and np.sign(yaw[i]) == -np.sign(yaw[i + 1])
        assert abs(abs(yaw[i]) - abs(yaw[i + 1])) < 0.1
    iod_free = s[:, g.attributes.index("smile")]
    assert np.all((iod_free > 0.5) & (iod_free < 1.5))          # mouth width ~ 0.8 inter-ocular distances


def test_clip_scorer_wiring(aligned_faces, tmp_path):
    from directions.attributes import ClipScorer
    from directions.clip_loader import load_clip

    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path / "tiny-eval-clip.json"
    path.write_text(json.dumps(cfg))
    scorer = ClipScorer(load_clip(str(path), pretrained=None), prompts={"smile": ("smiling", "neutral"),
                                                                       "aging": ("old", "young")})
    s = scorer.score(aligned_faces)
    assert s.shape == (4, 2) and np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(scorer.score(aligned_faces[:1]), s[:1], atol=1e-6)
    assert scorer.attributes == ["smile", "aging"]


def test_fairface_scorer_wiring_and_file_checks(aligned_faces, tmp_path):
    from directions.attributes import FairFaceScorer, build_fairface_network, load_fairface

    torch.manual_seed(0)
    net = build_fairface_network()
    torch.save(net.state_dict(), tmp_path / "ff.pt")
    loaded = load_fairface(tmp_path / "ff.pt")
    scorer = FairFaceScorer(network=loaded)
    chips = scorer.chips(aligned_faces[:2])
    assert chips.shape == (2, 224, 224, 3) and chips.dtype == np.uint8
    s = scorer.score(aligned_faces[:2])
    assert s.shape == (2, 2)
    assert np.all((s[:, 0] >= 1) & (s[:, 0] <= 75)) and np.all((s[:, 1] >= 0) & (s[:, 1] <= 1))
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="fairface-res34"):
        load_fairface(tmp_path / "wrong.pt")


def test_fairface_is_in_the_manifest(home):
    from directions.attributes import FairFaceScorer
    from engine import weights

    e = weights.MANIFEST["fairface-res34"]
    assert e.kind == "attribute" and "dchen236/FairFace" in e.source and "CC BY 4.0" in e.license
    assert e.filename == "res34_fair_align_multi_7_20190809.pt"
    with pytest.raises(weights.MissingWeightsError, match="download fairface-res34"):
        FairFaceScorer()


def test_count_faces_tells_faces_from_noise(faces_dir):
    from directions.embedders import count_faces

    face = cv2.imread(str(faces_dir / "01.jpg"))
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    assert count_faces([face, noise, face[:, ::-1].copy()]) == 2
