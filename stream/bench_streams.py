"""python -m stream.bench_streams: N simulated 30 fps cameras through sessions and one editor, batched and
one-at-a-time in the same run.

Each camera plays the shared face photo moving (`stream.clips`, a different phase per camera) in real time into its
own Session + FrameDriver (the product's live path); all sessions share one editor behind the in-process batching
backend -- batched (faces of several streams per pass, `--max-batch`) or one at a time (max batch 1, the same
worker). Random weights of the chosen configuration: speed is real, faces are not.

    python -m stream.bench_streams --streams 1,2,4,8 [--config small|full] [--seconds S] [--json FILE]

Per run: edits_per_s (faces edited per second, all streams), output_fps_per_stream (frames out per second per
camera: the camera's rate when the walk keeps up), p95_latency_ms (capture -> output), mean_batch (faces per
network pass), max_edit_age_ms (oldest edit shown: never above the staleness bound). Then one camera's live output
is measured against the frames it was fed (`stream.report`: TL-ID, TG-ID, warping error).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import threading
import time
from typing import Sequence

import numpy as np

from engine.bench import report

FPS = 30.0


def build(config: str, directions: int = 4):
    """(G, E, {name: delta}) of random weights: "small" (G 256) or "full" (G 1024 + IR-SE50 ReStyle-pSp)."""
    import torch  # noqa: PLC0415

    from stream.bench import build_networks  # noqa: PLC0415

    G, E = build_networks(config)
    gen = torch.Generator().manual_seed(2)
    deltas = {f"d{i}": torch.randn(G.num_ws, G.w_dim, generator=gen) * 0.1 for i in range(directions)}
    return G, E, deltas


def camera_frames(n: int, size: tuple[int, int], landmarks: str = "mediapipe"):
    """(frames, landmarker_factory): one loop of the moving face (`n` frames at 30 fps), shared by every camera at
    its own phase; the factory is None (MediaPipe per frame) or replays the clip's known landmarks ("clip")."""
    from stream.clips import clip_with_landmarks, moving_face_clip  # noqa: PLC0415

    face_height = int(size[0] * 0.6)
    if landmarks == "clip":
        return clip_with_landmarks(n, size, face_height)
    return list(moving_face_clip(n_frames=n, size=size, face_height=face_height)), None


def run_once(E, deltas, frames: list, streams: int, batched: bool, seconds: float, warmup_s: float,
             device: str, max_batch: int, gather_ms: float, staleness_ms: float | None, landmarker=None) -> dict:
    """One configuration: `streams` cameras for `seconds` (after `warmup_s`), batched or one at a time."""
    from stream.controls import Controls  # noqa: PLC0415
    from stream.driver import FrameDriver  # noqa: PLC0415
    from stream.effect import Effect  # noqa: PLC0415
    from stream.options import EffectConfig  # noqa: PLC0415

    config = EffectConfig(device=device, max_faces=1, gather_ms=gather_ms, staleness_ms=staleness_ms,
                          max_batch=max_batch if batched else 1)
    effect = Effect(config, encoder=copy.deepcopy(E), directions=deltas, batching=True, landmarker_factory=landmarker)
    names = list(deltas)
    sessions = [effect.new_session(controls=Controls(directions={names[i % len(names)]: 2.0 + i}))
                for i in range(streams)]
    drivers = [FrameDriver(s, name=f"cam{i}").start() for i, s in enumerate(sessions)]
    stop = threading.Event()
    feeders = [threading.Thread(target=_camera, args=(d, frames, 7 * i, stop), daemon=True)
               for i, d in enumerate(drivers)]
    for f in feeders:
        f.start()
    try:
        time.sleep(warmup_s)
        start = _snapshot(effect, drivers, sessions)
        time.sleep(seconds)
        end = _snapshot(effect, drivers, sessions)
    finally:
        stop.set()
        for f in feeders:
            f.join(5)
        for d, s in zip(drivers, sessions):
            d.stop(drain=False)
            s.close()
        effect.close()
    return _result(streams, batched, seconds, start, end, drivers, sessions, config.staleness_for(device))


