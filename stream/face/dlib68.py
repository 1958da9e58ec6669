"""dlib's 68-point landmarks on a face box: the landmarks of the official FFHQ recipe.

The FFHQ crops (NVlabs ffhq-dataset ``recreate_aligned_images``, reused by the pSp / e4e / ReStyle alignment
scripts) come from dlib's 68-point shape predictor, started on a box from dlib's HOG face detector. Here the
predictor starts on a box made from the MediaPipe landmarks of the face (:func:`box_from_mediapipe`), sized and
placed like the HOG detector's box for the same face; :class:`HogFaceDetector` gives the detector's own boxes
where exactness matters more than time (stills).

The models ship inside the ``face-recognition-models`` wheel (``models/`` next to its ``__init__.py``); the
package itself is never imported (it needs ``pkg_resources``): :func:`models_dir` finds the folder with
``importlib.util.find_spec``. dlib comes from the ``dlib-bin`` wheel. Licence: the 68-point model is trained on
iBUG 300-W, whose images are for non-commercial research only (like the FFHQ network weights).

Coordinates: dlib points are integer pixel indices (pixel-centre convention, as OpenCV); boxes here are
``(left, top, right, bottom)`` floats with dlib's inclusive right/bottom.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import threading
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from stream.closing import Closeable
from stream.frames import check_frame

logger = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
SHAPE_MODEL = "shape_predictor_68_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"
NUM_POINTS = 68

# dlib-68 index sets the recipe reads (image-left first, as in ffhq-dataset's download_ffhq.py).
EYE_LEFT = tuple(range(36, 42))
EYE_RIGHT = tuple(range(42, 48))
MOUTH_LEFT = 48
MOUTH_RIGHT = 54

# For each of dlib's 68 points, the MediaPipe mesh vertex nearest to it: the median distance (in eye distances)
# over 120 faces (the 7 real faces of the tests at 3 sizes, 3 rolls, mirrored), arg-minimised per point.
MEDIAPIPE_68 = (34, 227, 177, 215, 172, 136, 149, 148, 152, 377, 378, 394, 397, 435, 376, 447, 356,   # jaw
                70, 63, 105, 66, 107, 336, 296, 334, 293, 300,                                     # brows
                168, 197, 5, 4, 240, 97, 2, 326, 305,                                              # nose
                33, 160, 158, 155, 153, 144, 382, 385, 386, 263, 373, 380,                         # eyes
                61, 74, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,                                # outer lips
                78, 38, 13, 268, 408, 317, 14, 87)                                                 # inner lips

# Where dlib's HOG detector (upsample 1, as the official scripts) puts its square box relative to a face's
# points: centre = centroid + (dx, dy)·r, side = k·r, r = RMS distance of the points from their centroid.
# Fitted on 127 HOG detections (the faces above plus the 7 originals); residual std ≈ 0.12 r in position and
# 9% in side (the detector's 6/5 scale steps and 8-pixel cells). (dx, dy, k):
BOX_FROM_MEDIAPIPE = (-0.0245, -0.1617, 2.8734)   # points: MEDIAPIPE_68 of the [478, 2] mesh
BOX_FROM_DLIB68 = (-0.0190, -0.1636, 2.8088)      # points: dlib's 68


_SHARED: dict = {}               # model file → loaded dlib shape predictor (≈90 MB, 1.2 s to load): one per process
_SHARED_LOCK = threading.Lock()


def _shared_predictor(dlib, path: Path):
    """The process's one loaded predictor for this model file (its call is read-only: streams share it)."""
    with _SHARED_LOCK:
        key = str(Path(path).resolve())
        if key not in _SHARED:
            _SHARED[key] = dlib.shape_predictor(key)
        return _SHARED[key]


def _import_dlib():
    try:
        import dlib  # noqa: PLC0415 (heavy; lazy)
    except ImportError as e:
        raise ImportError(f"dlib is not installed; install it with: {INSTALL_COMMAND}") from e
    return dlib


def models_dir() -> Path:
    """The ``models/`` folder of the installed ``face-recognition-models`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"dlib's face models are not installed; install them with: {INSTALL_COMMAND}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_path(name: str) -> Path:
    """Path of one model file of ``face-recognition-models`` (e.g. :data:`SHAPE_MODEL`); missing → one line."""
    path = models_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall dlib's face models: {INSTALL_COMMAND}")
    return path


def recipe_points(landmarks68: np.ndarray) -> np.ndarray:
    """The four points the FFHQ recipe reads from dlib's 68: float64 [4, 2] eye_left, eye_right (means of the
    six eye-contour points), mouth_left, mouth_right (outer mouth corners 48 and 54)."""
    lm = _check68(landmarks68)
    return np.stack([lm[list(EYE_LEFT)].mean(0), lm[list(EYE_RIGHT)].mean(0), lm[MOUTH_LEFT], lm[MOUTH_RIGHT]])


def box_from_points(points: np.ndarray, model: Tuple[float, float, float]) -> np.ndarray:
    """Square box (left, top, right, bottom) float64 [4] of a face's points [N, 2] under a box model (dx, dy, k)."""
    pts = np.asarray(points, dtype=np.float64)
    centre = pts.mean(0)
    r = float(np.sqrt(((pts - centre) ** 2).sum(1).mean()))
    dx, dy, k = model
    cx, cy, half = centre[0] + dx * r, centre[1] + dy * r, 0.5 * k * r
    return np.array([cx - half, cy - half, cx + half, cy + half])


