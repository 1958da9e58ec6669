"""Temporal consistency of an edited video against its source: TL-ID, TG-ID (STIT) and a flow-based warping error.

Identity (Tzaban et al., STIT, 2022): with e_t the L2-normalised face embedding of frame t,

    TL-ID = mean_t cos(e'_t, e'_{t+1}) / mean_t cos(e_t, e_{t+1})           adjacent frames (local)
    TG-ID = mean_{i<j} cos(e'_i, e'_j) / mean_{i<j} cos(e_i, e_j)            all frame pairs (global)

e' from the edited clip, e from the source; 1 = as steady as the source, below 1 = the edit flickers in identity.
Only pairs where both frames have a face in both clips count.

Warping error (Lai et al., 2018, with the flow taken from the source): optical flow F_t from source frame t to
t−1 (OpenCV DIS or Farneback), and back; pixels failing the forward–backward check
``|F(x) + B(x + F(x))|² < 0.01 (|F|² + |B|²) + 0.5`` (Sundaram et al. / Ruder et al.) or leaving the frame are masked
as occluded. Per frame, the mean over unmasked pixels of ‖V_t(x) − V_{t−1}(x + F_t(x))‖² (RGB in [0, 1], summed
over channels), averaged over frames. It is computed for the edited clip and for the source with the same flow and
mask; ``warp_error`` = edited − source, so a clip against itself gives exactly 0 and the flow's own errors cancel
(a value below 0 means the edit is smoother than the source).

Frames: uint8 [H, W, 3] BGR (OpenCV order), as `stream` uses them.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

FLOW_METHODS = ("dis", "farneback")


# ------------------------------------------------------------------------------------------------ identity


def _pair_mean(sim: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    n = int(mask.sum())
    return (float(sim[mask].mean()) if n else float("nan")), n


def identity_consistency(source: np.ndarray, edited: np.ndarray, valid: Optional[np.ndarray] = None) -> dict:
    """TL-ID and TG-ID from per-frame embeddings.

    source, edited: float [T, D] embeddings (rows need not be normalised; NaN rows = no face).
    valid:          bool [T], frames to use (default: rows finite in both).
    Returns {"tl_id", "tg_id", "tl_source", "tl_edited", "tg_source", "tg_edited", "adjacent_pairs", "all_pairs"}
    (NaN where no pair qualifies).
    """
    from directions.embedders import normalise  # noqa: PLC0415

    s, e = np.asarray(source, np.float64), np.asarray(edited, np.float64)
    if s.shape != e.shape or s.ndim != 2:
        raise ValueError(f"source and edited embeddings must both be [T, D], got {s.shape} and {e.shape}")
    ok = np.isfinite(s).all(1) & np.isfinite(e).all(1)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    s, e = normalise(np.nan_to_num(s)).astype(np.float64), normalise(np.nan_to_num(e)).astype(np.float64)
    t = len(s)
    adjacent = np.zeros((t, t), bool)
    if t > 1:
        idx = np.arange(t - 1)
        adjacent[idx, idx + 1] = ok[:-1] & ok[1:]
    upper = np.triu(np.outer(ok, ok), k=1)
    sim_s, sim_e = s @ s.T, e @ e.T
    tl_s, n_adj = _pair_mean(sim_s, adjacent)
    tl_e, _ = _pair_mean(sim_e, adjacent)
    tg_s, n_all = _pair_mean(sim_s, upper)
    tg_e, _ = _pair_mean(sim_e, upper)
    return {
        "tl_id": tl_e / tl_s if n_adj else float("nan"),
        "tg_id": tg_e / tg_s if n_all else float("nan"),
        "tl_source": tl_s, "tl_edited": tl_e, "tg_source": tg_s, "tg_edited": tg_e,
        "adjacent_pairs": n_adj, "all_pairs": n_all,
    }


# ------------------------------------------------------------------------------------------------ flow


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2  # noqa: PLC0415

    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


class FlowEstimator:
    """Dense optical flow between two BGR frames: flow(a, b)[y, x] = (dx, dy) with a(x) ≈ b(x + flow(x))."""

    def __init__(self, method: str = "dis"):  # "dis" (cv2.DISOpticalFlow, medium preset) or "farneback".
        if method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {method!r}; choose from {', '.join(FLOW_METHODS)}")
        self.method = method
        self._dis = None

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import cv2  # noqa: PLC0415

        ga, gb = _gray(a), _gray(b)
        if self.method == "dis":
            if self._dis is None:
                self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            return self._dis.calc(ga, gb, None)
        return cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image sampled at x + flow(x) (bilinear, replicated border): brings `image` into the frame flow starts from."""
    import cv2  # noqa: PLC0415

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def valid_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels whose forward flow stays in the frame and passes the forward–backward check."""
    h, w = forward.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    tx, ty = gx + forward[..., 0], gy + forward[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    back = warp(backward, forward)
    total = forward + back
    bound = 0.01 * ((forward ** 2).sum(-1) + (back ** 2).sum(-1)) + 0.5
    return inside & ((total ** 2).sum(-1) < bound)


def frame_error(current: np.ndarray, previous: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> float:
    """Mean over mask of ‖current(x) − previous(x + flow(x))‖² (RGB in [0, 1], summed over channels); NaN if empty."""
    if not mask.any():
        return float("nan")
    diff = current.astype(np.float32) / 255.0 - warp(previous, flow).astype(np.float32) / 255.0
    return float((diff ** 2).sum(-1)[mask].mean())


@dataclasses.dataclass
class WarpingError:
    """Streaming warping error: call `add(source_frame, edited_frame, region=None)` frame by frame, then `result()`.

    region: optional bool [H, W] mask of frame t (e.g. the face): the error is then also measured inside it
    (same flow, same occlusion mask), reported as ``region_*``.
    """

    flow: str = "dis"

    def __post_init__(self):
        self._flow = FlowEstimator(self.flow)
        self._prev: Optional[tuple[np.ndarray, np.ndarray]] = None
        self.errors: dict[str, list[float]] = {"edited": [], "source": [], "region_edited": [], "region_source": []}
        self.masked_fraction: list[float] = []

    def add(self, source: np.ndarray, edited: np.ndarray, region: Optional[np.ndarray] = None) -> None:
        if source.shape != edited.shape:
            raise ValueError(f"source frame {source.shape} and edited frame {edited.shape} differ in size")
        if self._prev is not None:
            ps, pe = self._prev
            forward = self._flow(source, ps)          # t → t−1
            backward = self._flow(ps, source)         # t−1 → t
            mask = valid_mask(forward, backward)
            self.masked_fraction.append(1.0 - float(mask.mean()))
            inner = mask & region if region is not None else np.zeros_like(mask)
            for key, m in (("", mask), ("region_", inner)):
                self.errors[key + "edited"].append(frame_error(edited, pe, forward, m))
                self.errors[key + "source"].append(frame_error(source, ps, forward, m))
        self._prev = (source, edited)

    def _means(self, key: str) -> tuple[float, float, int]:
        e, s = np.array(self.errors[key + "edited"], float), np.array(self.errors[key + "source"], float)
        ok = np.isfinite(e) & np.isfinite(s)
        if not ok.any():
            return float("nan"), float("nan"), 0
        return float(e[ok].mean()), float(s[ok].mean()), int(ok.sum())

    def result(self) -> dict:
        """{"warp_error" (edited − source), "warp_error_edited", "warp_error_source", "frames", "occluded",
        and the same as "region_warp_error", … for the regions given}; NaN where nothing could be measured."""
        out = {}
        for key in ("", "region_"):
            me, ms, n = self._means(key)
            out.update({f"{key}warp_error": me - ms, f"{key}warp_error_edited": me,
                        f"{key}warp_error_source": ms, f"{key}frames": n})
        out["occluded"] = float(np.mean(self.masked_fraction)) if self.masked_fraction else float("nan")
        return out


def warping_error(source_frames, edited_frames, flow: str = "dis", regions=None) -> dict:
    """Warping error of whole clips (lists of BGR frames of equal size); regions: optional bool masks per frame."""
    acc = WarpingError(flow)
    regions = regions if regions is not None else [None] * len(source_frames)
    if not len(source_frames) == len(edited_frames) == len(regions):
        raise ValueError(f"{len(source_frames)} source frames, {len(edited_frames)} edited, {len(regions)} regions")
    for s, e, r in zip(source_frames, edited_frames, regions):
        acc.add(s, e, r)
    return acc.result()
