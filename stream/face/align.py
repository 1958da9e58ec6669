"""FFHQ alignment from MediaPipe landmarks, done as one affine warp.

The FFHQ recipe (NVlabs/ffhq-dataset, ``recreate_aligned_images``), with dlib's eye-contour means and outer
mouth corners replaced by their MediaPipe equivalents (see :mod:`stream.face.landmarks`)::

    eye_avg      = (eye_left + eye_right) / 2          eye_to_eye   = eye_right - eye_left
    mouth_avg    = (mouth_left + mouth_right) / 2      eye_to_mouth = mouth_avg - eye_avg
    x  = eye_to_eye - rot90(eye_to_mouth)               rot90((a, b)) = (-b, a)
    x  = x / |x| * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)
    y  = rot90(x)
    c  = eye_avg + 0.1 eye_to_mouth
    quad = [c - x - y, c - x + y, c + x + y, c + x - y]    (top-left, bottom-left, bottom-right, top-right)
    qsize = 2 |x|

FFHQ then shrinks, crops, reflect-pads (with a blur of the padding) and maps the quad to a 4096 square with
PIL's QUAD transform (on ``quad + 0.5``: PIL's pixel edges vs. dlib's pixel centres) and downsamples to
1024. All of that is one similarity transform: here a single ``cv2.warpAffine`` maps the quad straight to the
output square (top-left quad corner → outer corner of crop pixel (0, 0)). Differences, on purpose:

* faces at the frame edge get ``BORDER_REFLECT`` padding, **without** FFHQ's blur of the padded area
  (it costs two large blurs per frame, and the padded area lies outside the paste-back mask anyway);
* when the face is more than twice the output size, the face region is first shrunk with ``INTER_AREA``
  by an integer factor (FFHQ's ``shrink`` step) so the warp does not alias.

FFHQ canonical positions
------------------------
The warp is a similarity with scale ``k = S / qsize`` that sends ``c`` to the crop centre and ``x``, ``y`` to
the crop axes. For a face whose eye_to_mouth is perpendicular to eye_to_eye (a frontal, upright face), with
``e = |eye_to_eye|``, ``m = |eye_to_mouth|`` and ``r = m / e``, in crop edge coordinates ([0, S] × [0, S])::

    x̂ = eye_to_eye / e,   |x| = e · max(2, 1.8 r),   k = S / (2 |x|)
    eye_left  = S/2 + k · (-e/2, -0.1 m)        eye_right = S/2 + k · (+e/2, -0.1 m)
    mouth_avg = S/2 + k · (0, 0.9 m)

When ``r <= 2/1.8`` (the usual case) ``|x| = 2e`` and the eyes sit at x = 3S/8 and 5S/8 exactly, at
y = S/2 − S·r/40, the mouth at y = S/2 + 9S·r/40 (r = 1: eyes (384, 486.4) and (640, 486.4), mouth
(512, 742.4) in a 1024 crop). :func:`ffhq_canonical_points` returns these (in pixel-centre coordinates).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from stream.face.landmarks import eye_centers, mouth_corners
from stream.frames import check_frame

SUPPORTED_SIZES = (256, 512, 1024)


@dataclasses.dataclass
class AlignedFace:
    """One face aligned to the FFHQ crop.

    Coordinates are OpenCV pixel-centre coordinates (pixel (i, j) centred on (i, j)).
    """
    crop: np.ndarray                 # uint8 [S, S, 3] BGR aligned face.
    matrix: np.ndarray               # float64 [2, 3] frame → crop affine (similarity).
    inverse: np.ndarray              # float64 [2, 3] crop → frame affine.
    quad: np.ndarray                 # float64 [4, 2] FFHQ quad in frame coordinates (TL, BL, BR, TR).
    landmarks: np.ndarray            # float32 [478, 2] landmarks in crop coordinates.
    size: int                        # S.
    frame_landmarks: Optional[np.ndarray] = None  # float32 [478, 2] landmarks in frame coordinates.
    frame_shape: Optional[tuple] = None           # (H, W) of the frame the face came from.

    def matrix_at(self, size: int) -> np.ndarray:
        """Frame → crop affine [2, 3] for a crop of another resolution of the same quad (e.g. 1024 output)."""
        return quad_matrix(self.quad, size)

    def inverse_at(self, size: int) -> np.ndarray:
        """Crop → frame affine [2, 3] for a crop of resolution ``size`` of the same quad."""
        return invert_affine(quad_matrix(self.quad, size))


def ffhq_quad(landmarks: np.ndarray, eye_mode: str = "contour") -> np.ndarray:
    """The FFHQ oriented quad [4, 2] float64 (TL, BL, BR, TR) from [478, 2] MediaPipe landmarks (frame pixels)."""
    return quad_from_points(recipe_points(_check_landmarks(landmarks), eye_mode))


def recipe_points(landmarks: np.ndarray, eye_mode: str = "contour") -> np.ndarray:
    """The four points the FFHQ recipe reads, from [478, 2] MediaPipe landmarks: float64 [4, 2] rows
    eye_left, eye_right (eye-contour means), mouth_left, mouth_right (outer corners), image-left first."""
    eye_left, eye_right = eye_centers(landmarks, eye_mode)
    mouth_left, mouth_right = mouth_corners(landmarks)
    return np.stack([eye_left, eye_right, mouth_left, mouth_right])


def quad_from_points(points: np.ndarray) -> np.ndarray:
    """The FFHQ oriented quad [4, 2] float64 (TL, BL, BR, TR) from the recipe's four points.

    Args:
        points: [4, 2] eye_left, eye_right, mouth_left, mouth_right in frame pixels (any landmark set:
                :func:`recipe_points` for MediaPipe, :func:`stream.face.dlib68.recipe_points` for dlib's 68).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (4, 2):
        raise ValueError(f"expected the recipe's 4 points [4, 2], got {list(pts.shape)}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmarks contain NaN or inf; pass the output of a landmarker")
    eye_left, eye_right, mouth_left, mouth_right = pts
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError("degenerate landmarks: the eyes and mouth coincide; pass real face landmarks")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]).astype(np.float64)


