"""How close the product's FFHQ crops are to the official recipe, how steady they are, and what is not a face.

    python -m stream.face.bench_align [--faces DIR] [--quick] [--json FILE]

Tables (the yardstick is :mod:`stream.face.ffhq_recipe`: dlib's HOG detector + 68-point predictor + the quad):

1. stills: quad corner error of each aligner's quad against the official quad, per face (mean corner distance
   and worst corner, % of the quad side). "default" = ``FaceTracker(video_mode=False)``; "track box" = dlib on a
   box made from MediaPipe's landmarks (what video does); "mediapipe" = MediaPipe's own eyes and mouth.
2. re-detection: the official landmarks found again on 1024² crops (ours and the official PIL crop): distance of
   the eye centres and the mouth centre from where the recipe puts this face's points (px).
3. clips: 640×480 clips of each face (sub-pixel shifts + noise; "still" and "moving"), per-frame official quads
   against the video tracker's; jitter (RMS frame-to-frame quad corner motion, % of the side) of both aligners.
4. negatives: faces found in pictures without one (synthetic cars and wheels, textures, scikit-image photos,
   blank frames), in still and video mode.

Timing is in ``python -m stream.bench_capture``.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Dict, List

import numpy as np

log = logging.getLogger(__name__)
DEFAULT_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "faces"
FACE_FILES = ("01.jpg", "mona_lisa.jpg", "van_gouh.jpg", "david.jpg", "pope.jpg")


# ------------------------------------------------------------------------------------------------ pictures

def face_pictures(faces_dir: Path | str = DEFAULT_FACES, names=FACE_FILES) -> Dict[str, np.ndarray]:
    """name → uint8 BGR picture: the reference faces, scikit-image's astronaut and (when matplotlib is there)
    its Grace Hopper photograph."""
    import cv2  # noqa: PLC0415
    import skimage.data  # noqa: PLC0415

    pictures = {}
    for name in names:
        image = cv2.imread(str(Path(faces_dir) / name))
        if image is None:
            raise FileNotFoundError(f"cannot read {Path(faces_dir) / name}; pass --faces with the reference faces")
        pictures[name] = image
    pictures["astronaut"] = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    try:
        import matplotlib.cbook  # noqa: PLC0415

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            data = np.frombuffer(f.read(), np.uint8)
        pictures["grace_hopper"] = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except (ImportError, OSError, ValueError):
        log.info("matplotlib's grace_hopper.jpg is not available; skipped")
    return pictures


def negative_pictures() -> Dict[str, np.ndarray]:
    """name → uint8 BGR picture without a human face: drawn cars (front: two round lamps and a grille; side:
    spoked wheels), a pair of tyres, scikit-image's colour wheel, motorbike, moon, coins, coffee, cat, rocket,
    textures, and blank / noise frames."""
    import skimage.data  # noqa: PLC0415

    def bgr(a):
        a = np.asarray(a)
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, -1)
        if a.dtype != np.uint8:
            a = (255 * (a - a.min()) / max(float(np.ptp(a)), 1e-9)).astype(np.uint8)
        return np.ascontiguousarray(a[..., :3][..., ::-1])

    out = {f"car_front_{i}": _car_front(i) for i in range(3)}
    out.update({f"car_side_{i}": _car_side(i) for i in range(3)})
    out["tyres"] = _tyres()
    for name in ("colorwheel", "moon", "coins", "coffee", "chelsea", "rocket", "brick", "gravel", "grass",
                 "clock", "text", "hubble_deep_field"):
        out[name] = bgr(getattr(skimage.data, name)())
    out["motorcycle"] = bgr(skimage.data.stereo_motorcycle()[0])
    out["black"] = np.zeros((480, 640, 3), np.uint8)
    out["grey"] = np.full((480, 640, 3), 128, np.uint8)
    out["white"] = np.full((480, 640, 3), 255, np.uint8)
    out["noise"] = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return out


def _car_front(seed: int) -> np.ndarray:
    import cv2  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    img = np.full((480, 640, 3), rng.integers(100, 200, 3), np.uint8)
    body = tuple(int(c) for c in rng.integers(0, 255, 3))
    cv2.rectangle(img, (80, 180), (560, 400), body, -1)
    cv2.rectangle(img, (150, 100), (490, 200), body, -1)
    cv2.rectangle(img, (170, 115), (470, 190), (60, 60, 70), -1)            # windscreen
    for cx in (160, 480):                                                    # round lamps
        cv2.circle(img, (cx, 250), 40, (230, 230, 210), -1)
        cv2.circle(img, (cx, 250), 40, (40, 40, 40), 4)
        cv2.circle(img, (cx, 250), 15, (255, 255, 255), -1)
    cv2.rectangle(img, (230, 300), (410, 360), (30, 30, 30), -1)            # grille
    for x in range(240, 410, 20):
        cv2.line(img, (x, 300), (x, 360), (150, 150, 150), 2)
    for cx in (120, 520):
        cv2.rectangle(img, (cx - 40, 400), (cx + 40, 460), (20, 20, 20), -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def _car_side(seed: int) -> np.ndarray:
    import cv2  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    img = np.full((480, 640, 3), rng.integers(100, 220, 3), np.uint8)
    body = tuple(int(c) for c in rng.integers(0, 255, 3))
    cv2.rectangle(img, (60, 220), (580, 340), body, -1)
    cv2.rectangle(img, (180, 150), (450, 230), body, -1)
    cv2.rectangle(img, (200, 160), (300, 220), (70, 80, 90), -1)
    cv2.rectangle(img, (320, 160), (430, 220), (70, 80, 90), -1)
    for cx in (170, 470):                                                    # spoked wheels
        cv2.circle(img, (cx, 340), 60, (25, 25, 25), -1)
        cv2.circle(img, (cx, 340), 35, (190, 190, 190), -1)
        for a in np.deg2rad(np.arange(0, 360, 72)):
            cv2.line(img, (cx, 340), (int(cx + 33 * np.cos(a)), int(340 + 33 * np.sin(a))), (90, 90, 90), 5)
        cv2.circle(img, (cx, 340), 8, (60, 60, 60), -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def _tyres() -> np.ndarray:
    import cv2  # noqa: PLC0415

    img = np.full((480, 640, 3), 120, np.uint8)
    for cx in (200, 440):
        cv2.circle(img, (cx, 240), 100, (20, 20, 20), -1)
        cv2.circle(img, (cx, 240), 60, (200, 200, 200), -1)
        cv2.circle(img, (cx, 240), 20, (50, 50, 50), -1)
    return img


def face_clip(picture_bgr: np.ndarray, landmarks478: np.ndarray, n: int = 45, face_px: float = 160.0,
              moving: bool = False, seed: int = 0) -> List[np.ndarray]:
    """n uint8 BGR 640×480 frames of the picture's face (``face_px`` wide, centred), each shifted by a random
    sub-pixel amount (±0.5 px) with Gaussian noise (σ = 4 levels); ``moving`` adds a slow sway (±30 px, ±4°,
    ±5% scale over the clip)."""
    import cv2  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    lm = np.asarray(landmarks478, np.float64)
    centre = lm.mean(0)
    k = face_px / max(float(np.ptp(lm[:, 0])), 1.0)
    frames = []
    for i in range(n):
        phase = 2 * np.pi * i / n
        dx, dy = rng.uniform(-0.5, 0.5, 2)
        angle, scale = 0.0, k
        if moving:
            dx, dy = dx + 30 * np.sin(phase), dy + 10 * np.sin(2 * phase)
            angle, scale = 4 * np.sin(phase), k * (1 + 0.05 * np.sin(phase))
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
        m[:, 2] += np.array([320 + dx - centre[0], 240 + dy - centre[1]])
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.warpAffine(picture_bgr, m, (640, 480), flags=interp, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8))
    return frames


# ------------------------------------------------------------------------------------------------ measures

def corner_errors(quad: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean, worst) corner distance between two quads, in % of the reference quad's side."""
    side = float(np.hypot(*(reference[3] - reference[0])))
    d = np.linalg.norm(np.asarray(quad) - np.asarray(reference), axis=1) / side * 100
    return float(d.mean()), float(d.max())


