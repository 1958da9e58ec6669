"""The target of a live reenactment: the photo whose face a camera drives, its face found and aligned once.

    target = find_target(photo, crop_size, landmarker=None, feather_px=None)   # LiveTarget (ValueError: no face)

`stream.reenact_live.ReenactSession` then inverts the aligned crop with the editor (a few ReStyle steps: each
pass's result goes to `target.take_pass`) and pastes every render into `target.photo` with `target.mask`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.frames import check_frame


@dataclass
class LiveTarget:
    """The target photo, its face and what the editor made of it."""

    photo: np.ndarray             # uint8 [H, W, 3] BGR: every output frame has this size
    aligned: Any                  # stream.face.align.AlignedFace at the editor's crop size
    mask: np.ndarray              # float32 [s, s] in [0, 1]: the feathered paste mask
    memory: Any = None            # the editor's memory of the target (its ReStyle steps)
    steps: int = 0                # editor passes done on it
    ws: np.ndarray | None = None  # float32 [num_ws, w_dim]: V_target after the last pass
    base: np.ndarray | None = None  # uint8 [S, S, 3] BGR: G(V_target), the residual paste's base
    ready: bool = False           # inverted: V_target and G(V_target) are final

    def take_pass(self, e, steps: int) -> bool:
        """What one editor pass made of the target (a `stream.editor.FaceEdit`): its latent, G(latent) and memory.
        True once inverted: after `steps` passes, or after one with a stateless encoder (no memory)."""
        if e.ws is None:
            raise RuntimeError("the editor returned no latent; reenactment needs an editor with networks")
        self.memory, self.ws, self.base = e.memory, e.ws, e.base
        self.steps += 1
        self.ready = self.steps >= steps or e.memory is None  # a stateless encoder inverts in one pass
        return self.ready


def find_target(photo: np.ndarray, crop_size: int, landmarker=None, feather_px: float | None = None,
                name: str = "the target photo") -> LiveTarget:
    """The largest face of the photo (still-image landmarks), aligned at `crop_size`, with its paste mask."""
    from stream.face.align import align_largest_face  # noqa: PLC0415
    from stream.face.paste import paste_mask  # noqa: PLC0415

    photo = check_frame(photo)
    aligned = align_largest_face(photo, crop_size, landmarker, name)
    return LiveTarget(photo=np.ascontiguousarray(photo), aligned=aligned, mask=paste_mask(aligned, feather_px))
