"""Shared fixtures of the stream tests: real face pictures, a 640×480 frame, one still-image landmarker, tiny
random networks."""
from __future__ import annotations

import numpy as np
import pytest

FACE_FILES = ("01.jpg", "mona_lisa.jpg", "van_gouh.jpg", "david.jpg", "pope.jpg")


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """scikit-image's astronaut (RGB in skimage) as uint8 [512, 512, 3] BGR."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])


@pytest.fixture(scope="session")
def frame_640(astronaut_bgr) -> np.ndarray:
    """uint8 [480, 640, 3] BGR webcam-sized frame with the astronaut's face in it."""
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 64:576] = astronaut_bgr[:480]
    return frame


@pytest.fixture(scope="session")
def face_images(faces_dir, astronaut_bgr) -> dict:
    """name → uint8 BGR picture, for the five reference faces and the astronaut."""
    import cv2

    images = {}
    for name in FACE_FILES:
        image = cv2.imread(str(faces_dir / name))
        assert image is not None, f"cannot read {faces_dir / name}"
        images[name] = image
    images["astronaut"] = astronaut_bgr
    return images


@pytest.fixture(scope="session")
def still_landmarker():
    from stream.face.landmarks import FaceMeshLandmarker

    with FaceMeshLandmarker(video_mode=False, max_faces=2) as landmarker:
        yield landmarker


@pytest.fixture(scope="session")
def face_landmarks(face_images, still_landmarker) -> dict:
    """name → list of [478, 2] landmarks found in that picture."""
    return {name: still_landmarker.detect(image) for name, image in face_images.items()}


@pytest.fixture(scope="module")
def nets():
    """(G, E, {name: delta}): tiny random networks and two directions (`tiny_weights.build_tiny_nets`), built once
    per test module (tests may move or cast them)."""
    from tiny_weights import build_tiny_nets

    return build_tiny_nets()
