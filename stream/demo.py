"""`TintEditor`: an editor without networks (`--demo`), with the Editor's surface and the live path around it.

Each direction has its own colour; a face's edit is its crop tinted towards the colours of the chosen directions,
in proportion to |alpha_i * t| (full tint at |alpha t| = 5). Everything else -- tracking, sessions, batching,
staleness, paste-back, doors -- is the real thing, so the demo shows the page working on a machine without weights,
and tests and soak runs can tell streams apart by colour. `delay_ms` makes each pass take at least that long (a
stand-in for a slow device). The page says it is a demo (`info.notice`).
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from stream.editor import EditorInfo, FaceEdit, FaceJob

DEMO_DIRECTIONS = ("smile", "eyes_closing", "head_turn", "angry", "aging")
_COLOURS = np.array([(0, 0, 255), (255, 0, 0), (0, 255, 0), (0, 255, 255), (255, 0, 255)], np.float32)  # BGR
FULL_TINT = 5.0     # |alpha * t| at which a face is fully tinted


class TintEditor:
    """A network-free editor: `edit(jobs)` tints each crop by its coefficients (see the module docstring)."""

    def __init__(self,
                 names: Sequence[str] = DEMO_DIRECTIONS,   # direction names (one colour each, cycling)
                 crop_size: int = 256,                      # side of the aligned crops
                 delay_ms: float = 0.0,                     # each pass takes at least this long
                 mode: str = "live"):
        self.names = list(names)
        self.crop_size = int(crop_size)
        self.delay_s = float(delay_ms) / 1e3
        meta = {n: {"alpha_range": [0.0, FULL_TINT], "alpha_default": FULL_TINT / 2, "method": "demo"}
                for n in self.names}
        self.info = EditorInfo(available=True, state="demo", mode=mode, crop_size=self.crop_size,
                               notice="Demo effect: faces are tinted by colour per direction, not edited by "
                                      "StyleGAN (start without --demo for the real effect).",
                               command=None, direction_names=list(self.names), direction_meta=meta,
                               skipped_directions=[])

    def edit(self, jobs: Sequence[FaceJob]) -> list[FaceEdit]:
        t0 = time.perf_counter()
        out = [self._tint(job) for job in jobs]
        left = self.delay_s - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)
        timing = {"encode_ms": 0.0, "generate_ms": (time.perf_counter() - t0) * 1e3, "batch": len(jobs)}
        for e in out:
            e.timing = timing
        return out

    def tint_colour(self, coefficients: np.ndarray) -> tuple[np.ndarray, float]:
        """(BGR colour float32 [3], strength in [0, 1]) for one face's coefficients."""
        weights = np.abs(np.asarray(coefficients, np.float32))
        total = float(weights.sum())
        if total == 0:
            return np.zeros(3, np.float32), 0.0
        colours = _COLOURS[np.arange(len(weights)) % len(_COLOURS)]
        return (weights[:, None] * colours).sum(0) / total, min(total / FULL_TINT, 1.0)

    def _tint(self, job: FaceJob) -> FaceEdit:
        colour, k = self.tint_colour(job.coefficients)
        base = job.crop
        edit = np.clip(base.astype(np.float32) * (1 - k) + colour * k, 0, 255).round().astype(np.uint8)
        return FaceEdit(edit=edit, base=base.copy(), memory=None)
