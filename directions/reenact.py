"""Reenactment on W+ latents: drive a target face with the motion of a driver's frames (the paper's talking head).

Appendix D of the paper takes one reference video's motion, decoded with the video-anchored method, and applies it
to a face of another identity. Here that is a few latent operations per frame:

1. **Motion subspace** (:func:`learn_motion_subspace`): the driver's W+ codes [T, num_ws, w_dim] are, per W+ layer,
   a T×w_dim matrix ``D = identity + motion + sparse gross errors + small noise``. The matrix is centred by its
   per-coordinate median over time (robust to the gross errors), split by robust PCA (``directions.rpca.rpca``,
   run to convergence: ``stop="relative"``, Lin et al.'s μ schedule) into low-rank + sparse parts, and the top
   ``rank`` right singular vectors of the (mean-centred) low-rank part are the layer's motion basis U_l
   [w_dim, rank]. ``method="pca"`` skips the robust step (plain centred PCA of D); ``method="none"`` keeps the raw
   offsets (no subspace).
2. **Pose of a frame** (:meth:`MotionSubspace.pose`): m(w) = U·c(w) with c(w) the frame's coefficients in the
   subspace. For ``rpca`` they are fitted robustly, frame by frame: c = Uᵀ(x − s), s = shrink(x − U c, τ) with
   x = w − μ and τ = 3 × (1.4826 · median |x − U c|) re-estimated each iteration — a gross error of one frame's
   encoding is set aside instead of being projected into the motion. ``pca`` projects linearly (c = Uᵀx).
3. **Transfer** (:class:`Reenactor`): w_target_t = V_target + β·(m(w_t) − m(w_ref)) on the layers in ``layers``
   (the others stay V_target's), optionally smoothed over time by a Gaussian of σ = ``smoothing`` frames that looks
   ahead at most ``lookahead`` frames — live 1 (≤ one frame of delay), offline (:func:`reenact_sequence`) the whole
   kernel on both sides. Offline, m(w_ref) is the same Gaussian's average around the reference frame (one frame's
   encoder noise would otherwise shift every output frame).

A driver frame without a face (``None``) holds the last pose; :attr:`Reenactor.state` says so.

Shapes: W+ latents are float32 [num_ws, w_dim] (one frame) or [N, num_ws, w_dim]. Nothing here knows about
images, faces or files (``stream.reenact_job`` does the clip → latents → video job).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from typing import Optional, Sequence, Union

import torch

from .rpca import rpca

log = logging.getLogger(__name__)

METHODS = ("rpca", "pca", "none")
MAD_TO_SIGMA = 1.4826        # median absolute deviation → standard deviation of a Gaussian
OUTLIER_SIGMAS = 3.0         # a coordinate further than this many σ from the subspace is a gross error
ROBUST_ITERS = 10            # iterations of the per-frame robust fit
KERNEL_SIGMAS = 3.0          # the smoothing kernel reaches ±ceil(3σ) frames


# ------------------------------------------------------------------------------------------------ options


@dataclasses.dataclass(frozen=True)
class ReenactOptions:
    """What a reenactment result depends on (saved with every output)."""

    rank: int = 4                                  # dimension of the per-layer motion subspace
    layers: Optional[tuple] = None                 # W+ layers [start, stop) that move (stop None: to the last);
                                                   # None: all
    beta: float = 1.0                              # strength of the transferred motion (1: the driver's amplitude)
    reference: Optional[int] = None               # driver frame of the neutral pose; None: first frame with a face
    smoothing: float = 0.0                         # σ of the temporal Gaussian, in frames (0: off)
    method: str = "rpca"                           # "rpca" (robust subspace + robust fit), "pca", "none" (raw)
    lmbda: Optional[float] = None                  # RPCA sparsity weight (None: 1/√max(T, w_dim))
    max_fit_frames: int = 512                      # the subspace is learned from at most this many frames

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"reenact method {self.method!r} is unknown; use one of {', '.join(METHODS)}")
        if int(self.rank) < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not math.isfinite(float(self.beta)):
            raise ValueError(f"beta must be a finite number, got {self.beta}")
        if not (math.isfinite(float(self.smoothing)) and float(self.smoothing) >= 0):
            raise ValueError(f"smoothing must be >= 0 frames, got {self.smoothing}")
        if self.reference is not None and int(self.reference) < 0:
            raise ValueError(f"reference must be a frame index >= 0, got {self.reference}")
        if self.layers is not None:
            a, b = self.layers
            if not (0 <= int(a) and (b is None or int(a) < int(b))):
                raise ValueError(f"layers must be a range A:B with 0 <= A < B, got {a}:{'' if b is None else b}")
        if int(self.max_fit_frames) < 2:
            raise ValueError(f"max_fit_frames must be >= 2, got {self.max_fit_frames}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.layers is not None:
            d["layers"] = [int(self.layers[0]), None if self.layers[1] is None else int(self.layers[1])]
        return d

    @classmethod
    def from_dict(cls, data) -> "ReenactOptions":
        """Options from JSON (a door's form or data channel; what ``to_dict`` wrote): ``layers`` as [A, B],
        [A, None] or "A:B"; numbers may be strings. Unknown keys or bad values: a one-line ValueError."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown reenactment option(s) {', '.join(unknown)}; use {', '.join(names)}")
        kinds = {"rank": int, "beta": float, "smoothing": float, "reference": int, "lmbda": float,
                 "max_fit_frames": int, "method": str}
        out = {}
        for key, value in data.items():
            if key == "layers":
                if isinstance(value, (list, tuple)) and len(value) == 2:
                    value = (int(value[0]), None if value[1] is None else int(value[1]))
                else:
                    value = parse_layers(None if value is None else str(value))
            elif value is not None or key not in ("reference", "lmbda"):
                try:
                    value = kinds[key](value)
                except (TypeError, ValueError):
                    raise ValueError(f"reenactment option {key}={value!r} is not a {kinds[key].__name__}; "
                                     f"pass a number") from None
            out[key] = value
        return cls(**out)


