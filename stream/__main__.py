"""python -m stream: camera / video / image -> micromotion -> virtual camera, preview window, file.

    python -m stream --camera 0 --virtual-camera --direction smile --alpha 3 --animate
    python -m stream --input clip.mp4 --out out.mp4 --direction smile --alpha 3 --direction eyesClose --alpha 2
    python -m stream --image face.jpg --preview --direction smile --alpha 3 --animate

Live outputs (virtual camera, preview) run through the latest-frame driver at the camera's rate: each frame gets
the freshest edit moved onto its face (up to --staleness-ms old), while the editor refreshes edits as fast as it can.
A file rendered with --out only is a file job: every frame, in order, each with its own fresh edit.

The effect's state goes to stderr when it changes (no face, stale edit, missing weights, ...). Exit codes:
0 done; 1 runtime failure; 2 bad usage or no virtual camera device; 3 the networks are not installed (a file job
writes nothing and prints the command that fetches them); 4 a file job found no face in any frame (the output is
an unchanged copy).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from stream.options import add_effect_arguments, config_from_args

EXIT_FAILURE, EXIT_USAGE, EXIT_SETUP, EXIT_NO_FACE = 1, 2, 3, 4
log = logging.getLogger("stream")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stream", description="Live micromotion face effect.",
                                epilog="exit codes: 0 done, 1 failure, 2 bad usage / no virtual camera, "
                                       "3 networks not installed (file jobs), 4 no face found (file jobs)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int, metavar="N", help="webcam index (OpenCV)")
    src.add_argument("--input", metavar="VIDEO", help="video file (mp4, mkv, webm, y4m)")
    src.add_argument("--image", metavar="IMAGE", help="still image (repeated --frames times)")
    out = p.add_argument_group("outputs")
    out.add_argument("--virtual-camera", action="store_true", help="send the output to a virtual camera")
    out.add_argument("--vcam-backend", default=None, help="pyvirtualcam backend (default: the platform's)")
    out.add_argument("--vcam-device", default=None, help="virtual camera device, e.g. /dev/video10")
    out.add_argument("--preview", action="store_true",
                     help="show the output in a window; keys: + / - change alpha, space switches the effect on/off, "
                          "a toggles the animation, q / Esc quit")
    out.add_argument("--control-port", type=int, default=None, metavar="PORT",
                     help="live runs: take controls on http://127.0.0.1:PORT (stream.control); drive them from the "
                          "page with `python -m web --control http://127.0.0.1:PORT` (default: off)")
    out.add_argument("--out", metavar="FILE", help="write the output video (with the input's audio)")
    out.add_argument("--report", metavar="JSON", help="file jobs: also measure the edited video against its "
                     "source (TL-ID, TG-ID, warping error; stream.report) and write them here")
    edit = p.add_argument_group("what to apply")
    edit.add_argument("--alpha", action="append", type=float, default=[], metavar="A",
                      help="strength of each --direction (one value applies to all; default 3)")
    edit.add_argument("--animate", action="store_true", help="sweep t 0 -> 1 -> 0 (else t is held at --t)")
    edit.add_argument("--period", type=float, default=2.0, help="animation period in seconds (default 2)")
    edit.add_argument("--t", type=float, default=1.0, help="held t in [0, 1] when not animating (default 1)")
    add_effect_arguments(p)
    p.add_argument("--frames", type=int, default=None, help="stop after N frames (image: default 90)")
    p.add_argument("--fps", type=float, default=None, help="output / image frame rate (default: the source's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def controls_from_args(args):
    """Controls from --direction/--alpha/--animate/--period/--t/--paste-mode; ValueError on a mismatch."""
    from pathlib import Path  # noqa: PLC0415

    from stream.controls import Controls  # noqa: PLC0415

    names = [Path(d).stem if d.endswith((".pt", ".safetensors")) else d for d in (args.direction or [])]
    alphas = args.alpha or [3.0]
    if len(alphas) == 1:
        alphas = alphas * len(names)
    if len(alphas) != len(names):
        raise ValueError(f"{len(names)} --direction but {len(alphas)} --alpha; give one --alpha per direction "
                         f"(or a single one for all)")
    return Controls(directions=dict(zip(names, alphas)), animate=args.animate, period_s=args.period, t=args.t,
                    paste_mode=args.paste_mode or "residual").validate()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not (args.virtual_camera or args.preview or args.out):
        return _usage("choose an output: --virtual-camera, --preview and/or --out FILE")
    if args.control_port is not None and not (args.virtual_camera or args.preview or args.camera is not None):
        return _usage("--control-port drives a live run: add --virtual-camera and/or --preview")
    if args.report and (args.input is None or args.virtual_camera or args.preview or not args.out):
        return _usage("--report measures a file job: give --input VIDEO --out FILE (no live output)")
    try:
        controls = controls_from_args(args)
        config = config_from_args(args)
    except ValueError as exc:
        return _usage(str(exc))
    from stream.sources import open_source  # noqa: PLC0415

    spec = args.camera if args.camera is not None else (args.image or args.input)
    options = {"repeat": args.frames or 90, "fps": args.fps or 30.0} if args.image else {}
    try:
        source = open_source(spec, **options)
    except (OSError, RuntimeError, ValueError) as exc:
        return _usage(str(exc))
    with source:
        return _with_effect(args, source, controls, config)


def _with_effect(args, source, controls, config) -> int:
    from stream.effect import Effect  # noqa: PLC0415

    file_job = not (args.camera is not None or args.virtual_camera or args.preview)
    try:
        effect = Effect.open(config, batching=not file_job)
    except (ValueError, FileNotFoundError) as exc:
        return _usage(str(exc))
    try:
        if not effect.info.available:
            if file_job and effect.info.state == "networks_missing":
                print(f"error: nothing written: {effect.notice}", file=sys.stderr)
                return EXIT_SETUP
            print(f"{effect.notice}\nrunning face tracking only (no edit)", file=sys.stderr)
            controls.directions = {}
        else:
            try:
                controls.validate(effect.available_directions)
            except ValueError as exc:
                return _usage(str(exc))
        return _run_file_job(args, source, effect, controls) if file_job else _run_live(args, source, effect, controls)
    finally:
        effect.close()


def _run_file_job(args, source, effect, controls) -> int:
    from stream.jobs import edit_file  # noqa: PLC0415

    try:
        result = edit_file(source, effect, controls, args.out, fps=args.fps, max_frames=args.frames,
                           overlay=args.overlay, progress=not args.quiet, audio_from=args.input)
    except (OSError, ValueError) as exc:
        return _usage(str(exc))
    print(result.summary())
    if result.damage:
        print(f"warning: {result.damage}", file=sys.stderr)
    if args.report:
        _write_report(args.input or args.image, args.out, args.report, max_frames=args.frames, quiet=args.quiet)
    if result.edited == 0 and result.frames and result.no_face == result.frames:
        print(f"warning: no face found in any of the {result.frames} frames; {args.out} is an unchanged copy",
              file=sys.stderr)
        return EXIT_NO_FACE
    return 0


def _write_report(source_path, edited_path, report_path, max_frames=None, quiet=False) -> None:
    """Temporal consistency of the edited file against its source (stream.report), printed and written as JSON."""
    from stream.report import format_report, video_report, write_report  # noqa: PLC0415

    report = video_report(source_path, edited_path, progress=not quiet, max_frames=max_frames)
    write_report(report, report_path)
    print(format_report(report))


def _run_live(args, source, effect, controls) -> int:
    from stream.jobs import LiveOutputs, run_live  # noqa: PLC0415
    from stream.sinks import VirtualCameraUnavailable  # noqa: PLC0415

    fps = args.fps or source.fps or 30.0
    try:
        outputs = LiveOutputs.open(source.width, source.height, fps, virtual_camera=args.virtual_camera,
                                   vcam_backend=args.vcam_backend, vcam_device=args.vcam_device,
                                   preview=args.preview, out=args.out, audio_from=args.input)
    except (VirtualCameraUnavailable, RuntimeError, OSError, ValueError) as exc:
        return _usage(str(exc))
    control = None
    if args.control_port is not None:
        from stream.control import ControlServer  # noqa: PLC0415

        try:
            control = ControlServer(effect, port=args.control_port).start()
        except (OSError, ValueError) as exc:
            outputs.close()
            return _usage(str(exc))
        print(f"live control on {control.url}: python -m web --control {control.url}", file=sys.stderr, flush=True)
    try:
        with outputs:
            paced = None if args.camera is not None else fps
            result = run_live(source, effect, controls, outputs, fps=paced, max_frames=args.frames,
                              overlay=args.overlay or not effect.info.available, control=control)
    finally:
        if control is not None:
            control.close()
    print(result.summary())
    return 0


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
