"""directions.reenact on planted latents: motion subspace, robust per-frame fit, Reenactor (live) and reenact_sequence.

The planted driver (directions.bench_reenact.planted_driver) is a known identity + a known low-rank motion + sparse
gross errors + small noise; the planted transfer to a target is V + β·M·(c_t − c_ref).
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from directions.bench_reenact import planted_driver, transfer_errors
from directions.reenact import (
    ReenactOptions,
    Reenactor,
    TemporalFilter,
    fit_driver,
    gaussian_taps,
    learn_motion_subspace,
    parse_layers,
    reenact_sequence,
    resolve_layers,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted():
    return planted_driver(num_ws=6, w_dim=48, frames=60, rank=3, gross=3.0, sparse_frac=0.05, seed=0)


def rel_err(got, want, scale):
    return float((got - want).norm()) / float(scale.norm())


# ------------------------------------------------------------------------------------------------ the maths


def test_robust_projection_beats_raw_offsets_and_plain_pca(planted):
    errs = transfer_errors(planted, rank=3)
    print("\nplanted transfer error (relative): " + ", ".join(f"{k} {v:.4f}" for k, v in errs.items()))
    assert errs["rpca"] < 0.5 * errs["pca"], errs
    assert errs["pca"] < errs["raw"], errs
    assert errs["rpca"] < 0.1, errs                     # the planted motion comes through
    assert errs["rpca"] < errs["rpca_linear"], errs     # the per-frame robust fit matters, not only the basis


def test_without_gross_errors_pca_and_rpca_agree():
    p = planted_driver(num_ws=4, w_dim=32, frames=40, rank=2, gross=0.0, sparse_frac=0.0, seed=1)
    errs = transfer_errors(p, rank=2)
    assert errs["rpca"] < 0.05 and errs["pca"] < 0.05, errs
    assert errs["raw"] > errs["pca"]                    # dense noise off the subspace is still removed


def test_subspace_recovers_the_planted_directions(planted):
    sub = learn_motion_subspace(planted.driver, rank=3)
    assert sub.basis.shape == (6, 48, 3) and sub.mean.shape == (6, 48)
    for layer in range(4):  # the moving layers (the last two are still in the planted driver)
        U = sub.basis[layer]
        torch.testing.assert_close(U.T @ U, torch.eye(3), atol=1e-5, rtol=0)
        M = planted.basis[layer] / planted.basis[layer].norm(dim=0)
        # principal angles between the learned and planted subspaces are small
        cosines = torch.linalg.svdvals(U.T @ M)
        assert float(cosines.min()) > 0.99, (layer, cosines)
    assert int(sub.n_iter.max()) < 500 and sub.robust


def test_still_driver_leaves_the_target_as_its_own_latent(planted):
    still = planted.identity.expand(12, -1, -1).clone()
    for method in ("rpca", "pca", "none"):
        res = reenact_sequence(still, planted.target, method=method, rank=3, smoothing=1.0)
        assert res.latents.shape == (12, 6, 48)
        torch.testing.assert_close(res.latents, planted.target.expand(12, -1, -1), atol=1e-5, rtol=0)
    # the same within tolerance when the still driver carries small encoder noise
    noisy = still + 1e-3 * torch.randn(still.shape, generator=torch.Generator().manual_seed(2))
    res = reenact_sequence(noisy, planted.target, rank=3)
    assert float((res.latents - planted.target).abs().max()) < 1e-2


def test_layer_range_moves_only_those_layers(planted):
    want = planted.target + planted.motion()
    res = reenact_sequence(planted.driver, planted.target, rank=3, layers=(1, 3))
    assert torch.equal(res.latents[:, [0, 3, 4, 5]], planted.target[[0, 3, 4, 5]].expand(60, -1, -1))
    inside = res.latents[:, 1:3]
    assert rel_err(inside, want[:, 1:3], planted.motion()[:, 1:3]) < 0.1
    assert res.summary()["layers"] == [1, 3]


def test_beta_scales_and_reference_frame_is_the_rest_pose(planted):
    one = reenact_sequence(planted.driver, planted.target, rank=3, reference=7)
    two = reenact_sequence(planted.driver, planted.target, rank=3, reference=7, beta=2.0)
    torch.testing.assert_close(two.offsets, 2 * one.offsets, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one.latents[7], planted.target, atol=1e-6, rtol=0)
    assert one.reference == 7
    want = planted.target + planted.motion(reference=7)
    assert rel_err(one.latents, want, planted.motion(reference=7)) < 0.1


def test_reference_errors_name_the_fix(planted):
    frames = list(planted.driver[:10])
    frames[0] = None
    with pytest.raises(ValueError, match=r"reference frame 0 .* has no face.*first is 1"):
        reenact_sequence(frames, planted.target, rank=3, reference=0)
    with pytest.raises(ValueError, match="past the driver's end"):
        reenact_sequence(frames, planted.target, rank=3, reference=10)
    assert reenact_sequence(frames, planted.target, rank=3).reference == 1  # default: first frame with a face
    with pytest.raises(ValueError, match=r"too few for a rank-4 .* --rank 2"):
        reenact_sequence(planted.driver[:3], planted.target, rank=4)
    with pytest.raises(ValueError, match="no driver frame has a face"):
        reenact_sequence([None, None], planted.target)


def test_options_validation_and_layers_parsing():
    assert parse_layers("4:8") == (4, 8) and parse_layers(":6") == (0, 6) and parse_layers("3") == (3, 4)
    assert parse_layers(None) is None and parse_layers("all") is None
    assert parse_layers("2:") == (2, None) and resolve_layers(parse_layers("2:"), 18) == (2, 18)
    assert ReenactOptions(layers=(2, None)).to_dict()["layers"] == [2, None]
    with pytest.raises(ValueError, match="outside this generator's W\\+ layers 0:18"):
        resolve_layers((4, 30), 18)
    with pytest.raises(ValueError, match="not a range"):
        parse_layers("a-b")
    for bad in (dict(rank=0), dict(beta=math.nan), dict(smoothing=-1), dict(method="x"), dict(layers=(5, 2))):
        with pytest.raises(ValueError):
            ReenactOptions(**bad)
    d = ReenactOptions(layers=(0, 8), beta=0.5).to_dict()
    assert json.loads(json.dumps(d)) == d and d["layers"] == [0, 8]


# ------------------------------------------------------------------------------------------------ live (per frame)


def test_reenactor_live_matches_sequence_with_one_frame_lookahead(planted):
    opts = ReenactOptions(rank=3, smoothing=1.5)
    fit = fit_driver(planted.driver, opts)
    taps, back, _ = gaussian_taps(1.5)  # the neutral pose is averaged over the reference frame's window
    assert fit.reference == 0 and torch.equal(fit.reference_frames, planted.driver[:back + 1])
    assert fit.reference_weights == pytest.approx(taps[back:].tolist())
    r = fit.reenactor(planted.target, opts, lookahead=1)
    assert r.delay == 1
    outs = [r.step(w) for w in planted.driver]
    torch.testing.assert_close(outs[0], planted.target)    # before any look-ahead: the rest pose
    outs = outs[1:] + r.flush()
    assert len(outs) == 60 and r.state.emitted == 61
    offline = reenact_sequence(planted.driver, planted.target, rank=3, smoothing=1.5, lookahead=1)
    torch.testing.assert_close(torch.stack(outs), offline.latents, atol=1e-5, rtol=1e-5)
    # symmetric (offline) smoothing differs from the live one, but both follow the planted motion (σ = 1.5 frames
    # damps the planted sinusoids, periods down to 20 frames, by up to ~10 %: hence the looser bound)
    sym = reenact_sequence(planted.driver, planted.target, rank=3, smoothing=1.5)
    assert not torch.allclose(sym.latents, offline.latents)
    want = planted.target + planted.motion()
    e_sym, e_live = rel_err(sym.latents, want, planted.motion()), rel_err(offline.latents, want, planted.motion())
    assert e_sym < 0.25 and e_live < 0.3, (e_sym, e_live)


def test_live_calibration_window_then_per_frame():
    """Live use: the subspace is learned from a calibration window, later frames are stepped one by one. The window
    must show every motion (here each planted coefficient runs >= 1.5 sine cycles in it): a motion it never saw is
    not in the subspace and does not transfer."""
    p = planted_driver(num_ws=6, w_dim=48, frames=90, rank=3, cycles=(3.0, 6.0), seed=0)
    opts = ReenactOptions(rank=3)
    r = fit_driver(p.driver[:45], opts).reenactor(p.target, opts, lookahead=1)
    live = torch.stack([r.step(w) for w in p.driver[45:]])
    assert rel_err(live, p.target + p.motion()[45:], p.motion()[45:]) < 0.1


def test_reenactor_without_smoothing_has_no_delay(planted):
    sub = learn_motion_subspace(planted.driver, rank=3)
    r = Reenactor(sub, reference=planted.driver[0], target=planted.target)
    assert r.delay == 0
    outs = torch.stack([r.step(w[None]) for w in planted.driver])  # [1, num_ws, w_dim] frames are taken too
    assert r.flush() == []
    offline = reenact_sequence(planted.driver, planted.target, rank=3)
    torch.testing.assert_close(outs, offline.latents, atol=1e-5, rtol=1e-5)


def test_lost_driver_face_holds_the_last_pose_and_says_so(planted):
    sub = learn_motion_subspace(planted.driver, rank=3)
    r = Reenactor(sub, reference=planted.driver[0], target=planted.target)
    before = r.step(planted.driver[5])
    assert not r.state.lost and r.state.message == "driving"
    held = [r.step(None) for _ in range(3)]
    for h in held:
        assert torch.equal(h, before)
    assert r.state.lost and r.state.lost_run == 3 and r.state.held == 3
    assert "holding the last pose (3 frames)" in r.state.message
    assert r.state.to_dict()["message"] == r.state.message
    after = r.step(planted.driver[20])
    assert not r.state.lost and r.state.lost_run == 0 and not torch.equal(after, before)
    # offline: frames without a face are held, frame count kept
    frames = list(planted.driver[:20])
    frames[8] = frames[9] = None
    res = reenact_sequence(frames, planted.target, rank=3)
    assert res.latents.shape[0] == 20 and res.held.tolist() == [i in (8, 9) for i in range(20)]
    assert torch.equal(res.latents[8], res.latents[7]) and torch.equal(res.latents[9], res.latents[7])


# ------------------------------------------------------------------------------------------------ smoothing


def test_temporal_filter_delay_causality_and_constants():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, generator=g) for _ in range(12)]
    for look in (0, 1):
        f = TemporalFilter(sigma=2.0, lookahead=look)
        assert f.delay == look
        outs = [f.push(x) for x in xs]
        assert outs[:look] == [None] * look
        outs = outs[look:] + f.flush()
        assert len(outs) == 12
        # changing frame 9 onwards leaves every output before 9 − look unchanged: at most `look` frames ahead
        f2 = TemporalFilter(sigma=2.0, lookahead=look)
        outs2 = [f2.push(x if i < 9 else x + 10) for i, x in enumerate(xs)][look:] + f2.flush()
        for i in range(9 - look):
            torch.testing.assert_close(outs[i], outs2[i])
        assert not torch.allclose(outs[9 - look], outs2[9 - look])
    const = TemporalFilter(sigma=1.0, lookahead=None)
    got = [const.push(torch.full((2,), 4.0)) for _ in range(5)] + const.flush()
    assert all(torch.allclose(v, torch.full((2,), 4.0)) for v in got if v is not None)
    off = TemporalFilter(sigma=0.0)
    assert off.delay == 0 and torch.equal(off.push(xs[0]), xs[0])


def test_smoothing_removes_dense_noise_offline():
    p = planted_driver(num_ws=4, w_dim=32, frames=80, rank=2, gross=0.0, sparse_frac=0.0, noise=0.3, seed=3)
    want = p.target + p.motion()
    raw = reenact_sequence(p.driver, p.target, rank=2)
    smooth = reenact_sequence(p.driver, p.target, rank=2, smoothing=1.5)
    e_raw, e_smooth = rel_err(raw.latents, want, p.motion()), rel_err(smooth.latents, want, p.motion())
    assert e_smooth < 0.8 * e_raw, (e_raw, e_smooth)


def test_summary_is_json(planted):
    res = reenact_sequence(planted.driver, planted.target, rank=3, smoothing=1.0)
    s = res.summary()
    assert json.loads(json.dumps(s)) == s
    assert s["options"]["rank"] == 3 and s["options"]["smoothing"] == 1.0 and s["frames"] == 60
    assert s["subspace"]["method"] == "rpca" and len(s["subspace"]["energy"]) == 6
