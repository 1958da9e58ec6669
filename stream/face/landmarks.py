"""MediaPipe FaceMesh landmarks: frame (uint8 BGR) → list of [478, 2] float32 pixel coordinates.

Uses the legacy ``mp.solutions.face_mesh.FaceMesh`` of mediapipe==0.10.21, whose ``.tflite`` models ship inside
the wheel (works offline). ``refine_landmarks=True`` adds the 10 iris points (468–477) to the 468 mesh points.

Named index sets below follow MediaPipe's canonical face mesh. "Left"/"right" are in IMAGE terms (as in the
FFHQ recipe, whose ``eye_left`` is the eye on the left of the picture, i.e. the subject's right eye) for an
unmirrored frame.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import numpy as np

from stream.closing import Closeable
from stream.frames import check_frame

logger = logging.getLogger(__name__)

NUM_LANDMARKS = 478  # 468 mesh points + 2 × 5 iris points (refine_landmarks=True)

# dlib-68 equivalents of the six eye-contour points the FFHQ recipe averages (dlib 36–41 and 42–47):
# outer corner, two upper-lid points, inner corner, two lower-lid points.
EYE_LEFT_CONTOUR = (33, 160, 158, 133, 153, 144)   # image-left eye (subject's right), dlib 36..41
EYE_RIGHT_CONTOUR = (362, 385, 387, 263, 373, 380)  # image-right eye (subject's left), dlib 42..47
# Iris centre + 4 rim points (refined model only). 468 is the image-left iris centre, 473 the image-right one.
IRIS_LEFT = (468, 469, 470, 471, 472)
IRIS_RIGHT = (473, 474, 475, 476, 477)
# Outer mouth corners (dlib 48 and 54).
MOUTH_LEFT = 61
MOUTH_RIGHT = 291
# Face oval contour, in order around the face (MediaPipe FACEMESH_FACE_OVAL walked as a polygon, from the
# forehead centre clockwise in the image).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


def eye_centers(landmarks: np.ndarray, mode: str = "contour") -> tuple[np.ndarray, np.ndarray]:
    """Eye centres (image-left, image-right) from [478, 2] landmarks, each a [2] float array.

    ``mode="contour"``: mean of the six dlib-equivalent contour points (what FFHQ used; insensitive to gaze).
    ``mode="iris"``: the refined iris centre points (follows the gaze).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if mode == "contour":
        return lm[list(EYE_LEFT_CONTOUR)].mean(0), lm[list(EYE_RIGHT_CONTOUR)].mean(0)
    if mode == "iris":
        return lm[IRIS_LEFT[0]].copy(), lm[IRIS_RIGHT[0]].copy()
    raise ValueError(f"eye centre mode {mode!r} is unknown; use 'contour' or 'iris'")


def mouth_corners(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outer mouth corners (image-left, image-right) from [478, 2] landmarks, each a [2] float array."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return lm[MOUTH_LEFT].copy(), lm[MOUTH_RIGHT].copy()


def _import_face_mesh():
    try:
        import mediapipe as mp  # noqa: WPS433 (lazy: heavy import)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "mediapipe is not installed; install it with: pip install --no-deps mediapipe==0.10.21 "
            "(see requirements-nodeps.txt)") from e
    face_mesh = getattr(getattr(mp, "solutions", None), "face_mesh", None)
    if face_mesh is None:  # pragma: no cover - depends on the install
        raise ImportError(f"mediapipe {getattr(mp, '__version__', '?')} has no legacy FaceMesh solution; "
                          "install mediapipe==0.10.21")
    return face_mesh


