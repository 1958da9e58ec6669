"""python -m stream.bench: per-stage ms and end-to-end fps of the Effect, paper mode vs live mode, one run.

Both modes use the SAME networks (random weights of the chosen configuration: speed is real even though the
weights are not) on the same real face frame:

* paper: ReStyle-pSp, 5 iterations from the average latent per frame, fp32, eager;
* live:  temporal ReStyle (one encoder step per frame from the last frame's latent and reconstruction),
         fp16 + CUDA graphs on a GPU, fp32 eager on CPU.

Stages: landmarks (MediaPipe), align (smoothing + FFHQ warp), encode, generate (edit + G([w, w']) + copy to
host), paste. The live/paper ratio of the end-to-end frame time is printed (targets: >= 10x on a GPU, >= 4x
on CPU with the same networks).

    python -m stream.bench [--config full|small] [--image face.jpg] [--frames N] [--device auto] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.bench import report
from stream.stats import STAGES as _ALL_STAGES

STAGES = _ALL_STAGES[:5]   # landmarks, align, encode, generate, paste

log = logging.getLogger(__name__)
DEFAULT_IMAGE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "faces" / "01.jpg"


def face_frame(image: Path, size=(480, 640)) -> np.ndarray:
    """The image's face scaled into a webcam-sized BGR frame (the face about 60 % of the frame height)."""
    import cv2  # noqa: PLC0415

    img = cv2.imread(str(image))
    if img is None:
        raise ValueError(f"cannot read {image}; pass --image with a face photo (jpg/png)")
    h, w = size
    s = 0.6 * h / max(img.shape[:2])
    img = cv2.resize(img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))),
                     interpolation=cv2.INTER_AREA)
    frame = np.full((h, w, 3), 90, np.uint8)
    y, x = (h - img.shape[0]) // 2, (w - img.shape[1]) // 2
    frame[y:y + img.shape[0], x:x + img.shape[1]] = img
    return frame


def build_networks(config: str):
    """(G, E restyle_psp with G as decoder) of random weights: "full" = 1024 config-f + IR-SE50; "small"."""
    import torch  # noqa: PLC0415

    from engine.bench import build_encoder, build_generator  # noqa: PLC0415

    torch.manual_seed(0)
    small = config == "small"
    G = build_generator(small)
    E = build_encoder("restyle_psp", G, small)
    return G, E


def measure(mode: str, E, frame: np.ndarray, frames: int, device: str, precision: str, cuda_graphs: bool,
            warmup: int = 1, live_resolution: int | None = 256, landmarker=None) -> dict:
    """Run the effect in `mode` on `frames` frames (after `warmup` untimed ones); median per-stage ms.

    `live_resolution`: the size live mode renders G up to (None: full); paper mode always renders full size.
    """
    import torch  # noqa: PLC0415

    from stream.effect import Controls, Effect, EffectConfig  # noqa: PLC0415

    E = copy.deepcopy(E)
    gen = torch.Generator().manual_seed(1)
    delta = torch.randn(E.num_ws, E.w_dim, generator=gen) * 0.1
    config = EffectConfig(device=device, precision=precision, mode=mode, max_faces=1, cuda_graphs=cuda_graphs,
                          aligner="mediapipe" if landmarker is not None else "dlib68",
                          profile=True, live_resolution=live_resolution)
    effect = Effect(config, encoder=E, directions={"smile": delta}, landmarker_factory=landmarker)
    session = effect.new_session(controls=Controls(directions={"smile": 3.0}, paste_mode="residual"))
    per_stage = {s: [] for s in STAGES}
    totals = []
    try:
        for i in range(frames + warmup):
            t0 = time.perf_counter()
            out = session.process(frame, wait=True)
            total = (time.perf_counter() - t0) * 1e3
            if session.errors.total:
                raise RuntimeError(f"the effect failed: {session.errors.as_dict()['errors_by_kind']}")
            if not out.status.edited_faces:
                raise RuntimeError("no face found in the benchmark frame; pass --image with a clear face photo")
            if i < warmup:
                continue  # warm-up (first-call allocations, graph capture)
            totals.append(total)
            for s in STAGES:
                per_stage[s].append(session.counters.last_ms.get(s, 0.0))
    finally:
        session.close()
    ms = {s: round(statistics.median(v), 2) for s, v in per_stage.items()}
    total = statistics.median(totals)
    editor = effect.editor
    return {"mode": mode, "precision": editor.precision.name,
            "cuda_graphs": bool(cuda_graphs and editor.device.type == "cuda" and mode == "live"),
            "encoder_iters": editor.iters, "render_px": editor.render_resolution, "stage_ms": ms,
            "total_ms": round(total, 2), "fps": round(1e3 / total, 3), "frames": frames, "warmup": warmup}


