"""Temporal-consistency maths: TL-ID / TG-ID from embeddings and the flow-based warping error on synthetic clips."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from directions.temporal import FlowEstimator, identity_consistency, valid_mask, warping_error


def _texture(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 1.5)


def _panning_clip(n=6, step=1.5):
    """A textured scene panning right by `step` px per frame (smooth, known motion)."""
    big = _texture(120, 180)
    return [cv2.warpAffine(big, np.float32([[1, 0, -step * t - 20], [0, 1, -10]]), (128, 96),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for t in range(n)]


def test_identity_consistency_self_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 64))
    src = base + 0.05 * rng.normal(size=(8, 64))
    same = identity_consistency(src, src)
    assert same["tl_id"] == pytest.approx(1.0, abs=1e-12) and same["tg_id"] == pytest.approx(1.0, abs=1e-12)
    assert same["adjacent_pairs"] == 7 and same["all_pairs"] == 28
    flicker = identity_consistency(src, src + 0.5 * rng.normal(size=src.shape))
    assert flicker["tl_id"] < 0.95 and flicker["tg_id"] < 0.95


def test_identity_consistency_skips_frames_without_a_face():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(5, 16))
    edit = src.copy()
    edit[2] = np.nan
    r = identity_consistency(src, edit)
    assert r["adjacent_pairs"] == 2 and r["all_pairs"] == 6          # pairs touching frame 2 are dropped
    assert r["tl_id"] == pytest.approx(1.0) and r["tg_id"] == pytest.approx(1.0)
    none = identity_consistency(src[:1], edit[:1])
    assert np.isnan(none["tl_id"]) and none["adjacent_pairs"] == 0
    with pytest.raises(ValueError, match="\\[T, D\\]"):
        identity_consistency(src, src[:3])


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_follows_a_pan_and_masks_little(method):
    clip = _panning_clip(2, step=2.0)
    est = FlowEstimator(method)
    # frame t shows the scene at x + 2t: a point at x in frame 1 is at x + 2 in frame 0
    forward = est(clip[1], clip[0])
    backward = est(clip[0], clip[1])
    inner = forward[16:-16, 16:-16]
    assert np.median(inner[..., 0]) == pytest.approx(2.0, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.3)
    assert np.median(backward[16:-16, 16:-16, 0]) == pytest.approx(-2.0, abs=0.3)
    mask = valid_mask(forward, backward)
    assert mask[16:-16, 16:-16].mean() > 0.9


def test_warping_error_zero_for_itself_and_grows_with_jitter():
    clip = _panning_clip(6)
    assert warping_error(clip, clip)["warp_error"] == 0.0
    rng = np.random.default_rng(0)
    jittered = [cv2.warpAffine(f, np.float32([[1, 0, rng.uniform(-3, 3)], [0, 1, rng.uniform(-3, 3)]]), (128, 96),
                               borderMode=cv2.BORDER_REFLECT) for f in clip]
    tinted = [np.clip(f.astype(int) + 20, 0, 255).astype(np.uint8) for f in clip]   # steady edit: same motion
    bad, steady = warping_error(clip, jittered), warping_error(clip, tinted)
    assert bad["warp_error"] > 10 * max(steady["warp_error"], 1e-4)
    assert bad["frames"] == 5 and 0 <= bad["occluded"] < 0.5
    region = [np.zeros((96, 128), bool)] * 6
    masked = warping_error(clip, jittered, regions=region)
    assert np.isnan(masked["region_warp_error"]) and masked["region_frames"] == 0
    with pytest.raises(ValueError, match="differ in size"):
        warping_error(clip[:2], [clip[0], clip[1][:50]])