class FaceMeshLandmarker(Closeable):
    """Face landmarks with MediaPipe FaceMesh (refined, 478 points per face).

    Use as a context manager or call :meth:`close`. Not thread-safe: one instance per stream.
    """

    def __init__(self,
                 max_faces: int = 1,                      # Most faces returned per frame.
                 refine: bool = True,                     # Iris refinement → 478 points (False → 468).
                 video_mode: bool = True,                 # True: track across frames (webcam/video);
                                                          # False: detect independently on each image.
                 min_detection_confidence: float = 0.5,   # Face detector threshold.
                 min_tracking_confidence: float = 0.5,    # Below this the tracker re-runs detection.
                 max_side: Optional[int] = 1280,          # Frames with a longer side are downscaled before
                                                          # detection (landmarks scaled back). None: never.
                 tile_fallback: Optional[bool] = None,    # When nothing is found, search overlapping square
                                                          # windows (finds small faces in big pictures).
                                                          # None: on in still-image mode, off in video mode
                                                          # (it would disturb the tracker and cost time).
                 verify_tiles: bool = True,               # A face found only by the tile search must pass
                                                          # dlib's second opinion (stream.face.dlib68
                                                          # .FaceVerifier): the search finds "faces" in wheels.
                 ):
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if max_side is not None and max_side < 64:
            raise ValueError(f"max_side must be >= 64 or None, got {max_side}")
        self.max_faces = int(max_faces)
        self.refine = bool(refine)
        self.video_mode = bool(video_mode)
        self.max_side = max_side
        self.tile_fallback = (not video_mode) if tile_fallback is None else bool(tile_fallback)
        self._verifier = None
        if self.tile_fallback and verify_tiles:
            from stream.face.dlib68 import FaceVerifier  # noqa: PLC0415 (dlib: lazy)

            self._verifier = FaceVerifier()
        self.rejected_tiles = 0  # tile-search candidates the second opinion turned down (all calls)
        self.num_landmarks = NUM_LANDMARKS if refine else 468
        face_mesh = _import_face_mesh()
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=not video_mode,
            max_num_faces=self.max_faces,
            refine_landmarks=self.refine,
            min_detection_confidence=float(min_detection_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
        )

    def detect(self, frame_bgr: np.ndarray) -> List[np.ndarray]:
        """Landmarks of the faces in a frame.

        Args:
            frame_bgr: uint8 [H, W, 3] BGR frame.
        Returns:
            list (0..max_faces) of float32 [478, 2] arrays of pixel coordinates (x, y) in the frame
            (MediaPipe's normalised coordinates × frame width / height).
            An empty list when no face is found.
        """
        if self._mesh is None:
            raise RuntimeError("FaceMeshLandmarker is closed; create a new one")
        frame_bgr = check_frame(frame_bgr)
        faces = self._detect_once(frame_bgr)
        if not faces and self.tile_fallback:
            faces = self._detect_tiles(frame_bgr)
        return faces

    def _detect_tiles(self, frame_bgr: np.ndarray) -> List[np.ndarray]:
        """Search square windows (side 0.6 × the short side, half-window stride); de-duplicate by eye centre;
        keep the candidates dlib's second opinion accepts."""
        h, w = frame_bgr.shape[:2]
        side = int(min(h, w) * 0.6)
        if side < 64:
            return []
        stride = max(1, side // 2)
        ys = sorted(set(list(range(0, h - side + 1, stride)) + [h - side]))
        xs = sorted(set(list(range(0, w - side + 1, stride)) + [w - side]))
        faces: List[np.ndarray] = []
        for y0 in ys:
            for x0 in xs:
                window = np.ascontiguousarray(frame_bgr[y0:y0 + side, x0:x0 + side])
                for pts in self._detect_once(window):
                    pts = pts + np.array([x0, y0], dtype=np.float32)
                    centre = pts[list(EYE_LEFT_CONTOUR + EYE_RIGHT_CONTOUR)].mean(0)
                    size = np.ptp(pts[:, 0])
                    if all(np.hypot(*(centre - f[list(EYE_LEFT_CONTOUR + EYE_RIGHT_CONTOUR)].mean(0)))
                           > 0.3 * size for f in faces) and self._accept_tile(frame_bgr, pts):
                        faces.append(pts)
                    if len(faces) >= self.max_faces:
                        return faces
        return faces

    def _accept_tile(self, frame_bgr: np.ndarray, landmarks: np.ndarray) -> bool:
        if self._verifier is None:
            return True
        verdict = self._verifier(frame_bgr, landmarks)
        if not verdict.is_face:
            self.rejected_tiles += 1
            logger.debug("tile-search candidate rejected (%s score %.2f)", verdict.method, verdict.score)
        return verdict.is_face

    def _detect_once(self, frame_bgr: np.ndarray) -> List[np.ndarray]:
        import cv2

        h, w = frame_bgr.shape[:2]
        small = frame_bgr
        if self.max_side is not None and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            small = cv2.resize(frame_bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        rgb.flags.writeable = False
        result = self._mesh.process(rgb)
        faces = []
        for face in result.multi_face_landmarks or ():
            pts = np.array([(p.x, p.y) for p in face.landmark], dtype=np.float32)
            pts *= np.array([w, h], dtype=np.float32)  # normalised → pixels of the ORIGINAL frame
            faces.append(pts)
        return faces

    def close(self) -> None:
        """Release the MediaPipe graph (idempotent)."""
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None
        if self._verifier is not None:
            self._verifier.close()
            self._verifier = None

    def __del__(self):  # best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
