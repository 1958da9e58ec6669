"""Robust PCA: planted low-rank + sparse recovery, batching, and the official implementation's numbers."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from directions.rpca import numerical_rank, pca, rpca

FIXTURE_TOL = dict(rtol=1e-4, atol=1e-4)  # fixtures README, "Suggested tolerances"


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return dict(np.load(fixtures_dir / "rpca_reference.npz"))


def planted(n, rank, frac, seed, dtype=torch.float64):
    """Candès et al. 2011 §4.1: L0 = X Yᵀ with X, Y ~ N(0, 1/n); S0 = ±1 on a random `frac` of entries."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, rank, generator=g, dtype=dtype) / n**0.5
    Y = torch.randn(n, rank, generator=g, dtype=dtype) / n**0.5
    mask = torch.rand(n, n, generator=g, dtype=dtype) < frac
    S0 = torch.where(mask, torch.sign(torch.randn(n, n, generator=g, dtype=dtype)), torch.zeros((), dtype=dtype))
    return X @ Y.T, S0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_recovers_planted_structure(dtype):
    L0, S0 = planted(100, 5, 0.05, seed=0)
    res = rpca((L0 + S0).to(dtype), stop="relative", tol=1e-7)
    assert res.L.dtype == dtype and res.L.shape == (100, 100)
    assert bool(res.converged) and 5 < int(res.n_iter) < 1000
    assert float(res.err) <= 1e-7
    assert int(numerical_rank(res.L.double(), rtol=1e-4)) == 5
    rel_L = float((res.L.double() - L0).norm() / L0.norm())
    rel_S = float((res.S.double() - S0).norm() / S0.norm())
    assert rel_L < 1e-5, rel_L
    assert rel_S < 1e-5, rel_S
    # the support of the recovered sparse part is the planted one
    assert torch.equal(res.S.abs() > 0.5, S0.abs() > 0.5)


def test_batched_equals_per_matrix_loop():
    g = torch.Generator().manual_seed(7)
    mats = []
    for i in range(6):  # different ranks/outlier rates → different iteration counts per element
        r = 1 + i % 3
        L0 = torch.randn(11, r, generator=g) @ torch.randn(r, 64, generator=g)
        S0 = 4 * torch.sign(torch.randn(11, 64, generator=g)) * (torch.rand(11, 64, generator=g) < 0.02 * (i + 1))
        mats.append((L0 + S0).double())
    D = torch.stack(mats).reshape(2, 3, 11, 64)  # two leading batch dims
    batched = rpca(D, tol=1e-5)
    assert batched.L.shape == (2, 3, 11, 64) and batched.n_iter.shape == (2, 3)
    flat_n = batched.n_iter.reshape(-1)
    assert len(set(flat_n.tolist())) > 1, "test needs elements that converge at different iterations"
    for i, M in enumerate(mats):
        single = rpca(M, tol=1e-5)
        assert int(single.n_iter) == int(flat_n[i])
        torch.testing.assert_close(batched.L.reshape(6, 11, 64)[i], single.L, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(batched.S.reshape(6, 11, 64)[i], single.S, rtol=1e-9, atol=1e-9)
        assert float(batched.err.reshape(-1)[i]) == pytest.approx(float(single.err), rel=1e-6)


def test_converged_element_is_frozen_and_zero_matrix_is_trivial():
    g = torch.Generator().manual_seed(3)
    D = torch.randn(3, 8, 40, generator=g)
    D[1] = 0.0
    res = rpca(D, tol=1e-7)
    assert int(res.n_iter[1]) == 0 and bool(res.converged[1])
    assert torch.count_nonzero(res.L[1]) == 0 and torch.count_nonzero(res.S[1]) == 0
    # an element stops exactly where it would stop alone
    alone = rpca(D[0], tol=1e-7)
    assert int(res.n_iter[0]) == int(alone.n_iter)


@pytest.mark.parametrize("k", ["D1", "D2", "D3"])
def test_matches_official_default_rule(ref, k):
    res = rpca(torch.from_numpy(ref[k]))
    assert int(res.n_iter) == int(ref[f"{k}_n_iter"]) == 2  # the reference's tolerance quirk
    np.testing.assert_allclose(res.L.numpy(), ref[f"{k}_L"], **FIXTURE_TOL)
    np.testing.assert_allclose(res.S.numpy(), ref[f"{k}_S"], **FIXTURE_TOL)
    np.testing.assert_allclose(float(res.err), float(ref[f"{k}_final_err"]), rtol=1e-4)
    np.testing.assert_allclose(float(res.mu), float(ref[f"{k}_mu"]), rtol=1e-6)
    assert res.lmbda == pytest.approx(float(ref[f"{k}_lmbda"]), rel=1e-12)
    D = torch.from_numpy(ref[k])
    assert float(((D - res.L - res.S) ** 2).sum() / (D**2).sum()) == pytest.approx(float(res.err), rel=1e-3)


@pytest.mark.parametrize("k", ["D1", "D2", "D3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_official_with_explicit_tol(ref, k, dtype):
    res = rpca(torch.from_numpy(ref[k]), tol=float(ref["conv_tol"]), dtype=dtype)
    assert res.L.dtype == dtype
    assert abs(int(res.n_iter) - int(ref[f"{k}_n_iter_conv"])) <= 2
    np.testing.assert_allclose(res.L.double().numpy(), ref[f"{k}_L_conv"], **FIXTURE_TOL)
    np.testing.assert_allclose(res.S.double().numpy(), ref[f"{k}_S_conv"], **FIXTURE_TOL)
    assert float(res.err) <= float(ref["conv_tol"])


def test_all_layers_of_latents_in_one_batch(ref):
    D = torch.from_numpy(ref["latents"]).transpose(0, 1)  # [18, 11, 512]: one K×w_dim matrix per layer
    res = rpca(D)
    np.testing.assert_array_equal(res.n_iter.numpy(), ref["latents_rpca_n_iter"])
    np.testing.assert_allclose(res.L.numpy(), ref["latents_rpca_L"], **FIXTURE_TOL)


def test_max_iter_cap_reports_not_converged(caplog):
    L0, S0 = planted(40, 2, 0.05, seed=1)
    with caplog.at_level(logging.WARNING, logger="directions.rpca"):
        res = rpca(L0 + S0, stop="relative", tol=1e-12, max_iter=3)
    assert int(res.n_iter) == 3 and not bool(res.converged)
    assert float(res.err) > 1e-12
    assert "did not reach tol" in caplog.text


def test_candes_mu_option_also_recovers():
    L0, S0 = planted(60, 3, 0.05, seed=2)
    res = rpca(L0 + S0, mu="candes", stop="relative", tol=1e-7)
    assert float(res.mu) == pytest.approx(60 * 60 / (4 * float((L0 + S0).abs().sum())))
    assert float((res.L - L0).norm() / L0.norm()) < 1e-5


def test_lin_schedule_recovers_in_fewer_iterations():
    L0, S0 = planted(100, 5, 0.05, seed=0)
    fixed = rpca(L0 + S0, stop="relative", tol=1e-7)
    lin = rpca(L0 + S0, stop="relative", tol=1e-7, schedule="lin")
    assert bool(lin.converged) and int(lin.n_iter) < int(fixed.n_iter)
    assert float(lin.mu) == pytest.approx(1.25 / float(torch.linalg.matrix_norm(L0 + S0, ord=2)))
    assert float((lin.L - L0).norm() / L0.norm()) < 1e-5
    assert int(numerical_rank(lin.L, rtol=1e-4)) == 5
    # batched with per-element μ schedules: same as one at a time
    D = torch.stack([L0 + S0, 2 * (L0 + S0)[:, torch.randperm(100, generator=torch.Generator().manual_seed(0))]])
    both = rpca(D, stop="relative", tol=1e-7, schedule="lin")
    for i in range(2):
        one = rpca(D[i], stop="relative", tol=1e-7, schedule="lin")
        assert int(both.n_iter[i]) == int(one.n_iter)
        torch.testing.assert_close(both.L[i], one.L, rtol=1e-9, atol=1e-9)


def test_pca_ablation_is_truncated_svd():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(4, 9, 3, generator=g) @ torch.randn(4, 3, 30, generator=g)  # batch of rank-3 matrices
    torch.testing.assert_close(pca(A, 3), A, rtol=1e-4, atol=1e-4)
    R2 = pca(A, 2)
    assert torch.all(numerical_rank(R2, rtol=1e-5) == 2)
    # Eckart–Young: the residual is exactly the dropped singular value
    s = torch.linalg.svdvals(A)
    torch.testing.assert_close((A - R2).norm(dim=(-2, -1)), s[:, 2], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="rank"):
        pca(A, 10)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(5), "at least 2 dimensions"),
        (torch.zeros(0, 5), "empty"),
        (torch.tensor([[1.0, float("nan")]]), "NaN"),
    ],
)
def test_bad_input_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        rpca(bad)


