"""Aligned FFHQ crops of the face in a clip or a folder of frames: the aligner video anchoring uses.

`python -m directions build --video` passes `aligned_crops_from_source` to `directions.build.run` (directions never
imports stream; the entry point composes the two layers).
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def aligned_crops_from_source(source: str | Path, size: int = 256, is_folder: bool = False,
                              max_frames: int | None = None, progress: bool = True):
    """Aligned FFHQ crops of the face in a clip (or a folder of frames), in time order.

    Returns (crops: list of uint8 [size, size, 3] BGR, labels: frame index (clip) or file name (folder)).
    Frames without a face are skipped; none at all → ValueError naming the frames tried.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from directions.video import describe_tried, list_images, read_image_folder, read_video_frames  # noqa: PLC0415
    from stream.face.align import align_face  # noqa: PLC0415
    from stream.face.landmarks import FaceMeshLandmarker  # noqa: PLC0415

    if is_folder:
        frames, total = read_image_folder(source), len(list_images(source))
    else:
        frames, total = read_video_frames(source, max_frames=max_frames), None
    crops, labels, tried = [], [], []
    landmarker = FaceMeshLandmarker(max_faces=1, video_mode=not is_folder)
    try:
        for label, frame in tqdm(frames, total=total, desc="align", unit="frame", disable=not progress):
            tried.append(label)
            faces = landmarker.detect(frame)
            if not faces:
                continue
            crops.append(align_face(frame, faces[0], size=size).crop)
            labels.append(label)
    finally:
        landmarker.close()
    if not crops:
        raise ValueError(f"no face found in {source}: tried {describe_tried(tried)}; "
                         f"use a clip where one face is visible and reasonably large")
    skipped = len(tried) - len(crops)
    if skipped:
        log.warning("%d of %d frames had no face and were skipped", skipped, len(tried))
    return crops, labels
