"""Paste an edited aligned crop back into the frame: inverse warp + feathered face-oval mask.

Only the bounding box of the mask's support (mapped into the frame) is touched; pixels where the mask is 0
come out bit-identical to the input frame.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from stream.face.align import AlignedFace, _compose, transform_points
from stream.face.landmarks import FACE_OVAL
from stream.frames import check_frame

MASK_WORK_SIZE = 256  # masks are drawn at ≤ this side and resized (they are smooth)
PASTE_MODES = ("replace", "residual")


def paste_mask(aligned: AlignedFace, feather_px: Optional[float] = None) -> np.ndarray:
    """The mask `paste_back` uses for a face: `face_mask` drawn at min(aligned.size, MASK_WORK_SIZE) (masks are
    smooth; paste_back warps a mask of any side), `feather_px` given in crop pixels at aligned.size (None: the
    default 4 % of the side). float32 [S, S] in [0, 1]."""
    size = min(aligned.size, MASK_WORK_SIZE)
    return face_mask(aligned, size, feather_px=None if feather_px is None else feather_px * size / aligned.size)


def face_mask(aligned: AlignedFace,
              size: Optional[int] = None,
              feather_px: Optional[float] = None,
              erode_px: Optional[float] = None,
              *,
              feather: Optional[float] = None) -> np.ndarray:
    """Feathered face mask in crop coordinates.

    The convex hull of the face-oval landmarks, eroded by ``erode_px`` and blurred (Gaussian, sigma =
    feather_px / 2, kernel ±3 sigma, so the mask is exactly 0 beyond ~1.5 feather_px outside the eroded oval).

    Args:
        aligned:    the face (its ``landmarks`` in crop coordinates at ``aligned.size``).
        size:       mask side S (default ``aligned.size``).
        feather_px: ramp width in pixels at size S (default 4% of S).
        erode_px:   inward shrink of the oval in pixels at size S (default 2% of S).
        feather:    alias of ``feather_px`` (the contract's name).
    Returns:
        float32 [S, S] in [0, 1].
    """
    import cv2

    size = int(aligned.size if size is None else size)
    if feather is not None:
        if feather_px is not None:
            raise ValueError("give feather_px or feather, not both")
        feather_px = feather
    feather_px = 0.04 * size if feather_px is None else float(feather_px)
    erode_px = 0.02 * size if erode_px is None else float(erode_px)
    if feather_px < 0 or erode_px < 0:
        raise ValueError(f"feather_px and erode_px must be >= 0, got {feather_px}, {erode_px}")
    work = min(size, MASK_WORK_SIZE)
    k = work / float(size)
    oval = np.asarray(aligned.landmarks, dtype=np.float64)[list(FACE_OVAL)]
    oval = (oval + 0.5) * (work / float(aligned.size)) - 0.5  # crop(S_aligned) → crop(work), pixel centres
    hull = cv2.convexHull(np.round(oval * 16).astype(np.int32))
    mask = np.zeros((work, work), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    erode = int(round(erode_px * k))
    if erode > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
        mask = cv2.erode(mask, kernel)
    mask = mask.astype(np.float32) / 255.0
    sigma = feather_px * k / 2.0
    if sigma > 0.3:
        radius = int(np.ceil(3 * sigma))
        mask = cv2.GaussianBlur(mask, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_CONSTANT)
    if work != size:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    mask[[0, -1], :] = 0.0  # the crop border never leaks into the frame
    mask[:, [0, -1]] = 0.0
    mask[mask < 1.0 / 512] = 0.0          # snap blur round-off: exact 0 outside, exact 1 in the core
    mask[mask > 1.0 - 1.0 / 512] = 1.0
    return np.clip(mask, 0.0, 1.0)


def paste_back(frame: np.ndarray,
               edited_crop: np.ndarray,
               aligned: AlignedFace,
               mask: Optional[np.ndarray] = None,
               mode: str = "replace",
               base_crop: Optional[np.ndarray] = None,
               *,
               inplace: bool = False) -> np.ndarray:
    """Blend an edited aligned crop back into the frame.

    Args:
        frame:       uint8 [H, W, 3] BGR frame the face was aligned from.
        edited_crop: uint8 [Se, Se, 3] BGR edited crop of the same quad; any resolution (e.g. 1024 from the
                     generator while ``aligned`` is 256): the transform is rescaled, the image is not.
        aligned:     the :class:`AlignedFace` (its quad and crop-space landmarks).
        mask:        float32 [Sm, Sm] in [0, 1] (any Sm), default :func:`paste_mask` of ``aligned``.
        mode:        "replace": frame ← mask·edited + (1-mask)·frame.
                     "residual": frame ← frame + mask·(edited − base_crop), i.e. G(w+αΔ) − G(w) added to the
                     real face (done in frame space: the real face is never resampled).
        base_crop:   uint8 [Se, Se, 3] unedited generator output, required for "residual".
        inplace:     write into ``frame`` instead of a copy.
    Returns:
        uint8 [H, W, 3] frame; pixels where the warped mask is 0 are unchanged.
    """
    import cv2

    frame = check_frame(frame)
    edited = _check_crop(edited_crop, "edited_crop")
    if mode not in PASTE_MODES:
        raise ValueError(f"paste mode {mode!r} is unknown; use one of {PASTE_MODES}")
    if mode == "residual":
        if base_crop is None:
            raise ValueError("residual paste needs base_crop (the unedited generator output G(w))")
        base = _check_crop(base_crop, "base_crop")
        if base.shape != edited.shape:
            raise ValueError(f"base_crop {list(base.shape)} and edited_crop {list(edited.shape)} differ in shape")
    if mask is None:
        mask = paste_mask(aligned)
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"mask must be a square [S, S] float array, got {list(mask.shape)}")

    out = frame if inplace else frame.copy()
    h, w = frame.shape[:2]
    roi = _mask_roi(mask, aligned, h, w)
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    to_roi = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])

    # Anti-alias: a crop much larger than the face in the frame is first shrunk to about the face's size
    # (uint8 resizes are fast; INTER_AREA is linear, so shrinking edited and base then subtracting equals
    # shrinking the residual, up to rounding).
    qsize = float(np.hypot(*(aligned.quad[3] - aligned.quad[0])))
    se = edited.shape[0]
    if se > 2 * qsize:
        edited = _shrink(edited, qsize)
        if mode == "residual":
            base = _shrink(base, qsize)
        se = edited.shape[0]
    src = edited.astype(np.float32) - base.astype(np.float32) if mode == "residual" else edited
    m_src = _compose(aligned.matrix_at(se), to_roi)            # ROI pixel → src crop pixel
    m_mask = _compose(aligned.matrix_at(mask.shape[0]), to_roi)  # ROI pixel → mask pixel
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    alpha = cv2.warpAffine(mask, m_mask, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0.0)
    warped = cv2.warpAffine(src, m_src, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    region = out[y0:y1, x0:x1]
    base_f = region.astype(np.float32)
    a = alpha[..., None]
    if mode == "replace":
        blended = base_f + a * (warped.astype(np.float32) - base_f)
    else:
        blended = base_f + a * warped
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    inside = alpha > 0
    region[inside] = blended[inside]
    return out


def paste_faces(frame: np.ndarray,
                edited_crops: Sequence[np.ndarray],
                faces: Sequence[AlignedFace],
                mode: str = "replace",
                base_crops: Optional[Sequence[np.ndarray]] = None,
                masks: Optional[Sequence[Optional[np.ndarray]]] = None) -> np.ndarray:
    """Paste a batch of edited crops (one per face, any resolution) into a copy of the frame."""
    if len(edited_crops) != len(faces):
        raise ValueError(f"{len(edited_crops)} edited crops for {len(faces)} faces")
    if base_crops is not None and len(base_crops) != len(faces):
        raise ValueError(f"{len(base_crops)} base crops for {len(faces)} faces")
    out = np.asarray(frame).copy()
    for i, face in enumerate(faces):
        paste_back(out, edited_crops[i], face,
                   mask=None if masks is None else masks[i],
                   mode=mode,
                   base_crop=None if base_crops is None else base_crops[i],
                   inplace=True)
    return out


def _shrink(crop: np.ndarray, target: float) -> np.ndarray:
    """Halve a square crop (INTER_AREA 2×2 box, OpenCV's fast path) while it stays ≥ 2·target pixels."""
    import cv2

    while crop.shape[0] >= 2 * target and crop.shape[0] % 2 == 0 and crop.shape[0] >= 16:
        half = crop.shape[0] // 2
        crop = cv2.resize(crop, (half, half), interpolation=cv2.INTER_AREA)
    return crop


def _mask_roi(mask: np.ndarray, aligned: AlignedFace, h: int, w: int):
    """Frame bounding box (x0, y0, x1, y1) of the mask's support, clipped to the frame; None if empty."""
    rows = np.flatnonzero(mask.max(1) > 0)
    cols = np.flatnonzero(mask.max(0) > 0)
    if rows.size == 0:
        return None
    c0, c1, r0, r1 = cols[0] - 1, cols[-1] + 1, rows[0] - 1, rows[-1] + 1
    corners = np.array([[c0, r0], [c0, r1], [c1, r1], [c1, r0]], dtype=np.float64)
    pts = transform_points(aligned.inverse_at(mask.shape[0]), corners)
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def _check_crop(crop: np.ndarray, name: str) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
        raise ValueError(f"{name} must be a uint8 [S, S, 3] BGR crop, got {crop.dtype} {list(crop.shape)}")
    return crop