def _camera(driver, frames: list, offset: int, stop: threading.Event) -> None:
    """Push frames at 30 fps in real time, like a camera (never waits for the output); meta = the frame's index."""
    t0, i = time.perf_counter(), 0
    while not stop.is_set():
        driver.push(frames[(offset + i) % len(frames)], meta=(offset + i) % len(frames))
        i += 1
        delay = t0 + i / FPS - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def _snapshot(effect, drivers, sessions) -> dict:
    return {"t": time.monotonic(), "backend": effect.stats(), "out": [d.processed for d in drivers],
            "in": [d.frames_in for d in drivers], "lat_n": [len(d.latencies()) for d in drivers],
            "edits": [s.counters.edits for s in sessions]}


def _result(streams, batched, seconds, start, end, drivers, sessions, bound_ms) -> dict:
    span = end["t"] - start["t"]
    out_fps = [(b - a) / span for a, b in zip(start["out"], end["out"])]
    in_fps = [(b - a) / span for a, b in zip(start["in"], end["in"])]
    lat = [ms for d in drivers for _i, ms in d.latencies()[-int(seconds * FPS * 1.5):]]
    faces = end["backend"]["faces"] - start["backend"]["faces"]
    passes = end["backend"]["batches"] - start["backend"]["batches"]
    return {"streams": streams, "batched": batched, "edits_per_s": round(faces / span, 3),
            "output_fps_per_stream": round(statistics.mean(out_fps), 2),
            "min_output_fps": round(min(out_fps), 2), "input_fps_per_stream": round(statistics.mean(in_fps), 2),
            "p95_latency_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
            "mean_batch": round(faces / passes, 2) if passes else 0.0,
            "max_edit_age_ms": round(max(s.counters.max_edit_age_ms for s in sessions), 1),
            "staleness_ms": bound_ms, "edited_frame_share": round(
                sum(s.counters.edited for s in sessions) / max(1, sum(s.counters.frames for s in sessions)), 3),
            "errors": sum(s.errors.total for s in sessions) + end["backend"]["errors"]}


def temporal(E, deltas, frames: list, device: str, staleness_ms: float | None, seconds: float = 3.0,
             landmarker=None) -> dict:
    """TL-ID / TG-ID / warping error (stream.report) of one camera's live output against the frames it was fed."""
    from stream.controls import Controls  # noqa: PLC0415
    from stream.driver import FrameDriver  # noqa: PLC0415
    from stream.effect import Effect  # noqa: PLC0415
    from stream.options import EffectConfig  # noqa: PLC0415
    from stream.report import video_report  # noqa: PLC0415

    effect = Effect(EffectConfig(device=device, max_faces=1, staleness_ms=staleness_ms), encoder=copy.deepcopy(E),
                    directions=deltas, batching=True, landmarker_factory=landmarker)
    session = effect.new_session(controls=Controls(directions={next(iter(deltas)): 3.0}))
    pairs: list = []
    driver = FrameDriver(session, on_output=lambda f, info: pairs.append((info["meta"], f.copy()))).start()
    stop = threading.Event()
    camera = threading.Thread(target=_camera, args=(driver, frames, 0, stop), daemon=True)
    camera.start()
    time.sleep(seconds)
    stop.set()
    camera.join(5)
    driver.stop()
    session.close()
    effect.close()
    report = video_report([frames[i] for i, _ in pairs], [f for _, f in pairs], progress=False)
    keys = ("frames", "faces", "tl_id", "tg_id", "warp_error", "face_warp_error")
    return {k: report.get(k) for k in keys}


def run(streams: Sequence[int], config: str, seconds: float, warmup_s: float, device: str, max_batch: int,
        gather_ms: float, staleness_ms: float | None, size: tuple[int, int], with_report: bool = True,
        landmarks: str = "mediapipe") -> dict:
    import torch  # noqa: PLC0415

    from engine.runtime import resolve_device  # noqa: PLC0415

    dev = str(resolve_device(device))
    G, E, deltas = build(config)
    frames, landmarker = camera_frames(90, size, landmarks)
    runs = []
    for n in streams:
        for batched in (False, True):
            row = run_once(E, deltas, frames, n, batched, seconds, warmup_s, dev, max_batch, gather_ms,
                           staleness_ms, landmarker)
            runs.append(row)
            print(_line(row), flush=True)
    consistency = temporal(E, deltas, frames, dev, staleness_ms, landmarker=landmarker) if with_report else None
    return {"temporal": consistency,"benchmark": "stream.bench_streams", "config": config, "resolution": G.resolution, "device": dev,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "frame": [size[1], size[0]],
            "seconds": seconds, "warmup_s": warmup_s, "max_batch": max_batch, "gather_ms": gather_ms,
            "camera_fps": FPS, "landmarks": landmarks, "runs": runs, "batched_over_single": _ratios(runs)}


