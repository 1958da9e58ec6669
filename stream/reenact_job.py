"""The reenactment clip job: a driver clip moves the face of a target photo, written as an mp4.

The clip job (``run_job``), every frame in order, with the driver's audio:

    driver clip → face tracker (landmarks, One Euro, FFHQ align) → encoder → W+ per frame (None: no face)
    target photo → landmarks (still mode) → align → encoder → V_target
    directions.reenact.reenact_sequence → target latents, one per driver frame
    generator → paste into the target photo (residual: photo + G(w_t) − G(V); replace: G(w_t); none: the crop)
    FileSink at the driver's frame rate, the driver's audio copied; options in the mp4 ``comment`` tag (JSON)
    and in a JSON sidecar ``OUT.json`` (with the frames whose driver face was missing)

Every decoded driver frame gives one output frame: frame count, frame rate and audio duration are the driver's.

The camera job (a live source driving the photo) is ``stream.reenact_camera.run_camera_job``.

``python -m directions reenact`` is the door; networks are injected here (tests pass tiny random ones).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from stream.reenact_calibration import LIVE_PASTE_MODES

log = logging.getLogger(__name__)

PASTE_MODES = (*LIVE_PASTE_MODES, "none")   # the clip job may also write the generated face alone
ALIGN_SIZE = 256          # the driver and target are aligned at this size (the encoders' input)
METADATA_KEY = "comment"  # mp4 keeps a handful of tag names; "comment" holds the JSON


@dataclasses.dataclass
class DriverLatents:
    """The driver clip inverted frame by frame."""

    latents: list                 # per decoded frame: float32 [num_ws, w_dim] (CPU) or None (no face)
    fps: float                    # frames per second of the clip
    rate: Any                     # exact frame rate (fractions.Fraction) or None when the clip does not say
    has_audio: bool               # the clip has an audio stream (copied to the output)

    @property
    def frames(self) -> int:
        return len(self.latents)

    @property
    def missing(self) -> list[int]:
        """Indices of the frames without a face."""
        return [i for i, w in enumerate(self.latents) if w is None]


@dataclasses.dataclass
class TargetFace:
    """The target photo, its aligned face and its latent."""

    photo: np.ndarray             # uint8 [H, W, 3] BGR
    aligned: Any                  # stream.face.align.AlignedFace at ALIGN_SIZE
    latent: Any                   # float32 [num_ws, w_dim] V_target (CPU)


@dataclasses.dataclass
class JobReport:
    """What the job wrote."""

    out: Path                     # the video
    sidecar: Path                 # OUT.json
    frames: int                   # frames written (= driver frames decoded)
    held: int                     # frames whose driver face was missing (pose held)
    fps: float
    audio: bool                   # the driver's audio was copied
    metadata: dict                # what was saved (tag + sidecar)
    seconds: dict                 # wall time per stage (invert, reenact, render)


# ------------------------------------------------------------------------------------------------ networks


def load_networks(encoder: str, generator: Optional[str] = None, device: str = "auto", precision: str = "fp32"):
    """(E, G, device): engine loaders + runtime precision policy. generator None → the encoder's decoder."""
    import engine  # noqa: PLC0415
    from engine.runtime import prepare, resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    E = engine.load_encoder(encoder, device=dev)
    G = getattr(E, "decoder", None) if generator is None else engine.load_generator(generator, device=dev)
    if G is None:
        G = engine.load_generator("stylegan2-ffhq", device=dev)
    if (G.num_ws, G.w_dim) != (E.num_ws, E.w_dim):
        raise ValueError(f"encoder {encoder} makes W+ [{E.num_ws}, {E.w_dim}] but the generator takes "
                         f"[{G.num_ws}, {G.w_dim}]; pass an encoder trained for this generator")
    E = prepare(E, dev, precision)
    if getattr(E, "decoder", None) is not G:
        G = prepare(G, dev, precision)
    return E, G, dev


def encode_crops(E, crops: list, batch: int = 8):
    """Aligned uint8 [S, S, 3] BGR crops → W+ codes float32 [N, num_ws, w_dim] on the CPU (E's own iterations):
    video anchoring's inversion (`directions.video.anchor_video`) of every crop, in order."""
    import torch  # noqa: PLC0415

    from directions.video import anchor_video  # noqa: PLC0415

    if not crops:
        return torch.zeros(0, E.num_ws, E.w_dim)
    return anchor_video(crops, E, n=None, batch_size=batch)


