"""Per-stream face tracker: landmarker + second opinion + FFHQ quad + One Euro smoothing + per-face memory.

One :class:`FaceTracker` per stream (a webcam, a browser peer): it holds the MediaPipe graph (video mode) and
one :class:`Track` per face followed across frames -- its smoothing state and what the stream remembers of that
face (the editor's latent memory, the freshest edit). ``tracker.track(frame, t)`` → list of
:class:`TrackedFace` (each with an :class:`~stream.face.align.AlignedFace` and its ``track``);
:func:`stream.face.paste.paste_faces` puts the edited crops back. A face that is lost, or that jumps (landmarks
moving by more than ``reset_threshold`` face sizes between frames), loses its memory with it.

Per face and frame (``aligner="dlib68"``, the default): MediaPipe finds the face and its 478 points (they keep
the paste mask and the track); dlib's 68-point predictor runs on a box made from them (or, for stills, on dlib's
own HOG box, which is the official recipe exactly); the official FFHQ quad is built from dlib's eye and mouth
points and warped by :func:`stream.face.align.align_face`. Smoothing: MediaPipe's points are One-Euro smoothed
as before, and dlib's offset from them -- the four recipe points' difference, in the face's own frame (so it
does not change when the head moves) -- is low-passed at ``offset_cutoff``. dlib alone jitters 2-3× more than
MediaPipe on a still face (its regression trees jump with pixel noise); this keeps MediaPipe's steadiness and
dlib's placement. On the first frame of a track (a still image) the crop is dlib's exactly.
When the two landmark sets give quads further apart than ``disagree_at`` of the side, dlib keeps the face unless
its shape is implausible (a second look from its own box moves it by > 10%, or its eyes and mouth fall outside
MediaPipe's face oval); then the track keeps dlib's last accepted offset for up to ``HOLD_S`` and falls back to
MediaPipe's quad after that (at once for stills). ``TrackedFace.aligner`` says which set placed each crop and
``TrackedFace.dlib_ok`` whether this frame's dlib shape was accepted.
A new face (every face, for stills) must pass :class:`stream.face.dlib68.FaceVerifier` first: MediaPipe alone
finds faces in wheels and colour wheels.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any, Dict, List, Optional

import numpy as np

from stream.closing import Closeable
from stream.face import align as _align
from stream.face.align import AlignedFace, align_face, face_scale, face_size, face_too_small
from stream.face.landmarks import EYE_LEFT_CONTOUR, EYE_RIGHT_CONTOUR, FACE_OVAL, FaceMeshLandmarker
from stream.face.smoothing import LandmarkSmoother, SettlingLowPass

logger = logging.getLogger(__name__)
_EYES = list(EYE_LEFT_CONTOUR + EYE_RIGHT_CONTOUR)

ALIGNERS = ("dlib68", "mediapipe")      # which landmark set builds the FFHQ quad
BOXES = ("auto", "track", "hog")        # where dlib's predictor starts (see FaceTracker)
SELF_CHECK_MAX = 0.10                   # dlib's second look may move its quad by this much of the side
OVAL_MARGIN = 0.10                      # dlib's eyes / mouth corners may lie this far (in half sides) outside
                                        # MediaPipe's face oval (a turned head puts a mouth corner on its edge)
HOLD_S = 1.0                            # video: a rejected dlib shape keeps the last accepted offset this long
SWITCH_WEIGHT = 5                       # a switch of landmark set is followed in ~this many frames (no jump)
_VERDICT_TTL_S = (1.0, 2.0)             # video: a verdict on a place holds this long (face, non-face)


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
    offset_filter: Optional[SettlingLowPass] = None  # low-pass of dlib's offset from MediaPipe (dlib68).
    dlib_t: float = float("-inf")  # when dlib's shape of this face was last accepted (s).
    fallback: bool = False        # the track follows MediaPipe's placement (dlib rejected for > HOLD_S).

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
    aligner: str = "mediapipe"    # the landmark set whose eyes and mouth made the quad: "dlib68" | "mediapipe".
    landmarks68: Optional[np.ndarray] = None  # float64 [68, 2] dlib's points this frame (None: not run).
    disagreement: float = float("nan")  # quad distance dlib vs MediaPipe, fraction of the side (nan: not run).
    box: str = ""                 # where dlib started: "hog" (its detector's box) | "track" (from MediaPipe).
    dlib_ok: bool = False         # this frame's dlib shape was accepted (agreement, or plausible on a second look).


def landmark_jump(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean landmark displacement between two frames, in face sizes (0 = still; ~1 = moved by a whole face)."""
    if previous.shape != current.shape:
        return float("inf")
    return float(np.linalg.norm(current - previous, axis=1).mean()) / face_size(current)


