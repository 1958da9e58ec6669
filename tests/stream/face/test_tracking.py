"""stream.face.tracking with the dlib68 aligner: which landmark set places each crop (and says so), what happens
when the two sets disagree, the second opinion on new faces, and the steadiness of the crops."""
import numpy as np
import pytest

from stream.face import dlib68
from stream.face.align import ffhq_quad, quad_distance, quad_from_points
from stream.face.tracking import FaceTracker


class ReplayLandmarker:
    """Gives the same MediaPipe landmark sets for every frame."""

    def __init__(self, faces):
        self.faces = [np.asarray(f, np.float32) for f in faces]

    def detect(self, frame):
        return [f.copy() for f in self.faces]

    def close(self):
        pass


class ShiftedPredictor:
    """dlib's predictor with its answer moved by `shift` pixels while `bad` is set (a shape gone wrong)."""

    def __init__(self, shift, bad=True):
        self.real = dlib68.ShapePredictor68()
        self.shift = np.asarray(shift, float)
        self.bad = bad

    def __call__(self, frame, box, scales=(1.0,)):
        pts = self.real(frame, box, scales)
        return pts + self.shift if self.bad else pts

    def close(self):
        self.real.close()


def test_default_is_dlib68_and_each_face_says_which_set_placed_it(frame_640, face_landmarks):
    with FaceTracker() as tracker:
        faces = [tracker.track(frame_640, i / 30.0) for i in range(3)]
        stats = tracker.stats()
    face = faces[-1][0]
    assert face.aligner == "dlib68" and face.box == "track" and face.dlib_ok
    assert face.landmarks68.shape == (68, 2) and 0 <= face.disagreement < 0.06
    assert stats["aligner"] == "dlib68" and stats["used"] == {"dlib68": 3, "mediapipe": 0}
    assert stats["last_used"] == ["dlib68"] and stats["rejected"] == 0 and stats["dlib_ms"] > 0
    # The crop is placed by dlib's eyes and mouth: on a track's first frame exactly (then smoothed).
    first = faces[0][0]
    assert np.abs(first.aligned.quad - quad_from_points(dlib68.recipe_points(first.landmarks68))).max() < 1e-9
    with FaceTracker(aligner="mediapipe", verify=False) as tracker:
        face = tracker.track(frame_640, 0.0)[0]
    assert face.aligner == "mediapipe" and face.landmarks68 is None
    assert np.allclose(face.aligned.quad, ffhq_quad(face.landmarks))
    with pytest.raises(ValueError, match="aligner 'dlib' is unknown"):
        FaceTracker(aligner="dlib")


def test_mediapipe_wrong_dlib_right_keeps_dlib(frame_640, face_landmarks):
    """MediaPipe puts an eye contour on the cheek (van Gogh): the sets disagree, dlib's shape holds up on a second
    look, dlib places the crop and the disagreement is counted."""
    from stream.face.landmarks import EYE_LEFT_CONTOUR

    lm = face_landmarks["astronaut"][0] + np.array([64, 0], np.float32)
    wrong = lm.copy()
    wrong[list(EYE_LEFT_CONTOUR)] += np.array([0, 12], np.float32)  # ~0.3 eye distances down
    with FaceTracker(landmarker=ReplayLandmarker([wrong]), video_mode=False, verify=False) as tracker:
        face = tracker.track(frame_640, 0.0)[0]
        assert tracker.stats()["disagreements"] == 1
    assert face.disagreement > 0.06 and face.aligner == "dlib68" and face.dlib_ok
    assert quad_distance(face.aligned.quad, quad_from_points(dlib68.recipe_points(face.landmarks68))) < 1e-9