def images_to_bgr(images) -> np.ndarray:
    """Generator output [N, 3, R, R] in about [-1, 1] (RGB) → uint8 [N, R, R, 3] BGR (the editor's conversion)."""
    from stream.editor import images_to_u8  # noqa: PLC0415

    return images_to_u8(images.detach(), images.shape[-1]).cpu().numpy()


# ------------------------------------------------------------------------------------------------ stages


def invert_driver(path, E, tracker=None, batch: int = 8, max_frames: Optional[int] = None,
                  progress: bool = True, on_frame: Optional[Callable[[int, Optional[int]], Any]] = None
                  ) -> DriverLatents:
    """Decode the driver clip, track and align its face, invert every frame with a face.

    tracker: a ``stream.face.tracking.FaceTracker`` (default: one face, MediaPipe video mode, One Euro smoothing,
    aligned at 256); frames where it finds no face get None. on_frame(frames done, total or None) after each frame.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from stream.face.tracking import FaceTracker  # noqa: PLC0415
    from stream.sources import VideoFileSource  # noqa: PLC0415

    own = tracker is None
    tracker = tracker or FaceTracker(max_faces=1, align_size=ALIGN_SIZE)
    latents: list = []
    pending: list[tuple[int, np.ndarray]] = []

    def drain():
        if pending:
            ws = encode_crops(E, [c for _, c in pending], batch)
            for (i, _), w in zip(pending, ws):
                latents[i] = w
            pending.clear()

    try:
        with VideoFileSource(path) as source:
            fps, rate, has_audio = source.fps or 30.0, source.rate, source.has_audio
            total = source.frame_count if max_frames is None else min(source.frame_count or max_frames, max_frames)
            with tqdm(total=total, desc="invert driver", unit="frame", disable=not progress) as bar:
                for i, (frame, ts) in enumerate(source):
                    if max_frames is not None and i >= max_frames:
                        break
                    faces = tracker.track(frame, ts)
                    latents.append(None)
                    if faces:
                        pending.append((i, faces[0].aligned.crop))
                    if len(pending) >= batch:
                        drain()
                    bar.update(1)
                    if on_frame is not None:
                        on_frame(i + 1, total)
                drain()
    finally:
        if own:
            tracker.close()
    if not latents:
        raise ValueError(f"{path} decoded to no frames; pass a video clip with frames")
    return DriverLatents(latents=latents, fps=float(fps), rate=rate, has_audio=bool(has_audio))


def invert_target(photo: np.ndarray, E, landmarker=None, name: str = "the target photo") -> TargetFace:
    """Find the largest face of the photo (still-image landmarks), align it and invert it → :class:`TargetFace`."""
    from stream.face.align import align_largest_face  # noqa: PLC0415

    aligned = align_largest_face(photo, ALIGN_SIZE, landmarker, name)
    return TargetFace(photo=photo, aligned=aligned, latent=encode_crops(E, [aligned.crop])[0])


def render_frames(G, latents, target: TargetFace, paste_mode: str = "residual", batch: int = 8,
                  progress: bool = True, on_frame: Optional[Callable[[int, int], Any]] = None
                  ) -> Iterator[np.ndarray]:
    """Yield the output frames (uint8 BGR): G(w_t) pasted into the target photo, or the crop (paste_mode "none").

    latents: [T, num_ws, w_dim]. residual: photo + mask·(G(w_t) − G(V)); replace: mask·G(w_t) + (1 − mask)·photo.
    on_frame(frames rendered, T) after each batch.
    """
    import torch  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from stream.face.paste import face_mask, paste_back  # noqa: PLC0415

    if paste_mode not in PASTE_MODES:
        raise ValueError(f"paste mode {paste_mode!r} is unknown; use one of {', '.join(PASTE_MODES)}")
    p = next(G.parameters())
    mask = face_mask(target.aligned) if paste_mode != "none" else None
    with torch.no_grad():
        base = images_to_bgr(G(target.latent[None].to(device=p.device, dtype=p.dtype)))[0]
        with tqdm(total=len(latents), desc="render", unit="frame", disable=not progress) as bar:
            for s in range(0, len(latents), max(1, int(batch))):
                crops = images_to_bgr(G(latents[s:s + batch].to(device=p.device, dtype=p.dtype)))
                for crop in crops:
                    if paste_mode == "none":
                        yield crop
                    else:
                        yield paste_back(target.photo, crop, target.aligned, mask=mask, mode=paste_mode,
                                         base_crop=base if paste_mode == "residual" else None)
                bar.update(len(crops))
                if on_frame is not None:
                    on_frame(min(s + batch, len(latents)), len(latents))


def sidecar_path(out) -> Path:
    """Where the job's JSON sidecar goes: OUT + ".json" (clip.mp4 → clip.mp4.json)."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def read_metadata(path) -> dict:
    """The reenactment metadata saved in a video's ``comment`` tag ({} when there is none)."""
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        text = container.metadata.get(METADATA_KEY)
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


