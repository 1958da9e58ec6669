"""What the user turns, per stream: directions and their strengths, animation, on/off, paste mode.

`Controls` is JSON-friendly (`from_dict` validates a browser's message with one-line `ValueError`s, `to_dict`)
and turns itself into the editor's coefficient vector: coefficient_i = alpha_i * t for each direction the editor
holds (`coefficients(names, t)`), t from the animation clock (`animation_t`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from directions.alpha import MAX_ALPHA, check_alpha  # the one alpha bound and check of every door
from directions.files import did_you_mean

PASTE_MODES = ("residual", "replace")


@dataclass
class Controls:
    """What the user turns, per frame.

    directions: direction name -> alpha (strength; several are mixed: w' = w + sum alpha_i * t * delta_i).
    animate:    True -> t sweeps 0 -> 1 -> 0 every `period_s` seconds (triangle wave); False -> t is held.
    period_s:   animation period in seconds (> 0).
    t:          held value of t in [0, 1] when not animating.
    enabled:    False -> frames pass through unchanged.
    paste_mode: "residual" (real crop + G(w') - G(w): keeps the person's own pixels) or "replace" (G(w')).
    """

    directions: dict = field(default_factory=dict)
    animate: bool = False
    period_s: float = 2.0
    t: float = 1.0
    enabled: bool = True
    paste_mode: str = "residual"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], available: Sequence[str] | None = None) -> "Controls":
        """Validated controls from a JSON-like mapping; unknown keys/directions -> one-line ValueError.

        available: the direction names the editor holds; None skips that check.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"controls must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown control(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(known))}")
        controls = cls(**{k: data[k] for k in known if k in data})
        controls.validate(available)
        return controls

    def validate(self, available: Sequence[str] | None = None) -> "Controls":
        """Check types and ranges in place (normalising numbers to float); returns self."""
        if not isinstance(self.directions, Mapping):
            raise ValueError(f"directions must be an object of name -> alpha, got {type(self.directions).__name__}")
        clean = {}
        for name, alpha in self.directions.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"direction names must be non-empty strings, got {name!r}")
            clean[name] = check_alpha(alpha, "alpha of " + repr(name))
        if available is not None:
            check_direction_names(clean, available)
        self.directions = clean
        for name in ("animate", "enabled"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self.period_s = finite("period_s", self.period_s, 1e-3, 3600.0)
        self.t = finite("t", self.t, 0.0, 1.0)
        if self.paste_mode not in PASTE_MODES:
            raise ValueError(f"unknown paste_mode {self.paste_mode!r}; use one of {', '.join(PASTE_MODES)}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def coefficients(self, names: Sequence[str], t: float) -> np.ndarray:
        """float32 [len(names)]: alpha_i * t for each direction in `names` order (0 for those not chosen)."""
        coef = np.zeros(len(names), dtype=np.float32)
        index = {n: i for i, n in enumerate(names)}
        for name, alpha in self.directions.items():
            if name not in index:
                raise ValueError(unknown_direction_message([name], names))
            coef[index[name]] = alpha * t
        return coef


def check_direction_names(chosen: Mapping[str, float] | Sequence[str], available: Sequence[str]) -> None:
    """ValueError (with "did you mean") when a chosen name is not among `available`."""
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise ValueError(unknown_direction_message(missing, available))


def unknown_direction_message(missing: Sequence[str], available: Sequence[str]) -> str:
    """'unknown direction(s) 'smiel' (did you mean 'smile'?); available: ...' -- one line."""
    parts = [repr(name) + did_you_mean(name, available) for name in missing]
    have = ", ".join(sorted(available)) or "none installed"
    return f"unknown direction(s) {', '.join(parts)}; available: {have}"


def finite(what: str, value: Any, lo: float, hi: float) -> float:
    """`value` as a float in [lo, hi]; one-line ValueError naming `what` otherwise (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{what} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return value


def animation_t(controls: Controls, elapsed_s: float) -> float:
    """t for the controls at `elapsed_s` seconds since the stream started: triangle 0 -> 1 -> 0, or held."""
    if not controls.animate:
        return float(controls.t)
    phase = (elapsed_s / controls.period_s) % 1.0
    return float(1.0 - abs(2.0 * phase - 1.0))
