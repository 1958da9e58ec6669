"""python -m stream: camera / video / image -> micromotion Effect -> virtual camera, preview window, file.

    python -m stream --camera 0 --virtual-camera --direction smile --alpha 3 --animate
    python -m stream --input clip.mp4 --out out.mp4 --direction smile --alpha 3 --direction eyesClose --alpha 2
    python -m stream --image face.jpg --preview --direction smile --alpha 3 --animate

Live sources (camera, or a file sent to the virtual camera / preview) go through the latest-frame pipeline
(frames are dropped when the engine is slower than the source). A file rendered with --out only is processed
offline: every frame, in order. Without weights the face is tracked and drawn, and the one download command
is printed. Exit codes: 0 ok, 1 runtime failure, 2 bad usage / missing device.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Sequence

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stream", description="Live micromotion face effect.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int, metavar="N", help="webcam index (OpenCV)")
    src.add_argument("--input", metavar="VIDEO", help="video file (mp4, mkv, webm, y4m)")
    src.add_argument("--image", metavar="IMAGE", help="still image (repeated --frames times)")
    p.add_argument("--virtual-camera", action="store_true", help="send the output to a virtual camera")
    p.add_argument("--vcam-backend", default=None, help="pyvirtualcam backend (default: the platform's)")
    p.add_argument("--vcam-device", default=None, help="virtual camera device, e.g. /dev/video10")
    p.add_argument("--preview", action="store_true", help="show the output in a window (q / Esc quits)")
    p.add_argument("--out", metavar="FILE", help="write the output video (with the input's audio)")
    p.add_argument("--direction", action="append", default=[], metavar="NAME",
                   help="direction to apply (repeatable; name in the directions folder or a file path)")
    p.add_argument("--alpha", action="append", type=float, default=[], metavar="A",
                   help="strength of each --direction (one value applies to all; default 3)")
    p.add_argument("--animate", action="store_true", help="sweep t 0 -> 1 -> 0 (else t is held at --t)")
    p.add_argument("--period", type=float, default=2.0, help="animation period in seconds (default 2)")
    p.add_argument("--t", type=float, default=1.0, help="held t in [0, 1] when not animating (default 1)")
    p.add_argument("--paste-mode", choices=("residual", "replace"), default="residual")
    p.add_argument("--mode", choices=("live", "paper"), default="live")
    p.add_argument("--generator", default=None, help="generator name/path (default: the encoder's decoder)")
    p.add_argument("--encoder", default="restyle-psp-ffhq", help="encoder name/path (default restyle-psp-ffhq)")
    p.add_argument("--directions-dir", default=None, help="folder of direction files")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--max-faces", type=int, default=2)
    p.add_argument("--live-resolution", type=int, default=256,
                   help="live mode renders the generator up to this size, the size faces are pasted at "
                        "(512 or 1024 for large faces in HD video)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run the networks eagerly on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the per-frame networks")
    p.add_argument("--overlay", action="store_true", help="draw fps / drops / latency on the output")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames (image: default 90)")
    p.add_argument("--fps", type=float, default=None, help="output / image frame rate (default: the source's)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _controls(args):
    from stream.effect import Controls  # noqa: PLC0415

    names = [str(__import__("pathlib").Path(d).stem) if d.endswith((".pt", ".safetensors")) else d
             for d in args.direction]
    alphas = args.alpha or [3.0]
    if len(alphas) == 1:
        alphas = alphas * len(names)
    if len(alphas) != len(names):
        raise ValueError(f"{len(names)} --direction but {len(alphas)} --alpha; give one --alpha per direction "
                         f"(or a single one for all)")
    return Controls(directions=dict(zip(names, alphas)), animate=args.animate, period_s=args.period, t=args.t,
                    paste_mode=args.paste_mode).validate()


def _open_source(args):
    from stream import sources  # noqa: PLC0415

    if args.camera is not None:
        return sources.WebcamSource(args.camera), True
    if args.image is not None:
        n = args.frames if args.frames is not None else 90
        return sources.ImageSource(args.image, repeat=n, fps=args.fps or 30.0), False
    return sources.VideoFileSource(args.input), False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not (args.virtual_camera or args.preview or args.out):
        print("error: choose an output: --virtual-camera, --preview and/or --out FILE", file=sys.stderr)
        return EXIT_USAGE
    try:
        controls = _controls(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        source, live = _open_source(args)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    fps = args.fps or source.fps or 30.0
    sinks = []
    try:
        sinks = _open_sinks(args, source, fps)
    except _UsageError as exc:
        source.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args, source, sinks, controls, fps, live)
    finally:
        for s in sinks:
            s.close()
        source.close()


class _UsageError(Exception):
    pass


def _open_sinks(args, source, fps) -> list:
    from stream import sinks as sk  # noqa: PLC0415

    out = []
    try:
        if args.virtual_camera:
            try:
                out.append(sk.VirtualCameraSink(source.width, source.height, fps, backend=args.vcam_backend,
                                                device=args.vcam_device))
            except sk.VirtualCameraUnavailable as exc:
                raise _UsageError(str(exc)) from None
        if args.preview:
            try:
                out.append(sk.PreviewSink())
            except RuntimeError as exc:
                raise _UsageError(str(exc)) from None
        if args.out:
            try:
                out.append(sk.FileSink(args.out, fps=fps, audio_from=args.input))
            except (OSError, ValueError) as exc:
                raise _UsageError(str(exc)) from None
    except _UsageError:
        for s in out:
            s.close()
        raise
    return out


def _run(args, source, sinks, controls, fps, live) -> int:
    from stream.effect import Effect, EffectConfig  # noqa: PLC0415
    from stream.pipeline import LatestFramePipeline  # noqa: PLC0415

    config = EffectConfig(
        generator=args.generator, encoder=args.encoder, directions=tuple(args.direction),
        directions_dir=args.directions_dir, device=args.device, precision=args.precision, mode=args.mode,
        max_faces=args.max_faces, cuda_graphs=not args.no_cuda_graphs, compile=args.compile,
        live_resolution=args.live_resolution,
    )
    try:
        effect = Effect.create(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if effect.is_tracking_only:
        print(f"{effect.notice}\nrunning face tracking only (no edit) until the weights are installed")
        controls.directions = {}
    else:
        try:
            controls.validate(effect.available_directions)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    state = effect.new_state()
    stop = {"quit": False}

    def write(frame):
        for s in sinks:
            if s.write(frame) is False:  # the preview window was closed
                stop["quit"] = True

    offline = not live and not args.virtual_camera and not args.preview
    n = 0
    t_start = time.monotonic()
    try:
        if offline:  # every frame, in order
            for frame, _ts in source:
                out = effect.process(frame, controls, state)
                write(effect_overlay(out, state) if args.overlay else out)
                n += 1
                if args.frames is not None and n >= args.frames:
                    break
            stats = {"frames_in": n, "processed": n, "dropped": 0}
        else:
            # The engine runs in the pipeline's worker; sinks are written from this (the main) thread, which
            # GUI toolkits need for the preview window. A slow sink only makes outputs overwrite each other.
            pipe = LatestFramePipeline(lambda f: effect.process(f, controls, state), overlay=args.overlay,
                                       stage_fn=state.stats)
            pipe.start()

            def frames():
                for i, (frame, _ts) in enumerate(source):
                    if stop["quit"] or (args.frames is not None and i >= args.frames):
                        return
                    yield frame

            pipe.feed(frames(), fps=None if live else fps, block=False)
            try:
                while pipe.feeding and not stop["quit"]:
                    got = pipe.get_output(timeout=0.05)
                    if got is not None:
                        write(got[0])
                        n += 1
            except KeyboardInterrupt:
                pass
            stop["quit"] = True
            pipe.stop(drain=True)
            got = pipe.get_output(timeout=0)
            if got is not None:
                write(got[0])
                n += 1
            stats = pipe.stats()
    except KeyboardInterrupt:
        stats = {"frames_in": n, "processed": n, "dropped": 0}
    finally:
        state.close()
    elapsed = time.monotonic() - t_start
    s = state.stats()
    print(f"frames in {stats['frames_in']}, processed {stats['processed']}, dropped {stats['dropped']}, "
          f"written {n}, edited {s['edited']}, no face {s['no_face']}, errors {s['errors']}, {elapsed:.1f} s")
    return 0


def effect_overlay(frame, state):
    """Offline overlay: the effect's own per-stage times (no pipeline fps when every frame is processed)."""
    import cv2  # noqa: PLC0415

    out = frame.copy()
    ms = sum(state.last_ms.values())
    cv2.putText(out, f"{ms:.0f} ms/frame", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


if __name__ == "__main__":
    sys.exit(main())
