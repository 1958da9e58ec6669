"""Measure edits the way the paper does: identity kept (Table 1), attribute changed (Fig. 6), per direction and α.

For N faces (random w from the generator, or W+ codes of inverted photos) and every edit (method × direction) at
every α::

    images  = G(w)                 edited = G(w + α·Δ)
    identity change  = 1 − cos(embed(images), embed(edited))        per embedder (dlib, ArcFace)
    attribute change = score(edited) − score(images)                 per scorer and attribute (CLIP, geometry, …)

``evaluate(...)`` returns one JSON-ready dict (layout below); :func:`format_table`, :func:`plot_matrix` (Fig. 6:
one panel per method, rows = its directions, columns = attributes) and :func:`plot_identity` (identity change
against α) present it. Everything is reproducible from the seed: z comes from ``torch.Generator().manual_seed``,
the embedders and scorers are deterministic.

Units of α: ``scale="raw"`` applies each direction as stored (official micromotion files: α ≈ 0–10; InterFaceGAN
unit normals: α ≈ ±3; GANSpace: α in standard deviations); ``scale="unit"`` first divides every Δ by its Frobenius
norm over all num_ws layers, so α is the distance moved in W+ and methods are compared at equal step length.

JSON layout (``version`` 1)::

    {"version": 1,
     "config":  {"faces", "seed", "truncation", "alphas", "matrix_alpha", "scale", "source", "generator",
                 "num_ws", "w_dim", "resolution", "embedders": [...], "scorers": {"scorer/attr": description},
                 "note"},
     "original": {"scorer/attr": {"mean", "std"}},                         scores of the unedited faces
     "results": [{"method", "direction", "alpha", "step_norm",             ‖α·Δ‖ over W+
                  "identity":   {embedder: {"mean", "std", "n", "values": [per face, null = no face]}},
                  "attributes": {"scorer/attr": {"mean", "std", "n"}}}, ...],
     "matrix":  {"alpha", "rows": ["method/direction"], "columns": ["scorer/attr"],
                 "values": [[mean attribute change]], "identity": {embedder: [mean identity change per row]}}}

Numbers that cannot be computed (no face found) are null.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

EVAL_VERSION = 1
SCALES = ("raw", "unit")
NO_FACE_NOTE = ("dlib's face detector found a face in only {found} of the {n} unedited images: this generator "
                "does not draw faces (tiny or stand-in test weights), so these numbers check the wiring (every "
                "method, direction, α, embedder and scorer is run and recorded), not identity or attribute quality")


@dataclasses.dataclass
class Edit:
    """One direction of one method: delta [num_ws, w_dim] (or [1, w_dim], broadcast) float32."""

    method: str          # "micromotion", "interfacegan", "ganspace", …
    name: str            # the direction ("smile")
    delta: "object"      # torch.Tensor
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.method}/{self.name}"


def edits_from_directions(method: str, directions, num_ws: int, w_dim: int, generator_sha256=None) -> list[Edit]:
    """Edits from Direction objects (checked against the generator, single-layer ones expanded)."""
    return [Edit(method, d.name, d.delta_for(num_ws, w_dim, generator_sha256), dict(d.meta)) for d in directions]


# ------------------------------------------------------------------------------------------------ latents


def sample_latents(G, n: int, seed: int = 0, truncation: float = 1.0) -> "torch.Tensor":
    """n W+ codes [n, num_ws, w_dim] float32 (CPU) of w = G.mapping(z, truncation), z from torch.Generator(seed)."""
    import torch  # noqa: PLC0415

    if n < 1:
        raise ValueError(f"need at least one face, got {n}")
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(int(seed)))
    param = next(G.parameters())
    with torch.no_grad():
        w = G.mapping(z.to(param.device, param.dtype), truncation=truncation).float().cpu()
    return w[:, None].expand(n, G.num_ws, G.w_dim).contiguous()


def render(G, ws, batch: int = 8) -> "torch.Tensor":
    """G(ws) in batches → float32 CPU [N, 3, R, R] RGB in [-1, 1] (clamped)."""
    import torch  # noqa: PLC0415

    param = next(G.parameters())
    out = []
    with torch.no_grad():
        for start in range(0, ws.shape[0], batch):
            out.append(G(ws[start:start + batch].to(param.device, param.dtype)).float().clamp(-1, 1).cpu())
    return torch.cat(out)


def scaled_delta(edit: Edit, num_ws: int, scale: str) -> "torch.Tensor":
    """The edit's delta [num_ws, w_dim] as used for α = 1 under `scale` ("raw" or "unit")."""
    delta = edit.delta.float()
    if delta.shape[0] == 1:
        delta = delta.expand(num_ws, delta.shape[1])
    if scale == "raw":
        return delta
    if scale == "unit":
        norm = float(delta.norm())
        if norm == 0:
            raise ValueError(f"direction {edit.key} is all zeros; it cannot be scaled to unit length")
        return delta / norm
    raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")


