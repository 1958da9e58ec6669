"""Per-stream face tracker: landmarker + One Euro smoothing per face + FFHQ alignment.

One :class:`FaceTracker` per stream (a webcam, a browser peer): it holds the MediaPipe graph (video mode) and
the smoothing state of each tracked face. ``tracker.track(frame, t)`` → list of :class:`TrackedFace` (each with
an :class:`~stream.face.align.AlignedFace`); :func:`stream.face.paste.paste_faces` puts the edited crops back.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Dict, List, Optional

import numpy as np

from stream.face.align import AlignedFace, align_face, face_scale, face_too_small
from stream.closing import Closeable
from stream.face.landmarks import EYE_LEFT_CONTOUR, EYE_RIGHT_CONTOUR, FaceMeshLandmarker
from stream.face.smoothing import LandmarkSmoother

logger = logging.getLogger(__name__)
_EYES = list(EYE_LEFT_CONTOUR + EYE_RIGHT_CONTOUR)


@dataclasses.dataclass
class TrackedFace:
    """One face of one frame."""
    track_id: int                 # Stable while the face stays found frame after frame.
    aligned: AlignedFace          # Crop at the tracker's align_size, from the smoothed landmarks.
    landmarks: np.ndarray         # float32 [478, 2] smoothed landmarks, frame pixels.
    raw_landmarks: np.ndarray     # float32 [478, 2] landmarks as detected, frame pixels.


@dataclasses.dataclass
class _Track:
    smoother: LandmarkSmoother
    centre: np.ndarray
    scale: float


class FaceTracker(Closeable):
    """Find, smooth and align the faces of successive frames of ONE stream."""

    def __init__(self,
                 max_faces: int = 1,                 # Most faces tracked per frame.
                 align_size: int = 256,              # Side of AlignedFace.crop (256: encoder input).
                 min_eye_dist_px: float = 20.0,      # Faces smaller than this (see align.face_too_small)
                                                     # are skipped.
                 smooth: bool = True,                # One Euro smoothing of the landmarks.
                 min_cutoff: float = 0.8,            # One Euro: Hz at rest.
                 beta: float = 3.0,                  # One Euro: cutoff gain per (face size / s).
                 d_cutoff: float = 1.0,              # One Euro: Hz of the speed estimate.
                 video_mode: bool = True,            # MediaPipe tracking mode (False: independent images).
                 landmarker: Optional[FaceMeshLandmarker] = None,  # Use this one instead of making one.
                 ):
        self.max_faces = int(max_faces)
        self.align_size = int(align_size)
        self.min_eye_dist_px = float(min_eye_dist_px)
        self.smooth = bool(smooth)
        self.smoothing = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)
        LandmarkSmoother(**self.smoothing)  # validate the parameters now
        self._own_landmarker = landmarker is None
        self.landmarker = landmarker if landmarker is not None else FaceMeshLandmarker(
            max_faces=self.max_faces, video_mode=video_mode)
        self._tracks: Dict[int, _Track] = {}
        self._ids = itertools.count()

    def reset(self) -> None:
        """Forget all faces (e.g. after a scene cut)."""
        self._tracks.clear()

    def track(self, frame_bgr: np.ndarray, timestamp_s: Optional[float] = None) -> List[TrackedFace]:
        """Faces of one frame, smoothed against the previous frames of this stream.

        Args:
            frame_bgr:   uint8 [H, W, 3] BGR frame.
            timestamp_s: capture time in seconds (default: time.monotonic()).
        Returns:
            list of :class:`TrackedFace`, possibly empty (then the frame should pass through unchanged).
        """
        t = time.monotonic() if timestamp_s is None else float(timestamp_s)
        detections = [lm for lm in self.landmarker.detect(frame_bgr)
                      if not face_too_small(lm, self.min_eye_dist_px)]
        assignment = self._associate(detections)
        faces: List[TrackedFace] = []
        alive = set()
        for det, track_id in zip(detections, assignment):
            if track_id is None:
                track_id = next(self._ids)
                self._tracks[track_id] = _Track(LandmarkSmoother(**self.smoothing), np.zeros(2), 1.0)
            track = self._tracks[track_id]
            smoothed = track.smoother(det, t) if self.smooth else det.astype(np.float32)
            track.centre = smoothed[_EYES].mean(0)
            track.scale = face_scale(smoothed)
            alive.add(track_id)
            faces.append(TrackedFace(track_id=track_id,
                                     aligned=align_face(frame_bgr, smoothed, self.align_size),
                                     landmarks=smoothed,
                                     raw_landmarks=det.astype(np.float32)))
        for track_id in list(self._tracks):
            if track_id not in alive:  # face lost: its smoothing state goes with it
                del self._tracks[track_id]
        return faces

    def _associate(self, detections: List[np.ndarray]) -> List[Optional[int]]:
        """Greedy nearest-centre matching of detections to tracks (within one face size)."""
        result: List[Optional[int]] = [None] * len(detections)
        pairs = []
        for i, det in enumerate(detections):
            centre = det[_EYES].mean(0)
            for track_id, track in self._tracks.items():
                d = float(np.hypot(*(centre - track.centre)))
                if d < track.scale:
                    pairs.append((d, i, track_id))
        used_tracks = set()
        for d, i, track_id in sorted(pairs):
            if result[i] is None and track_id not in used_tracks:
                result[i] = track_id
                used_tracks.add(track_id)
        return result

    def close(self) -> None:
        if self._own_landmarker:
            self.landmarker.close()