def jitter(quads: List[np.ndarray], warmup: int) -> float:
    """RMS frame-to-frame motion of the quad corners after ``warmup`` frames, % of the quad side."""
    kept = [q for q in quads[warmup:] if q is not None]
    if len(kept) < 2:
        return float("nan")
    q = np.asarray(kept)
    side = float(np.hypot(*(q[0][3] - q[0][0])))
    return float(np.sqrt(np.mean(np.diff(q, axis=0) ** 2)) / side * 100)


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1])


def _eye_centre(landmarks478: np.ndarray) -> np.ndarray:
    from stream.face.align import recipe_points  # noqa: PLC0415

    return recipe_points(landmarks478)[:2].mean(0)


def still_table(pictures: Dict[str, np.ndarray], official) -> List[dict]:
    """Quad corner error of each aligner against the official quad, per picture (still-image mode)."""
    from stream.face.align import ffhq_quad  # noqa: PLC0415
    from stream.face.ffhq_recipe import official_quad  # noqa: PLC0415
    from stream.face.tracking import FaceTracker  # noqa: PLC0415

    rows = []
    with FaceTracker(video_mode=False) as default, FaceTracker(video_mode=False, dlib_box="track") as track:
        for name, picture in pictures.items():
            row = {"face": name, "size": list(picture.shape[:2])}
            faces = default.track(picture, 0.0)
            if not faces:
                rows.append({**row, "found": False})
                continue
            face = faces[0]
            ref = official.nearest(_rgb(picture), _eye_centre(face.raw_landmarks))
            row.update(found=True, aligner=face.aligner, box=face.box, disagreement=round(face.disagreement * 100, 2))
            if ref is None:
                rows.append({**row, "official": False})
                continue
            ref_quad = official_quad(ref)
            tracked = track.track(picture, 0.0)
            row.update(official=True,
                       default=corner_errors(face.aligned.quad, ref_quad),
                       track_box=corner_errors(tracked[0].aligned.quad, ref_quad) if tracked else None,
                       mediapipe=corner_errors(ffhq_quad(face.raw_landmarks), ref_quad))
            rows.append(row)
    return rows