# ------------------------------------------------------------------------------------------------ the job


def run_job(
    driver,                                   # path of the driver clip (video file)
    target,                                   # path of the target photo
    out,                                      # output video path (.mp4)
    E,                                        # encoder: E(images [N,3,S,S] in [-1,1]) → [N, num_ws, w_dim]
    G,                                        # generator: G(ws) → [N, 3, R, R]
    options=None,                             # directions.reenact.ReenactOptions
    paste_mode: str = "residual",             # residual | replace | none (write G's crop itself)
    batch: int = 8,                           # frames per network call
    max_frames: Optional[int] = None,         # decode at most this many driver frames
    progress: bool = True,                    # tqdm bars
    tracker=None,                             # driver FaceTracker (tests inject one)
    target_landmarker=None,                   # target landmarker (tests inject one)
    extra_meta: Optional[dict] = None,        # more to save (network names, …)
    clock: Callable[[], float] = time.perf_counter,
    on_progress: Optional[Callable[[str, int, Optional[int]], Any]] = None,  # (stage, done, total): a door's bar;
                                              # stages "target", "invert", "fit", "render"
) -> JobReport:
    """Reenact the target photo with the driver clip and write the video (+ sidecar). See the module docstring."""
    from directions.reenact import ReenactOptions, reenact_sequence, resolve_layers  # noqa: PLC0415
    from stream.sinks import FileSink  # noqa: PLC0415
    from stream.sources import read_image  # noqa: PLC0415

    options = options or ReenactOptions()
    if paste_mode not in PASTE_MODES:
        raise ValueError(f"paste mode {paste_mode!r} is unknown; use one of {', '.join(PASTE_MODES)}")
    driver, target, out = Path(driver), Path(target), Path(out)
    for what, path in (("driver clip", driver), ("target photo", target)):
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} does not exist; pass an existing file")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist; create it or pass another --out")
    resolve_layers(options.layers, G.num_ws)  # a bad layer range fails before any inversion
    photo = read_image(target)   # header checked before decoding (stream.probe): UploadRefused is a ValueError

    step = on_progress or (lambda stage, done, total: None)
    seconds = {}
    t0 = clock()
    step("target", 0, 1)
    face = invert_target(photo, E, landmarker=target_landmarker, name=str(target))
    drv = invert_driver(driver, E, tracker=tracker, batch=batch, max_frames=max_frames, progress=progress,
                        on_frame=lambda done, total: step("invert", done, total))
    seconds["invert"] = clock() - t0
    t0 = clock()
    step("fit", 0, 1)
    result = reenact_sequence(drv.latents, face.latent, options)
    seconds["reenact"] = clock() - t0

    meta = {
        "micromotion": "reenact",
        **result.summary(),
        "paste_mode": paste_mode,
        "driver": str(driver), "target": str(target),
        "fps": drv.fps, "frame_rate": None if drv.rate is None else str(drv.rate),
        **(extra_meta or {}),
    }
    tmp = out.with_name(f".{out.stem}.partial{out.suffix or '.mp4'}")
    t0 = clock()
    try:
        with FileSink(tmp, fps=drv.rate or drv.fps, audio_from=driver if drv.has_audio else None,
                      metadata={METADATA_KEY: json.dumps(meta, separators=(",", ":"))}) as sink:
            for frame in render_frames(G, result.latents, face, paste_mode, batch, progress,
                                       on_frame=lambda done, total: step("render", done, total)):
                sink.write(frame)
        written = sink.frames_written
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds["render"] = clock() - t0
    side = sidecar_path(out)
    full = {**meta, "held_frame_indices": drv.missing, "frames_written": written,
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    side.write_text(json.dumps(full, indent=2), encoding="utf-8")
    if drv.missing:
        log.warning("%d of %d driver frames had no face: the last pose was held there", len(drv.missing), drv.frames)
    return JobReport(out=out, sidecar=side, frames=written, held=len(drv.missing), fps=drv.fps,
                     audio=drv.has_audio, metadata=meta, seconds=seconds)
