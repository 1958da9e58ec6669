"""Tiny seeded random StyleGAN2 generators for wiring tests (importable: `from gen_helpers import ...`)."""
from __future__ import annotations

import torch

TINY_CONFIG = dict(
    resolution=32,          # num_ws = 8
    w_dim=16,
    z_dim=16,
    n_mapping=2,
    channel_max=16,
    lr_mlp=0.01,
)


def make_tiny_generator(seed: int = 0, noise_strength: float = 0.1, **overrides):
    """Seeded random Generator (eval mode) with small channels, non-zero noise weights and a latent_avg set."""
    from engine.stylegan2 import Generator

    config = {**TINY_CONFIG, **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(**config)
        with torch.no_grad():
            for name, p in G.named_parameters():
                if name.endswith("noise.weight"):
                    p.fill_(noise_strength)
                elif name.endswith("activate.bias") or (name.endswith(".bias") and p.ndim == 4):  # conv / toRGB biases
                    p.normal_(0.0, 0.1)
            G.latent_avg.copy_(G.estimate_latent_avg(256, seed=seed))
    return G.eval()