def redetect_table(pictures: Dict[str, np.ndarray], official, size: int = 1024,
                   transform_size: int = 4096) -> List[dict]:
    """Official landmarks found again on 1024² crops: px from where the recipe puts eyes and mouth."""
    from stream.face.align import align_face, ffhq_quad  # noqa: PLC0415
    from stream.face.ffhq_recipe import canonical_eye_mouth, measured_eye_mouth, official_crop  # noqa: PLC0415
    from stream.face.tracking import FaceTracker  # noqa: PLC0415

    rows = []
    with FaceTracker(video_mode=False, align_size=size) as tracker:
        for name, picture in pictures.items():
            faces = tracker.track(picture, 0.0)
            if not faces:
                continue
            face = faces[0]
            ref = official.nearest(_rgb(picture), _eye_centre(face.raw_landmarks))
            if ref is None:
                continue
            target = canonical_eye_mouth(ref, size)
            mp_quad = ffhq_quad(face.raw_landmarks)
            crops = {"official": _rgb(official_crop(_rgb(picture), ref, size, transform_size)),
                     "default": face.aligned.crop,
                     "mediapipe": align_face(picture, face.raw_landmarks, size, quad=mp_quad).crop}
            row = {"face": name}
            for kind, crop in crops.items():
                found = official.nearest(_rgb(crop), target[:2].mean(0))
                row[kind] = (None if found is None
                             else np.linalg.norm(measured_eye_mouth(found) - target, axis=1).round(2).tolist())
            rows.append(row)
    return rows


CLIP_VARIANTS = {"track": dict(aligner="dlib68", dlib_box="track"),    # live video (default)
                 "hog": dict(aligner="dlib68", dlib_box="hog"),        # offline clips (stream.face.clip)
                 "mediapipe": dict(aligner="mediapipe")}


