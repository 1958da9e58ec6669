"""from_anchors: the official per-layer RPCA + rank-4 reconstruction rule, ablations and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from directions.rpca import pca
from directions.subspace import decompose_anchors, from_anchors

FIXTURE_TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return dict(np.load(fixtures_dir / "rpca_reference.npz"))


@pytest.fixture(scope="module")
def latents(ref):
    return torch.from_numpy(ref["latents"])  # [K=11, num_ws=18, w_dim=512]


@pytest.mark.parametrize("lowrank", ["svd", "pca_lowrank"])
def test_reproduces_official_direction(ref, latents, lowrank):
    dec = decompose_anchors(latents, rank=4, lowrank=lowrank)
    assert dec.anchors.shape == (1,) + tuple(latents.shape) and dec.anchors.dtype == torch.float32
    np.testing.assert_array_equal(dec.n_iter[0].numpy(), ref["latents_rpca_n_iter"])
    np.testing.assert_allclose(dec.anchors[0].numpy(), ref["new_latents"], **FIXTURE_TOL)
    delta = from_anchors(latents, rank=4, method="rpca", lowrank=lowrank)
    assert delta.shape == latents.shape[1:] and delta.dtype == torch.float32
    np.testing.assert_allclose(delta.numpy(), ref["direction"], **FIXTURE_TOL)


def test_pca_lowrank_mode_leaves_global_rng_alone(latents):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    from_anchors(latents[:, :2], lowrank="pca_lowrank")
    assert torch.equal(torch.rand(3), expected)


def test_list_of_codes_equals_tensor(latents):
    as_list = [latents[k][None] for k in range(latents.shape[0])]  # the reference's list of [1, 18, 512]
    torch.testing.assert_close(from_anchors(as_list), from_anchors(latents))


def test_robust_step_beats_ablations_on_planted_direction(ref, latents):
    """The anchors are base + t·direction + noise + sparse spikes: RPCA removes the spikes, PCA and none do not."""
    true = torch.from_numpy(ref["latents_direction_true"])[:6]
    latents = latents[:, :6]  # six layers keep the run to convergence quick

    def rel(d):
        return float((d - true).norm() / true.norm())

    err_none = rel(from_anchors(latents, method="none"))
    err_pca = rel(from_anchors(latents, method="pca"))
    err_rpca = rel(from_anchors(latents, method="rpca"))
    err_conv = rel(from_anchors(latents, method="rpca", tol=1e-5))
    assert err_conv < err_rpca < 0.5 * err_pca
    assert err_pca < err_none
    assert err_conv < 0.15


def test_ablations_are_what_they_say(latents):
    x = latents[:, :3]
    torch.testing.assert_close(from_anchors(x, method="none"), x[-1] - x[0], rtol=0, atol=0)
    recon = pca(x.permute(1, 0, 2), 2).permute(1, 0, 2)  # per-layer rank-2 PCA, no robust step
    torch.testing.assert_close(from_anchors(x, rank=2, method="pca"), recon[-1] - recon[0])
    dec = decompose_anchors(x, method="pca", rank=2)
    assert dec.n_iter is None and dec.lmbda is None


def test_several_identities_average_their_deltas(latents):
    g = torch.Generator().manual_seed(0)
    other = latents + 0.5 * torch.randn(latents.shape[1:], generator=g)  # another identity, shifted base
    both = torch.stack([latents, other])[:, :, :4]  # [I=2, K, 4 layers, w_dim]
    delta = from_anchors(both)
    expected = 0.5 * (from_anchors(latents[:, :4]) + from_anchors(other[:, :4]))
    assert delta.shape == (4, latents.shape[2])
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-5)


def test_float64_solver(ref, latents):
    d64 = from_anchors(latents, dtype=torch.float64)
    assert d64.dtype == torch.float32
    np.testing.assert_allclose(d64.numpy(), ref["direction"], **FIXTURE_TOL)


@pytest.mark.parametrize(
    "shape, kwargs, match",
    [
        ((3, 4, 16), dict(rank=4), "fewer than the rank 4"),
        ((1, 4, 16), dict(rank=1), "at least 2 anchors"),
        ((4, 16), dict(), r"\[K, num_ws, w_dim\]"),
        ((1, 2, 3, 4, 16), dict(), r"\[K, num_ws, w_dim\]"),
        ((5, 4, 16), dict(method="ica"), "method"),
        ((5, 4, 16), dict(rank=0), "rank must be"),
        ((5, 4, 16), dict(lowrank="qr"), "lowrank"),
    ],
)
def test_bad_input_is_refused(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        from_anchors(torch.randn(shape), **kwargs)


def test_nan_anchors_refused():
    x = torch.randn(5, 2, 8)
    x[2, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        from_anchors(x, rank=2)