def quad_distance(quad: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance between corresponding corners of two quads, as a fraction of the reference's side."""
    quad, reference = np.asarray(quad, np.float64), np.asarray(reference, np.float64)
    side = np.hypot(*(reference[3] - reference[0]))
    return float(np.linalg.norm(quad - reference, axis=1).mean() / max(side, 1e-9))


def face_scale(landmarks: np.ndarray) -> float:
    """Face size in "eye distance" pixels: max(|eye_to_eye|, 0.9 |eye_to_mouth|) (= qsize / 4).

    A turned head shortens the eye distance but not the eye-to-mouth distance, so this is steadier than the
    bare eye distance.
    """
    quad = ffhq_quad(landmarks)
    return float(np.hypot(*(quad[3] - quad[0])) / 4.0)


def face_size(landmarks: np.ndarray) -> float:
    """Largest side of the landmarks' bounding box (pixels, >= 1)."""
    span = landmarks.max(0) - landmarks.min(0)
    return float(max(span.max(), 1.0))


def face_too_small(landmarks: np.ndarray, min_eye_dist_px: float = 20.0) -> bool:
    """True when the face is too small to align usefully: :func:`face_scale` < ``min_eye_dist_px``.

    For an upright frontal face this is the distance between the eye centres, in frame pixels.
    """
    return face_scale(landmarks) < float(min_eye_dist_px)


def quad_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """Affine [2, 3] float64 mapping the quad (frame coords) onto an S×S crop (pixel-centre coords).

    quad[0] → (-0.5, -0.5), quad[1] → (-0.5, S-0.5), quad[3] → (S-0.5, -0.5): the quad's corners land on the
    outer corners of the crop's corner pixels (FFHQ's ``quad + 0.5`` in PIL terms).
    """
    quad = np.asarray(quad, dtype=np.float64)
    if quad.shape != (4, 2):
        raise ValueError(f"quad must be [4, 2], got {list(quad.shape)}")
    # Closed form (float64; no LAPACK call, which costs milliseconds under thread contention):
    # crop pixel (u, v) ↔ frame point quad[0] + (u + 0.5) ex + (v + 0.5) ey.
    ex = (quad[3] - quad[0]) / size
    ey = (quad[1] - quad[0]) / size
    crop_to_frame = np.array([[ex[0], ey[0], quad[0, 0] + 0.5 * (ex[0] + ey[0])],
                              [ex[1], ey[1], quad[0, 1] + 0.5 * (ex[1] + ey[1])]])
    return invert_affine(crop_to_frame)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine, float64 [2, 3]."""
    (a, b, tx), (c, d, ty) = np.asarray(matrix, dtype=np.float64)
    det = a * d - b * c
    if abs(det) < 1e-12:
        raise ValueError("singular affine transform (degenerate quad)")
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return np.array([[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine to points [..., 2]; returns float64 [..., 2]."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def align_face(frame: np.ndarray,
               landmarks478: np.ndarray,
               size: int = 256,
               *,
               quad: Optional[np.ndarray] = None,
               antialias: bool = True) -> AlignedFace:
    """Warp one face of a frame to the FFHQ crop.

    Args:
        frame:        uint8 [H, W, 3] BGR frame.
        landmarks478: [478, 2] (or [468, 2]) landmarks in frame pixels (from :class:`FaceMeshLandmarker`).
        size:         output side S (256 for the encoder, 1024 for generator-resolution paste-back).
        quad:         a precomputed (e.g. smoothed) quad; default :func:`ffhq_quad` of the landmarks.
        antialias:    shrink the face region with INTER_AREA first when the quad is > 2·S pixels.
    Returns:
        :class:`AlignedFace` with crop uint8 [S, S, 3].
    """
    import cv2

    frame = check_frame(frame)
    lm = _check_landmarks(landmarks478)
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    quad = ffhq_quad(lm) if quad is None else np.asarray(quad, dtype=np.float64)
    matrix = quad_matrix(quad, size)

    src = frame
    warp = matrix
    qsize = np.hypot(*(quad[3] - quad[0]))
    shrink = int(np.floor(qsize / size * 0.5))  # FFHQ: shrink by an integer factor when the face is > 2·S
    if antialias and shrink > 1:
        h, w = frame.shape[:2]
        x0, y0 = np.floor(quad.min(0)).astype(int) - 2 * shrink
        x1, y1 = np.ceil(quad.max(0)).astype(int) + 2 * shrink + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 >= 2 * shrink and y1 - y0 >= 2 * shrink:
            roi = frame[y0:y1, x0:x1]
            rw, rh = (x1 - x0) // shrink, (y1 - y0) // shrink
            # Trim to a multiple of `shrink` so INTER_AREA averages whole shrink×shrink blocks.
            src = cv2.resize(roi[:rh * shrink, :rw * shrink], (rw, rh), interpolation=cv2.INTER_AREA)
            # small pixel-centre u ↔ roi coordinate shrink·u + (shrink-1)/2 ↔ frame coordinate + (x0, y0)
            to_frame = np.array([[shrink, 0.0, x0 + (shrink - 1) / 2.0],
                                 [0.0, shrink, y0 + (shrink - 1) / 2.0]])
            warp = _compose(matrix, to_frame)
    crop = cv2.warpAffine(src, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return AlignedFace(
        crop=crop,
        matrix=matrix,
        inverse=invert_affine(matrix),
        quad=quad,
        landmarks=transform_points(matrix, lm).astype(np.float32),
        size=size,
        frame_landmarks=lm.astype(np.float32),
        frame_shape=tuple(frame.shape[:2]),
    )


def align_largest_face(photo: np.ndarray, size: int, landmarker=None, name: str = "the photo") -> AlignedFace:
    """The largest face of a still photo (uint8 [H, W, 3] BGR), aligned at `size` (:func:`align_face`).

    landmarker: anything with ``.detect(photo) -> [[478, 2]]`` (None: a still-image MediaPipe one, made and closed
    here). A one-line ValueError naming `name` when no face is found.
    """
    own = landmarker is None
    if own:
        from stream.face.landmarks import FaceMeshLandmarker  # noqa: PLC0415

        landmarker = FaceMeshLandmarker(max_faces=4, video_mode=False)
    try:
        faces = landmarker.detect(photo)
    finally:
        if own:
            landmarker.close()
    if not faces:
        raise ValueError(f"no face found in {name}; use a photo where one face is visible and reasonably large")
    return align_face(photo, max(faces, key=face_size), size=size)


def ffhq_canonical_points(size: int = 1024, ratio: float = 1.0, shear: float = 0.0) -> np.ndarray:
    """Where the FFHQ recipe puts the eye centres and the mouth centre in an S×S crop.

    Args:
        size:  crop side S.
        ratio: r = the component of eye_to_mouth perpendicular to eye_to_eye, over |eye_to_eye|
               (= |eye_to_mouth| / |eye_to_eye| for an upright frontal face).
        shear: the component of eye_to_mouth along eye_to_eye, over |eye_to_eye| (0 for a frontal face;
               a turned head moves the mouth sideways). See the module docstring for the shear-free formula.
    Returns:
        float64 [3, 2]: eye_left, eye_right, mouth_avg in crop pixel-centre coordinates.
    """
    # The recipe in the face's own frame: eye_avg at the origin, eye_to_eye = (1, 0).
    eye_to_eye = np.array([1.0, 0.0])
    eye_to_mouth = np.array([float(shear), float(ratio)])
    x = eye_to_eye - _rot90(eye_to_mouth)
    x = x / np.hypot(*x) * max(2.0, 1.8 * np.hypot(*eye_to_mouth))
    y = _rot90(x)
    c = 0.1 * eye_to_mouth
    k = size / (2.0 * np.hypot(*x))
    axes = np.stack([x / np.hypot(*x), y / np.hypot(*y)])  # rows: crop x and y directions
    pts = np.stack([-eye_to_eye / 2, eye_to_eye / 2, eye_to_mouth])
    return (pts - c) @ axes.T * k + size / 2.0 - 0.5  # edge → pixel-centre coordinates


def eye_mouth_points(landmarks: np.ndarray, eye_mode: str = "contour") -> np.ndarray:
    """[3, 2] float64: eye_left, eye_right, mouth_avg of [478, 2] landmarks (the points the recipe uses)."""
    el, er = eye_centers(landmarks, eye_mode)
    ml, mr = mouth_corners(landmarks)
    return np.stack([el, er, (ml + mr) * 0.5])


def eye_mouth_geometry(landmarks: np.ndarray) -> tuple[float, float]:
    """(ratio, shear) of a face for :func:`ffhq_canonical_points`: eye_to_mouth in units of eye_to_eye,
    split into its components perpendicular to and along eye_to_eye. Takes [478, 2] MediaPipe landmarks or the
    recipe's four points [4, 2] (eye_left, eye_right, mouth_left, mouth_right) of any landmark set."""
    lm = np.asarray(landmarks, dtype=np.float64)
    el, er, ml, mr = lm if lm.shape == (4, 2) else recipe_points(lm)
    e2e = er - el
    e2m = (ml + mr) / 2 - (el + er) / 2
    e2 = float(e2e @ e2e)
    shear = float(e2m @ e2e) / e2
    ratio = float(e2m @ _rot90(e2e)) / e2
    return ratio, shear


def _rot90(v: np.ndarray) -> np.ndarray:
    """FFHQ's ``np.flipud(v) * [-1, 1]``: (a, b) → (-b, a)."""
    return np.array([-v[1], v[0]], dtype=np.float64)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2×3 affine of ``outer ∘ inner``."""
    o = np.vstack([outer, [0, 0, 1]])
    i = np.vstack([inner, [0, 0, 1]])
    return (o @ i)[:2]


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] not in (468, 478):
        raise ValueError(f"expected MediaPipe landmarks [478, 2] (or [468, 2]), got {list(lm.shape)}")
    if not np.all(np.isfinite(lm)):
        raise ValueError("landmarks contain NaN or inf; pass the output of FaceMeshLandmarker.detect")
    return lm
