"""CPU cost of the capture side per 640×480 frame: landmarks, dlib's 68 points, FFHQ alignment, mask,
paste-back, smoothing, and the whole live frame's capture side with each aligner.

    python -m stream.bench_capture [--iters 50] [--json out.json]

Prints a table of milliseconds per frame (median and mean over ``--iters`` runs, after warm-up). Per face:
"dlib68 predictor" rows; per frame: the tracker rows ("live frame capture total" adds the 256 paste-back).
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
    """Wall-clock ms per call (median, mean, min) and this process's CPU ms per call (median; all its threads:
    steadier than wall time on a loaded machine, above it for multi-threaded stages such as MediaPipe)."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times), "min_ms": min(times),
            "cpu_ms": statistics.median(cpu), "iters": iters}


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
    results.update(_dlib_rows(frame, lm, iters))
    for aligner in ("mediapipe", "dlib68"):
        with FaceTracker(align_size=256, aligner=aligner) as tracker:
            results[f"FaceTracker.track {aligner} (detect+smooth+align 256)"] = _time(
                lambda: tracker.track(frame, next(clock)), iters)

            def live_frame():
                faces = tracker.track(frame, next(clock))
                return paste_back(frame, cv2.GaussianBlur(faces[0].aligned.crop, (0, 0), 2), faces[0].aligned,
                                  mode="residual", base_crop=faces[0].aligned.crop)

            results[f"live frame capture total, {aligner} (track + paste 256)"] = _time(live_frame, iters)
    return results


def _dlib_rows(frame: np.ndarray, landmarks: np.ndarray, iters: int) -> Dict[str, Dict[str, float]]:
    """dlib's parts: the predictor per face (one box, the tracker's three), the still-image detector, the check."""
    from stream.face import dlib68

    rows = {}
    box = dlib68.box_from_mediapipe(landmarks)
    with dlib68.ShapePredictor68() as predictor:
        rows["dlib68 predictor, per face (1 box)"] = _time(lambda: predictor(frame, box), iters)
        rows["dlib68 predictor, per face (3 boxes: video)"] = _time(
            lambda: predictor(frame, box, (0.95, 1.0, 1.05)), iters)
    with dlib68.HogFaceDetector() as detector:
        rows["dlib HOG detector, upsample 1 (stills, clips)"] = _time(lambda: detector(frame), max(3, iters // 10), 1)
    with dlib68.FaceVerifier() as verifier:
        rows["second opinion on a new face (HOG accepts)"] = _time(lambda: verifier(frame, landmarks), iters)
    with dlib68.FaceVerifier(hog_accept=float("inf")) as verifier:
        rows["second opinion, CNN path (HOG unsure)"] = _time(lambda: verifier(frame, landmarks),
                                                               max(3, iters // 10), 1)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=50, help="timed runs per stage")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = run(args.iters)
    width = max(len(k) for k in results)
    print(f"capture stages on a 640×480 frame, CPU ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores)")
    print(f"{'stage':<{width}}  {'median ms':>9}  {'mean ms':>8}  {'min ms':>7}  {'cpu ms':>7}")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['median_ms']:>9.2f}  {r['mean_ms']:>8.2f}  {r['min_ms']:>7.2f}  "
              f"{r['cpu_ms']:>7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"frame": [480, 640], "cpu_count": os.cpu_count(), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