def bench_frame(image: Path, landmarks: str):
    """(frame, landmarker factory or None): the photo in a 640x480 frame; "clip" replays its known landmarks
    (`stream.clips`, for machines without MediaPipe) instead of detecting them on every frame."""
    if landmarks == "clip":
        from stream.clips import clip_with_landmarks  # noqa: PLC0415

        (frame,), factory = clip_with_landmarks(1, size=(480, 640), face_height=288, amplitude=0.0, photo=image)
        return frame, factory
    return face_frame(image), None


def run(config: str = "full", image: Path = DEFAULT_IMAGE, frames: int | None = None, device: str = "auto",
        precision: str = "auto", cuda_graphs: bool = True, warmup: int = 1, landmarks: str = "mediapipe") -> dict:
    import torch  # noqa: PLC0415

    from engine.runtime import resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    frames = frames or (30 if dev.type == "cuda" else 2)
    frame, landmarker = bench_frame(Path(image), landmarks)
    G, E = build_networks(config)
    paper = measure("paper", E, frame, frames, str(dev), "fp32", False, warmup, landmarker=landmarker)
    live = measure("live", E, frame, frames, str(dev), precision, cuda_graphs, warmup, landmarker=landmarker)
    live_full = measure("live", E, frame, frames, str(dev), precision, cuda_graphs, warmup, live_resolution=None,
                        landmarker=landmarker)
    return {
        "benchmark": "stream.bench",
        "config": config,
        "landmarks": landmarks,
        "resolution": G.resolution,
        "frame": list(frame.shape),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": [paper, live, live_full],
        "live_over_paper": round(paper["total_ms"] / live["total_ms"], 2),
        "live_full_render_over_paper": round(paper["total_ms"] / live_full["total_ms"], 2),
        "target_ratio": 10.0 if dev.type == "cuda" else 5.0,
    }


def format_table(result: dict) -> str:
    cols = list(STAGES) + ["total"]
    head = (f"{'mode':<6} {'prec':<5} {'graphs':<6} {'iters':>5} {'render':>6} " + " ".join(f"{c:>10}" for c in cols)
            + f" {'fps':>8}")
    lines = [f"# stream.bench -- config {result['config']} (G {result['resolution']}px), frame "
             f"{result['frame'][1]}x{result['frame'][0]}, {result['device']} ({result['device_name']}), "
             f"torch {result['torch']}, {result['threads']} threads; ms per frame (median)", head, "-" * len(head)]
    for r in result["rows"]:
        vals = [r["stage_ms"][s] for s in STAGES] + [r["total_ms"]]
        lines.append(f"{r['mode']:<6} {r['precision']:<5} {'yes' if r['cuda_graphs'] else 'no':<6} "
                     f"{r['encoder_iters']:>5} {r['render_px']:>6} " + " ".join(f"{v:>10.1f}" for v in vals) + f" {r['fps']:>8.2f}")
    ok = "meets" if result["live_over_paper"] >= result["target_ratio"] else "BELOW"
    lines.append(f"live / paper speed-up: {result['live_over_paper']:.2f}x ({ok} the {result['target_ratio']:.0f}x "
                 f"target on {result['device']}; live renders {result['rows'][1]['render_px']}px, the size it pastes)")
    lines.append(f"live / paper with live rendering the full {result['resolution']}px too: "
                 f"{result['live_full_render_over_paper']:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.bench", description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=("full", "small"), default="full",
                   help="full: StyleGAN2 1024 + IR-SE50 ReStyle-pSp; small: G 256 + a narrow encoder")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="face photo placed in a 640x480 frame")
    p.add_argument("--frames", type=int, default=None, help="timed frames per mode (default 30 CUDA, 2 CPU)")
    p.add_argument("--warmup", type=int, default=1, help="untimed frames per mode first (default 1)")
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda[:N]")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="live mode precision (paper mode is always fp32)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="live mode eager on CUDA (default: CUDA graphs)")
    p.add_argument("--landmarks", choices=("mediapipe", "clip"), default="mediapipe",
                   help="mediapipe: detect every frame; clip: replay the photo's known landmarks (no MediaPipe "
                        "needed: $MICROMOTION_FACE_LANDMARKS, see python -m stream.clips)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.image).is_file():
        print(f"error: no image at {args.image}; pass --image with a face photo", file=sys.stderr)
        return 2
    try:
        result = run(args.config, Path(args.image), args.frames, args.device, args.precision,
                     not args.no_cuda_graphs, max(0, args.warmup), args.landmarks)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(format_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