# ------------------------------------------------------------------------------------------------ statistics


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _summary(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    return {"mean": _finite(v[ok].mean()) if ok.any() else None,
            "std": _finite(v[ok].std()) if ok.any() else None,
            "n": int(ok.sum())}


def _columns(scorers) -> list[tuple[object, int, str]]:
    """(scorer, column index, "scorer/attribute") for every attribute of every scorer."""
    return [(s, i, f"{s.name}/{a}") for s in scorers for i, a in enumerate(s.attributes)]


# ------------------------------------------------------------------------------------------------ evaluation


def _measure(G, ws, embedders, scorers, batch: int, face_check: bool = False):
    """Render ws batch by batch (only one batch of images in memory) and measure it.

    Returns ({embedder: vectors [N, D]}, {scorer: scores [N, A] float64}, faces dlib detects (None unless
    face_check, or when dlib is unavailable)).
    """
    from directions.embedders import EmbedderUnavailable, count_faces  # noqa: PLC0415

    vectors = {e.name: [] for e in embedders}
    scores = {s.name: [] for s in scorers}
    found = 0 if face_check else None
    for start in range(0, ws.shape[0], batch):
        images = render(G, ws[start:start + batch], batch)
        for e in embedders:
            vectors[e.name].append(e.embed(images).vectors)
        for s in scorers:
            scores[s.name].append(np.asarray(s.score(images), np.float64).reshape(len(images), len(s.attributes)))
        if found is not None:
            try:
                found += count_faces(images)
            except EmbedderUnavailable as err:
                log.warning("face check skipped: %s", err)
                found = None
    return ({k: np.concatenate(v) for k, v in vectors.items()},
            {k: np.concatenate(v) for k, v in scores.items()}, found)



def evaluate(G,
             edits: Sequence[Edit],
             alphas: Sequence[float],
             ws,
             embedders: Sequence = (),
             scorers: Sequence = (),
             scale: str = "raw",
             matrix_alpha: float | None = None,
             batch: int = 8,
             progress: bool = True,
             config: dict | None = None,
             face_check: bool = True) -> dict:
    """Identity and attribute change of every edit at every α over the faces `ws` [N, num_ws, w_dim].

    embedders: objects with `name` and `embed(images [N,3,H,W] in [-1,1]) -> Embeddings` (directions.embedders).
    scorers:   objects with `name`, `attributes`, `descriptions`, `score(images) -> [N, A]` (directions.attributes).
    matrix_alpha: α of the Fig. 6 matrix (default: the largest |α|).
    config:    extra entries for the JSON "config" (seed, source, generator name, …).
    face_check: count the unedited images in which dlib's detector finds a face ("faces_detected"); fewer than
               half → a "note" saying the numbers measure wiring only.
    Returns the JSON-ready dict described in the module docstring.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from directions.embedders import identity_change  # noqa: PLC0415
    from directions.files import apply  # noqa: PLC0415

    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("give at least one α")
    if not edits:
        raise ValueError("give at least one direction to evaluate")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        raise ValueError(f"ws must be [N, {G.num_ws}, {G.w_dim}] (num_ws, w_dim), got {list(ws.shape)}")
    matrix_alpha = float(matrix_alpha) if matrix_alpha is not None else max(alphas, key=abs)
    if matrix_alpha not in alphas:
        raise ValueError(f"matrix α {matrix_alpha:g} is not among the α evaluated {alphas}")
    columns = _columns(scorers)

    config = dict(config or {})
    base_emb, base_scores, found = _measure(G, ws, embedders, scorers, batch, face_check)
    if found is not None:
        config["faces_detected"] = found
        if found < ws.shape[0] / 2:
            config.setdefault("note", NO_FACE_NOTE.format(found=found, n=ws.shape[0]))
    results = []
    with tqdm(total=len(edits) * len(alphas), desc="eval", unit="edit", disable=not progress) as bar:
        for edit in edits:
            delta = scaled_delta(edit, G.num_ws, scale)
            for alpha in alphas:
                if alpha == 0:   # G(ws + 0·Δ) is the base: its measures are already taken (all deterministic)
                    emb, scores = base_emb, base_scores
                else:
                    emb, scores, _ = _measure(G, apply(ws, delta, alpha), embedders, scorers, batch)
                entry = {"method": edit.method, "direction": edit.name, "alpha": alpha,
                         "step_norm": float(abs(alpha) * delta.norm()), "identity": {}, "attributes": {}}
                for e in embedders:
                    change = identity_change(base_emb[e.name], emb[e.name])
                    entry["identity"][e.name] = {**_summary(change), "values": [_finite(v) for v in change]}
                for s, i, key in columns:
                    entry["attributes"][key] = _summary(scores[s.name][:, i] - base_scores[s.name][:, i])
                results.append(entry)
                bar.update(1)

    rows = [e.key for e in edits]
    at = {(r["method"], r["direction"]): r for r in results if r["alpha"] == matrix_alpha}
    doc = {
        "version": EVAL_VERSION,
        "config": {
            "faces": int(ws.shape[0]), "alphas": alphas, "matrix_alpha": matrix_alpha, "scale": scale,
            "num_ws": int(G.num_ws), "w_dim": int(G.w_dim), "resolution": int(G.resolution),
            "embedders": [e.name for e in embedders],
            "scorers": {key: s.descriptions.get(key.split("/", 1)[1], "") for s, _, key in columns},
            **config,
        },
        "original": {key: {"mean": _finite(base_scores[s.name][:, i].mean()),
                           "std": _finite(base_scores[s.name][:, i].std())} for s, i, key in columns},
        "results": results,
        "matrix": {
            "alpha": matrix_alpha, "rows": rows, "columns": [key for _, _, key in columns],
            "values": [[at[(e.method, e.name)]["attributes"][key]["mean"] for _, _, key in columns] for e in edits],
            "identity": {emb.name: [at[(e.method, e.name)]["identity"][emb.name]["mean"] for e in edits]
                         for emb in embedders},
        },
    }
    return doc


# ------------------------------------------------------------------------------------------------ output


def _fmt(x, width: int = 9, digits: int = 4) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"


def format_table(doc: dict) -> str:
    """Plain-text table: one row per (method, direction, α), identity change per embedder, attribute changes."""
    embedders = doc["config"]["embedders"]
    columns = doc["matrix"]["columns"]
    ids = [(e, max(10, len(e) + 4)) for e in embedders]
    cols = [(c, max(10, len(c))) for c in columns]
    head = f"{'method/direction':<28} {'alpha':>7} {'|step|':>8}"
    head += "".join(f" {'id:' + e:>{w}}" for e, w in ids)
    head += "".join(f" {c:>{w}}" for c, w in cols)
    lines = [head, "-" * len(head)]
    for r in doc["results"]:
        line = f"{r['method'] + '/' + r['direction']:<28} {r['alpha']:>7g} {r['step_norm']:>8.3f}"
        line += "".join(f" {_fmt(r['identity'][e]['mean'], w)}" for e, w in ids)
        line += "".join(f" {_fmt(r['attributes'][c]['mean'], w)}" for c, w in cols)
        lines.append(line)
    return "\n".join(lines)


def write_json(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return path


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


ATTRIBUTE_ALIASES = {"aging": ("aging", "age"), "headsTurn": ("headsTurn", "pose_yaw", "yaw")}


def _matches(direction: str, column: str) -> bool:
    attr = column.split("/", 1)[1]
    return attr == direction or attr in ATTRIBUTE_ALIASES.get(direction, ())


def plot_matrix(doc: dict, path: str | Path) -> Path:
    """Fig. 6-style re-scoring matrix → PNG: one panel per method (rows its directions, columns attributes).

    Colours: each column divided by its largest |change| over all methods (so panels share one scale per
    attribute); the numbers printed are the raw mean changes. Cells where the attribute is the direction's own are
    outlined: a clean method is strong there and pale elsewhere.
    """
    plt = _pyplot()
    m = doc["matrix"]
    values = np.array([[np.nan if v is None else v for v in row] for row in m["values"]], dtype=float)
    values = values.reshape(len(m["rows"]), len(m["columns"]))
    peak = np.nanmax(np.abs(values), axis=0) if values.size else np.zeros(0)
    peak = np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
    normed = values / peak
    methods = list(dict.fromkeys(r.split("/", 1)[0] for r in m["rows"]))
    fig_w = max(4.0, 0.9 * len(m["columns"]) + 2.5)
    heights = [max(1, sum(r.startswith(meth + "/") for r in m["rows"])) for meth in methods]
    fig, axes = plt.subplots(len(methods), 1, figsize=(fig_w, 0.55 * sum(heights) + 1.3 * len(methods) + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    try:
        for ax, meth in zip(axes[:, 0], methods):
            idx = [i for i, r in enumerate(m["rows"]) if r.startswith(meth + "/")]
            names = [m["rows"][i].split("/", 1)[1] for i in idx]
            im = ax.imshow(normed[idx], cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
            for a, i in enumerate(idx):
                for c in range(len(m["columns"])):
                    v = values[i, c]
                    ax.text(c, a, "-" if not np.isfinite(v) else f"{v:.3g}", ha="center", va="center", fontsize=7)
                    if _matches(names[a], m["columns"][c]):
                        ax.add_patch(plt.Rectangle((c - 0.5, a - 0.5), 1, 1, fill=False, lw=2, ec="black"))
            ax.set_yticks(range(len(idx)), names)
            last = ax is axes[-1, 0]  # the panels share their columns: label them once, under the last panel
            ax.set_xticks(range(len(m["columns"])), m["columns"] if last else [], rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{meth}: attribute change at α = {m['alpha']:g}", fontsize=10)
        fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, label="change / column max |change|")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_identity(doc: dict, path: str | Path) -> Path:
    """Identity change (mean ± std over faces) against α, one panel per embedder, one line per method/direction."""
    plt = _pyplot()
    embedders = doc["config"]["embedders"]
    if not embedders:
        raise ValueError("no embedder was run: nothing to plot")
    fig, axes = plt.subplots(1, len(embedders), figsize=(5.0 * len(embedders), 3.6), squeeze=False)
    try:
        keys = list(dict.fromkeys((r["method"], r["direction"]) for r in doc["results"]))
        for ax, emb in zip(axes[0], embedders):
            for method, direction in keys:
                rs = sorted((r for r in doc["results"] if (r["method"], r["direction"]) == (method, direction)),
                            key=lambda r: r["alpha"])
                x = [r["alpha"] for r in rs]
                y = [np.nan if r["identity"][emb]["mean"] is None else r["identity"][emb]["mean"] for r in rs]
                s = [0.0 if r["identity"][emb]["std"] is None else r["identity"][emb]["std"] for r in rs]
                ls = {"micromotion": "-", "interfacegan": "--", "ganspace": ":"}.get(method, "-.")
                ax.errorbar(x, y, yerr=s, ls=ls, marker="o", ms=3, capsize=2, label=f"{method}/{direction}")
            ax.set_xlabel(f"α ({doc['config']['scale']})")
            ax.set_ylabel("identity change 1 − cos")
            ax.set_title(f"{emb}: identity change vs α", fontsize=10)
            ax.grid(alpha=0.3)
        axes[0, -1].legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def write_outputs(doc: dict, out_dir: str | Path, prefix: str = "eval") -> dict[str, Path]:
    """eval.json, eval.txt (the table), eval_matrix.png, eval_identity.png (when an embedder ran) in out_dir."""
    out = Path(out_dir)
    paths = {"json": write_json(doc, out / f"{prefix}.json")}
    table = out / f"{prefix}.txt"
    table.write_text(format_table(doc) + "\n")
    paths["table"] = table
    if doc["matrix"]["columns"]:
        paths["matrix"] = plot_matrix(doc, out / f"{prefix}_matrix.png")
    if doc["config"]["embedders"]:
        paths["identity"] = plot_identity(doc, out / f"{prefix}_identity.png")
    return paths