def parse_layers(text: Optional[str]) -> Optional[tuple]:
    """"A:B" (also ":B", "A:", "A") → (A, B), B = None meaning "to the last layer"; None / "" / ":" / "all" → None.

    The open end is filled by :func:`resolve_layers` once num_ws is known.
    """
    if text is None or str(text).strip() in ("", ":", "all"):
        return None
    s = str(text).strip()
    try:
        if ":" in s:
            a, b = s.split(":", 1)
            start = int(a) if a.strip() else 0
            stop = int(b) if b.strip() else None
        else:
            start = int(s)
            stop = start + 1
    except ValueError:
        raise ValueError(f"--layers {text!r} is not a range; write A:B (W+ layers A to B-1), e.g. 4:8") from None
    return start, stop


def resolve_layers(layers: Optional[tuple], num_ws: int) -> tuple[int, int]:
    """(start, stop) checked against num_ws; None → (0, num_ws); a stop of None → num_ws."""
    if layers is None:
        return 0, int(num_ws)
    start = int(layers[0])
    stop = int(num_ws) if layers[1] is None else int(layers[1])
    if not 0 <= start < stop <= num_ws:
        raise ValueError(f"layers {start}:{stop} are outside this generator's W+ layers 0:{num_ws}; "
                         f"pass a range A:B with 0 <= A < B <= {num_ws}")
    return start, stop


# ------------------------------------------------------------------------------------------------ subspace