def box_from_mediapipe(landmarks478: np.ndarray) -> np.ndarray:
    """dlib-detector-like box [4] of a face from its MediaPipe landmarks [478, 2] (or [468, 2])."""
    lm = np.asarray(landmarks478, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] < 468:
        raise ValueError(f"expected MediaPipe landmarks [478, 2], got {list(lm.shape)}")
    return box_from_points(lm[list(MEDIAPIPE_68)], BOX_FROM_MEDIAPIPE)


def box_from_dlib68(landmarks68: np.ndarray) -> np.ndarray:
    """dlib-detector-like box [4] of a face from its 68 dlib landmarks."""
    return box_from_points(_check68(landmarks68), BOX_FROM_DLIB68)


class ShapePredictor68(Closeable):
    """dlib's 68-point shape predictor on a given box (≈3 ms of CPU per box on this project's loaded 2-core
    machine; dlib quotes ~1 ms). The model (≈90 MB) is loaded once per process and shared by all instances.

    Only a region around the box is converted to RGB (the predictor reads pixels near its current shape, well
    inside ``margin`` box sides around the box); the result equals a run on the whole frame.
    One instance per stream; the shared model is only read.
    """

    def __init__(self,
                 model: Optional[str | Path] = None,   # .dat file; default: face-recognition-models' 68-point model.
                 margin: float = 1.0,                  # Context kept around the box, in box sides.
                 ):
        dlib = _import_dlib()
        self.model = Path(model) if model is not None else model_path(SHAPE_MODEL)
        self.margin = float(margin)
        self._dlib = dlib
        self._predictor = _shared_predictor(dlib, self.model)

    def __call__(self, frame_bgr: np.ndarray, box: np.ndarray, scales: Tuple[float, ...] = (1.0,)) -> np.ndarray:
        """68 landmarks of the face in ``box``.

        Args:
            frame_bgr: uint8 [H, W, 3] BGR frame.
            box:       (left, top, right, bottom) in frame pixels (rounded to integers, as dlib's rectangles).
            scales:    run the predictor on the box scaled about its centre by each factor and average the
                       shapes (the predictor's answer depends on its starting box: averaging a few steadies it).
        Returns:
            float64 [68, 2] pixel coordinates (x, y) in the frame (integer values for one scale: dlib rounds).
        """
        import cv2  # noqa: PLC0415

        frame_bgr = check_frame(frame_bgr)
        if self._predictor is None:
            raise RuntimeError("ShapePredictor68 is closed; create a new one")
        box = np.asarray(box, dtype=np.float64)
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"empty face box {tuple(box)}")
        centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
        rects = [np.rint(np.concatenate([centre - k * half, centre + k * half])).astype(int) for k in scales]
        h, w = frame_bgr.shape[:2]
        span = max(int(r[2] - r[0]) for r in rects)
        pad = int(np.ceil(self.margin * span))
        x0, y0 = max(min(r[0] for r in rects) - pad, 0), max(min(r[1] for r in rects) - pad, 0)
        x1, y1 = min(max(r[2] for r in rects) + pad + 1, w), min(max(r[3] for r in rects) + pad + 1, h)
        if x1 <= x0 or y1 <= y0:  # the box lies outside the frame: nothing to read, dlib sees zeros
            x0, y0, x1, y1 = 0, 0, w, h
        roi = cv2.cvtColor(frame_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2RGB)
        shapes = []
        for left, top, right, bottom in rects:
            rect = self._dlib.rectangle(int(left - x0), int(top - y0), int(right - x0), int(bottom - y0))
            shapes.append([(p.x, p.y) for p in self._predictor(roi, rect).parts()])
        return np.mean(np.asarray(shapes, dtype=np.float64), axis=0) + np.array([x0, y0], dtype=np.float64)

    def close(self) -> None:
        self._predictor = None


class HogFaceDetector(Closeable):
    """dlib's HOG frontal face detector with the official scripts' settings (``detector(img, 1)``).

    Slow (≈0.1 s of CPU for 640×480, ≈0.4 s for 1024², 13 s and 0.7 GB for a 12-megapixel picture) and blind
    to many paintings: used where exactness is worth it (stills, offline clips), never per live frame.
    """

    def __init__(self,
                 upsample: int = 1,                  # Times the image is doubled first (official: 1).
                 ):
        dlib = _import_dlib()
        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()

    def __call__(self, frame_bgr: np.ndarray, threshold: float = 0.0) -> List[Tuple[np.ndarray, float]]:
        """Faces of a frame: list of (box (left, top, right, bottom) float64 [4], score), best first."""
        import cv2  # noqa: PLC0415

        rgb = cv2.cvtColor(check_frame(frame_bgr), cv2.COLOR_BGR2RGB)
        rects, scores, _ = self._detector.run(rgb, self.upsample, float(threshold))
        found = [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(s))
                 for r, s in zip(rects, scores)]
        return sorted(found, key=lambda item: -item[1])


