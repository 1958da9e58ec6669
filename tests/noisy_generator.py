"""A tiny random StyleGAN2 generator with large weights (so renders vary visibly), for the CLI tests.

Importable by plain name from any test folder (``from noisy_generator import noisy_generator``): tests/conftest.py
puts tests/ on sys.path.
"""
from __future__ import annotations

import torch


def noisy_generator(resolution: int, w_dim: int, seed: int = 0):
    """Seeded Generator (eval mode): z_dim = w_dim, 2 mapping layers, ≤16 channels, every parameter ~ N(0, 0.5²)."""
    from engine.stylegan2 import Generator

    torch.manual_seed(seed)
    G = Generator(resolution, w_dim=w_dim, z_dim=w_dim, n_mapping=2, channel_multiplier=1, channel_max=16)
    with torch.no_grad():
        for p in G.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return G.eval()