@dataclasses.dataclass
class MotionSubspace:
    """The driver's motion model: per W+ layer a mean and an orthonormal basis.

    mean:   [num_ws, w_dim] float32, the driver's mean (low-rank) latent μ.
    basis:  [num_ws, w_dim, rank] float32 orthonormal columns per layer (zeros outside ``layers``); None for
            method "none" (raw offsets).
    layers: (start, stop) W+ layers that move.
    method: "rpca" | "pca" | "none"; ``robust`` (rpca only): frames are fitted with gross errors set aside.
    frames: how many driver frames the subspace was learned from.
    energy: [num_ws] float32, share of the centred driver variance each layer's basis explains (NaN: no motion).
    n_iter: [num_ws] int64 RPCA iterations per layer (rpca only).
    """

    mean: torch.Tensor
    basis: Optional[torch.Tensor]
    layers: tuple[int, int]
    method: str
    frames: int
    energy: Optional[torch.Tensor] = None
    n_iter: Optional[torch.Tensor] = None

    @property
    def num_ws(self) -> int:
        return int(self.mean.shape[0])

    @property
    def w_dim(self) -> int:
        return int(self.mean.shape[1])

    @property
    def rank(self) -> Optional[int]:
        return None if self.basis is None else int(self.basis.shape[-1])

    @property
    def robust(self) -> bool:
        return self.method == "rpca"

    def mask(self) -> torch.Tensor:
        """[num_ws, 1] float32: 1 on the moving layers, 0 elsewhere."""
        m = torch.zeros(self.num_ws, 1, dtype=torch.float32, device=self.mean.device)
        m[self.layers[0]:self.layers[1]] = 1.0
        return m

    def pose(self, ws: torch.Tensor) -> torch.Tensor:
        """Pose of frames in the motion subspace: [N, num_ws, w_dim] (or [num_ws, w_dim]) → same shape, float32.

        rpca: U·c with c fitted robustly (gross errors set aside); pca: U·Uᵀ(w − μ); none: w − μ. Layers outside
        ``layers`` are 0. Offsets between poses are what a target receives.
        """
        single = ws.dim() == 2
        x = _as_frames(ws, self.num_ws, self.w_dim).to(self.mean.device) - self.mean
        if self.basis is None:
            out = x * self.mask()
        else:
            a, b = self.layers
            U = self.basis[a:b]                                     # [L, d, r]
            xl = x[:, a:b]                                          # [N, L, d]
            c = robust_coefficients(xl, U) if self.robust else torch.einsum("nld,ldr->nlr", xl, U)
            out = torch.zeros_like(x)
            out[:, a:b] = torch.einsum("nlr,ldr->nld", c, U)
        return out[0] if single else out


def _as_frames(ws, num_ws: int, w_dim: int) -> torch.Tensor:
    t = torch.as_tensor(ws)
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or tuple(t.shape[1:]) != (num_ws, w_dim):
        raise ValueError(f"latents must be [N, {num_ws}, {w_dim}] or [{num_ws}, {w_dim}] (num_ws, w_dim), "
                         f"got {list(t.shape)}")
    t = t.detach().float()
    if not torch.isfinite(t).all():
        raise ValueError("latents contain NaN or Inf; re-run the inversion")
    return t


def robust_coefficients(x: torch.Tensor, U: torch.Tensor, iters: int = ROBUST_ITERS,
                        k: float = OUTLIER_SIGMAS) -> torch.Tensor:
    """Coefficients c [N, L, r] of x [N, L, d] in the orthonormal bases U [L, d, r], with sparse gross errors set aside.

    Alternates c = Uᵀ(x − s) and s = shrink(x − U c, τ), τ = k·1.4826·median|x − U c| per frame and layer (the
    dense residual's scale, re-estimated each iteration): the low-rank + sparse model of robust PCA, fitted to
    one frame against a known subspace.
    """
    from .rpca import shrink  # noqa: PLC0415

    c = torch.einsum("nld,ldr->nlr", x, U)
    for _ in range(int(iters)):
        r = x - torch.einsum("nlr,ldr->nld", c, U)
        tau = k * MAD_TO_SIGMA * r.abs().median(dim=-1, keepdim=True).values
        s = shrink(r, tau)
        c = torch.einsum("nld,ldr->nlr", x - s, U)
    return c