def match_box(boxes: List[np.ndarray], landmarks478: np.ndarray) -> Optional[np.ndarray]:
    """The box of ``boxes`` that frames the face of these MediaPipe landmarks (its eyes and mouth inside it and
    its centre within a quarter side of :func:`box_from_mediapipe`'s), or None."""
    ref = box_from_mediapipe(landmarks478)
    side = ref[2] - ref[0]
    centre = (ref[:2] + ref[2:]) / 2
    best, best_d = None, np.inf
    for box in boxes:
        box = np.asarray(box, dtype=np.float64)
        d = float(np.hypot(*((box[:2] + box[2:]) / 2 - centre)))
        ratio = (box[2] - box[0]) / side
        if d < 0.25 * side and 0.7 < ratio < 1.4 and d < best_d:
            best, best_d = box, d
    return best


@dataclasses.dataclass
class Verdict:
    """Whether a detection is a face, and what said so."""
    is_face: bool
    method: str        # "hog" (dlib's HOG detector accepted the box) | "cnn" (dlib's CNN detector decided)
    score: float       # HOG score, or the CNN detector's confidence (-inf: nothing found)


class FaceVerifier(Closeable):
    """A second opinion on a MediaPipe detection, from dlib's detectors on the candidate's own box.

    The candidate region (2 box sides around :func:`box_from_mediapipe`) is resampled so the face is ~100 px; dlib's
    HOG detector (≈5 ms) accepts it when it finds a face there with score ≥ ``hog_accept``; otherwise dlib's CNN
    (MMOD) detector decides (≈0.14 s of CPU; it finds the painted and turned faces HOG misses). Measured: the
    real faces of the tests (photos, paintings, a sculpture; rolled ±15°) all pass (CNN confidence ≥ 0.85);
    wheels, a colour wheel, the moon, a motorbike and synthetic cars give no CNN detection at all.
    """

    def __init__(self,
                 hog_accept: float = 0.0,          # HOG score that accepts without asking the CNN.
                 cnn_accept: float = 0.3,          # CNN confidence needed when HOG did not accept.
                 use_cnn: bool = True,             # False: HOG only (then paintings and turned heads may fail).
                 ):
        dlib = _import_dlib()
        self.hog_accept = float(hog_accept)
        self.cnn_accept = float(cnn_accept)
        self._hog = dlib.get_frontal_face_detector()
        self._cnn = dlib.cnn_face_detection_model_v1(str(model_path(CNN_MODEL))) if use_cnn else None

    def __call__(self, frame_bgr: np.ndarray, landmarks478: np.ndarray) -> Verdict:
        frame_bgr = check_frame(frame_bgr)
        box = box_from_mediapipe(landmarks478)
        roi, side = _resampled_region(frame_bgr, box, face_px=100, context=2.0)
        rects, scores, _ = self._hog.run(roi, 0, -1.0)
        hog = max((s for r, s in zip(rects, scores) if _centred(r, side, 100)), default=-np.inf)
        if hog >= self.hog_accept or self._cnn is None:
            return Verdict(bool(hog >= self.hog_accept), "hog", float(hog))
        roi, side = _resampled_region(frame_bgr, box, face_px=80, context=2.0)
        conf = max((d.confidence for d in self._cnn(roi, 0) if _centred(d.rect, side, 80)), default=-np.inf)
        return Verdict(bool(conf >= self.cnn_accept), "cnn", float(conf))

    def close(self) -> None:
        self._cnn = None
        self._hog = None


def _centred(rect, side: int, face_px: float) -> bool:
    """A detection in a resampled region belongs to the candidate: centre within 0.3 face, size within 2×."""
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    size = rect.right() - rect.left()
    return (abs(cx - side / 2) < 0.3 * face_px and abs(cy - side / 2) < 0.3 * face_px
            and 0.5 * face_px < size < 2.0 * face_px)


def _resampled_region(frame_bgr: np.ndarray, box: np.ndarray, face_px: float, context: float):
    """RGB uint8 square region around ``box`` (``context`` box sides), resampled so the box is ``face_px``."""
    import cv2  # noqa: PLC0415

    side_in = float(box[2] - box[0])
    k = face_px / max(side_in, 1.0)
    side = int(round(context * face_px))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    m = np.array([[k, 0.0, side / 2 - k * cx], [0.0, k, side / 2 - k * cy]])
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    region = cv2.warpAffine(frame_bgr, m, (side, side), flags=interp, borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(region[..., ::-1]), side


def _check68(landmarks68: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (NUM_POINTS, 2):
        raise ValueError(f"expected dlib's 68 landmarks [68, 2], got {list(lm.shape)}")
    return lm
