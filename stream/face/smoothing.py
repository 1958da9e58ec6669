"""One Euro filter (Casiraghi, Roussel, Vogel, CHI 2012), vectorised over arrays such as [478, 2] landmarks.

Per element, with sample period dt (from timestamps in seconds)::

    alpha(fc)  = 1 / (1 + tau / dt),  tau = 1 / (2 pi fc)
    dx         = (x - x_hat_prev) / dt
    dx_hat     = dx_hat_prev + alpha(d_cutoff) (dx - dx_hat_prev)
    fc         = min_cutoff + beta |dx_hat|
    x_hat      = x_hat_prev + alpha(fc) (x - x_hat_prev)

Slow motion → low cutoff → strong smoothing (no jitter); fast motion → high cutoff → little lag.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over arrays of any fixed shape (each element filtered independently)."""

    def __init__(self,
                 min_cutoff: float = 1.0,   # Hz; cutoff at rest. Lower → steadier, more lag when slow.
                 beta: float = 0.05,        # Cutoff increase per unit of speed (units of x per second).
                                            # Higher → less lag when moving fast.
                 d_cutoff: float = 1.0,     # Hz; cutoff of the speed estimate.
                 ):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One Euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got "
                             f"{min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the state: the next sample passes through unfiltered."""
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    @property
    def initialized(self) -> bool:
        return self._x is not None

    def __call__(self, x: np.ndarray, t: float, speed_scale: float = 1.0) -> np.ndarray:
        """Filter one sample.

        Args:
            x:           array (float) of the filtered shape.
            t:           timestamp in seconds (increasing).
            speed_scale: the speed |dx_hat| is divided by this before ``beta`` applies (e.g. the face size in
                         pixels, so that ``beta`` is in face sizes per second, independent of resolution).
        Returns:
            float64 array, same shape as x.
        """
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"One Euro filter got shape {list(x.shape)} after {list(self._x.shape)}; "
                             "call reset() when the tracked object changes")
        dt = float(t) - self._t
        if dt <= 0:  # repeated or out-of-order timestamp: keep the state, assume a nominal 1 ms step
            dt = 1e-3
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx) / float(speed_scale)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = float(t)
        return self._x.copy()


class LandmarkSmoother:
    """One Euro smoothing of one face's [N, 2] landmarks, with the speed measured in face sizes per second.

    One instance per tracked face; call :meth:`reset` when the face is lost.
    """

    def __init__(self,
                 min_cutoff: float = 0.8,   # Hz at rest.
                 beta: float = 3.0,         # Cutoff gain per (face size / s) of landmark speed.
                 d_cutoff: float = 1.0,     # Hz for the speed estimate.
                 ):
        self.filter = OneEuroFilter(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)

    def reset(self) -> None:
        self.filter.reset()

    @property
    def initialized(self) -> bool:
        return self.filter.initialized

    def __call__(self, landmarks: np.ndarray, t: float) -> np.ndarray:
        """Smooth [N, 2] pixel landmarks at time t (seconds) → float32 [N, 2]."""
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.ndim != 2 or lm.shape[1] != 2:
            raise ValueError(f"LandmarkSmoother expects [N, 2] landmarks, got {list(lm.shape)}")
        scale = max(float(np.ptp(lm[:, 0])), 1.0)  # face width in pixels
        return self.filter(lm, t, speed_scale=scale).astype(np.float32)


class SettlingLowPass:
    """First-order low-pass whose first samples are averaged evenly: sample n gets weight max(1/n, alpha(cutoff)).

    For a slowly varying quantity seen through noise (e.g. the offset between two landmark sets): the running mean
    settles as fast as the data allows, then the filter becomes an exponential one with the given cutoff.
    """

    def __init__(self,
                 cutoff: float = 0.15,      # Hz once settled.
                 ):
        if not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 Hz, got {cutoff!r}")
        self.cutoff = float(cutoff)
        self.reset()

    def reset(self) -> None:
        self._x: Optional[np.ndarray] = None
        self._t: Optional[float] = None
        self._n = 0

    @property
    def value(self) -> Optional[np.ndarray]:
        """The current output (None before the first sample)."""
        return None if self._x is None else self._x.copy()

    def restart(self, weight: int = 5) -> None:
        """Settle again from the current output as if it were the mean of ``weight`` samples (a change of
        target, e.g. another landmark set, is then followed in about ``weight`` samples, without a jump)."""
        if self._x is not None:
            self._n = max(1, int(weight))

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter one sample (array of a fixed shape) at time t (s) → float64 array."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or x.shape != self._x.shape:
            self._x, self._t, self._n = x.copy(), float(t), 1
            return x.copy()
        dt = max(float(t) - self._t, 1e-3)
        self._n += 1
        a = max(1.0 / self._n, _alpha(self.cutoff, dt))
        self._x = self._x + a * (x - self._x)
        self._t = float(t)
        return self._x.copy()