def _face_frame(points: np.ndarray) -> tuple:
    """(axes [2, 2] rows x̂, ŷ of the recipe's quad, half its side) of the recipe's four points [4, 2]."""
    quad = _align.quad_from_points(points)
    x = (quad[3] - quad[0]) / 2.0
    half = float(np.hypot(*x))
    x_hat = x / half
    return np.stack([x_hat, np.array([-x_hat[1], x_hat[0]])]), half


class FaceTracker(Closeable):
    """Find, check, align and smooth the faces of successive frames of ONE stream."""

    def __init__(self,
                 max_faces: int = 1,                 # Most faces tracked per frame.
                 align_size: int = 256,              # Side of AlignedFace.crop (256: encoder input).
                 min_eye_dist_px: float = 20.0,      # Faces smaller than this (see align.face_too_small)
                                                     # are skipped.
                 smooth: bool = True,                # One Euro smoothing of the landmarks and the quad.
                 min_cutoff: float = 0.8,            # One Euro: Hz at rest.
                 beta: float = 3.0,                  # One Euro: cutoff gain per (face size / s).
                 d_cutoff: float = 1.0,              # One Euro: Hz of the speed estimate.
                 video_mode: bool = True,            # A video stream (False: independent still images: every
                                                     # face is checked, dlib starts on its HOG box).
                 landmarker: Optional[FaceMeshLandmarker] = None,  # Use this one instead of making one.
                 reset_threshold: float = 0.25,      # Landmark jump (face sizes) that makes a track forget.
                 aligner: str = "dlib68",            # "dlib68": the official recipe's landmarks (dlib's 68-point
                                                     # predictor on the face's box); "mediapipe": MediaPipe's.
                 dlib_box: str = "auto",             # Where dlib's predictor starts: "track" (a box made from the
                                                     # MediaPipe landmarks, ~3 ms/box), "hog" (dlib's HOG box
                                                     # when it finds the face: the official recipe exactly;
                                                     # 0.1-1 s per frame), "auto": hog for stills, track for video.
                 hog_max_pixels: int = 4_000_000,    # Bigger frames use the track box (HOG on 12 Mpx: 13 s, 0.7 GB).
                 disagree_at: float = 0.06,          # Quad distance (fraction of the side) where the two landmark
                                                     # sets disagree and dlib's shape is double-checked.
                 verify: bool = True,                # Second opinion (dlib's detectors) before a face counts.
                 offset_cutoff: float = 0.15,        # Hz: low-pass of dlib's offset from MediaPipe's points.
                 box_scales: tuple = (0.95, 1.0, 1.05),  # Track boxes: dlib runs on the box scaled by each
                                                     # factor and averages (steadier); (1.0,): one run.
                 ):
        if not reset_threshold > 0:
            raise ValueError(f"reset_threshold must be > 0, got {reset_threshold!r}")
        if aligner not in ALIGNERS:
            raise ValueError(f"aligner {aligner!r} is unknown; use one of {', '.join(ALIGNERS)}")
        if dlib_box not in BOXES:
            raise ValueError(f"dlib_box {dlib_box!r} is unknown; use one of {', '.join(BOXES)}")
        self.max_faces = int(max_faces)
        self.align_size = int(align_size)
        self.min_eye_dist_px = float(min_eye_dist_px)
        self.smooth = bool(smooth)
        self.smoothing = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)
        LandmarkSmoother(**self.smoothing)  # validate the parameters now
        self.video_mode = bool(video_mode)
        self.aligner = aligner
        self.dlib_box = ("track" if self.video_mode else "hog") if dlib_box == "auto" else dlib_box
        self.hog_max_pixels = int(hog_max_pixels)
        self.disagree_at = float(disagree_at)
        self.verify = bool(verify)
        if not offset_cutoff > 0:
            raise ValueError(f"offset_cutoff must be > 0 Hz, got {offset_cutoff!r}")
        self.offset_cutoff = float(offset_cutoff)
        self.box_scales = tuple(float(k) for k in box_scales)
        if not self.box_scales or min(self.box_scales) <= 0:
            raise ValueError(f"box_scales must be positive factors, got {box_scales!r}")
        # dlib's pieces first: a missing install fails here with the command, before MediaPipe starts.
        self._predictor = self._hog = self._verifier = None
        if aligner == "dlib68":
            from stream.face.dlib68 import ShapePredictor68  # noqa: PLC0415

            self._predictor = ShapePredictor68()
        if aligner == "dlib68" and self.dlib_box == "hog":
            from stream.face.dlib68 import HogFaceDetector  # noqa: PLC0415

            self._hog = HogFaceDetector()
        if self.verify:
            from stream.face.dlib68 import FaceVerifier  # noqa: PLC0415

            self._verifier = FaceVerifier()
        self._own_landmarker = landmarker is None
        self.landmarker = landmarker if landmarker is not None else FaceMeshLandmarker(
            max_faces=self.max_faces, video_mode=video_mode,
            verify_tiles=not self.verify)  # the tracker checks every still-image face itself
        self.reset_threshold = float(reset_threshold)
        self._tracks: Dict[int, Track] = {}
        self._ids = itertools.count()
        self._verdicts: List[tuple] = []     # video: (centre [2], scale, t, is_face) of recent checks
        self.resets = 0                      # tracks that forgot their memory after a jump
        self.too_small = 0                   # faces skipped as too small in the last frame
        self.timing: Dict[str, float] = {}   # ms of the last frame: "landmarks" (detection), "align" (the rest)
        self.rejected = 0                    # detections the second opinion called not a face (all frames)
        self.disagreements = 0               # faces where dlib and MediaPipe disagreed (all frames)
        self.used = {name: 0 for name in ALIGNERS}  # faces aligned with each landmark set (all frames)
        self.last_used: List[str] = []       # landmark set of each face of the last frame
        self.dlib_ms = 0.0                   # dlib time of the last frame (predictor + detectors), ms
        self._dlib_s, self._frame_hog = 0.0, None  # per-frame scratch: dlib seconds, the frame's HOG boxes

    def reset(self) -> None:
        """Forget all faces (e.g. after a scene cut)."""
        self._tracks.clear()
        self._verdicts.clear()

    @property
    def tracks(self) -> List[Track]:
        """The faces followed now (after the last `track` call), with their memories."""
        return list(self._tracks.values())

    def stats(self) -> Dict[str, Any]:
        """Counters for a stream's status: which landmark set aligned the faces, disagreements, rejections."""
        return {"aligner": self.aligner, "dlib_box": self.dlib_box if self.aligner == "dlib68" else None,
                "used": dict(self.used), "last_used": list(self.last_used), "disagreements": self.disagreements,
                "rejected": self.rejected, "resets": self.resets, "too_small": self.too_small,
                "dlib_ms": round(self.dlib_ms, 3)}

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
        self._dlib_s, self._frame_hog = 0.0, None
        faces: List[TrackedFace] = []
        for det, track_id in zip(detections, assignment):
            if self._admitted(frame_bgr, det, new=track_id is None, t=t):
                faces.append(self._follow(frame_bgr, det, track_id, t))
        self.dlib_ms = self._dlib_s * 1e3
        self.last_used = [f.aligner for f in faces]
        alive = {f.track_id for f in faces}
        for track_id in list(self._tracks):
            if track_id not in alive:  # face lost: its smoothing state and memory go with it
                del self._tracks[track_id]
        self.timing = {"landmarks": (t1 - t0) * 1e3, "align": (time.perf_counter() - t1) * 1e3}
        return faces

    def _admitted(self, frame_bgr: np.ndarray, det: np.ndarray, new: bool, t: float) -> bool:
        """Whether a detection counts: the second opinion on new faces (video) or every face (stills)."""
        if self._verifier is None or (self.video_mode and not new):
            return True
        t0 = time.perf_counter()
        is_face = self._is_face(frame_bgr, det, t)
        self._dlib_s += time.perf_counter() - t0
        self.rejected += not is_face
        return is_face

    def _follow(self, frame_bgr: np.ndarray, det: np.ndarray, track_id: Optional[int], t: float) -> TrackedFace:
        """Update (or open) the face's track with this detection and align the face."""
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
        quad, info = None, {}  # mediapipe aligner: the quad of the smoothed landmarks
        if self.aligner == "dlib68":
            t0 = time.perf_counter()
            if self._hog is not None and self._frame_hog is None:
                self._frame_hog = self._hog_boxes(frame_bgr)
            quad, info = self._dlib_quad(frame_bgr, raw, smoothed, track, self._frame_hog or [], t)
            self._dlib_s += time.perf_counter() - t0
        face = TrackedFace(track_id=track_id,
                           aligned=align_face(frame_bgr, smoothed, self.align_size, quad=quad),
                           landmarks=smoothed,
                           raw_landmarks=raw,
                           track=track,
                           **info)
        self.used[face.aligner] += 1
        return face

    def _hog_boxes(self, frame_bgr: np.ndarray) -> List[np.ndarray]:
        """dlib's HOG boxes of this frame ([] when the frame is bigger than ``hog_max_pixels``)."""
        h, w = frame_bgr.shape[:2]
        if h * w > self.hog_max_pixels:
            return []
        return [box for box, _ in self._hog(frame_bgr)]

    def _dlib_quad(self, frame_bgr: np.ndarray, raw: np.ndarray, smoothed: np.ndarray, track: Track,
                   hog_boxes: List[np.ndarray], t: float) -> tuple:
        """The FFHQ quad [4, 2] of one face from dlib's 68 points (MediaPipe's when dlib's shape is implausible),
        smoothed on the track, and the TrackedFace fields that say how: aligner, landmarks68, disagreement, box."""
        from stream.face import dlib68  # noqa: PLC0415

        box = dlib68.match_box(hog_boxes, raw) if hog_boxes else None
        box_kind = "hog" if box is not None else "track"
        if box is None:
            lm68 = self._predictor(frame_bgr, dlib68.box_from_mediapipe(raw), self.box_scales)
        else:
            lm68 = self._predictor(frame_bgr, box)  # the detector's box: the official recipe, one run
        points = dlib68.recipe_points(lm68)
        mp_points = _align.recipe_points(raw)
        quad68 = _align.quad_from_points(points)
        disagreement = _align.quad_distance(_align.quad_from_points(mp_points), quad68)
        ok = disagreement <= self.disagree_at
        if not ok:
            self.disagreements += 1
            ok = self._plausible68(frame_bgr, lm68, quad68, raw)
        # dlib's offset from MediaPipe's four points, in the face's frame (axes of MediaPipe's quad, its half side).
        axes, half = _face_frame(mp_points)
        offset = (points - mp_points) @ axes.T / half
        used = "dlib68"
        if ok:
            track.dlib_t = t
        if self.smooth:
            if track.offset_filter is None:
                track.offset_filter = SettlingLowPass(self.offset_cutoff)
            held = track.offset_filter.value
            if ok:
                if track.fallback:                           # back from MediaPipe's placement, smoothly
                    track.offset_filter.restart(SWITCH_WEIGHT)
                    track.fallback = False
                offset = track.offset_filter(offset, t)
            elif held is None:                               # nothing accepted yet on this track
                used, offset = "mediapipe", np.zeros_like(offset)
            elif t - track.dlib_t <= HOLD_S:                 # keep the last accepted placement a while
                offset = held
            else:                                            # then move over to MediaPipe's
                if not track.fallback:
                    track.offset_filter.restart(SWITCH_WEIGHT)
                    track.fallback = True
                used, offset = "mediapipe", track.offset_filter(np.zeros_like(offset), t)
        elif not ok:
            used, offset = "mediapipe", np.zeros_like(offset)
        base = _align.recipe_points(smoothed)
        axes, half = _face_frame(base)
        info = dict(aligner=used, landmarks68=lm68, disagreement=disagreement, box=box_kind, dlib_ok=ok)
        return _align.quad_from_points(base + (offset * half) @ axes), info

    def _plausible68(self, frame_bgr: np.ndarray, lm68: np.ndarray, quad68: np.ndarray,
                     landmarks478: np.ndarray) -> bool:
        """dlib's shape is believable: its eyes and mouth lie inside MediaPipe's face oval, and a second
        prediction started from dlib's own box moves its quad by at most SELF_CHECK_MAX of the side."""
        import cv2  # noqa: PLC0415

        from stream.face import dlib68  # noqa: PLC0415

        oval = np.asarray(landmarks478, np.float32)[list(FACE_OVAL)]
        margin = OVAL_MARGIN * float(np.hypot(*(quad68[3] - quad68[0]))) / 2
        for x, y in dlib68.recipe_points(lm68):
            if cv2.pointPolygonTest(oval, (float(x), float(y)), True) < -margin:
                return False
        again = self._predictor(frame_bgr, dlib68.box_from_dlib68(lm68))
        moved = _align.quad_distance(_align.quad_from_points(dlib68.recipe_points(again)), quad68)
        return moved <= SELF_CHECK_MAX

    def _is_face(self, frame_bgr: np.ndarray, landmarks: np.ndarray, t: float) -> bool:
        """The second opinion on a detection (video: remembered per place for a second or two)."""
        centre = landmarks[_EYES].mean(0)
        scale = face_scale(landmarks)
        if self.video_mode:
            self._verdicts = [v for v in self._verdicts if 0 <= t - v[2] < _VERDICT_TTL_S[0 if v[3] else 1]]
            for c, s, _, is_face in self._verdicts:
                if np.hypot(*(centre - c)) < 0.5 * s and 0.7 < scale / s < 1.4:
                    return is_face
        verdict = self._verifier(frame_bgr, landmarks)
        if not verdict.is_face:
            logger.debug("detection at %s rejected (%s score %.2f)", np.round(centre), verdict.method, verdict.score)
        if self.video_mode:
            self._verdicts.append((centre, scale, t, verdict.is_face))
        return verdict.is_face

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
        for part in (self._predictor, self._hog, self._verifier):
            if part is not None:
                part.close()
