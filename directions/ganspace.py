"""GANSpace (Härkönen et al. 2020) as a baseline: PCA of sampled w, components as layer-restricted directions.

GANSpace samples z, maps it to w with the generator's mapping network and takes the principal components of w.
An edit moves w along component c by x standard deviations on a chosen range of W+ layers::

    w'[l] = w[l] + x · σ_c · v_c     for l in [start, end)        (v_c unit, σ_c = std of w along v_c)

:func:`fit` does exact PCA from streamed batches (float64 mean and second moments, then one symmetric
eigendecomposition), so any number of samples fits in memory; :func:`pca` does the same for an array in hand.
:meth:`GanSpace.direction` turns a component into a :class:`~directions.files.Direction` whose delta is
``σ_c · v_c`` on the chosen layers (α is then x, in standard deviations). :meth:`GanSpace.load` also reads the
``{'mean', 'comp', 'std'}`` PCA files that encoder4editing ships for GANSpace (``editings/ganspace_pca``).

:data:`FFHQ_EDITS` lists the named StyleGAN2-FFHQ edits published with GANSpace (component, first layer, end
layer, strength — as reproduced in encoder4editing's editing notebook). Their component indices refer to
GANSpace's own PCA (10⁶ samples); components of low variance have close eigenvalues, so with another sample the
order of those high indices can differ: check the edit visually or pick the component by its score.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

#: name → (component, first layer, end layer (exclusive), published strength in σ; its sign is the edit's sense).
FFHQ_EDITS: dict[str, tuple[int, int, int, float]] = {
    "eye_openness": (54, 7, 8, 20.0),
    "smile": (46, 4, 5, -20.0),
    "trimmed_beard": (58, 7, 9, 20.0),
    "white_hair": (57, 7, 10, -24.0),
    "lipstick": (34, 10, 11, 20.0),
    "age": (20, 6, 7, 8.0),
    "pose_yaw": (1, 0, 18, 0.5),
    "gender": (0, 0, 18, -1.5),
    "glasses": (12, 0, 4, 10.0),
}
#: micromotion direction name → (GANSpace FFHQ edit, sense): the baseline matching each official direction.
FOR_MICROMOTION: dict[str, tuple[str, float]] = {
    "smile": ("smile", 1.0),
    "aging": ("age", 1.0),
    "eyesClose": ("eye_openness", -1.0),
    "headsTurn": ("pose_yaw", 1.0),
}


@dataclasses.dataclass
class GanSpace:
    """PCA of w.

    mean:       float32 [w_dim].
    components: float32 [k, w_dim], orthonormal rows, by decreasing variance; each row's sign is fixed so that
                its largest-magnitude entry is positive (deterministic across runs).
    std:        float32 [k], standard deviation of w along each component (sqrt of the eigenvalue).
    explained:  float32 [k], fraction of the total variance along each component.
    n_samples:  number of w the PCA was computed from (0 when loaded from a file that does not say).
    seed:       sampling seed (None when not sampled here).
    """

    mean: np.ndarray
    components: np.ndarray
    std: np.ndarray
    explained: np.ndarray
    n_samples: int = 0
    seed: int | None = None

    @property
    def w_dim(self) -> int:
        return int(self.components.shape[1])

    def direction(self, index: int, layers: tuple[int, int] | None = None, num_ws: int = 1, name: str | None = None,
                  sense: float = 1.0):
        """Component `index` as a Direction: delta [num_ws, w_dim] = sense · σ · v on layers [start, end), 0 elsewhere.

        layers None → every layer (a [1, w_dim] broadcast direction). A range reaching past num_ws is clipped (with
        a warning: the published FFHQ ranges assume 18 layers).
        """
        import torch  # noqa: PLC0415

        from directions.files import Direction  # noqa: PLC0415

        if not 0 <= index < len(self.std):
            raise ValueError(f"GANSpace has {len(self.std)} components (0..{len(self.std) - 1}); got {index}")
        vec = torch.from_numpy(np.ascontiguousarray(self.components[index] * self.std[index] * float(sense)))
        meta = {"method": "ganspace", "component": int(index), "std": float(self.std[index]),
                "explained": float(self.explained[index]), "alpha_range": [-3.0, 3.0],
                "source": f"PCA of {self.n_samples} sampled w" if self.n_samples else "GANSpace PCA file"}
        if layers is None:
            meta["layers"] = "all"
            return Direction(name or f"pc{index}", vec[None].float(), meta)
        start, end = int(layers[0]), int(layers[1])
        if end > num_ws:
            log.warning("GANSpace layer range [%d, %d) clipped to the generator's %d layers", start, end, num_ws)
            end = num_ws
        if not 0 <= start < end:
            raise ValueError(f"GANSpace layer range [{start}, {end}) is empty for a generator of {num_ws} layers")
        delta = torch.zeros(num_ws, self.w_dim)
        delta[start:end] = vec.float()
        meta["layer_range"] = [start, end]
        return Direction(name or f"pc{index}_{start}-{end}", delta, meta)

    def named(self, edit: str, num_ws: int, name: str | None = None, sense: float = 1.0):
        """A published FFHQ edit (:data:`FFHQ_EDITS`) as a Direction, in the sense the name describes."""
        if edit not in FFHQ_EDITS:
            raise ValueError(f"unknown GANSpace edit {edit!r}; known: {', '.join(FFHQ_EDITS)}")
        comp, start, end, strength = FFHQ_EDITS[edit]
        d = self.direction(comp, (start, end), num_ws, name=name or edit, sense=sense * float(np.sign(strength)))
        d.meta["ganspace_edit"] = edit
        d.meta["published_strength"] = strength
        return d

    def save(self, path: str | Path) -> Path:
        """Write as a GANSpace-style torch file {'mean' [1, w_dim], 'comp' [k, 1, w_dim], 'std' [k]} (+ extras)."""
        import torch  # noqa: PLC0415

        path = Path(path)
        torch.save({"mean": torch.from_numpy(self.mean)[None], "comp": torch.from_numpy(self.components)[:, None],
                    "std": torch.from_numpy(self.std), "explained": torch.from_numpy(self.explained),
                    "n_samples": torch.tensor(self.n_samples)}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "GanSpace":
        """Read a {'mean', 'comp', 'std'} PCA file (this module's, or encoder4editing's ganspace_pca/*.pt)."""
        import torch  # noqa: PLC0415

        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or not {"mean", "comp", "std"} <= set(obj):
            raise ValueError(f"{path} is not a GANSpace PCA file (needs 'mean', 'comp', 'std' tensors)")
        comp = obj["comp"].float().reshape(obj["comp"].shape[0], -1).numpy()
        std = obj["std"].float().reshape(-1).numpy()
        explained = obj["explained"].float().numpy() if "explained" in obj else std ** 2 / float((std ** 2).sum())
        n = int(obj["n_samples"]) if "n_samples" in obj else 0
        return cls(obj["mean"].float().reshape(-1).numpy(), comp, std, explained, n)


# ------------------------------------------------------------------------------------------------ PCA


class _Moments:
    """Streaming float64 mean and second moment of rows."""

    def __init__(self, dim: int):
        self.n = 0
        self.sum = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        self.n += len(x)
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def pca(self, k: int, seed: int | None = None) -> GanSpace:
        if self.n < 2:
            raise ValueError(f"PCA needs at least 2 samples, got {self.n}")
        mean = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        evals, evecs = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(evals)[::-1]
        evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
        k = min(int(k), len(evals))
        comps = evecs[:, :k].T
        signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
        comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
        total = float(evals.sum()) or 1.0
        return GanSpace(mean.astype(np.float32), comps.astype(np.float32), np.sqrt(evals[:k]).astype(np.float32),
                        (evals[:k] / total).astype(np.float32), self.n, seed)


def pca(x: np.ndarray, k: int) -> GanSpace:
    """PCA of rows x [N, D] (any float dtype) → GanSpace with k components (computed in float64)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"pca wants samples [N, D], got shape {list(x.shape)}")
    m = _Moments(x.shape[1])
    m.add(x)
    return m.pca(k)


def fit(G, n_samples: int = 100_000, k: int = 80, seed: int = 0, batch: int = 4096, progress: bool = True,
        sampler: Callable | None = None) -> GanSpace:
    """GANSpace PCA of `n_samples` w = G.mapping(z), z ~ N(0, I) from torch.Generator(seed); k components.

    sampler(n, generator) → [n, w_dim] replaces G's mapping (tests: planted distributions). GANSpace itself used
    10⁶ samples; 10⁵ pins the leading components well.
    """
    import torch  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    if n_samples < 2:
        raise ValueError(f"GANSpace needs at least 2 samples, got {n_samples}")
    gen = torch.Generator().manual_seed(int(seed))
    if sampler is None:
        param = next(G.parameters())

        def sampler(n, generator):
            z = torch.randn(n, G.z_dim, generator=generator)
            with torch.no_grad():
                return G.mapping(z.to(param.device, param.dtype)).float().cpu()
    moments = None
    with tqdm(total=n_samples, desc="ganspace", unit="w", disable=not progress) as bar:
        done = 0
        while done < n_samples:
            n = min(batch, n_samples - done)
            w = np.asarray(sampler(n, gen), dtype=np.float64)
            if moments is None:
                moments = _Moments(w.shape[1])
            moments.add(w)
            done += n
            bar.update(n)
    return moments.pca(k, seed=seed)