def clip_table(pictures: Dict[str, np.ndarray], official, frames: int = 45, warmup: int = 10) -> List[dict]:
    """Per clip and tracker variant: quads against per-frame official quads (median, worst) and against the
    official quads' median ("centre", still clips), jitter; the official quads' own jitter."""
    from stream.face.ffhq_recipe import official_quad  # noqa: PLC0415
    from stream.face.landmarks import FaceMeshLandmarker  # noqa: PLC0415
    from stream.face.tracking import FaceTracker  # noqa: PLC0415

    rows = []
    with FaceMeshLandmarker(video_mode=False) as still:
        placements = {name: still.detect(p) for name, p in pictures.items()}
    for name, picture in pictures.items():
        if not placements[name]:
            continue
        for moving in (False, True):
            clip = face_clip(picture, placements[name][0], n=frames, moving=moving)
            refs = [official.nearest(_rgb(f), np.array([320.0, 240.0])) for f in clip]
            ref_quads = [None if r is None else official_quad(r) for r in refs]
            known = [q for q in ref_quads[warmup:] if q is not None]
            centre = np.median(np.asarray(known), axis=0)
            row = {"face": name, "clip": "moving" if moving else "still", "frames": frames, "warmup": warmup,
                   "official_missed": sum(r is None for r in refs), "official_jitter": jitter(ref_quads, warmup)}
            if not moving:  # how far the official quads themselves stray from their median: a floor for "err"
                row["official_spread"] = float(np.median([corner_errors(q, centre)[0] for q in known]))
            for variant, kwargs in CLIP_VARIANTS.items():
                with FaceTracker(**kwargs) as tracker:
                    got = [tracker.track(f, i / 30.0) for i, f in enumerate(clip)]
                quads = [g[0].aligned.quad if g else None for g in got]
                kept = [i for i in range(warmup, frames) if quads[i] is not None and ref_quads[i] is not None]
                errs = np.array([corner_errors(quads[i], ref_quads[i]) for i in kept])
                row[variant] = {"missed": sum(q is None for q in quads),
                                "err_median": float(np.median(errs[:, 0])), "err_worst": float(errs[:, 0].max()),
                                "corner_worst": float(errs[:, 1].max()), "jitter": jitter(quads, warmup)}
                if not moving:
                    row[variant]["err_centre"] = float(np.median([corner_errors(quads[i], centre)[0] for i in kept]))
            rows.append(row)
    return rows


def negative_table(pictures: Dict[str, np.ndarray]) -> List[dict]:
    """Faces found in pictures without one: MediaPipe alone, and the tracker (still mode; video mode, 5 frames)."""
    from stream.face.landmarks import FaceMeshLandmarker  # noqa: PLC0415
    from stream.face.tracking import FaceTracker  # noqa: PLC0415

    rows = []
    with FaceMeshLandmarker(video_mode=False, max_faces=2, verify_tiles=False) as bare, \
            FaceTracker(video_mode=False, max_faces=2) as still:
        for name, picture in pictures.items():
            with FaceTracker(max_faces=2) as video:
                video_found = max(len(video.track(picture, i / 30.0)) for i in range(5))
            rows.append({"picture": name, "mediapipe_still": len(bare.detect(picture)),
                         "still": len(still.track(picture, 0.0)), "video": video_found})
    return rows


# ------------------------------------------------------------------------------------------------ report