def test_bad_options_are_refused():
    D = torch.randn(4, 6)
    with pytest.raises(ValueError, match="stop"):
        rpca(D, stop="fast")
    with pytest.raises(ValueError, match="max_iter"):
        rpca(D, max_iter=0)
    with pytest.raises(ValueError, match="mu"):
        rpca(D, mu="big")
    with pytest.raises(ValueError, match="dtype"):
        rpca(D, dtype=torch.float16)
    with pytest.raises(ValueError, match="schedule"):
        rpca(D, schedule="adaptive")
    with pytest.raises(ValueError, match="rho"):
        rpca(D, schedule="lin", rho=1.0)


def test_bench_functions_small():
    """The benchmark's own parts on small sizes (the real run is `python -m directions.bench`)."""
    from directions.bench import bench_batching, bench_recovery

    rows = bench_recovery(60, ["float64"], "cpu")
    assert [r["schedule"] for r in rows] == ["fixed", "lin"]
    for row in rows:
        assert row["recovered_rank"] == row["rank"] == 3 and row["rel_err_L"] < 1e-5 and row["converged"]
    rows = bench_batching(1, "cpu", layers=3, anchors=5, w_dim=32)
    assert [r["mode"] for r in rows] == ["official rule", "tol 1e-7"]
    assert all(r["same_iterations"] and r["max_abs_diff"] < 1e-4 for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(ref):
    D = torch.from_numpy(ref["latents"]).transpose(0, 1).double()
    cpu = rpca(D, tol=1e-7)
    gpu = rpca(D.cuda(), tol=1e-7)
    assert gpu.L.device.type == "cuda" and gpu.n_iter.device.type == "cuda"
    assert torch.all((gpu.n_iter.cpu() - cpu.n_iter).abs() <= 2)
    torch.testing.assert_close(gpu.L.cpu(), cpu.L, rtol=1e-4, atol=1e-4)
