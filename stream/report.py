"""Temporal-consistency report of an edited clip against its source: TL-ID, TG-ID and warping error.

    report = video_report("clip.mp4", "edited.mp4", embedder="dlib")      # → dict (layout below)
    print(format_report(report)); write_report(report, "report.json")

The face is found and tracked in the *source* (the project's `FaceTracker`: MediaPipe landmarks, One Euro
smoothing, FFHQ alignment) and the edited frame is cut with the same alignment, so both embeddings see the same
image region: an edit that moves, flickers or changes the face shows up, the tracker's own alignment noise is
common to both. Identity metrics and the warping error are those of :mod:`directions.temporal`; the warping error
is reported over the whole frame and over the face (the convex hull of the source's landmarks).

Report layout::

    {"source", "edited", "frames", "source_frames", "edited_frames", "fps", "size": [W, H],
     "faces": frames with a face in the source, "embedder", "flow",
     "tl_id", "tg_id", "tl_source", "tl_edited", "tg_source", "tg_edited", "adjacent_pairs", "all_pairs",
     "warp_error", "warp_error_edited", "warp_error_source", "occluded",           whole frame
     "face_warp_error", "face_warp_error_edited", "face_warp_error_source"}         face region
"""
from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

log = logging.getLogger(__name__)

Clip = Union[str, Path, Iterable[np.ndarray]]
Progress = Union[bool, Callable[[int, Optional[int]], None]]
EMBED_BATCH = 16


def _frames(clip: Clip) -> tuple[Iterator[tuple[np.ndarray, Optional[float]]], Optional[int], Optional[float]]:
    """(iterator of (BGR frame, timestamp or None), frame count or None, fps or None) of a path or frame list."""
    if isinstance(clip, (str, Path)):
        from stream.sources import VideoFileSource  # noqa: PLC0415

        source = VideoFileSource(clip)

        def read():
            try:
                yield from source
            finally:
                source.close()
        return read(), source.frame_count, source.fps
    frames = list(clip)
    return ((f, None) for f in frames), len(frames), None


