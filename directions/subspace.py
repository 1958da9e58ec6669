"""Micromotion subspace from anchor latents → one W+ direction ΔV.

The anchors are K W+ codes of one identity at rising strength of the micromotion (text prompts "no … 100 %
smile", or frames of a video). Per W+ layer the K×w_dim matrix is cleaned by robust PCA (the low-rank part
L keeps the shared motion, the sparse part S takes per-anchor outliers), reduced to its rank-``rank``
reconstruction, and the direction is the reconstruction of the last anchor minus that of the first — the
rule of the official code (``StyleCLIP/optimization/pca.py`` + ``mixin.py``). It is applied as
V0 + α·t·ΔV (:func:`directions.files.apply`).

All layers (and all identities) go through ONE batched RPCA call.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .rpca import pca, rpca

log = logging.getLogger(__name__)

METHODS = ("rpca", "pca", "none")
LOWRANK = ("svd", "pca_lowrank")


@dataclass
class AnchorDecomposition:
    """Per-layer low-rank view of the anchors.

    anchors:  [I, K, num_ws, w_dim] float32, the rank-``rank`` reconstruction of every anchor
              (method "none": the anchors themselves).
    n_iter:   [I, num_ws] int64 RPCA iterations per layer (None unless method == "rpca").
    err:      [I, num_ws] float64 final RPCA residual per layer (None unless method == "rpca").
    lmbda:    λ used by RPCA (None unless method == "rpca").
    """

    anchors: torch.Tensor
    n_iter: Optional[torch.Tensor] = None
    err: Optional[torch.Tensor] = None
    lmbda: Optional[float] = None


def _as_anchor_batch(latents) -> torch.Tensor:
    """Anchors as float tensor [I, K, num_ws, w_dim] (a list of [num_ws, w_dim] codes is stacked to K)."""
    if isinstance(latents, (list, tuple)):
        if not latents:
            raise ValueError("from_anchors: got an empty list of anchors; pass K >= 2 latents [num_ws, w_dim]")
        latents = torch.stack([torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach()
                               for x in latents])
        if latents.ndim == 4 and latents.shape[1] == 1:  # list of [1, num_ws, w_dim]
            latents = latents[:, 0]
    elif not isinstance(latents, torch.Tensor):
        latents = torch.as_tensor(np.asarray(latents))
    latents = latents.detach()
    if latents.ndim == 3:
        latents = latents[None]
    if latents.ndim != 4:
        raise ValueError(
            f"from_anchors: latents must be [K, num_ws, w_dim] or [I, K, num_ws, w_dim], got shape {tuple(latents.shape)}")
    if not latents.is_floating_point():
        latents = latents.float()
    if not torch.isfinite(latents).all():
        raise ValueError("from_anchors: latents contain NaN or Inf; re-run the anchoring step")
    return latents


def _check_rank(K: int, w_dim: int, rank: int, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"from_anchors: method must be one of {METHODS}, got {method!r}")
    if K < 2:
        raise ValueError(f"from_anchors: need at least 2 anchors (first and last strength), got K={K}")
    if method == "none":
        return
    if rank < 1:
        raise ValueError(f"from_anchors: rank must be >= 1, got {rank}")
    if K < rank:
        raise ValueError(
            f"from_anchors: {K} anchors are fewer than the rank {rank}; use at least {rank} anchors or pass rank<={K}")
    if rank > w_dim:
        raise ValueError(f"from_anchors: rank {rank} exceeds w_dim {w_dim}")


def _reference_pca_lowrank(L: torch.Tensor, rank: int, seed: int) -> torch.Tensor:
    """The reference's reconstruction, matrix by matrix: manual_seed(seed); U,S,V = pca_lowrank(L, q, center=False).

    L [B, K, w_dim]. The global RNG state is restored afterwards.
    """
    out = torch.empty_like(L)
    with torch.random.fork_rng(devices=[L.device] if L.device.type == "cuda" else []):
        for b in range(L.shape[0]):
            torch.manual_seed(seed)
            u, s, v = torch.pca_lowrank(L[b], q=rank, center=False)
            out[b] = (u @ torch.diag(s)) @ v.T
    return out


def decompose_anchors(
    latents,                              # [K, num_ws, w_dim] or [I, K, num_ws, w_dim] (or a list of K codes)
    rank: int = 4,                        # rank of the per-layer reconstruction
    method: str = "rpca",                 # "rpca" (robust PCA then rank-r PCA), "pca" (rank-r PCA), "none"
    lowrank: str = "svd",                 # "svd": exact truncated SVD; "pca_lowrank": the reference's randomized call
    seed: int = 0,                        # seed for lowrank="pca_lowrank" (the reference seeds 0 before each layer)
    lmbda: Optional[float] = None,        # RPCA λ (None → 1/√max(K, w_dim))
    mu: Union[None, float, str] = None,   # RPCA μ (see directions.rpca.rpca)
    tol: Optional[float] = None,          # RPCA tolerance (None → the reference's stopping rule)
    max_iter: int = 1000,                 # RPCA iteration cap
    stop: str = "reference",              # RPCA stopping rule: "reference" or "relative"
    schedule: str = "fixed",              # RPCA μ schedule: "fixed" (reference) or "lin" (Lin et al. continuation)
    dtype: Optional[torch.dtype] = None,  # solver dtype (torch.float64 for a more exact decomposition)
) -> AnchorDecomposition:
    """Low-rank reconstruction of the anchors per W+ layer; every layer of every identity in one batch."""
    X = _as_anchor_batch(latents)
    I, K, num_ws, w_dim = X.shape
    _check_rank(K, w_dim, rank, method)
    if lowrank not in LOWRANK:
        raise ValueError(f"from_anchors: lowrank must be one of {LOWRANK}, got {lowrank!r}")
    if method == "none":
        return AnchorDecomposition(anchors=X.float())

    work = dtype or (torch.float64 if X.dtype == torch.float64 else torch.float32)
    D = X.to(work).permute(0, 2, 1, 3).reshape(I * num_ws, K, w_dim)  # one K×w_dim matrix per layer
    n_iter = err = used_lmbda = None
    if method == "rpca":
        res = rpca(D, lmbda=lmbda, mu=mu, tol=tol, max_iter=max_iter, dtype=work, stop=stop, schedule=schedule)
        D = res.L
        n_iter, err, used_lmbda = res.n_iter.reshape(I, num_ws), res.err.reshape(I, num_ws), res.lmbda
        log.debug("rpca over %d layers: iterations %s", I * num_ws, res.n_iter.tolist())
    if lowrank == "svd":
        R = pca(D, rank)
    else:
        R = _reference_pca_lowrank(D, rank, seed)
    anchors = R.reshape(I, num_ws, K, w_dim).permute(0, 2, 1, 3).float().contiguous()
    return AnchorDecomposition(anchors=anchors, n_iter=n_iter, err=err, lmbda=used_lmbda)


def from_anchors(
    latents,                              # [K, num_ws, w_dim] or [I, K, num_ws, w_dim] (or a list of K codes)
    rank: int = 4,
    method: str = "rpca",
    **kwargs,                             # lowrank, seed, lmbda, mu, tol, max_iter, stop, schedule, dtype: see decompose_anchors
) -> torch.Tensor:
    """Direction ΔV [num_ws, w_dim] float32 = recon(last anchor) − recon(first anchor), averaged over identities.

    latents: K anchors of one identity at rising strength [K, num_ws, w_dim], or I identities
    [I, K, num_ws, w_dim] (the per-identity deltas are averaged). Raises ValueError on bad shapes, fewer
    anchors than ``rank``, or an unknown method.
    """
    dec = decompose_anchors(latents, rank=rank, method=method, **kwargs)
    delta = dec.anchors[:, -1] - dec.anchors[:, 0]  # [I, num_ws, w_dim]
    return delta.mean(dim=0)
