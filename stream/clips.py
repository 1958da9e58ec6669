"""A camera clip made from a real face photo: the face moves (sway, nod, small turn of the frame, scale), so the
live path, its benchmarks and soak runs see real landmarks on a moving head without a recorded video.

`moving_face_clip(photo, n_frames)` yields uint8 [H, W, 3] BGR frames; frame i is a pure function of i (repeatable).
`clip_landmarks(photo_lm, n_frames)` gives each frame's 478 landmarks from the photo's own (moved by the same
transform), and `ClipLandmarker` replays them: benchmarks and GPU checks can then run the live path where MediaPipe
is not installed (`python -m stream.clips --landmarks FILE` detects the photo's landmarks once, where it is).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

LANDMARK_HEIGHT = 300    # the photo height its landmarks are detected (and cached) at
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


MOTION_HZ = (0.25, 0.4, 0.15, 0.1)   # sway, nod, roll, zoom


def face_pose(i: int, fps: float = 30.0, amplitude: float = 1.0, loop_s: float | None = None
              ) -> tuple[float, float, float, float]:
    """(dx, dy, angle_deg, scale) of frame i: a slow sway (0.25 Hz), nod (0.4 Hz), roll (0.15 Hz), zoom (0.1 Hz).

    loop_s: make the motion repeat every `loop_s` seconds (each rate rounded to a whole number of cycles per loop),
    so a clip of that length can be played in a loop without a jump (a jump would restart every face's memory).
    """
    t = i / fps
    hz = MOTION_HZ if loop_s is None else tuple(max(1, round(f * loop_s)) / loop_s for f in MOTION_HZ)
    return (60.0 * amplitude * math.sin(2 * math.pi * hz[0] * t), 20.0 * amplitude * math.sin(2 * math.pi * hz[1] * t),
            8.0 * amplitude * math.sin(2 * math.pi * hz[2] * t), 1.0 + 0.05 * amplitude * math.sin(2 * math.pi * hz[3] * t))


def frame_matrix(i: int, face_shape: tuple[int, int], size: tuple[int, int], fps: float = 30.0,
                 amplitude: float = 1.0, loop_s: float | None = None):
    """float64 [2, 3]: where frame i puts the (resized) photo's pixels."""
    import cv2  # noqa: PLC0415

    fh, fw = face_shape
    h, w = size
    dx, dy, angle, scale = face_pose(i, fps, amplitude, loop_s)
    m = cv2.getRotationMatrix2D((fw / 2, fh / 2), angle, scale)
    m[:, 2] += (w / 2 - fw / 2 + dx, h / 2 - fh / 2 + dy)
    return m


def moving_face_clip(photo: str | Path | None = None,
                     n_frames: int | None = None,       # None -> endless
                     size: tuple[int, int] = (480, 640),  # (H, W) of the frames
                     fps: float = 30.0,
                     amplitude: float = 1.0,            # 0 -> a still face
                     face_height: int = 300,
                     loop_s: float | None = None) -> Iterator[np.ndarray]:  # seamless loop period (see face_pose)
    """Frames of the face moving over a fixed textured background (see `face_pose`)."""
    import cv2  # noqa: PLC0415

    face = load_face(photo, face_height)
    h, w = size
    background = np.random.default_rng(0).integers(40, 200, (h, w, 3), dtype=np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 3)
    i = 0
    while n_frames is None or i < n_frames:
        m = frame_matrix(i, face.shape[:2], size, fps, amplitude, loop_s)
        frame = background.copy()
        cv2.warpAffine(face, m, (w, h), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
        yield frame
        i += 1


def photo_landmarks(photo: str | Path | None = None, face_height: int = 300) -> np.ndarray:
    """float32 [478, 2]: MediaPipe landmarks of the photo resized to `face_height` rows (still-image mode).

    Where MediaPipe is not installed (a GPU machine), `$MICROMOTION_FACE_LANDMARKS` names a .npy written here by
    `python -m stream.clips --landmarks FILE` for the same photo and height.
    """
    import os  # noqa: PLC0415

    cached = os.environ.get("MICROMOTION_FACE_LANDMARKS")
    if cached and Path(cached).is_file():
        return np.load(cached).astype(np.float32)
    from stream.face.landmarks import FaceMeshLandmarker  # noqa: PLC0415

    with FaceMeshLandmarker(max_faces=1, video_mode=False) as landmarker:
        found = landmarker.detect(load_face(photo, face_height))
    if not found:
        raise ValueError(f"no face found in {photo or DEFAULT_FACE}")
    return found[0].astype(np.float32)


def clip_landmarks(landmarks: np.ndarray, n_frames: int, size: tuple[int, int] = (480, 640), fps: float = 30.0,
                   amplitude: float = 1.0, face_shape: tuple[int, int] = (300, 300),
                   loop_s: float | None = None) -> list[np.ndarray]:
    """Each frame's landmarks (float32 [478, 2]) of `moving_face_clip`: the photo's `landmarks` (at `face_shape`,
    the resized photo's (rows, cols)) moved by the frame's transform."""
    pts = np.concatenate([landmarks, np.ones((len(landmarks), 1))], axis=1)
    return [(pts @ frame_matrix(i, face_shape, size, fps, amplitude, loop_s).T).astype(np.float32)
            for i in range(n_frames)]


class ClipLandmarker:
    """A landmarker for a known list of clip frames: `detect(frame)` returns that frame's landmarks (found by the
    frame object's identity, so the frames must be the very arrays of the list); any other frame -> no face."""

    def __init__(self, frames: list, landmarks: list):
        self._by_id = {id(f): lm for f, lm in zip(frames, landmarks)}
        self._frames = frames   # keep the arrays alive: their ids stay unique

    def detect(self, frame: np.ndarray) -> list:
        lm = self._by_id.get(id(frame))
        return [] if lm is None else [lm.copy()]

    def close(self) -> None:
        pass


def clip_with_landmarks(n_frames: int, size: tuple[int, int] = (480, 640), face_height: int = 300,
                        amplitude: float = 1.0, photo=None, loop_s: float | None = None) -> tuple[list, Any]:
    """(frames, landmarker_factory): the moving face clip and a factory of `ClipLandmarker`s that replay its
    landmarks (no detection per frame: MediaPipe is needed once, or not at all with $MICROMOTION_FACE_LANDMARKS)."""
    frames = list(moving_face_clip(photo, n_frames, size, face_height=face_height, amplitude=amplitude,
                                   loop_s=loop_s))
    face_shape = load_face(photo, face_height).shape[:2]
    k = face_height / LANDMARK_HEIGHT   # landmarks are found (or cached) once, at LANDMARK_HEIGHT rows
    photo_lm = (photo_landmarks(photo, LANDMARK_HEIGHT) + 0.5) * k - 0.5
    marks = clip_landmarks(photo_lm, n_frames, size, amplitude=amplitude, face_shape=face_shape, loop_s=loop_s)
    return frames, lambda: ClipLandmarker(frames, marks)


def main(argv=None) -> int:
    """`python -m stream.clips --landmarks FILE [--photo P]`: store the photo's landmarks (for machines without
    MediaPipe: the GPU check carries them)."""
    import argparse  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m stream.clips", description=main.__doc__.splitlines()[0])
    p.add_argument("--landmarks", required=True, metavar="FILE", help="where to write the .npy")
    p.add_argument("--photo", default=None, help="face photo (default: the shared 01.jpg)")
    args = p.parse_args(argv)
    np.save(args.landmarks, photo_landmarks(args.photo, LANDMARK_HEIGHT))
    print(args.landmarks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
