"""micromotion directions: anchors → robust PCA → one W+ direction ΔV, direction files, and V0 + α·t·ΔV.

Importing the package is free (no torch import): the public names below load their module on first use.

    import directions
    delta = directions.from_anchors(anchors)                 # [K, num_ws, w_dim] → [num_ws, w_dim]
    d = directions.Direction("smile", delta, meta)
    directions.save(d, "smile.safetensors"); d = directions.load("smile.safetensors")
    ws_edit = directions.apply(ws, d, alpha=5.0, t=0.5)

CLI: ``python -m directions build|show|list|apply`` (see ``directions/__main__.py``).
"""
from __future__ import annotations

import importlib

_LAZY = {
    # robust PCA (the function itself is directions.rpca.rpca: the name `rpca` here is the submodule)
    "RPCAResult": "directions.rpca",
    "pca": "directions.rpca",
    # anchors → direction
    "from_anchors": "directions.subspace",
    "decompose_anchors": "directions.subspace",
    "AnchorDecomposition": "directions.subspace",
    # files
    "Direction": "directions.files",
    "DirectionError": "directions.files",
    "save": "directions.files",
    "load": "directions.files",
    "apply": "directions.files",
    "layer_energy": "directions.files",
    "list_directions": "directions.files",
    "find_direction": "directions.files",
    "default_dir": "directions.files",
    "make_meta": "directions.files",
    # anchoring (directions/text.py, directions/video.py)
    "anchor_text": "directions.text",
    "anchor_video": "directions.video",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'directions' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
