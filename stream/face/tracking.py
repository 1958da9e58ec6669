"""Per-stream face tracker: landmarker + One Euro smoothing per face + FFHQ alignment + per-face memory.

One :class:`FaceTracker` per stream (a webcam, a browser peer): it holds the MediaPipe graph (video mode) and
one :class:`Track` per face followed across frames -- its smoothing state and what the stream remembers of that
face (the editor's latent memory, the freshest edit). ``tracker.track(frame, t)`` → list of
:class:`TrackedFace` (each with an :class:`~stream.face.align.AlignedFace` and its ``track``);
:func:`stream.face.paste.paste_faces` puts the edited crops back. A face that is lost, or that jumps (landmarks
moving by more than ``reset_threshold`` face sizes between frames), loses its memory with it.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any, Dict, List, Optional

import numpy as np

from stream.face.align import AlignedFace, align_face, face_scale, face_too_small
from stream.closing import Closeable
from stream.face.landmarks import EYE_LEFT_CONTOUR, EYE_RIGHT_CONTOUR, FaceMeshLandmarker
from stream.face.smoothing import LandmarkSmoother

logger = logging.getLogger(__name__)
_EYES = list(EYE_LEFT_CONTOUR + EYE_RIGHT_CONTOUR)


@dataclasses.dataclass
class Track:
    """One face followed across frames, and what the stream remembers of it (one owner: the tracker)."""
    id: int                       # Stable while the face stays found frame after frame.
    smoother: LandmarkSmoother    # One Euro state of this face's landmarks.
    centre: np.ndarray            # float [2] eye centre (frame pixels), for matching the next detections.
    scale: float                  # face size (pixels), the matching radius.
    raw: Optional[np.ndarray] = None  # float32 [478, 2] landmarks as detected last frame (jump detection).
    memory: Any = None            # the editor's per-face memory (latent, reconstruction); opaque here.
    edit: Any = None              # the freshest edit of this face (a session's cache); opaque here.
    generation: int = 0           # bumped by `forget`: work started before a jump must not come back to it.

    def forget(self) -> None:
        """Drop what was remembered of the face (after a jump): the next edit starts over."""
        self.memory = None
        self.edit = None
        self.generation += 1


@dataclasses.dataclass
class TrackedFace:
    """One face of one frame."""
    track_id: int                 # Stable while the face stays found frame after frame.
    aligned: AlignedFace          # Crop at the tracker's align_size, from the smoothed landmarks.
    landmarks: np.ndarray         # float32 [478, 2] smoothed landmarks, frame pixels.
    raw_landmarks: np.ndarray     # float32 [478, 2] landmarks as detected, frame pixels.
    track: Optional[Track] = None  # the face's track (memory, cached edit); None for detections outside a tracker.


def face_size(landmarks: np.ndarray) -> float:
    """Largest side of the landmarks' bounding box (pixels, >= 1)."""
    span = landmarks.max(0) - landmarks.min(0)
    return float(max(span.max(), 1.0))


def landmark_jump(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean landmark displacement between two frames, in face sizes (0 = still; ~1 = moved by a whole face)."""
    if previous.shape != current.shape:
        return float("inf")
    return float(np.linalg.norm(current - previous, axis=1).mean()) / face_size(current)


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
                 reset_threshold: float = 0.25,      # Landmark jump (face sizes) that makes a track forget.
                 ):
        if not reset_threshold > 0:
            raise ValueError(f"reset_threshold must be > 0, got {reset_threshold!r}")
        self.max_faces = int(max_faces)
        self.align_size = int(align_size)
        self.min_eye_dist_px = float(min_eye_dist_px)
        self.smooth = bool(smooth)
        self.smoothing = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)
        LandmarkSmoother(**self.smoothing)  # validate the parameters now
        self._own_landmarker = landmarker is None
        self.landmarker = landmarker if landmarker is not None else FaceMeshLandmarker(
            max_faces=self.max_faces, video_mode=video_mode)
        self.reset_threshold = float(reset_threshold)
        self._tracks: Dict[int, Track] = {}
        self._ids = itertools.count()
        self.resets = 0                      # tracks that forgot their memory after a jump
        self.too_small = 0                   # faces skipped as too small in the last frame
        self.timing: Dict[str, float] = {}   # ms of the last frame: "landmarks" (detection), "align" (the rest)

    def reset(self) -> None:
        """Forget all faces (e.g. after a scene cut)."""
        self._tracks.clear()

    @property
    def tracks(self) -> List[Track]:
        """The faces followed now (after the last `track` call), with their memories."""
        return list(self._tracks.values())

    def track(self, frame_bgr: np.ndarray, timestamp_s: Optional[float] = None) -> List[TrackedFace]:
        """Faces of one frame, smoothed against the previous frames of this stream.

        Args:
            frame_bgr:   uint8 [H, W, 3] BGR frame.
            timestamp_s: capture time in seconds (default: time.monotonic()).
        Returns:
            list of :class:`TrackedFace`, possibly empty (then the frame should pass through unchanged).
        """
        t = time.monotonic() if timestamp_s is None else float(timestamp_s)
        t0 = time.perf_counter()
        found = self.landmarker.detect(frame_bgr)
        t1 = time.perf_counter()
        detections = [lm for lm in found if not face_too_small(lm, self.min_eye_dist_px)]
        self.too_small = len(found) - len(detections)
        detections = sorted(detections, key=face_size, reverse=True)[: self.max_faces]  # largest first
        assignment = self._associate(detections)
        faces: List[TrackedFace] = []
        alive = set()
        for det, track_id in zip(detections, assignment):
            if track_id is None:
                track_id = next(self._ids)
                self._tracks[track_id] = Track(track_id, LandmarkSmoother(**self.smoothing), np.zeros(2), 1.0)
            track = self._tracks[track_id]
            raw = det.astype(np.float32)
            if track.raw is not None and landmark_jump(track.raw, raw) > self.reset_threshold:
                track.forget()
                self.resets += 1
            track.raw = raw
            smoothed = track.smoother(det, t) if self.smooth else raw
            track.centre = smoothed[_EYES].mean(0)
            track.scale = face_scale(smoothed)
            alive.add(track_id)
            faces.append(TrackedFace(track_id=track_id,
                                     aligned=align_face(frame_bgr, smoothed, self.align_size),
                                     landmarks=smoothed,
                                     raw_landmarks=raw,
                                     track=track))
        for track_id in list(self._tracks):
            if track_id not in alive:  # face lost: its smoothing state and memory go with it
                del self._tracks[track_id]
        self.timing = {"landmarks": (t1 - t0) * 1e3, "align": (time.perf_counter() - t1) * 1e3}
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