def test_implausible_dlib_shape_falls_back_to_mediapipe(frame_640, face_landmarks):
    """dlib's shape thrown off the face: a still uses MediaPipe's quad at once; a video track holds the last
    accepted placement for HOLD_S, then moves over to MediaPipe's within a few frames, and back when dlib
    recovers."""
    from stream.face.tracking import HOLD_S

    lm = face_landmarks["astronaut"][0] + np.array([64, 0], np.float32)
    with FaceTracker(landmarker=ReplayLandmarker([lm]), video_mode=False, verify=False) as tracker:
        tracker._predictor = ShiftedPredictor([90.0, 0.0])
        face = tracker.track(frame_640, 0.0)[0]
    assert face.aligner == "mediapipe" and not face.dlib_ok
    assert np.allclose(face.aligned.quad, ffhq_quad(lm))

    with FaceTracker(landmarker=ReplayLandmarker([lm]), verify=False) as tracker:
        tracker._predictor = predictor = ShiftedPredictor([90.0, 0.0])
        t = np.arange(90) / 30.0
        faces = []
        for i, ti in enumerate(t):
            predictor.bad = 5 <= i < 60
            faces.append(tracker.track(frame_640, ti)[0])
    good = faces[4].aligned.quad
    held = [f for f, ti in zip(faces, t) if 5 / 30 < ti <= 4 / 30 + HOLD_S]
    assert held and all(f.aligner == "dlib68" and not f.dlib_ok for f in held)
    assert all(np.allclose(f.aligned.quad, good) for f in held)
    moved = faces[59]  # ~0.8 s after the hold ended
    assert moved.aligner == "mediapipe"
    assert quad_distance(moved.aligned.quad, ffhq_quad(lm)) < 0.25 * quad_distance(good, ffhq_quad(lm))
    steps = [quad_distance(a.aligned.quad, b.aligned.quad) for a, b in zip(faces[30:], faces[31:])]
    assert max(steps) < 0.5 * quad_distance(good, ffhq_quad(lm))  # no jump on either switch
    assert faces[-1].aligner == "dlib68" and faces[-1].dlib_ok
    assert quad_distance(faces[-1].aligned.quad, good) < 0.25 * quad_distance(good, ffhq_quad(lm))


def test_missing_dlib_is_one_line_with_the_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dlib(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    with pytest.raises(ImportError, match="pip install dlib-bin"):
        FaceTracker(landmarker=ReplayLandmarker([]))


NEGATIVES = ("car_front_0", "car_side_2", "tyres", "colorwheel", "motorcycle", "moon", "coins", "brick", "gravel",
             "coffee", "chelsea", "black", "grey", "noise")


@pytest.fixture(scope="module")
def negatives():
    from stream.face.bench_align import negative_pictures

    return negative_pictures()


def test_no_face_in_cars_textures_and_blank_frames(negatives):
    """Still and video mode. Without the second opinion MediaPipe finds 'faces' in the tyres, the colour wheel,
    the moon, the motorbike and a drawn car (see test_dlib68)."""
    with FaceTracker(video_mode=False, max_faces=2) as still:
        for name in NEGATIVES:
            assert still.track(negatives[name], 0.0) == [], name
        assert still.rejected >= 2
    for name in ("tyres", "colorwheel", "car_front_0", "black"):
        with FaceTracker(max_faces=2) as video:
            assert all(video.track(negatives[name], i / 30.0) == [] for i in range(4)), name


def test_second_opinion_keeps_real_faces(face_images):
    """Paintings, a sculpture, the small cameraman (found only by the tile search) are still faces."""
    import skimage.data

    cameraman = np.ascontiguousarray(np.repeat(skimage.data.camera()[..., None], 3, -1))
    with FaceTracker(video_mode=False) as tracker:
        for name in ("mona_lisa.jpg", "pope.jpg", "david.jpg"):
            assert len(tracker.track(face_images[name], 0.0)) == 1, name
        assert len(tracker.track(cameraman, 0.0)) == 1
        assert tracker.rejected == 0


def _shaky(frame, n=30, seed=0):
    from test_smoothing import _shaky_clip

    return _shaky_clip(frame, n=n, seed=seed)


def _jitter(frames, **kwargs):
    with FaceTracker(**kwargs) as tracker:
        quads = [tracker.track(f, i / 30.0)[0].aligned.quad for i, f in enumerate(frames)]
    q = np.asarray(quads)[10:]
    return float(np.sqrt(np.mean(np.diff(q, axis=0) ** 2)))


def test_dlib68_crops_no_shakier_than_mediapipe(frame_640, face_images, face_landmarks):
    """Jitter (RMS frame-to-frame motion of the quad corners) on still clips with ±0.5 px shifts and noise:
    dlib's crops are as steady as MediaPipe's One Euro crops. Measured (px, 30 frames, first 10 skipped):
    astronaut 0.10 vs 0.13, pope (a painting, face 160 px wide) 0.14 vs 0.17; seed 1 and 45 frames alike."""
    import cv2

    pope = face_images["pope.jpg"]
    lm = face_landmarks["pope.jpg"][0]
    k = 160 / np.ptp(lm[:, 0])
    m = np.array([[k, 0, 320 - k * lm[:, 0].mean()], [0, k, 240 - k * lm[:, 1].mean()]])
    pope_frame = cv2.warpAffine(pope, m, (640, 480), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    for frame in (frame_640, pope_frame):
        clip = _shaky(frame)
        ours, theirs = _jitter(clip), _jitter(clip, aligner="mediapipe")
        assert ours <= theirs, (ours, theirs)