def _ratios(runs: list) -> dict:
    by = {(r["streams"], r["batched"]): r for r in runs}
    return {str(n): round(by[(n, True)]["edits_per_s"] / by[(n, False)]["edits_per_s"], 2)
            for n, b in by if b and by.get((n, False), {}).get("edits_per_s")}


def _line(r: dict) -> str:
    return (f"{r['streams']:>7} {'batched' if r['batched'] else 'single':>8} {r['edits_per_s']:>10.2f} "
            f"{r['output_fps_per_stream']:>9.1f} {r['min_output_fps']:>8.1f} {str(r['p95_latency_ms']):>9} "
            f"{r['mean_batch']:>6.2f} {r['max_edit_age_ms']:>10.0f} {r['edited_frame_share']:>7.2f}")


def format_table(result: dict) -> str:
    head = (f"{'streams':>7} {'mode':>8} {'edits/s':>10} {'out fps':>9} {'min fps':>8} {'p95 ms':>9} "
            f"{'batch':>6} {'max age ms':>10} {'edited':>7}")
    lines = [f"# stream.bench_streams -- config {result['config']} (G {result['resolution']}px), "
             f"{result['device']}, torch {result['torch']} {result['threads']} threads, cameras at "
             f"{result['camera_fps']:g} fps {result['frame'][0]}x{result['frame'][1]}, {result['seconds']:g} s each",
             head, "-" * len(head)] + [_line(r) for r in result["runs"]]
    lines.append("batched / one-at-a-time edits per second: " +
                 ", ".join(f"{n} streams {x:.2f}x" for n, x in result["batched_over_single"].items()))
    t = result.get("temporal")
    if t:
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"temporal consistency of one live camera ({t['frames']} frames out, {t['faces']} with a face): "
                     f"TL-ID {fmt(t['tl_id'])}, TG-ID {fmt(t['tg_id'])}, warping error {fmt(t['warp_error'])} "
                     f"(face {fmt(t['face_warp_error'])}); 1, 1 and 0 = as steady as the camera")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.bench_streams", description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="1,2,4,8", help="comma-separated camera counts (default 1,2,4,8)")
    p.add_argument("--config", choices=("small", "full"), default="small",
                   help="small: G 256 + a narrow encoder; full: StyleGAN2 1024 + IR-SE50 ReStyle-pSp")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda[:N]")
    p.add_argument("--max-batch", type=int, default=8, help="batched runs: most faces per pass (default 8)")
    p.add_argument("--gather-ms", type=float, default=4.0, help="gather window (default 4)")
    p.add_argument("--staleness-ms", type=float, default=None, help="staleness bound (default: the device's)")
    p.add_argument("--size", default="640x480", help="camera frame size WxH (default 640x480)")
    p.add_argument("--landmarks", choices=("mediapipe", "clip"), default="mediapipe",
                   help="mediapipe: detect every frame (the real cost); clip: replay the clip's known landmarks "
                        "(machines without MediaPipe, e.g. the GPU check; $MICROMOTION_FACE_LANDMARKS)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the temporal-consistency measurement of one live camera (stream.report)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    try:
        streams = [int(x) for x in args.streams.split(",") if x.strip()]
        w, h = (int(v) for v in args.size.lower().split("x"))
        if not streams or min(streams) < 1 or w < 64 or h < 64:
            raise ValueError
    except ValueError:
        print("error: --streams takes positive integers like 1,2,4,8 and --size WxH like 640x480", file=sys.stderr)
        return 2
    print(f"{'streams':>7} {'mode':>8} {'edits/s':>10} {'out fps':>9} {'min fps':>8} {'p95 ms':>9} {'batch':>6} "
          f"{'max age ms':>10} {'edited':>7}", flush=True)
    result = run(streams, args.config, args.seconds, args.warmup, args.device, args.max_batch, args.gather_ms,
                 args.staleness_ms, (h, w), with_report=not args.no_report, landmarks=args.landmarks)
    report(format_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
