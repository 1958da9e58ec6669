"""`python -m web.gradio`: the Gradio app (photo, clip, webcam, reenact, reenact live tabs) on http://127.0.0.1:7860.

Weights missing → it still starts, in face-tracking-only mode, and shows the command that fetches them; `--demo` runs
the network-free TintEditor (faces tinted per direction) through the same tabs.
"""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from web.door_args import add_effect_and_log_arguments, add_listen_arguments

    p = argparse.ArgumentParser(prog="python -m web.gradio", description="micromotion Gradio app")
    add_listen_arguments(p, port=7860)
    p.add_argument("--max-image-mb", type=float, default=20.0, help="photo upload limit (default 20 MB)")
    p.add_argument("--max-video-mb", type=float, default=200.0, help="clip upload limit (default 200 MB)")
    p.add_argument("--max-clip-s", type=float, default=300.0, help="clip duration limit (default 300 s)")
    p.add_argument("--max-driver-frames", type=int, default=1800,
                   help="most frames of a reenactment's driver clip (default 1800: 60 s at 30 fps)")
    add_effect_and_log_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from web.door_args import start_logging

    problem = start_logging(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    if args.max_driver_frames < 2:
        print("error: --max-driver-frames must be >= 2 (a motion needs two frames)", file=sys.stderr)
        return 2

    from web.door_args import open_effect
    from web.gradio_app import build_app
    from web.gradio_status import effect_lines
    from web.gradio_uploads import Limits

    effect = open_effect(args)
    if effect is None:
        return 2
    try:
        for line in effect_lines(effect.info):   # what every tab also says: missing networks/directions, skipped files
            logging.getLogger("web.gradio").warning("%s", line)
        limits = Limits(max_image_mb=args.max_image_mb, max_video_mb=args.max_video_mb, max_clip_s=args.max_clip_s,
                        max_driver_frames=args.max_driver_frames)
        app = build_app(effect, limits=limits)
        app.queue(default_concurrency_limit=2).launch(
            server_name=args.host, server_port=args.port, max_file_size=f"{int(args.max_video_mb)}mb",
            ssl_certfile=args.cert, ssl_keyfile=args.key, ssl_verify=not args.cert,  # a self-signed --cert must not fail gradio's self-requests
            share=False, show_error=True)
    finally:
        effect.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
