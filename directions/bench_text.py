"""Time one text-anchoring optimisation step (G forward+backward, CLIP image tower, Adam) on random weights.

    python -m directions.bench_text                                  # tiny generator + tiny CLIP
    python -m directions.bench_text --resolution 256 --clip-model ViT-B-32 --prompts 11 --steps 3
    python -m directions.bench_text --json out.json

Prints a table (seconds per step for all prompts in one batch, and per prompt); no weights needed.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _generator(resolution: int, tiny: bool, device):
    from engine.stylegan2 import Generator  # noqa: PLC0415

    if tiny:
        G = Generator(resolution=resolution, w_dim=32, z_dim=32, n_mapping=2, channel_multiplier=1, channel_max=32)
    else:
        G = Generator(resolution=resolution)  # config-f widths, w_dim 512
    return G.eval().requires_grad_(False).to(device)


def bench(resolution: int, clip_model: str, prompts: int, steps: int, device: str, threads: int | None,
          batch: bool = True) -> dict:
    import torch  # noqa: PLC0415

    from directions.clip_loader import load_clip  # noqa: PLC0415
    from directions.text import anchor_text  # noqa: PLC0415

    if threads:
        torch.set_num_threads(threads)
    tiny = clip_model == "tiny"
    with tempfile.TemporaryDirectory() as tmp:
        name = clip_model
        if tiny:
            name = str(Path(tmp) / "bench-tiny-clip.json")
            Path(name).write_text(json.dumps(TINY_CLIP))
        clip = load_clip(name, pretrained=None, device=device)
    G = _generator(resolution, tiny, device)
    degrees = [f"{round(100 * i / max(1, prompts - 1))}%" for i in range(prompts)]
    anchor_text(G, clip, "a person with {} smile", degrees=degrees, steps=1, batch=batch)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    anchor_text(G, clip, "a person with {} smile", degrees=degrees, steps=steps, batch=batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / steps
    return dict(resolution=resolution, num_ws=G.num_ws, w_dim=G.w_dim, clip=clip_model, prompts=prompts,
                batch=batch, device=device, threads=torch.get_num_threads(), s_per_step=per_step,
                s_per_prompt_step=per_step / prompts, est_40_steps_s=40 * per_step)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m directions.bench_text", description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, nargs="+", default=[32], help="generator resolution(s)")
    p.add_argument("--clip-model", default="tiny", help="'tiny' or an open_clip model name (random weights)")
    p.add_argument("--prompts", type=int, nargs="+", default=[3, 11], help="prompts per batch")
    p.add_argument("--steps", type=int, default=5, help="Adam steps per prompt (default 5)")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--loop", action="store_true", help="one prompt at a time instead of one batch")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    rows = [bench(r, args.clip_model, k, args.steps, args.device, args.threads, batch=not args.loop)
            for r in args.resolution for k in args.prompts]
    cols = ["resolution", "num_ws", "w_dim", "clip", "prompts", "batch", "device", "threads", "s_per_step",
            "s_per_prompt_step", "est_40_steps_s"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
