"""Tiny random weights ON DISK for the web tests: a ReStyle-pSp checkpoint (64 px, w_dim 32, its tiny
StyleGAN2 decoder inside) and two direction files, so `python -m web --encoder … --directions-dir …`
runs the full Effect (landmarks, alignment, encoder, edit, generator, paste-back) with random networks.
"""
from __future__ import annotations

from pathlib import Path

RES = 64
# different suggested α ranges per tiny direction file (the page's slider follows them)
TINY_DIRECTION_META = {
    "smile": {"method": "official", "alpha_range": [0.0, 10.0], "alpha_default": 5.0},
    "eyes_closing": {"method": "text", "alpha_range": [0.0, 8.0]},
}


def build_tiny_nets(seed: int = 0):
    """(G, E, {name: delta [num_ws, w_dim]}) — random, as in tests/stream/test_effect.py."""
    import torch

    from engine.encoders import Encoder, build_network
    from engine.stylegan2 import Generator

    torch.manual_seed(seed)
    G = Generator(resolution=RES, w_dim=32, z_dim=32, n_mapping=2, channel_multiplier=1, channel_max=32)
    net = build_network("restyle_psp", num_ws=G.num_ws, w_dim=G.w_dim, widths=(8, 12, 16, 24),
                        units=(1, 1, 1, 1), input_size=64)
    E = Encoder(net, "restyle_psp", G.estimate_latent_avg(256), decoder=G, n_iters=2).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    deltas = {name: torch.randn(G.num_ws, G.w_dim, generator=gen) * 0.8 for name in ("smile", "eyes_closing")}
    return G, E, deltas


def write_tiny_weights(folder: Path) -> dict:
    """Write `encoder.pt` (ReStyle layout: state_dict encoder.*/decoder.*, opts, latent_avg) and
    `directions/<name>.safetensors` under `folder`; returns {"encoder", "directions_dir", "names"}."""
    import torch

    from directions.files import Direction, save

    G, E, deltas = build_tiny_nets()
    folder = Path(folder)
    (folder / "directions").mkdir(parents=True, exist_ok=True)
    ckpt = {
        "state_dict": {k: v for k, v in E.state_dict().items()},
        "opts": {"encoder_type": "BackboneEncoder", "input_nc": 6, "output_size": RES,
                 "n_iters_per_batch": 2, "start_from_latent_avg": True},
        "latent_avg": E.latent_avg.detach().clone(),
    }
    torch.save(ckpt, folder / "encoder.pt")
    for name, delta in deltas.items():
        meta = {"source": "tiny random test direction", **TINY_DIRECTION_META.get(name, {})}
        save(Direction(name, delta, meta), folder / "directions" / name)
    return {"encoder": folder / "encoder.pt", "directions_dir": folder / "directions", "names": sorted(deltas)}


def server_args(weights: dict) -> list[str]:
    """`python -m web` options that load the tiny weights on CPU."""
    return ["--encoder", str(weights["encoder"]), "--directions-dir", str(weights["directions_dir"]),
            "--device", "cpu"]
