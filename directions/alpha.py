"""The one α policy of every door: a strength α is any finite number with |α| <= MAX_ALPHA.

The bound is a typo guard, not a quality limit: the paper's directions are used at α up to about 5–10 (their files
suggest a range in their metadata, shown by the UIs as slider hints), and far past that the generator saturates.
Every entry point checks the same bound with these helpers: `python -m stream --alpha`, `python -m directions
apply --alpha` / `eval --alphas`, and `stream.controls.Controls` (the page's data channel and the Gradio app).

Standard library only.
"""
from __future__ import annotations

import math

MAX_ALPHA = 100.0  # |alpha| above this is refused in every door


def check_alpha(value: float, what: str = "alpha") -> float:
    """`value` as a float when it is finite and |value| <= MAX_ALPHA; one-line ValueError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or abs(value) > MAX_ALPHA:
        raise ValueError(f"{what} must be a finite number in [{-MAX_ALPHA:g}, {MAX_ALPHA:g}], got {value!r} "
                         f"(the paper's directions are used at about 1 to 10)")
    return value

