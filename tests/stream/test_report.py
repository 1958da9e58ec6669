"""`stream.report.video_report`: TL-ID, TG-ID and warping error of an edited clip against its source, on a real
face moving smoothly. Sanity: the source against itself is perfect; an edit pasted with per-frame landmark jitter
scores worse than the same edit pasted through the project's tracker (One Euro smoothing)."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from stream.report import format_report, video_report, write_report

log = logging.getLogger(__name__)
FRAMES, SIZE, FPS = 10, 288, 25.0


@pytest.fixture(scope="module")
def clip(faces_dir):
    """01.jpg (a real face) drifting smoothly: FRAMES uint8 [SIZE, SIZE, 3] BGR frames."""
    img = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    out = []
    for t in range(FRAMES):
        a = 2 * np.pi * t / FRAMES
        m = np.float32([[1, 0, 6 * np.sin(a)], [0, 1, 4 * np.sin(2 * a)]])
        out.append(cv2.warpAffine(img, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT))
    return out


@pytest.fixture(scope="module")
def embedder():
    from directions.embedders import DlibEmbedder

    return DlibEmbedder()


class JitteryLandmarker:
    """MediaPipe landmarks plus per-frame noise: a common shift (σ px) and per-point noise (0.3 σ)."""

    def __init__(self, sigma: float, seed: int = 0):
        from stream.face.landmarks import FaceMeshLandmarker

        self.inner = FaceMeshLandmarker(max_faces=1, video_mode=True)
        self.rng = np.random.default_rng(seed)
        self.sigma = sigma

    def detect(self, frame):
        return [(lm + self.rng.normal(0, self.sigma, 2) + self.rng.normal(0, 0.3 * self.sigma, lm.shape))
                .astype(np.float32) for lm in self.inner.detect(frame)]

    def close(self):
        self.inner.close()


def _pasted_edit(frames, smooth: bool, sigma: float = 4.0):
    """The live path's shape of an edit: a face rendered in the canonical (aligned) frame -- here the first
    frame's aligned crop -- pasted back on every frame with that frame's tracked alignment."""
    from stream.face.paste import paste_back
    from stream.face.tracking import FaceTracker

    landmarker = JitteryLandmarker(sigma)
    tracker = FaceTracker(max_faces=1, smooth=smooth, landmarker=landmarker, aligner="mediapipe")  # jitter of these points
    out, canonical = [], None
    try:
        for t, frame in enumerate(frames):
            face = tracker.track(frame, t / FPS)[0]
            canonical = face.aligned.crop.copy() if canonical is None else canonical
            out.append(paste_back(frame, canonical, face.aligned, mode="replace"))
    finally:
        tracker.close()
        landmarker.close()                       # a landmarker passed in stays the caller's to close
    return out


def test_source_against_itself_is_perfect(clip, embedder):
    r = video_report(clip, clip, embedder=embedder, progress=False)
    assert r["frames"] == FRAMES and r["faces"] == FRAMES and r["embedder"] == "dlib"
    assert r["tl_id"] == pytest.approx(1.0, abs=1e-12) and r["tg_id"] == pytest.approx(1.0, abs=1e-12)
    assert r["warp_error"] == 0.0 and r["face_warp_error"] == 0.0
    assert r["warp_error_source"] > 0                   # the flow is not perfect; the difference cancels it
    assert r["adjacent_pairs"] == FRAMES - 1 and r["all_pairs"] == FRAMES * (FRAMES - 1) // 2
    json.dumps(r, allow_nan=False)


def test_jitter_scores_worse_than_the_tracker_smoothed_clip(clip, embedder):
    jittered = video_report(clip, _pasted_edit(clip, smooth=False), embedder=embedder, progress=False)
    smoothed = video_report(clip, _pasted_edit(clip, smooth=True), embedder=embedder, progress=False)
    log.warning("jittered: %s", format_report(jittered))
    log.warning("smoothed: %s", format_report(smoothed))
    assert jittered["tl_id"] < smoothed["tl_id"] <= 1.0 + 1e-9
    assert jittered["tg_id"] < smoothed["tg_id"]
    assert jittered["warp_error"] > 2 * smoothed["warp_error"] > 0
    assert jittered["face_warp_error"] > 2 * smoothed["face_warp_error"]


def test_video_files_progress_and_json(clip, embedder, tmp_path):
    from stream.sinks import FileSink

    path = tmp_path / "clip.mp4"
    with FileSink(path, fps=FPS) as sink:
        for frame in clip:
            sink.write(frame)
    calls = []
    r = video_report(path, path, embedder=embedder, progress=lambda done, total: calls.append((done, total)),
                     max_frames=6)
    assert r["frames"] == 6 and r["fps"] == pytest.approx(FPS) and r["size"] == [SIZE, SIZE]
    assert r["tl_id"] == pytest.approx(1.0) and r["warp_error"] == 0.0
    assert calls == [(i, 6) for i in range(1, 7)]
    out = write_report(r, tmp_path / "r" / "report.json")
    assert json.loads(out.read_text())["source"] == str(path)
    assert "TL-ID 1.0000" in format_report(r)


def test_different_sizes_are_a_one_line_error(clip, embedder):
    small = [f[: SIZE // 2, : SIZE // 2] for f in clip]
    with pytest.raises(ValueError, match="write the edit at the source's size"):
        video_report(clip[:2], small[:2], embedder=embedder, progress=False)


def test_unequal_lengths_compare_the_common_part(clip, embedder, caplog):
    with caplog.at_level(logging.WARNING):
        r = video_report(clip[:4], clip[:3], embedder=embedder, progress=False)
    assert r["frames"] == 3 and r["source_frames"] == 4 and r["edited_frames"] == 3
    assert "compared the first 3" in caplog.text
