import numpy as np
import pytest

from stream.face.smoothing import LandmarkSmoother, OneEuroFilter


def test_one_euro_reduces_noise_and_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30.0
    still = rng.normal(0, 1.0, (300, 478, 2))
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    out = np.array([f(x, ti) for x, ti in zip(still, t)])
    # 1 Hz first-order low-pass at 30 fps: noise std × sqrt(a / (2 - a)) ≈ 0.31 (a = 0.173)
    assert 0.25 < out[30:].std() < 0.37
    clean = np.stack([np.zeros_like(t), 5 * np.sin(2 * np.pi * 0.1 * t)], -1)  # slow motion, [T, 2]
    noisy = clean + still[:, 0]
    f.reset()
    out = np.array([f(x, ti) for x, ti in zip(noisy, t)])
    assert np.abs(out - clean)[30:].mean() < 0.6 * np.abs(noisy - clean)[30:].mean()


def test_beta_reduces_lag_on_fast_motion():
    t = np.arange(60) / 30.0
    ramp = 100.0 * t  # 100 units / s
    lags = {}
    for beta in (0.0, 1.0):
        f = OneEuroFilter(min_cutoff=0.5, beta=beta)
        out = np.array([f(np.array([x]), ti)[0] for x, ti in zip(ramp, t)])
        lags[beta] = ramp[-1] - out[-1]
    assert lags[1.0] < lags[0.0] / 5


def test_reset_and_shape_change():
    f = OneEuroFilter()
    f(np.zeros((3, 2)), 0.0)
    assert np.allclose(f(np.ones((3, 2)), 0.033), f._x)
    with pytest.raises(ValueError, match="reset"):
        f(np.zeros((4, 2)), 0.066)
    f.reset()
    assert not f.initialized
    assert np.array_equal(f(np.full((4, 2), 7.0), 0.1), np.full((4, 2), 7.0))  # first sample passes
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0)


def test_landmark_smoother_is_scale_invariant():
    """Speeds are measured in face widths: a 2× bigger face moving 2× faster is filtered identically."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 100, (478, 2))
    outs = []
    for k in (1.0, 2.0):
        s = LandmarkSmoother()
        out = None
        for i in range(20):
            out = s(k * (base + [3.0 * i, 0.0]), i / 30.0)
        outs.append(out / k)
    assert np.allclose(outs[0], outs[1], atol=1e-3)
    assert outs[0].dtype == np.float32


def _shaky_clip(frame, n=45, seed=0):
    """A still photo shifted by random sub-pixel amounts (±0.5 px) plus Gaussian noise (σ = 4 levels)."""
    import cv2

    rng = np.random.default_rng(seed)
    frames = []
    for dx, dy in rng.uniform(-0.5, 0.5, (n, 2)):
        shifted = cv2.warpAffine(frame, np.array([[1.0, 0, dx], [0, 1.0, dy]]), frame.shape[1::-1],
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        frames.append(np.clip(shifted + rng.normal(0, 4, shifted.shape), 0, 255).astype(np.uint8))
    return frames


def test_tracker_one_euro_cuts_crop_jitter(frame_640):
    """Jitter = RMS frame-to-frame motion of the FFHQ quad corners (frame px), after a 10-frame warm-up."""
    from stream.face.tracking import FaceTracker

    frames = _shaky_clip(frame_640)
    jitter = {}
    for smooth in (False, True):
        with FaceTracker(smooth=smooth) as tracker:
            quads, matrices = [], []
            for i, frame in enumerate(frames):
                faces = tracker.track(frame, i / 30.0)
                assert len(faces) == 1 and faces[0].track_id == 0
                quads.append(faces[0].aligned.quad)
                matrices.append(faces[0].aligned.matrix)
        quads, matrices = np.array(quads)[10:], np.array(matrices)[10:]
        jitter[smooth] = (np.sqrt(np.mean(np.diff(quads, axis=0) ** 2)),
                          np.sqrt(np.mean(np.diff(matrices[:, :, 2], axis=0) ** 2)))
    assert jitter[True][0] * 3 < jitter[False][0], jitter   # measured ≈ 10× lower
    assert jitter[True][1] * 3 < jitter[False][1], jitter


def test_tracker_drops_lost_faces_and_passes_empty_frames(frame_640):
    from stream.face.tracking import FaceTracker

    with FaceTracker(max_faces=2) as tracker:
        first = tracker.track(frame_640, 0.0)
        assert len(first) == 1 and first[0].aligned.crop.shape == (256, 256, 3)
        assert tracker.track(np.zeros_like(frame_640), 0.033) == []
        again = tracker.track(frame_640, 0.066)
        assert len(again) == 1 and again[0].track_id != first[0].track_id  # new track, fresh smoother
        # The re-found face starts unsmoothed: smoothed landmarks equal the detection.
        assert np.array_equal(again[0].landmarks, again[0].raw_landmarks)
    with FaceTracker(min_eye_dist_px=1000) as tracker:
        assert tracker.track(frame_640, 0.0) == []  # too small → skipped


def test_tracker_two_faces_keep_their_ids_and_paste_as_a_batch(astronaut_bgr):
    from stream.face.paste import paste_faces
    from stream.face.tracking import FaceTracker

    head = astronaut_bgr[:240, 100:340]  # MediaPipe's short-range detector wants faces ≳ 1/8 of the frame
    frame = np.ascontiguousarray(np.hstack([head, head[:, ::-1]]))  # two faces, 480×240
    with FaceTracker(max_faces=2) as tracker:
        first = tracker.track(frame, 0.0)
        second = tracker.track(frame, 1 / 30)
    assert len(first) == len(second) == 2
    ids = {f.track_id: f.landmarks[:, 0].mean() for f in first}
    assert len(ids) == 2
    for f in second:  # same face → same id
        assert abs(ids[f.track_id] - f.landmarks[:, 0].mean()) < 5
    red = [np.full_like(f.aligned.crop, (0, 0, 255)) for f in second]
    out = paste_faces(frame, red, [f.aligned for f in second])
    for f in second:
        x, y = np.round(f.landmarks[1]).astype(int)  # nose tip: inside both masks' cores
        assert tuple(out[y, x]) == (0, 0, 255)
    assert np.array_equal(out[-20:], frame[-20:])  # far from the faces: untouched


def test_settling_low_pass_averages_first_then_low_passes():
    from stream.face.smoothing import SettlingLowPass

    rng = np.random.default_rng(2)
    f = SettlingLowPass(cutoff=0.15)
    samples = rng.normal(3.0, 1.0, (200, 4, 2))
    out = np.array([f(x, i / 30.0) for i, x in enumerate(samples)])
    # the first ~30 outputs are exactly the running mean of the samples so far
    assert np.allclose(out[9], samples[:10].mean(0)) and np.allclose(out[0], samples[0])
    # then a first-order low-pass: steady, near the true mean
    assert np.abs(out[100:] - 3.0).max() < 0.6 and np.diff(out[100:], axis=0).std() < 0.05
    f.restart(5)  # a new target is followed within a few samples, without a jump
    moved = [f(np.full((4, 2), 10.0), 7.0 + i / 30.0) for i in range(20)]
    assert moved[0].mean() < 5.0 and moved[-1].mean() > 8.5
    with pytest.raises(ValueError, match="cutoff"):
        SettlingLowPass(cutoff=0)
