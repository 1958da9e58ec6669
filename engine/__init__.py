"""micromotion engine: StyleGAN2 generator, pSp/e4e/ReStyle encoders, checkpoint loaders, weights.

Importing the package is free (no torch import): the public names below load their module on first use.

    import engine
    G = engine.load_generator("stylegan2-ffhq")     # or a path to a rosinality .pt / NVIDIA .pkl
    E = engine.load_encoder("e4e-ffhq")
"""
from __future__ import annotations

import importlib

_LAZY = {
    "load_generator": "engine.checkpoints",
    "load_encoder": "engine.checkpoints",
    "CheckpointError": "engine.checkpoints",
    "file_sha256": "engine.checkpoints",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
