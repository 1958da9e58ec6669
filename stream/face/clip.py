"""Aligned FFHQ crops of the face in a clip or a folder of frames: the aligner video anchoring uses.

`python -m directions build --video` passes `aligned_crops_from_source` to `directions.build.run` (directions never
imports stream; the entry point composes the two layers).

The crops follow the official FFHQ recipe (dlib's 68 landmarks; :mod:`stream.face.tracking`): a clip is tracked
(MediaPipe in video mode, One Euro smoothing, dlib's offset low-passed) with dlib's predictor started on dlib's own
HOG box in every frame -- slow (≈0.1 s per 640×480 frame) but offline, and the crops sit on the official ones; a
folder is a set of still images, each aligned on its own exactly as the official scripts would.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)
OFFLINE_MIN_EYE_PX = 8.0

CLIP_FPS = 30.0  # timestamps for the smoothing when the clip's own rate is not known


def aligned_crops_from_source(source: str | Path, size: int = 256, is_folder: bool = False,
                              max_frames: int | None = None, progress: bool = True, aligner: str = "dlib68"):
    """Aligned FFHQ crops of the face in a clip (or a folder of frames), in time order.

    Returns (crops: list of uint8 [size, size, 3] BGR, labels: frame index (clip) or file name (folder)).
    Frames without a face are skipped; none at all → ValueError naming the frames tried.
    ``aligner``: "dlib68" (the official recipe's landmarks) or "mediapipe".
    """
    from tqdm import tqdm  # noqa: PLC0415

    from directions.video import describe_tried, list_images, read_image_folder, read_video_frames  # noqa: PLC0415
    from stream.face.tracking import FaceTracker  # noqa: PLC0415

    if is_folder:
        frames, total = read_image_folder(source), len(list_images(source))
    else:
        frames, total = read_video_frames(source, max_frames=max_frames), None
    crops, labels, tried = [], [], []
    # offline anchoring takes small faces too (eyes >= OFFLINE_MIN_EYE_PX apart; the live default of 20 px is about
    # the paste looking right, not about the crop being usable)
    tracker = FaceTracker(max_faces=1, align_size=size, video_mode=not is_folder, smooth=not is_folder,
                          aligner=aligner, dlib_box="hog", min_eye_dist_px=OFFLINE_MIN_EYE_PX)
    try:
        for i, (label, frame) in enumerate(tqdm(frames, total=total, desc="align", unit="frame",
                                                disable=not progress)):
            tried.append(label)
            faces = tracker.track(frame, i / CLIP_FPS)
            if not faces:
                continue
            crops.append(faces[0].aligned.crop)
            labels.append(label)
        stats = tracker.stats()
    finally:
        tracker.close()
    if not crops:
        raise ValueError(f"no face found in {source}: tried {describe_tried(tried)}; "
                         f"use a clip where one face is visible and reasonably large")
    skipped = len(tried) - len(crops)
    if skipped:
        log.warning("%d of %d frames had no face and were skipped", skipped, len(tried))
    log.info("aligned %d frames: landmarks used %s, %d rejected as not a face", len(crops), stats["used"],
             stats["rejected"])
    return crops, labels
