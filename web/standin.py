"""A demo effect with the `stream.effect.Effect` interface, for `python -m web --demo` only.

It needs no weights and no face tracker: it tints a centred box towards red with a strength that follows
the summed |α| of the chosen directions (and the animation phase), and draws a bar whose length is α. It
exists so the page and its tests can be exercised where the real effect is unwanted (a quick look at the
page), and it says so in the page's notice. The product path uses `stream.effect.Effect`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

DEMO_DIRECTIONS = ("smile", "eyes_closing", "head_turn", "angry", "aging")


@dataclass
class DemoControls:
    """Same fields as `stream.effect.Controls`: α per direction, animation and on/off."""

    directions: dict = field(default_factory=dict)
    animate: bool = False
    period_s: float = 2.0
    t: float | None = None
    enabled: bool = True
    paste_mode: str = "replace"

    @classmethod
    def from_dict(cls, data: dict, available=DEMO_DIRECTIONS) -> "DemoControls":
        if not isinstance(data, dict):
            raise ValueError("controls must be a JSON object")
        dirs = data.get("directions", {})
        if not isinstance(dirs, dict):
            raise ValueError("controls.directions must map a direction name to α")
        for name, alpha in dirs.items():
            if name not in available:
                raise ValueError(f"unknown direction {name!r}; available: {', '.join(available)}")
            if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
                raise ValueError(f"α for {name!r} must be a finite number")
        return cls(directions={k: float(v) for k, v in dirs.items()},
                   animate=bool(data.get("animate", False)),
                   period_s=float(data.get("period_s", 2.0)),
                   t=data.get("t"),
                   enabled=bool(data.get("enabled", True)),
                   paste_mode=str(data.get("paste_mode", "replace")))


class DemoState:
    """Per-stream state: the animation clock's origin."""

    def __init__(self):
        self.t0 = time.monotonic()


class DemoEffect:
    """`process(frame_bgr uint8 [H,W,3], controls, state) -> frame_bgr` that visibly follows α."""

    available_directions = DEMO_DIRECTIONS

    def process(self, frame_bgr: np.ndarray, controls: DemoControls, state: DemoState | None = None) -> np.ndarray:
        assert frame_bgr.ndim == 3 and frame_bgr.shape[2] == 3 and frame_bgr.dtype == np.uint8, frame_bgr.shape
        out = frame_bgr.copy()
        if not controls.enabled:
            return out
        strength = sum(abs(a) for a in controls.directions.values())
        if controls.animate:
            t = controls.t if controls.t is not None else time.monotonic() - (state.t0 if state else 0.0)
            strength *= 0.5 - 0.5 * math.cos(2 * math.pi * t / max(controls.period_s, 1e-3))
        h, w = out.shape[:2]
        y0, y1, x0, x1 = h // 4, 3 * h // 4, w // 4, 3 * w // 4
        k = min(strength / 5.0, 1.0)
        box = out[y0:y1, x0:x1].astype(np.float32)
        box[..., 2] = box[..., 2] * (1 - k) + 255 * k
        out[y0:y1, x0:x1] = box.clip(0, 255).astype(np.uint8)
        out[h - 8:h - 2, 2:2 + int((w - 4) * k)] = (0, 0, 255)
        return out
