"""stream.face.dlib68: dlib's 68-point predictor on a box from the MediaPipe landmarks, the recipe's points, the
box model, and the second opinion on detections (real faces pass; wheels, cars and a colour wheel do not)."""
import numpy as np
import pytest

from stream.face import dlib68 as D
from stream.face.align import ffhq_quad, quad_distance, quad_from_points
from stream.face.ffhq_recipe import OfficialLandmarks, official_quad


@pytest.fixture(scope="module")
def predictor():
    with D.ShapePredictor68() as p:
        yield p


@pytest.fixture(scope="module")
def official():
    return OfficialLandmarks()


def test_models_are_found_without_importing_the_package():
    import sys

    assert D.model_path(D.SHAPE_MODEL).stat().st_size > 90e6
    assert D.model_path(D.CNN_MODEL).is_file()
    assert "face_recognition_models" not in sys.modules
    with pytest.raises(FileNotFoundError, match="pip install dlib-bin"):
        D.model_path("no_such_model.dat")


def test_region_run_equals_whole_frame_run(predictor, face_images, face_landmarks):
    """Only a region around the box is converted: same points as dlib on the whole RGB frame."""
    import dlib

    whole = dlib.shape_predictor(str(D.model_path(D.SHAPE_MODEL)))
    for name in ("astronaut", "mona_lisa.jpg", "pope.jpg"):
        frame = face_images[name]
        box = np.rint(D.box_from_mediapipe(face_landmarks[name][0])).astype(int)
        ours = predictor(frame, box)
        rgb = np.ascontiguousarray(frame[..., ::-1])
        ref = np.array([(p.x, p.y) for p in whole(rgb, dlib.rectangle(*map(int, box))).parts()], float)
        assert ours.shape == (68, 2) and np.array_equal(ours, ref), name


def test_face_cut_by_the_frame_edge(predictor, frame_640, face_landmarks):
    lm = face_landmarks["astronaut"][0] + np.array([64, 0], np.float32)
    frame = np.ascontiguousarray(frame_640[90:])  # the forehead leaves the frame
    pts = predictor(frame, D.box_from_mediapipe(lm - np.array([0, 90], np.float32)))
    assert np.all(np.isfinite(pts))
    with pytest.raises(ValueError, match="empty face box"):
        predictor(frame, np.array([10, 10, 10, 40]))


def test_track_box_sits_on_the_detector_box(official, face_images, face_landmarks):
    """The box made from MediaPipe's points lands near dlib's own HOG box (fitted model: ~0.12 r position,
    ~9% side spread)."""
    detector = D.HogFaceDetector()
    for name in ("astronaut", "mona_lisa.jpg", "pope.jpg", "01.jpg"):
        (hog, score), *_ = detector(face_images[name])
        ours = D.box_from_mediapipe(face_landmarks[name][0])
        side = hog[2] - hog[0]
        assert np.abs((ours[:2] + ours[2:]) / 2 - (hog[:2] + hog[2:]) / 2).max() < 0.12 * side, name
        assert 0.8 < (ours[2] - ours[0]) / side < 1.25, name
        assert D.match_box([hog + 5 * side, hog], face_landmarks[name][0]) is hog
        assert D.match_box([hog + 0.5 * side], face_landmarks[name][0]) is None


def test_recipe_points_and_two_independent_quads_agree(official, face_images):
    lm = official(np.ascontiguousarray(face_images["01.jpg"][..., ::-1]))[0]
    pts = D.recipe_points(lm)
    assert np.allclose(pts[0], lm[36:42].mean(0)) and np.allclose(pts[3], lm[54])
    # stream.face.align's quad and ffhq_recipe's own transcription of the script agree to rounding.
    assert np.abs(quad_from_points(pts) - official_quad(lm)).max() < 1e-9
    with pytest.raises(ValueError, match="68"):
        D.recipe_points(lm[:60])


def test_dlib_is_closer_to_the_recipe_than_mediapipe_on_van_gogh(predictor, face_images, face_landmarks):
    """van Gogh: MediaPipe's quad is ~6% of the side off dlib's on the detector box; dlib on the track box is not."""
    image = face_images["van_gouh.jpg"]
    mp = face_landmarks["van_gouh.jpg"][0]
    ref = official_quad(predictor(image, np.array([869, 997, 2019, 2147])))  # dlib's HOG box (upsample 1, 13 s)
    ours = quad_from_points(D.recipe_points(predictor(image, D.box_from_mediapipe(mp), (0.95, 1.0, 1.05))))
    assert quad_distance(ffhq_quad(mp), ref) > 0.04
    assert quad_distance(ours, ref) < 0.03


@pytest.fixture(scope="module")
def verifier():
    with D.FaceVerifier() as v:
        yield v


@pytest.mark.parametrize("name", ["01.jpg", "mona_lisa.jpg", "van_gouh.jpg", "david.jpg", "pope.jpg", "astronaut"])
def test_verifier_accepts_real_faces(verifier, name, face_images, face_landmarks):
    verdict = verifier(face_images[name], face_landmarks[name][0])
    assert verdict.is_face, verdict


def test_verifier_rejects_what_mediapipe_calls_a_face():
    """MediaPipe (still mode, tile search unchecked) finds faces in these; dlib's detectors find none."""
    from stream.face.bench_align import negative_pictures
    from stream.face.landmarks import FaceMeshLandmarker

    pictures = negative_pictures()
    candidates = 0
    with FaceMeshLandmarker(video_mode=False, max_faces=2, verify_tiles=False) as bare, D.FaceVerifier() as verifier:
        for name in ("tyres", "colorwheel", "car_side_2", "motorcycle", "moon"):
            for lm in bare.detect(pictures[name]):
                candidates += 1
                verdict = verifier(pictures[name], lm)
                assert not verdict.is_face, (name, verdict)
    assert candidates >= 5  # the test would be empty if MediaPipe stopped finding them