def _fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def print_report(result: dict) -> None:
    stills = [r for r in result["stills"] if r.get("official")]
    print("1. stills: quad corner error vs the official recipe (% of side: mean corner / worst corner)")
    print(f"{'face':14s} {'box':5s} {'aligner':9s} {'default':>13s} {'track box':>13s} {'mediapipe':>13s}")
    for r in result["stills"]:
        if not r.get("official"):
            print(f"{r['face']:14s} {'found' if r.get('found') else 'no face'}; the official detector finds none")
            continue
        cells = [f"{_fmt(r[k][0])} / {_fmt(r[k][1])}" if r.get(k) else "-" for k in ("default", "track_box",
                                                                                         "mediapipe")]
        print(f"{r['face']:14s} {r['box']:5s} {r['aligner']:9s} {cells[0]:>13s} {cells[1]:>13s} {cells[2]:>13s}")
    for k in ("default", "track_box", "mediapipe"):
        vals = [r[k] for r in stills if r.get(k)]
        if vals:
            print(f"  {k:10s} median {statistics.median(v[0] for v in vals):.2f}%  worst corner "
                  f"{max(v[1] for v in vals):.2f}%")
    print("\n2. re-detection on 1024² crops: px from the recipe's positions (eye_left, eye_right, mouth)")
    for r in result["redetect"]:
        print(f"{r['face']:14s} " + "  ".join(f"{k} {r[k]}" for k in ("official", "default", "mediapipe")))
    for k in ("official", "default", "mediapipe"):
        per_point = np.array([r[k] for r in result["redetect"] if r.get(k)])
        if len(per_point):
            print(f"  {k:10s} median per point {np.median(per_point, axis=0).round(2).tolist()}  "
                  f"worst {per_point.max():.2f}")
    print("\n3. clips (640×480, face 160 px): % of side; err = vs each frame's official quad (median / worst),"
          " ctr = vs the official quads' median (still clips), jit = RMS corner motion per frame; spread = the"
          " official quads' own median distance from their median (still clips)")
    print(f"{'face':14s} {'clip':7s} " + " ".join(f"{v + ' err':>13s} {'ctr':>5s} {'jit':>5s}" for v in CLIP_VARIANTS)
          + f" {'official jit':>12s} {'spread':>6s}")
    for r in result["clips"]:
        cells = []
        for v in CLIP_VARIANTS:
            c = r[v]
            cells.append(f"{c['err_median']:6.2f}/{c['err_worst']:6.2f} {_fmt(c.get('err_centre')):>5s} "
                         f"{c['jitter']:5.3f}")
        print(f"{r['face']:14s} {r['clip']:7s} " + " ".join(cells) + f" {r['official_jitter']:12.3f} "
              f"{_fmt(r.get('official_spread')):>6s}")
    for clip in ("still", "moving"):
        for v in CLIP_VARIANTS:
            rows = [r[v] for r in result["clips"] if r["clip"] == clip]
            if not rows:
                continue
            centre = (f"  centre {statistics.median(x['err_centre'] for x in rows):.2f}%" if clip == "still" else "")
            print(f"  {clip:6s} {v:9s} median of medians {statistics.median(x['err_median'] for x in rows):.2f}%"
                  f"  worst {max(x['err_worst'] for x in rows):.2f}%" + centre)
    print("\n4. negatives: faces found (MediaPipe alone in still mode / tracker still / tracker video)")
    for r in result["negatives"]:
        print(f"{r['picture']:20s} {r['mediapipe_still']} / {r['still']} / {r['video']}")


def run(faces_dir: Path | str = DEFAULT_FACES, quick: bool = False) -> dict:
    from tqdm import tqdm  # noqa: PLC0415

    from stream.face.ffhq_recipe import OfficialLandmarks  # noqa: PLC0415

    pictures = face_pictures(faces_dir)
    official = OfficialLandmarks()
    steps = [("stills", lambda: still_table(pictures, official)),
             ("redetect", lambda: redetect_table(pictures, official, transform_size=1024 if quick else 4096)),
             ("clips", lambda: clip_table(pictures, official, frames=20 if quick else 45, warmup=5 if quick else 10)),
             ("negatives", lambda: negative_table(negative_pictures()))]
    result = {}
    for name, step in tqdm(steps, desc="bench_align", unit="table"):
        result[name] = step()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", default=str(DEFAULT_FACES), help="folder with the reference faces")
    parser.add_argument("--quick", action="store_true", help="shorter clips, 1024 official transform")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    result = run(args.faces, args.quick)
    print_report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