def _face_region(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: convex hull of the landmarks."""
    import cv2  # noqa: PLC0415

    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def _make_embedder(embedder):
    if isinstance(embedder, str):
        from directions.embedders import make_embedder  # noqa: PLC0415

        return make_embedder(embedder)
    return embedder


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def video_report(source_path: Clip,
                 edited_path: Clip,
                 embedder="dlib",
                 progress: Progress = True,
                 flow: str = "dis",
                 max_frames: Optional[int] = None,
                 align_size: int = 256,
                 tracker=None) -> dict:
    """TL-ID, TG-ID and warping error of `edited_path` against `source_path`.

    Args:
        source_path, edited_path: video files, or sequences of uint8 [H, W, 3] BGR frames (same size, frame by frame).
        embedder:   "dlib" | "arcface" | an object with `name` and `embed(aligned crops) -> Embeddings`.
        progress:   True → tqdm bar; a callable(done, total or None) → called after every frame; False → silent.
        flow:       "dis" | "farneback" (optical flow on the source).
        max_frames: stop after this many frames.
        align_size: side of the aligned crops given to the embedder.
        tracker:    a stream.face.tracking.FaceTracker to use (default: a fresh one, video mode, smoothing on).
    Returns:
        the dict in the module docstring (NaN → None; JSON-ready).
    Raises:
        ValueError (one line) when the clips differ in frame size.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from directions.temporal import WarpingError, identity_consistency  # noqa: PLC0415
    from stream.face.align import align_face  # noqa: PLC0415
    from stream.face.tracking import FaceTracker  # noqa: PLC0415

    emb = _make_embedder(embedder)
    src_iter, src_count, fps = _frames(source_path)
    edit_iter, edit_count, _ = _frames(edited_path)
    total = min(c for c in (src_count, edit_count, max_frames) if c is not None) \
        if any(c is not None for c in (src_count, edit_count, max_frames)) else None
    own_tracker = tracker is None
    tracker = tracker if tracker is not None else FaceTracker(max_faces=1, align_size=align_size)
    warping = WarpingError(flow)
    src_crops, edit_crops, found = [], [], []
    src_vecs, edit_vecs = [], []
    n_src = n_edit = 0
    size = None
    bar = tqdm(total=total, desc="report", unit="frame", disable=progress is not True)

    def flush():
        if src_crops:
            src_vecs.append(emb.embed(src_crops).vectors)
            edit_vecs.append(emb.embed(edit_crops).vectors)
            src_crops.clear()
            edit_crops.clear()

    try:
        for t, (a, b) in enumerate(itertools.zip_longest(src_iter, edit_iter)):
            n_src, n_edit = n_src + (a is not None), n_edit + (b is not None)
            if a is None or b is None or (max_frames is not None and t >= max_frames):
                break
            (src, ts), (edit, _) = a, b
            if src.shape != edit.shape:
                raise ValueError(f"edited frames are {edit.shape[1]}x{edit.shape[0]} but the source's are "
                                 f"{src.shape[1]}x{src.shape[0]}; the report compares frame by frame: write the "
                                 f"edit at the source's size")
            size = [int(src.shape[1]), int(src.shape[0])]
            faces = tracker.track(src, ts if ts is not None else t / (fps or 25.0))
            region = None
            if faces:
                f = faces[0]
                src_crops.append(f.aligned.crop)
                edit_crops.append(align_face(edit, f.landmarks, align_size, quad=f.aligned.quad).crop)
                region = _face_region(f.landmarks, src.shape[:2])
            found.append(bool(faces))
            warping.add(src, edit, region)
            if len(src_crops) >= EMBED_BATCH:
                flush()
            bar.update(1)
            if callable(progress):
                progress(t + 1, total)
        flush()
    finally:
        bar.close()
        if own_tracker:
            tracker.close()
    if max_frames is None:  # count what is left of the longer clip (cheap for lists; decodes the rest of a file)
        n_src += sum(1 for _ in src_iter)
        n_edit += sum(1 for _ in edit_iter)
    else:
        n_src = n_edit = len(found)
    if n_src != n_edit:
        log.warning("source has %d frames, edited %d: compared the first %d", n_src, n_edit, min(n_src, n_edit))

    found_arr = np.array(found, bool)
    dim = getattr(emb, "dim", 128)
    full_src = np.full((len(found), dim), np.nan, np.float32)
    full_edit = np.full((len(found), dim), np.nan, np.float32)
    if src_vecs:
        full_src[found_arr] = np.concatenate(src_vecs)
        full_edit[found_arr] = np.concatenate(edit_vecs)
    ident = identity_consistency(full_src, full_edit)
    w = warping.result()
    report = {
        "source": str(source_path) if isinstance(source_path, (str, Path)) else "<frames>",
        "edited": str(edited_path) if isinstance(edited_path, (str, Path)) else "<frames>",
        "frames": len(found), "source_frames": n_src, "edited_frames": n_edit, "fps": fps, "size": size,
        "faces": int(found_arr.sum()), "embedder": getattr(emb, "name", type(emb).__name__), "flow": flow,
        **ident,
        "warp_error": w["warp_error"], "warp_error_edited": w["warp_error_edited"],
        "warp_error_source": w["warp_error_source"], "occluded": w["occluded"],
        "face_warp_error": w["region_warp_error"], "face_warp_error_edited": w["region_warp_error_edited"],
        "face_warp_error_source": w["region_warp_error_source"],
    }
    return {k: _clean(v) for k, v in report.items()}


def format_report(report: dict) -> str:
    """A few lines for a terminal."""
    def f(key, digits=4):
        v = report.get(key)
        return "-" if v is None else f"{v:.{digits}f}"

    return "\n".join([
        f"temporal report: {report['edited']} vs {report['source']}  ({report['frames']} frames, "
        f"{report['faces']} with a face, embedder {report['embedder']}, flow {report['flow']})",
        f"  TL-ID {f('tl_id')}   (adjacent identity similarity: edited {f('tl_edited')} / source {f('tl_source')})",
        f"  TG-ID {f('tg_id')}   (all-pairs identity similarity: edited {f('tg_edited')} / source {f('tg_source')})",
        f"  warping error {f('warp_error', 6)} whole frame (edited {f('warp_error_edited', 6)} − source "
        f"{f('warp_error_source', 6)}), {f('face_warp_error', 6)} face region; occluded {f('occluded', 3)}",
    ])


def write_report(report: dict, path: Union[str, Path]) -> Path:
    """JSON file of a report (parents created)."""
    import json  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    return path
