"""A camera clip made from a real face photo: the face moves (sway, nod, small turn of the frame, scale), so the
live path, its benchmarks and soak runs see real landmarks on a moving head without a recorded video.

`moving_face_clip(photo, n_frames)` yields uint8 [H, W, 3] BGR frames; frame i is a pure function of i (repeatable).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np

DEFAULT_FACE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "faces" / "01.jpg"


def load_face(photo: str | Path | None = None, height: int = 300) -> np.ndarray:
    """The photo (default: the shared 01.jpg) resized to `height` rows, uint8 BGR; ValueError if unreadable."""
    import cv2  # noqa: PLC0415

    path = Path(photo) if photo is not None else DEFAULT_FACE
    img = cv2.imread(str(path))
    if img is None:
        raise ValueError(f"cannot read a face photo from {path}; pass a jpg/png with a face")
    s = height / img.shape[0]
    return cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=cv2.INTER_AREA)


def face_pose(i: int, fps: float = 30.0, amplitude: float = 1.0) -> tuple[float, float, float, float]:
    """(dx, dy, angle_deg, scale) of frame i: a slow sway (0.25 Hz), nod (0.4 Hz), roll (0.15 Hz), zoom (0.1 Hz)."""
    t = i / fps
    return (60.0 * amplitude * math.sin(2 * math.pi * 0.25 * t), 20.0 * amplitude * math.sin(2 * math.pi * 0.4 * t),
            8.0 * amplitude * math.sin(2 * math.pi * 0.15 * t), 1.0 + 0.05 * amplitude * math.sin(2 * math.pi * 0.1 * t))


def moving_face_clip(photo: str | Path | None = None,
                     n_frames: int | None = None,       # None -> endless
                     size: tuple[int, int] = (480, 640),  # (H, W) of the frames
                     fps: float = 30.0,
                     amplitude: float = 1.0,            # 0 -> a still face
                     face_height: int = 300) -> Iterator[np.ndarray]:
    """Frames of the face moving over a fixed textured background (see `face_pose`)."""
    import cv2  # noqa: PLC0415

    face = load_face(photo, face_height)
    h, w = size
    background = np.random.default_rng(0).integers(40, 200, (h, w, 3), dtype=np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 3)
    fh, fw = face.shape[:2]
    i = 0
    while n_frames is None or i < n_frames:
        dx, dy, angle, scale = face_pose(i, fps, amplitude)
        m = cv2.getRotationMatrix2D((fw / 2, fh / 2), angle, scale)
        m[:, 2] += (w / 2 - fw / 2 + dx, h / 2 - fh / 2 + dy)
        frame = background.copy()
        cv2.warpAffine(face, m, (w, h), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
        yield frame
        i += 1