def learn_motion_subspace(
    latents,                               # driver W+ codes [T, num_ws, w_dim] (frames with a face), float
    rank: int = 4,                         # basis size per layer (<= T − 1)
    method: str = "rpca",                  # "rpca" | "pca" | "none"
    layers: Optional[tuple] = None,        # W+ layers [start, stop) to model (stop None: to the last); None: all
    lmbda: Optional[float] = None,         # RPCA sparsity weight (None: 1/√max(T, w_dim))
    max_fit_frames: int = 512,             # learn from at most this many frames, evenly spread
    max_iter: int = 500,                   # RPCA iteration cap
) -> MotionSubspace:
    """Per-layer motion basis of the driver's latents (one batched RPCA over the moving layers)."""
    if method not in METHODS:
        raise ValueError(f"reenact method {method!r} is unknown; use one of {', '.join(METHODS)}")
    X = torch.as_tensor(latents).detach().float()
    if X.dim() != 3:
        raise ValueError(f"driver latents must be [T, num_ws, w_dim], got {list(X.shape)}")
    T, num_ws, w_dim = X.shape
    X = _as_frames(X, num_ws, w_dim)
    if T < 2:
        raise ValueError(f"the driver has {T} frame(s) with a face; a motion needs at least 2 — use a longer clip")
    a, b = resolve_layers(layers, num_ws)
    if T > max_fit_frames:
        idx = torch.linspace(0, T - 1, int(max_fit_frames)).round().long().unique()
        X = X[idx]
        log.info("learning the motion subspace from %d of %d driver frames", len(idx), T)
    n = X.shape[0]
    if method == "none":
        return MotionSubspace(mean=X.mean(0), basis=None, layers=(a, b), method=method, frames=n)
    if rank > min(n - 1, w_dim):
        raise ValueError(f"the driver has {n} frames with a face: too few for a rank-{rank} motion subspace; "
                         f"pass --rank {max(1, min(n - 1, w_dim))} or less, or use a longer clip")

    D = X[:, a:b].permute(1, 0, 2).double()                       # [L, T, d]: one matrix per moving layer
    centre = D.median(dim=1, keepdim=True).values
    D = D - centre
    n_iter = None
    if method == "rpca":
        res = rpca(D, lmbda=lmbda, stop="relative", schedule="lin", max_iter=max_iter, dtype=torch.float64)
        D = res.L
        n_iter = torch.zeros(num_ws, dtype=torch.int64)
        n_iter[a:b] = res.n_iter.cpu()
    mu = D.mean(dim=1, keepdim=True)
    Dc = D - mu
    _, s, vh = torch.linalg.svd(Dc, full_matrices=False)           # vh [L, min(T, d), d]
    basis_l = vh[:, :rank, :].transpose(1, 2)                       # [L, d, r]
    total = s.pow(2).sum(-1)
    explained = torch.where(total > 0, s[:, :rank].pow(2).sum(-1) / total.clamp_min(1e-300),
                            torch.full_like(total, float("nan")))

    mean = X.mean(0).clone()
    mean[a:b] = (centre + mu)[:, 0].float()
    basis = torch.zeros(num_ws, w_dim, rank, device=X.device)
    basis[a:b] = basis_l.float()
    energy = torch.full((num_ws,), float("nan"))
    energy[a:b] = explained.float().cpu()
    return MotionSubspace(mean=mean, basis=basis, layers=(a, b), method=method, frames=n, energy=energy,
                          n_iter=n_iter)


# ------------------------------------------------------------------------------------------------ smoothing


def gaussian_taps(sigma: float, lookahead: Optional[int] = None) -> tuple[torch.Tensor, int, int]:
    """Kernel of the temporal filter: (weights over offsets −back … +ahead, back, ahead).

    back = ceil(3σ); ahead = back when ``lookahead`` is None (symmetric, offline), else min(lookahead, back).
    σ = 0 → the identity (one tap).
    """
    if sigma <= 0:
        return torch.ones(1, dtype=torch.float64), 0, 0
    back = int(math.ceil(KERNEL_SIGMAS * sigma))
    ahead = back if lookahead is None else max(0, min(int(lookahead), back))
    k = torch.arange(-back, ahead + 1, dtype=torch.float64)
    return torch.exp(-0.5 * (k / sigma) ** 2), back, ahead


