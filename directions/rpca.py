"""Robust PCA (principal component pursuit) by the inexact augmented Lagrange multiplier method.

Splits a matrix D into a low-rank part L and a sparse part S, D = L + S, by solving

    minimise ‖L‖_* + λ‖S‖_1   subject to   L + S = D

(Candès, Li, Ma, Wright, "Robust principal component analysis?", J. ACM 2011; the iteration is the
inexact ALM of Lin, Chen, Ma, "The augmented Lagrange multiplier method for exact recovery of corrupted
low-rank matrices", 2010). Each iteration is one singular-value thresholding of D − S + Y/μ, one
soft-thresholding (shrinkage) of D − L + Y/μ at λ/μ, and a dual ascent step Y += μ(D − L − S).

The solver is batched over any leading dimensions: D [..., m, n] (e.g. [num_ws, K, w_dim], one matrix per
W+ layer) costs ONE batched ``torch.linalg.svd`` per iteration. Every batch element keeps its own μ, its own
stopping test and its own iteration count; an element that has converged is frozen (it stops changing and
is dropped from the batched SVD), so the result for an element does not depend on what it was batched with.

Defaults reproduce the official micromotion code (``StyleCLIP/optimization/pca.py``, ``RPCA_gpu``):

* λ = 1/√max(m, n);
* μ = m·n / (4·‖D‖²_F), kept fixed (Candès et al. §5 use m·n/(4‖D‖_1): ``mu="candes"``);
* stopping rule ``stop="reference"``: the residual measure is err = ‖D − L − S‖²_F / ‖D‖²_F and the default
  threshold is 1e-7·‖D‖²_F. That compares a *relative* error with an *absolute* threshold; for W+ codes
  (‖D‖²_F in the thousands) it stops after two iterations, far from convergence. It is kept as the default
  because the published directions were made that way; pass ``tol`` (same err) or ``stop="relative"`` for
  a converged decomposition.
* ``stop="relative"``: err = ‖D − L − S‖_F / ‖D‖_F (Candès/Lin's criterion), default tol 1e-7.
* ``schedule="lin"``: Lin, Chen, Ma's continuation instead of a fixed μ — μ0 = 1.25/‖D‖₂, Y0 = D/J(D),
  μ ← ρμ each iteration (ρ = 1.5): the same fixed point in fewer iterations (use with ``stop="relative"``).

Ablations used by ``directions.subspace``: :func:`pca` (plain truncated-SVD reconstruction) and the identity.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

log = logging.getLogger(__name__)

STOP_RULES = ("reference", "relative")
MU_RULES = ("reference", "candes")
SCHEDULES = ("fixed", "lin")


@dataclass
class RPCAResult:
    """Output of :func:`rpca`.

    L, S:   [..., m, n] low-rank and sparse parts, in the dtype the solver ran in.
    n_iter: [...] int64, iterations each batch element ran (all per-element tensors live on D's device).
    err:    [...] float64, final residual of each element, in the measure of the stopping rule used
            (``stop="reference"``: ‖D−L−S‖²_F/‖D‖²_F; ``stop="relative"``: ‖D−L−S‖_F/‖D‖_F).
    converged: [...] bool, whether the element met its tolerance within ``max_iter``.
    mu:     [...] float64, the initial penalty μ of each element (constant unless schedule="lin").
    lmbda:  float, the sparsity weight λ used.
    tol:    [...] float64, the threshold each element's err was compared against.
    """

    L: torch.Tensor
    S: torch.Tensor
    n_iter: torch.Tensor
    err: torch.Tensor
    converged: torch.Tensor
    mu: torch.Tensor
    lmbda: float
    tol: torch.Tensor


def shrink(x: torch.Tensor, tau: Union[torch.Tensor, float]) -> torch.Tensor:
    """Soft thresholding sign(x)·max(|x| − τ, 0); τ broadcasts against x."""
    return torch.sign(x) * torch.relu(torch.abs(x) - tau)


def svd_threshold(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Singular value thresholding of a batch x [B, m, n] at τ [B] (one batched SVD)."""
    if x.shape[-2] < x.shape[-1]:  # wide: decompose the tall transpose (CPU LAPACK is ~50x faster that way)
        return svd_threshold(x.mT, tau).mT
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    s = shrink(s, tau[:, None])
    return u @ (s[..., :, None] * vh)


def _as_batch(D, dtype: Optional[torch.dtype]) -> torch.Tensor:
    if not isinstance(D, torch.Tensor):
        D = torch.as_tensor(D)
    if D.ndim < 2:
        raise ValueError(f"rpca: D must be [..., m, n] with at least 2 dimensions, got shape {tuple(D.shape)}")
    if D.shape[-1] == 0 or D.shape[-2] == 0:
        raise ValueError(f"rpca: D has an empty matrix dimension, shape {tuple(D.shape)}")
    target = dtype or (D.dtype if D.is_floating_point() else torch.float32)
    if target not in (torch.float32, torch.float64):
        raise ValueError(f"rpca: dtype must be torch.float32 or torch.float64, got {target}")
    D = D.detach().to(target)
    if not torch.isfinite(D).all():
        raise ValueError("rpca: D contains NaN or Inf; clean the input matrix first")
    return D


def rpca(
    D,
    lmbda: Optional[float] = None,      # sparsity weight λ; None → 1/√max(m, n)
    mu: Union[None, float, str] = None,  # penalty μ: None/"reference" → mn/(4‖D‖²_F), "candes" → mn/(4‖D‖_1), or a number
    tol: Optional[float] = None,         # threshold on err; None → rule default (see module docstring)
    max_iter: int = 1000,                # iteration cap per element
    dtype: Optional[torch.dtype] = None,  # torch.float32 / torch.float64; None → D's float dtype
    stop: str = "reference",             # "reference" (official RPCA_gpu rule) or "relative" (Candès/Lin)
    schedule: str = "fixed",             # "fixed" μ (reference, Candès §5) or "lin": μ_k+1 = ρ·μ_k (Lin et al. IALM)
    rho: float = 1.5,                    # μ growth factor of schedule="lin"
) -> RPCAResult:
    """Robust PCA of D [..., m, n] (any leading batch dims), batched: one SVD call per iteration.

    Returns :class:`RPCAResult` with L, S [..., m, n] in the solver dtype, per-element n_iter, err, mu, tol.
    """
    if stop not in STOP_RULES:
        raise ValueError(f"rpca: stop must be one of {STOP_RULES}, got {stop!r}")
    if max_iter < 1:
        raise ValueError(f"rpca: max_iter must be >= 1, got {max_iter}")
    if schedule not in SCHEDULES:
        raise ValueError(f"rpca: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "lin" and not rho > 1.0:
        raise ValueError(f"rpca: rho must be > 1 for schedule='lin', got {rho}")
    D = _as_batch(D, dtype)
    batch_shape, (m, n) = D.shape[:-2], D.shape[-2:]
    X = D.reshape(-1, m, n)
    B = X.shape[0]
    fdt, dev = X.dtype, X.device

    lmbda = float(lmbda) if lmbda is not None else 1.0 / math.sqrt(max(m, n))
    energy = X.pow(2).sum(dim=(-2, -1))  # ‖D‖²_F per element, [B]
    nonzero = energy > 0
    safe_energy = torch.where(nonzero, energy, torch.ones_like(energy))
    Y = torch.zeros_like(X)
    if schedule == "lin":
        # Lin, Chen, Ma 2010 (Alg. 5): μ0 = 1.25/‖D‖₂, Y0 = D / max(‖D‖₂, ‖D‖∞/λ), μ grows by ρ up to 1e7·μ0
        spec = torch.linalg.matrix_norm(X if m >= n else X.mT, ord=2)
        spec = torch.where(nonzero, spec, torch.ones_like(spec))
        mu_t = 1.25 / spec if mu is None else _initial_mu(X, mu, safe_energy, m, n)
        J = torch.maximum(spec, X.abs().amax(dim=(-2, -1)) / lmbda)
        Y = X / J[:, None, None]
        mu_cap = mu_t * 1e7
    else:
        mu_t = _initial_mu(X, mu, safe_energy, m, n)
    mu_0 = mu_t.clone()
    mu_inv = 1.0 / mu_t

    if tol is not None:
        tol_t = torch.full((B,), float(tol), dtype=fdt, device=dev)
    elif stop == "reference":
        tol_t = 1e-7 * torch.abs(X).pow(2).sum(dim=(-2, -1))
    else:
        tol_t = torch.full((B,), 1e-7, dtype=fdt, device=dev)

    L = torch.zeros_like(X)
    S = torch.zeros_like(X)
    n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    err = torch.full((B,), math.inf, dtype=fdt, device=dev)
    err[~nonzero] = 0.0
    active = nonzero.clone()  # an all-zero matrix is already decomposed: L = S = 0

    for _ in range(max_iter):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        whole = idx.numel() == B
        Xa = X if whole else X[idx]
        Sa = S if whole else S[idx]
        Ya = Y if whole else Y[idx]
        mi = (mu_inv if whole else mu_inv[idx])[:, None, None]
        ma = (mu_t if whole else mu_t[idx])[:, None, None]

        La = svd_threshold(Xa - Sa + mi * Ya, mi[:, 0, 0])
        Sa = shrink(Xa - La + mi * Ya, mi * lmbda)
        R = Xa - La - Sa
        Ya = Ya + ma * R
        ea = _residual(R, Xa, stop)

        if whole:
            L, S, Y = La, Sa, Ya
        else:
            L[idx], S[idx], Y[idx] = La, Sa, Ya
        err[idx] = ea
        n_iter[idx] += 1
        if schedule == "lin":
            mu_t[idx] = torch.minimum(mu_t[idx] * rho, mu_cap[idx])
            mu_inv[idx] = 1.0 / mu_t[idx]
        active[idx] = ea > tol_t[idx]

    converged = ~active
    if active.any():
        log.warning(
            "rpca: %d of %d matrices did not reach tol within max_iter=%d (largest err %.3e)",
            int(active.sum()), B, max_iter, float(err[active].max()),
        )
    shape = tuple(batch_shape)
    return RPCAResult(
        L=L.reshape(*shape, m, n),
        S=S.reshape(*shape, m, n),
        n_iter=n_iter.reshape(shape),
        err=err.to(torch.float64).reshape(shape),
        converged=converged.reshape(shape),
        mu=mu_0.to(torch.float64).reshape(shape),
        lmbda=lmbda,
        tol=tol_t.to(torch.float64).reshape(shape),
    )


def _initial_mu(X: torch.Tensor, mu, energy: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """μ per element [B] in X's dtype."""
    B = X.shape[0]
    if mu is None or mu == "reference":
        return (m * n) / (4 * energy)
    if mu == "candes":
        l1 = X.abs().sum(dim=(-2, -1))
        return (m * n) / (4 * torch.where(l1 > 0, l1, torch.ones_like(l1)))
    if isinstance(mu, str):
        raise ValueError(f"rpca: mu must be a positive number or one of {MU_RULES}, got {mu!r}")
    if not float(mu) > 0:
        raise ValueError(f"rpca: mu must be positive, got {mu}")
    return torch.full((B,), float(mu), dtype=X.dtype, device=X.device)


def _residual(R: torch.Tensor, X: torch.Tensor, stop: str) -> torch.Tensor:
    """err per element [B] for the stopping rule: squared relative (reference) or relative Frobenius."""
    num = torch.abs(R).pow(2).sum(dim=(-2, -1))
    den = X.pow(2).sum(dim=(-2, -1))
    ratio = num / den
    return ratio if stop == "reference" else torch.sqrt(ratio)


def pca(D, rank: int, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Rank-``rank`` reconstruction of D [..., m, n] by truncated SVD, uncentred (batched).

    The ablation "PCA without the robust step"; also the exact form of the reference's
    ``torch.pca_lowrank(L, q=rank, center=False)`` reconstruction U·diag(S)·Vᵀ.
    """
    D = _as_batch(D, dtype)
    m, n = D.shape[-2:]
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"pca: rank must be in [1, min(m, n)={min(m, n)}], got {rank}")
    if m < n:  # wide: work on the tall transpose (much faster SVD on CPU)
        return pca(D.mT, rank).mT
    u, s, vh = torch.linalg.svd(D, full_matrices=False)
    return u[..., :, :rank] @ (s[..., :rank, None] * vh[..., :rank, :])


def numerical_rank(D: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Number of singular values above rtol·σ_max, per matrix of D [..., m, n] → int64 [...]."""
    s = torch.linalg.svdvals(D)
    return (s > rtol * s[..., :1]).sum(dim=-1)
