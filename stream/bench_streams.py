"""python -m stream.bench_streams: N simulated 30 fps cameras through sessions and one editor, batched and
one-at-a-time in the same run.

Each camera plays the shared face photo moving (`stream.clips`, a different phase per camera) in real time into its
own Session + FrameDriver (the product's live path); all sessions share one editor behind the in-process batching
backend -- batched (faces of several streams per pass, `--max-batch`) or one at a time (max batch 1, the same
worker). Random weights of the chosen configuration: speed is real, faces are not.

    python -m stream.bench_streams --streams 1,2,4,8 [--config small|full] [--seconds S] [--json FILE]
    python -m stream.bench_streams --backend ray --replicas 1,2 --streams 4 --config small [--json FILE]

With `--backend ray` the editor runs as a Ray Serve deployment (`stream.serving.ray_backend`; a private Ray on
127.0.0.1 unless `--ray-address` names a cluster), once per replica count, batched only; rows gain "backend",
"replicas" and "mean_batch_per_replica", the result "replicas_over_one" (edits/s with R replicas / with 1) and
"wire_bytes_per_face" (what one face's request and reply carry, memory included).

Per run: edits_per_s (faces edited per second, all streams), output_fps_per_stream (frames out per second per
camera: the camera's rate when the walk keeps up), p95_latency_ms (capture -> output), mean_batch (faces per
network pass), max_edit_age_ms (oldest edit shown: never above the staleness bound), process_cores_per_stream
(CPU this process used per camera: the front end alone with --backend ray). Then one camera's live output
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

    face_height, loop_s = int(size[0] * 0.6), n / FPS   # a seamless loop: no jump restarts the faces' memories
    if landmarks == "clip":
        return clip_with_landmarks(n, size, face_height, loop_s=loop_s)
    return list(moving_face_clip(n_frames=n, size=size, face_height=face_height, loop_s=loop_s)), None


def run_once(E, deltas, frames: list, streams: int, batched: bool, seconds: float, warmup_s: float,
             device: str, max_batch: int, gather_ms: float, staleness_ms: float | None, serving: dict | None = None,
             landmarker=None, aligner: str | None = None) -> dict:
    """One configuration: `streams` cameras for `seconds` (after `warmup_s`), batched or one at a time;
    `serving`: EffectConfig serving fields (serve="ray", replicas, ...) or None for the in-process backend;
    `landmarker`: a landmarker factory (None: MediaPipe per frame)."""
    from stream.controls import Controls  # noqa: PLC0415
    from stream.driver import FrameDriver  # noqa: PLC0415
    from stream.effect import Effect  # noqa: PLC0415
    from stream.options import EffectConfig  # noqa: PLC0415

    config = EffectConfig(device=device, max_faces=1, gather_ms=gather_ms, staleness_ms=staleness_ms,
                          max_batch=max_batch if batched else 1, aligner=aligner, **(serving or {}))
    effect = Effect(config, encoder=copy.deepcopy(E) if serving is None else E, directions=deltas, batching=True,
                    landmarker_factory=landmarker)
    names = list(deltas)
    seen = spy_wire(effect) if serving else {}
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
        wire = wire_bytes(seen) if serving else None
        replica = effect.backend.handle.stats.remote().result(timeout_s=60) if serving else None
    finally:
        stop.set()
        for f in feeders:
            f.join(5)
        for d, s in zip(drivers, sessions):
            d.stop(drain=False)
            s.close()
        effect.close()
    row = _result(streams, batched, seconds, start, end, drivers, sessions,
                  config.staleness_for(effect.info.device_type))
    if serving:
        row.update(backend="ray", replicas=config.replicas, wire_bytes_per_face=wire,
                   mean_batch_per_replica=_per_replica(start["backend"], end["backend"]),
                   cpus_per_replica=config.cpus_per_replica, threads_per_replica=replica["threads"])
    return row


def _per_replica(start: dict, end: dict) -> dict:
    """{replica: faces per pass} over the measured span (the Ray backend's per-replica counters)."""
    out = {}
    for rid, r in end.get("replicas", {}).items():
        a = start.get("replicas", {}).get(rid, {"batches": 0, "batch_faces": 0})
        passes = r["batches"] - a["batches"]
        out[rid] = round((r["batch_faces"] - a["batch_faces"]) / passes, 2) if passes else 0.0
    return out


def spy_wire(effect) -> dict:
    """Wrap the backend's submit: keep the first (request, reply) whose reply carries a memory."""
    seen: dict = {}
    submit = effect.backend.submit

    def keep(jobs, future):
        if "reply" not in seen and not future.cancelled() and future.exception() is None:
            edits = future.result()
            if edits and edits[0].memory is not None:
                seen.update(request=jobs[0], reply=edits[0])

    def spying(stream_id, jobs):
        future = submit(stream_id, jobs)
        future.add_done_callback(lambda f: keep(list(jobs), f))
        return future

    effect.backend.submit = spying
    return seen


def wire_bytes(seen: dict) -> dict | None:
    """Pickled bytes of one face's request (crop + coefficients + the memory of its last edit) and reply (edit +
    base + new memory + timing), as Ray ships them; None when no edit came back."""
    import pickle  # noqa: PLC0415

    from stream.editor import FaceJob  # noqa: PLC0415

    if "reply" not in seen:
        return None
    job, edit = seen["request"], seen["reply"]
    request = len(pickle.dumps([FaceJob(job.crop, job.coefficients, edit.memory)], protocol=5))
    reply = len(pickle.dumps([edit], protocol=5))
    return {"request": request, "reply": reply, "memory": edit.memory.nbytes, "crop": int(job.crop.nbytes),
            "memory_share": round(2 * edit.memory.nbytes / (request + reply), 3)}


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
    import os  # noqa: PLC0415

    return {"t": time.monotonic(), "cpu_s": sum(os.times()[:2]), "backend": effect.stats(),
            "out": [d.processed for d in drivers],
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
            "errors": sum(s.errors.total for s in sessions) + end["backend"]["errors"],
            # CPU cores this process used per stream: with --backend ray the front end alone (replicas are other
            # processes): landmarks, alignment, paste-back, the Ray client; WebRTC coding not included
            "process_cores_per_stream": round((end["cpu_s"] - start["cpu_s"]) / span / streams, 3)}


def temporal(E, deltas, frames: list, device: str, staleness_ms: float | None, seconds: float = 3.0,
             landmarker=None, aligner: str | None = None) -> dict:
    """TL-ID / TG-ID / warping error (stream.report) of one camera's live output against the frames it was fed."""
    from stream.controls import Controls  # noqa: PLC0415
    from stream.driver import FrameDriver  # noqa: PLC0415
    from stream.effect import Effect  # noqa: PLC0415
    from stream.options import EffectConfig  # noqa: PLC0415
    from stream.report import video_report  # noqa: PLC0415

    effect = Effect(EffectConfig(device=device, max_faces=1, staleness_ms=staleness_ms, aligner=aligner),
                    encoder=copy.deepcopy(E),
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
        replicas: Sequence[int] | None = None, ray_address: str = "local", cpus_per_replica: float = 1.0,
        landmarks: str = "mediapipe", aligner: str | None = None) -> dict:
    """In-process (replicas None): batched and one-at-a-time per stream count. Ray: batched per replica count."""
    import torch  # noqa: PLC0415

    from engine.runtime import resolve_device  # noqa: PLC0415

    dev = str(resolve_device(device))
    G, E, deltas = build(config)
    frames, landmarker = camera_frames(90, size, landmarks)
    if landmarker is not None:   # replayed landmarks come without detectors (dlib is absent on GPU boxes)
        aligner = "mediapipe"
    runs = []
    plan = [(n, b, None) for n in streams for b in (False, True)] if replicas is None else \
        [(n, True, {"serve": "ray", "ray_address": ray_address, "ray_app": f"bench-r{r}", "replicas": r,
                    "cpus_per_replica": cpus_per_replica}) for r in replicas for n in streams]
    with _ray_session(ray_address if replicas is not None else None):
        for n, batched, serving in plan:
            row = run_once(E, deltas, frames, n, batched, seconds, warmup_s, dev, max_batch, gather_ms,
                           staleness_ms, serving, landmarker, aligner)
            runs.append(row)
            print(_line(row), flush=True)
    consistency = temporal(E, deltas, frames, dev, staleness_ms, landmarker=landmarker,
                           aligner=aligner) if with_report and replicas is None else None
    result = {"temporal": consistency, "benchmark": "stream.bench_streams", "config": config,
              "resolution": G.resolution, "device": dev, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "frame": [size[1], size[0]], "seconds": seconds,
              "warmup_s": warmup_s, "max_batch": max_batch, "gather_ms": gather_ms, "camera_fps": FPS, "landmarks": landmarks,
              "aligner": aligner or _default_aligner(dev), "runs": runs,
              "batched_over_single": _ratios(runs), "backend": "local" if replicas is None else "ray"}
    if replicas is not None:
        result.update(replicas=list(replicas), replicas_over_one=_replica_ratios(runs), ray_address=ray_address,
                      wire_bytes_per_face=next((r["wire_bytes_per_face"] for r in runs if r["wire_bytes_per_face"]),
                                               None))
    return result


class _ray_session:
    """With "local": one private Ray on 127.0.0.1 for every run of the benchmark (not one per run)."""

    def __init__(self, address: str | None):
        self.local = address == "local"

    def __enter__(self):
        if self.local:
            from stream.serving.ray_backend import connect  # noqa: PLC0415

            connect("local")
        return self

    def __exit__(self, *exc):
        if self.local:
            import ray  # noqa: PLC0415
            from ray import serve  # noqa: PLC0415

            serve.shutdown()
            ray.shutdown()


def _replica_ratios(runs: list) -> dict:
    """{streams: edits/s with the most replicas / with 1 replica}."""
    by = {(r["streams"], r["replicas"]): r["edits_per_s"] for r in runs}
    most = max(r["replicas"] for r in runs)
    return {str(n): round(by[(n, most)] / by[(n, 1)], 2) for n, r in by if r == most and by.get((n, 1))}


def _default_aligner(device: str) -> str:
    from stream.options import EffectConfig  # noqa: PLC0415

    return EffectConfig().aligner_for(device.split(":")[0])


def _ratios(runs: list) -> dict:
    by = {(r["streams"], r["batched"]): r for r in runs}
    return {str(n): round(by[(n, True)]["edits_per_s"] / by[(n, False)]["edits_per_s"], 2)
            for n, b in by if b and by.get((n, False), {}).get("edits_per_s")}


def _line(r: dict) -> str:
    mode = f"ray x{r['replicas']}" if r.get("backend") == "ray" else "batched" if r["batched"] else "single"
    return (f"{r['streams']:>7} {mode:>8} {r['edits_per_s']:>10.2f} "
            f"{r['output_fps_per_stream']:>9.1f} {r['min_output_fps']:>8.1f} {str(r['p95_latency_ms']):>9} "
            f"{r['mean_batch']:>6.2f} {r['max_edit_age_ms']:>10.0f} {r['edited_frame_share']:>7.2f} "
            f"{r['process_cores_per_stream']:>12.3f}")


def format_table(result: dict) -> str:
    head = (f"{'streams':>7} {'mode':>8} {'edits/s':>10} {'out fps':>9} {'min fps':>8} {'p95 ms':>9} "
            f"{'batch':>6} {'max age ms':>10} {'edited':>7} {'cores/stream':>12}")
    lines = [f"# stream.bench_streams -- config {result['config']} (G {result['resolution']}px), "
             f"{result['device']}, torch {result['torch']} {result['threads']} threads, cameras at "
             f"{result['camera_fps']:g} fps {result['frame'][0]}x{result['frame'][1]}, {result['seconds']:g} s each",
             head, "-" * len(head)] + [_line(r) for r in result["runs"]]
    if result["batched_over_single"]:
        lines.append("batched / one-at-a-time edits per second: " +
                     ", ".join(f"{n} streams {x:.2f}x" for n, x in result["batched_over_single"].items()))
    if result.get("replicas_over_one"):
        lines.append(f"{max(result['replicas'])} replicas / 1 replica edits per second: " +
                     ", ".join(f"{n} streams {x:.2f}x" for n, x in result["replicas_over_one"].items()))
        for r in result["runs"]:
            lines.append(f"  {r['streams']} streams, {r['replicas']} replica(s) ({r['cpus_per_replica']:g} CPU, "
                         f"{r['threads_per_replica']} torch threads each): faces per pass per replica "
                         f"{r['mean_batch_per_replica']}")
    wire = result.get("wire_bytes_per_face")
    if wire:
        lines.append(f"bytes per face per frame: request {wire['request']:,}, reply {wire['reply']:,} (memory "
                     f"{wire['memory']:,} each way = {wire['memory_share']:.0%} of the traffic; crop "
                     f"{wire['crop']:,})")
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
    p.add_argument("--aligner", choices=("dlib68", "mediapipe"), default=None,
                   help="the sessions' crop aligner (default: the effect's, EffectConfig.aligner_for the device; "
                        "--landmarks clip always uses mediapipe)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the temporal-consistency measurement of one live camera (stream.report)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: the in-process batching editor (default); ray: a Ray Serve deployment")
    p.add_argument("--replicas", default="1",
                   help="--backend ray: comma-separated replica counts, e.g. 1,2 (default 1); one core each here")
    p.add_argument("--cpus-per-replica", type=float, default=1.0,
                   help="--backend ray: CPU cores reserved per replica (default 1; Ray sizes torch's threads by it)")
    p.add_argument("--ray-address", default="local",
                   help="--backend ray: local (a private Ray on 127.0.0.1, default), auto or ray://HOST:PORT")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    try:
        streams = [int(x) for x in args.streams.split(",") if x.strip()]
        replicas = [int(x) for x in args.replicas.split(",") if x.strip()]
        w, h = (int(v) for v in args.size.lower().split("x"))
        if not streams or min(streams) < 1 or not replicas or min(replicas) < 1 or w < 64 or h < 64:
            raise ValueError
    except ValueError:
        print("error: --streams and --replicas take positive integers like 1,2,4,8 and --size WxH like 640x480",
              file=sys.stderr)
        return 2
    print(f"{'streams':>7} {'mode':>8} {'edits/s':>10} {'out fps':>9} {'min fps':>8} {'p95 ms':>9} {'batch':>6} "
          f"{'max age ms':>10} {'edited':>7} {'cores/stream':>12}", flush=True)
    try:
        result = run(streams, args.config, args.seconds, args.warmup, args.device, args.max_batch, args.gather_ms,
                     args.staleness_ms, (h, w), with_report=not args.no_report,
                     replicas=replicas if args.backend == "ray" else None, ray_address=args.ray_address,
                     cpus_per_replica=args.cpus_per_replica, landmarks=args.landmarks, aligner=args.aligner)
    except ValueError as exc:  # e.g. RayUnavailable: one line naming the address
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(format_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
