"""CPU cost of the capture side per 640×480 frame: landmarks, FFHQ alignment, mask, paste-back, smoothing.

    python -m stream.bench_capture [--iters 50] [--json out.json]

Prints a table of milliseconds per frame (median and mean over ``--iters`` runs, after warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict

import numpy as np


def _frame_640() -> np.ndarray:
    import skimage.data

    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 64:576] = skimage.data.astronaut()[:480, :, ::-1]
    return frame


def _time(fn: Callable[[], object], iters: int, warmup: int = 3) -> Dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times), "iters": iters}


def run(iters: int = 50) -> Dict[str, Dict[str, float]]:
    import cv2

    from stream.face.align import align_face
    from stream.face.landmarks import FaceMeshLandmarker
    from stream.face.paste import face_mask, paste_back
    from stream.face.smoothing import LandmarkSmoother
    from stream.face.tracking import FaceTracker

    frame = _frame_640()
    results: Dict[str, Dict[str, float]] = {}
    with FaceMeshLandmarker(video_mode=True) as landmarker:
        faces = landmarker.detect(frame)
        if not faces:
            raise RuntimeError("no face found in the benchmark frame; the mediapipe install looks broken")
        lm = faces[0]
        results["landmarks (FaceMesh, video mode)"] = _time(lambda: landmarker.detect(frame), iters)
    smoother = LandmarkSmoother()
    clock = iter(np.arange(10 ** 6) / 30.0)
    results["One Euro smoothing (478×2)"] = _time(lambda: smoother(lm, next(clock)), iters)
    for size in (256, 1024):
        aligned = align_face(frame, lm, size)
        edited = cv2.GaussianBlur(aligned.crop, (0, 0), 2)
        results[f"align {size}"] = _time(lambda: align_face(frame, lm, size), iters)
        results[f"face_mask {size}"] = _time(lambda: face_mask(aligned, size), iters)
        results[f"paste {size} replace (mask incl.)"] = _time(lambda: paste_back(frame, edited, aligned), iters)
        results[f"paste {size} residual (mask incl.)"] = _time(
            lambda: paste_back(frame, edited, aligned, mode="residual", base_crop=aligned.crop), iters)
    with FaceTracker(align_size=256) as tracker:
        results["FaceTracker.track (detect+smooth+align 256)"] = _time(
            lambda: tracker.track(frame, next(clock)), iters)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=50, help="timed runs per stage")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = run(args.iters)
    width = max(len(k) for k in results)
    print(f"capture stages on a 640×480 frame, CPU ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores)")
    print(f"{'stage':<{width}}  {'median ms':>9}  {'mean ms':>8}")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['median_ms']:>9.2f}  {r['mean_ms']:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"frame": [480, 640], "cpu_count": os.cpu_count(), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
