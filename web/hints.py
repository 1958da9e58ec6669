"""The α slider's suggested range per direction (GET /config "alpha", the Gradio sliders): a UI hint only.

Every door refuses only non-finite α or |α| > MAX_ALPHA (`stream.controls`); a direction's suggested range never
limits what an API accepts.
"""
from __future__ import annotations

import logging
import math

from stream.controls import MAX_ALPHA

log = logging.getLogger(__name__)

DEFAULT_ALPHA_RANGE = (0.0, 5.0)      # α slider range for a direction whose file records none
MAX_HINT_ALPHA = MAX_ALPHA            # |α| bound of a usable hint (the doors' hard limit)


def _nice_step(span: float) -> float:
    """A round slider step giving ~100-250 positions over `span` (1, 2 or 5 times a power of ten)."""
    raw = span / 100.0
    power = 10.0 ** math.floor(math.log10(raw))
    k = next(k for k in (5.0, 2.0, 1.0) if k * power <= raw * (1 + 1e-9))
    return float(f"{k * power:.6g}")


def alpha_hint(info: dict | None) -> dict:
    """The α slider for one direction: {"min", "max", "step", "default", "method", "source"}.

    info: `Effect.direction_info()[name]` (or None). The file's `alpha_range` [lo, hi] is used when it is two
    finite numbers lo < hi within ±MAX_HINT_ALPHA, else DEFAULT_ALPHA_RANGE ("source": "fallback"). The default
    is the file's `alpha_default` when it lies in the range, else the middle of the range's non-negative part
    ([0, 5] → 2.5, [-3, 3] → 1.5: a midpoint of 0 would be no edit at all). This is a UI hint only: the server
    accepts any finite |α| <= 100 (`stream.effect.Controls`), whatever the range says.
    """
    info = info or {}
    rng = info.get("alpha_range")
    source = "file"
    try:
        lo, hi = (float(v) for v in rng)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and max(-lo, hi) <= MAX_HINT_ALPHA):
            raise ValueError
    except (TypeError, ValueError):
        if rng is not None:
            log.warning("ignoring unusable alpha_range %r; the slider uses %s", rng, list(DEFAULT_ALPHA_RANGE))
        lo, hi = DEFAULT_ALPHA_RANGE
        source = "fallback"
    default = info.get("alpha_default")
    if not (isinstance(default, (int, float)) and not isinstance(default, bool) and lo <= default <= hi):
        default = (max(lo, 0.0) + hi) / 2 if hi > 0 else (lo + hi) / 2
    step = _nice_step(hi - lo)
    default = round(round(float(default) / step) * step, 6)
    return {"min": lo, "max": hi, "step": step, "default": min(max(default, lo), hi),
            "method": info.get("method"), "source": source}


def alpha_hints(names: list[str], direction_info: dict | None = None) -> dict:
    """{name: alpha_hint(...)} for every direction the page offers (missing metadata → the fallback)."""
    direction_info = direction_info or {}
    return {name: alpha_hint(direction_info.get(name)) for name in names}
