"""The official FFHQ alignment, step for step: the yardstick the product's aligner is measured against.

Written from the published description of NVlabs ffhq-dataset ``download_ffhq.py`` (``recreate_aligned_images``),
which pSp / e4e / ReStyle reuse in their ``utils/alignment.py``:

1. landmarks: dlib's HOG frontal face detector on the RGB image, upsampled once (``detector(img, 1)``), then the
   68-point shape predictor on each detected box (integer points);
2. eye_left / eye_right = mean of points 36–41 / 42–47, mouth_left / mouth_right = points 48 / 54;
   eye_to_eye, eye_to_mouth; x = eye_to_eye − flipud(eye_to_mouth)·(−1, 1), normalised, times
   max(2·|eye_to_eye|, 1.8·|eye_to_mouth|); y = flipud(x)·(−1, 1); c = eye_avg + 0.1·eye_to_mouth;
   quad = (c − x − y, c − x + y, c + x + y, c + x − y);
3. crop: shrink by floor(qsize / output / 2) when > 1 (antialiased resize), crop the quad's bounding box plus a
   border of max(rint(0.1·qsize), 3), reflect-pad by max(pad, rint(0.3·qsize)) when the quad leaves the image
   (blurring the padding towards the image median), PIL QUAD transform of ``quad + 0.5`` to transform_size
   (bilinear), antialiased resize to output_size.

This module is independent of :mod:`stream.face.align` on purpose (its own quad arithmetic), so the product's
geometry is checked against a second implementation. Images here are RGB uint8 (as ``dlib.load_rgb_image``).
The product never calls it in the frame loop; ``python -m stream.face.bench_align`` and the tests do.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from stream.face.dlib68 import HogFaceDetector, ShapePredictor68


class OfficialLandmarks:
    """Step 1 of the recipe: HOG detector (upsample 1) + 68-point predictor, on RGB images."""

    def __init__(self,
                 upsample: int = 1,                 # HOG upsampling (the official scripts: 1).
                 ):
        self.detector = HogFaceDetector(upsample=upsample)
        self.predictor = ShapePredictor68()

    def __call__(self, image_rgb: np.ndarray) -> List[np.ndarray]:
        """Landmarks float64 [68, 2] of every face the HOG detector finds, best score first ([] if none)."""
        bgr = np.ascontiguousarray(np.asarray(image_rgb)[..., ::-1])
        return [self.predictor(bgr, box) for box, _ in self.detector(bgr)]

    def nearest(self, image_rgb: np.ndarray, point: np.ndarray) -> Optional[np.ndarray]:
        """Landmarks of the detected face whose eye centre is nearest ``point`` (x, y), or None."""
        faces = self(image_rgb)
        if not faces:
            return None
        return min(faces, key=lambda lm: float(np.hypot(*(lm[36:48].mean(0) - np.asarray(point)))))


def eye_mouth(landmarks68: np.ndarray):
    """(eye_left, eye_right, mouth_left, mouth_right) of dlib's 68 points, each float64 [2]."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[48].copy(), lm[54].copy()


def official_quad(landmarks68: np.ndarray) -> np.ndarray:
    """Step 2: the oriented crop quad float64 [4, 2] (top-left, bottom-left, bottom-right, top-right)."""
    eye_left, eye_right, mouth_left, mouth_right = eye_mouth(landmarks68)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def official_crop(image_rgb: np.ndarray,
                  landmarks68: np.ndarray,
                  output_size: int = 1024,
                  transform_size: int = 4096,
                  enable_padding: bool = True) -> np.ndarray:
    """Step 3: the aligned crop, uint8 RGB [output_size, output_size, 3] (PIL resampling, as the scripts)."""
    import PIL.Image  # noqa: PLC0415
    import scipy.ndimage  # noqa: PLC0415

    quad = official_quad(landmarks68)
    qsize = np.hypot(*(quad[3] - quad[0]))
    img = PIL.Image.fromarray(np.ascontiguousarray(image_rgb), "RGB")
    lanczos = PIL.Image.Resampling.LANCZOS  # the scripts' ANTIALIAS (same filter, renamed in Pillow 10)

    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(size, lanczos)
        quad = quad / shrink
        qsize = qsize / shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0),
            min(hi[0] + border, img.size[0]), min(hi[1] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - np.array(crop[:2], dtype=np.float64)

    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0),
           max(hi[0] - img.size[0] + border, 0), max(hi[1] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        blur = qsize * 0.02
        arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = PIL.Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad = quad + np.array(pad[:2], dtype=np.float64)

    img = img.transform((transform_size, transform_size), PIL.Image.Transform.QUAD, (quad + 0.5).flatten(),
                        PIL.Image.Resampling.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), lanczos)
    return np.asarray(img)


def canonical_eye_mouth(landmarks68: np.ndarray, size: int) -> np.ndarray:
    """Where the recipe puts this face's eye centres and mouth centre in a size² crop: float64 [3, 2]
    (eye_left, eye_right, mouth_avg) in pixel-centre coordinates, from the face's landmarks in its picture."""
    eye_left, eye_right, mouth_left, mouth_right = eye_mouth(landmarks68)
    points = np.stack([eye_left, eye_right, (mouth_left + mouth_right) / 2])
    quad = official_quad(landmarks68)
    origin, ex, ey = quad[0], (quad[3] - quad[0]) / size, (quad[1] - quad[0]) / size
    basis = np.stack([ex, ey], axis=1)                      # crop edge coords (u, v) → frame: origin + basis @ (u, v)
    uv = np.linalg.solve(basis, (points - origin).T).T
    return uv - 0.5                                         # edge → pixel-centre coordinates


def measured_eye_mouth(landmarks68: np.ndarray) -> np.ndarray:
    """[3, 2] eye_left, eye_right, mouth_avg of dlib's 68 points (what :func:`canonical_eye_mouth` predicts)."""
    eye_left, eye_right, mouth_left, mouth_right = eye_mouth(landmarks68)
    return np.stack([eye_left, eye_right, (mouth_left + mouth_right) / 2])
