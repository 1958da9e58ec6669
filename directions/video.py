"""Video-anchored micromotion: aligned face crops of a clip → encoder → W+ anchors.

The anchors of a video are the encoder's W+ codes of N frames spread evenly over the clip (default 7, the
first and the last included), in time order; `directions.subspace.from_anchors` turns them into a
direction exactly like text anchors. This module takes crops that are already aligned (FFHQ crop, as
`stream.face.align.align_face` makes them); it never imports `stream`. Reading frames from a file or a folder
is here too (PyAV / OpenCV), because that needs no face tracking; `directions.build` composes the reader
with `stream`'s landmarker and aligner.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def select_frames(count: int, n: int | None = 7) -> list[int]:
    """Indices of n frames spread evenly over `count` (first and last included); all when n is None or ≥ count."""
    if count < 1:
        raise ValueError("no frames to choose from")
    if n is None or n >= count:
        return list(range(count))
    if n < 1:
        raise ValueError(f"n must be >= 1 (or None for all frames), got {n}")
    if n == 1:
        return [0]
    return [int(i) for i in np.floor(np.linspace(0, count - 1, n) + 0.5)]  # half up, not to even


def crops_to_tensor(crops, size: int) -> torch.Tensor:
    """Aligned crops → float32 [K, 3, size, size] RGB in [-1, 1].

    crops: a list of uint8 [S, S, 3] BGR arrays (stream's convention), or a tensor [K, 3, S, S] already
    RGB in [-1, 1]. Crops of another side than `size` are resized (bilinear, antialiased).
    """
    if torch.is_tensor(crops):
        x = crops.float()
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"crop tensor must be [K,3,S,S] RGB in [-1,1], got {tuple(x.shape)}")
    else:
        crops = list(crops)
        if not crops:
            raise ValueError("no aligned crops given")
        arrs = []
        for i, c in enumerate(crops):
            c = np.asarray(c)
            if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3 or c.shape[0] != c.shape[1]:
                raise ValueError(f"crop {i} must be uint8 [S,S,3] BGR, got {c.dtype} {list(c.shape)}")
            if c.shape != np.asarray(crops[0]).shape:
                raise ValueError(f"crop {i} is {list(c.shape)} but crop 0 is {list(np.asarray(crops[0]).shape)}; "
                                 f"align all frames to one size")
            arrs.append(c[:, :, ::-1])  # BGR → RGB
        x = torch.from_numpy(np.ascontiguousarray(np.stack(arrs))).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def anchor_video(
    aligned_crops,                  # list of uint8 [S,S,3] BGR crops, or tensor [K,3,S,S] RGB in [-1,1], in time order.
    encoder,                        # E(images [N,3,E.input_size,E.input_size] in [-1,1]) -> ws [N,num_ws,w_dim].
    n: int | None = 7,              # Frames spread evenly over the clip (None: all).
    batch_size: int = 8,            # Frames per encoder call.
) -> torch.Tensor:
    """W+ anchors [n, num_ws, w_dim] float32 (CPU) of n evenly spread frames (see `select_frames`)."""
    count = aligned_crops.shape[0] if torch.is_tensor(aligned_crops) else len(aligned_crops)
    if count == 0:
        raise ValueError("no aligned crops given; the clip had no usable face frames")
    idx = select_frames(count, n)
    if n is not None and n > count:
        log.warning("asked for %d frames but only %d have a face; using all %d", n, count, count)
    picked = aligned_crops[idx] if torch.is_tensor(aligned_crops) else [aligned_crops[i] for i in idx]
    x = crops_to_tensor(picked, int(encoder.input_size))
    p = next(encoder.parameters())
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], max(1, int(batch_size))):
            ws = encoder(x[s:s + batch_size].to(device=p.device, dtype=p.dtype))
            out.append(ws.float().cpu())
    ws = torch.cat(out)
    assert ws.shape == (len(idx), encoder.num_ws, encoder.w_dim), f"encoder returned {tuple(ws.shape)}"
    return ws


# ------------------------------------------------------------------------------------------------
# frame sources (no face tracking here)


def read_video_frames(path: str | Path, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video file with PyAV: yields (frame index, uint8 [H, W, 3] BGR), in order."""
    import av  # noqa: PLC0415 (lazy: heavy)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist; pass an existing clip (--video FILE)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise ValueError(f"cannot open video {path}: {e}; pass a video file PyAV/FFmpeg can decode") from e
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream; pass a video clip")
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if max_frames is not None and i >= max_frames:
                break
            yield i, frame.to_ndarray(format="bgr24")


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name (the frame order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frames folder {folder} does not exist; pass a folder of images (--frames-dir DIR)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}; put the frames there as image files")
    return files


def read_image_folder(folder: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (file name, uint8 [H, W, 3] BGR) for the images of a folder in name order."""
    import cv2  # noqa: PLC0415

    for p in list_images(folder):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("skipping %s: not a readable image", p)
            continue
        yield p.name, img


def describe_tried(labels: Sequence) -> str:
    """Short text naming the frames tried: 'frames 0–119 (120)' or 'a.png, b.png, … (12 files)'."""
    labels = list(labels)
    if not labels:
        return "no frames (the source decoded to nothing)"
    if all(isinstance(x, (int, np.integer)) for x in labels):
        if list(labels) == list(range(labels[0], labels[0] + len(labels))):
            return f"frames {labels[0]}–{labels[-1]} ({len(labels)} frames)"
        return f"frames {', '.join(map(str, labels[:8]))}{', …' if len(labels) > 8 else ''} ({len(labels)} frames)"
    shown = ", ".join(map(str, labels[:5]))
    return f"{shown}{', …' if len(labels) > 5 else ''} ({len(labels)} files)"