class TemporalFilter:
    """Streaming Gaussian smoothing with a bounded look-ahead: ``push`` frame t, get frame t − ahead back.

    Near the ends of the stream only the frames that exist are averaged (weights renormalised), so the offline
    result (``ahead`` = the full half-width) and the live one (``ahead`` ≤ 1) differ only in how far they look
    ahead. Values are tensors of one shape (e.g. [num_ws, w_dim]).
    """

    def __init__(self,
                 sigma: float,                      # σ in frames (0: pass-through)
                 lookahead: Optional[int] = 1,      # frames of delay allowed (None: symmetric kernel)
                 ):
        self.taps, self.back, self.ahead = gaussian_taps(float(sigma), lookahead)
        self._frames: deque = deque(maxlen=self.back + self.ahead + 1)
        self._pushed = 0      # frames pushed so far
        self._emitted = 0     # frames emitted so far

    @property
    def delay(self) -> int:
        """Frames between pushing a frame and getting it back."""
        return self.ahead

    def push(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Add frame t; return the smoothed frame t − delay, or None while the first ``delay`` frames fill in."""
        self._frames.append(x)
        self._pushed += 1
        if self._pushed <= self.ahead:
            return None
        return self._emit(last=self._pushed - 1)

    def flush(self) -> list[torch.Tensor]:
        """The frames still held back (end of the stream), smoothed with what exists."""
        out = []
        while self._emitted < self._pushed:
            out.append(self._emit(last=self._pushed - 1))
        return out

    def _emit(self, last: int) -> torch.Tensor:
        centre = self._emitted
        first_held = self._pushed - len(self._frames)             # index of self._frames[0]
        acc, wsum = None, 0.0
        for j in range(max(centre - self.back, first_held), min(centre + self.ahead, last) + 1):
            w = float(self.taps[j - centre + self.back])
            v = self._frames[j - first_held]
            acc = v * w if acc is None else acc + v * w
            wsum += w
        self._emitted += 1
        return acc / wsum


# ------------------------------------------------------------------------------------------------ per frame


@dataclasses.dataclass
class ReenactState:
    """What a :class:`Reenactor` reports after each step."""

    frames: int = 0            # driver frames seen
    held: int = 0              # frames without a driver face (pose held)
    lost: bool = False         # the last driver frame had no face
    lost_run: int = 0          # consecutive frames without a face, up to now
    emitted: int = 0           # target latents returned

    @property
    def message(self) -> str:
        if self.lost:
            return f"driver face lost: holding the last pose ({self.lost_run} frame{'s' * (self.lost_run != 1)})"
        return "driving"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "message": self.message}


def _weighted_pose(subspace: MotionSubspace, frames, weights) -> torch.Tensor:
    """Weighted mean pose [num_ws, w_dim] of K frames [K, num_ws, w_dim] (or one [num_ws, w_dim])."""
    poses = subspace.pose(_as_frames(frames, subspace.num_ws, subspace.w_dim))
    w = torch.ones(len(poses)) if weights is None else torch.as_tensor(weights, dtype=torch.float32).flatten()
    if w.numel() != len(poses) or not bool((w >= 0).all()) or float(w.sum()) <= 0:
        raise ValueError(f"reference_weights must be {len(poses)} non-negative numbers, not all 0")
    w = (w / w.sum()).to(poses.device)
    return torch.einsum("k,kld->ld", w, poses)


class Reenactor:
    """Per-frame reenactment: ``step(w_driver_t)`` → the target's latent, at most ``delay`` frames behind.

    w_target = V_target + β·(pose(w_t) − pose(w_ref)), smoothed over time (see :class:`TemporalFilter`). A
    driver frame without a face (``None``) repeats the last pose. Before the first ``delay`` steps have passed,
    ``step`` returns V_target itself (the rest pose), so a live stream always gets a latent.
    """

    def __init__(self,
                 subspace: MotionSubspace,                    # the driver's motion model
                 reference: torch.Tensor,                     # driver's neutral latent w_ref [num_ws, w_dim],
                                                              # or K frames around it [K, num_ws, w_dim]
                 target: torch.Tensor,                        # the target's latent V_target [num_ws, w_dim]
                 beta: float = 1.0,                           # strength of the transferred motion
                 smoothing: float = 0.0,                      # temporal σ in frames (0: off)
                 lookahead: Optional[int] = 1,                # frames of delay smoothing may add (None: ±3σ)
                 reference_weights: Optional[Sequence[float]] = None,  # weights of the K reference frames
                 ):
        self.subspace = subspace
        dev = subspace.mean.device
        self.target = _as_frames(target, subspace.num_ws, subspace.w_dim)[0].to(dev)
        self.reference_pose = _weighted_pose(subspace, reference, reference_weights)
        if not math.isfinite(float(beta)):
            raise ValueError(f"beta must be a finite number, got {beta}")
        self.beta = float(beta)
        self.filter = TemporalFilter(smoothing, lookahead)
        self.state = ReenactState()
        self._last_offset = torch.zeros_like(self.target)

    @property
    def delay(self) -> int:
        """Frames between a driver frame and its target latent (0 without smoothing; ≤ lookahead)."""
        return self.filter.delay

    def offset(self, w: Optional[torch.Tensor]) -> torch.Tensor:
        """β·(pose(w) − pose(w_ref)) [num_ws, w_dim] of one driver frame (unsmoothed; None → the last one)."""
        if w is None:
            return self._last_offset
        return self.beta * (self.subspace.pose(_as_frames(w, self.subspace.num_ws, self.subspace.w_dim)[0])
                            - self.reference_pose)

    def step(self, w_driver: Optional[torch.Tensor]) -> torch.Tensor:
        """One driver frame ([num_ws, w_dim], [1, num_ws, w_dim], or None: no face) → target latent [num_ws, w_dim]."""
        off = self.offset(w_driver)
        return self._push(off, lost=w_driver is None)

    def _push(self, off: torch.Tensor, lost: bool) -> torch.Tensor:
        s = self.state
        s.frames += 1
        s.lost = lost
        s.lost_run = s.lost_run + 1 if lost else 0
        s.held += int(lost)
        self._last_offset = off
        smoothed = self.filter.push(off)
        s.emitted += 1
        return self.target.clone() if smoothed is None else self.target + smoothed

    def flush(self) -> list[torch.Tensor]:
        """Target latents of the last ``delay`` frames (at the end of a clip)."""
        out = [self.target + o for o in self.filter.flush()]
        self.state.emitted += len(out)
        return out


# ------------------------------------------------------------------------------------------------ offline


@dataclasses.dataclass
class ReenactResult:
    """Offline reenactment of a whole driver sequence.

    latents:   [T, num_ws, w_dim] float32 target latents, one per driver frame.
    offsets:   [T, num_ws, w_dim] float32 what was added to V_target (smoothed β·Δpose).
    held:      [T] bool, frames without a driver face (pose held).
    reference: driver frame index used as the neutral pose.
    subspace:  the motion model learned from the driver.
    options:   the options used.
    """

    latents: torch.Tensor
    offsets: torch.Tensor
    held: torch.Tensor
    reference: int
    subspace: MotionSubspace
    options: ReenactOptions

    def summary(self) -> dict:
        """JSON-able description (options, reference, frames, held, subspace rank/energy)."""
        return {
            "options": self.options.to_dict(),
            "reference_frame": int(self.reference),
            "frames": int(self.latents.shape[0]),
            "held_frames": int(self.held.sum()),
            **subspace_summary(self.subspace),
        }


def subspace_summary(sub: MotionSubspace) -> dict:
    """{"layers": [a, b], "subspace": {method, rank, fit_frames, energy per layer, rpca_iterations}} (JSON-able)."""
    energy = None if sub.energy is None else [None if math.isnan(e) else round(float(e), 6)
                                              for e in sub.energy.tolist()]
    return {
        "layers": [int(sub.layers[0]), int(sub.layers[1])],
        "subspace": {"method": sub.method, "rank": sub.rank, "fit_frames": sub.frames, "energy": energy,
                     "rpca_iterations": None if sub.n_iter is None else sub.n_iter.tolist()},
    }


@dataclasses.dataclass
class DriverFit:
    """A driver sequence prepared for reenactment (see :func:`fit_driver`)."""

    subspace: MotionSubspace      # the motion model
    valid: list                   # indices of the frames with a face
    latents: torch.Tensor         # [len(valid), num_ws, w_dim] float32, their codes
    reference: int                # the neutral frame's index
    reference_frames: torch.Tensor  # [K, num_ws, w_dim] the frames around it (its smoothing window)
    reference_weights: list       # their K Gaussian weights
    frames: int                   # frames in the sequence, with or without a face

    def summary(self, options: "ReenactOptions") -> dict:
        """JSON-able description of the fit (options, reference frame, calibration frames, subspace)."""
        return {"options": options.to_dict(), "reference_frame": int(self.reference),
                "calibration_frames": int(self.frames), **subspace_summary(self.subspace)}

    def reenactor(self, target: torch.Tensor, options: "ReenactOptions",
                  lookahead: Optional[int] = 1) -> Reenactor:
        """A :class:`Reenactor` driving ``target`` with this driver's motion (live: lookahead ≤ 1)."""
        return Reenactor(self.subspace, reference=self.reference_frames, target=target, beta=options.beta,
                         smoothing=options.smoothing, lookahead=lookahead,
                         reference_weights=self.reference_weights)


def fit_driver(driver: Union[torch.Tensor, Sequence[Optional[torch.Tensor]]],
               options: ReenactOptions) -> DriverFit:
    """Learn the motion subspace of a driver sequence and find its neutral pose.

    driver: [T, num_ws, w_dim], or T codes [num_ws, w_dim] / [1, num_ws, w_dim] with None for frames without a face
    (left out of the fit). Offline this is the whole clip; live, a calibration window of the camera's first frames.
    The neutral pose is averaged over the reference frame's smoothing window (the same Gaussian as the output), so
    one frame's encoder noise does not shift every output frame, and the reference frame itself stays at rest.
    """
    frames = list(driver) if not torch.is_tensor(driver) else list(driver.unbind(0))
    valid = [i for i, w in enumerate(frames) if w is not None]
    if not valid:
        raise ValueError("no driver frame has a face; use a clip where one face is visible")
    ref = valid[0] if options.reference is None else int(options.reference)
    if ref >= len(frames):
        raise ValueError(f"reference frame {ref} is past the driver's end ({len(frames)} frames); "
                         f"pass --reference between 0 and {len(frames) - 1}")
    if frames[ref] is None:
        raise ValueError(f"reference frame {ref} of the driver has no face; pick a frame with a face "
                         f"(the first is {valid[0]})")
    shape = torch.as_tensor(frames[valid[0]]).shape[-2:]
    X = torch.stack([torch.as_tensor(frames[i]).detach().float().reshape(shape) for i in valid])
    subspace = learn_motion_subspace(X, rank=options.rank, method=options.method, layers=options.layers,
                                     lmbda=options.lmbda, max_fit_frames=options.max_fit_frames)
    taps, back, _ = gaussian_taps(options.smoothing, None)
    near = [(j, float(taps[j - ref + back])) for j in range(ref - back, ref + back + 1)
            if 0 <= j < len(frames) and frames[j] is not None]
    row = {i: k for k, i in enumerate(valid)}
    return DriverFit(subspace=subspace, valid=valid, latents=X, reference=ref,
                     reference_frames=torch.stack([X[row[j]] for j, _ in near]),
                     reference_weights=[w for _, w in near], frames=len(frames))


def reenact_sequence(
    driver: Union[torch.Tensor, Sequence[Optional[torch.Tensor]]],  # [T, num_ws, w_dim], or T codes / None
    target: torch.Tensor,                                           # V_target [num_ws, w_dim] or [1, …]
    options: Optional[ReenactOptions] = None,
    lookahead: Optional[int] = None,      # None: symmetric smoothing (offline); 1: what a live Reenactor does
    **overrides,                          # ReenactOptions fields (rank=…, beta=…)
) -> ReenactResult:
    """Reenact a whole driver sequence: :func:`fit_driver`, then its :class:`Reenactor` over every frame.

    ``driver`` frames may be None (no face): they hold the last pose, and are left out of the subspace fit.
    """
    options = dataclasses.replace(options or ReenactOptions(), **overrides)
    fit = fit_driver(driver, options)
    reenactor = fit.reenactor(target, options, lookahead=lookahead)
    poses = fit.subspace.pose(fit.latents)                          # every valid frame in one batched fit
    raw = dict(zip(fit.valid, options.beta * (poses - reenactor.reference_pose)))
    out, held = [], []
    for i in range(fit.frames):
        lat = reenactor._push(raw[i] if i in raw else reenactor._last_offset, lost=i not in raw)
        held.append(i not in raw)
        if i >= reenactor.delay:
            out.append(lat)
    out.extend(reenactor.flush())
    latents = torch.stack(out)
    return ReenactResult(latents=latents, offsets=latents - reenactor.target, held=torch.tensor(held),
                         reference=fit.reference, subspace=fit.subspace, options=options)
