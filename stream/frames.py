"""The one check of a video frame: what every stage of a stream (landmarks, alignment, paste-back, sessions, sinks)
accepts is a uint8 [H, W, 3] BGR numpy array."""
from __future__ import annotations

import numpy as np


def check_frame(frame, what: str = "frame") -> np.ndarray:
    """The frame itself (as a numpy array) if it is uint8 [H, W, 3]; else a one-line ValueError naming `what`,
    the dtype and shape it got, and how to convert."""
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    got = f"{frame.dtype} {list(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
    raise ValueError(f"{what} must be a uint8 [H, W, 3] BGR array, got {got}; convert it with cv2.cvtColor "
                     "(and .astype(np.uint8) from floats in [0, 255])")
