"""What both web doors (`python -m web`, `python -m web.gradio`) take besides their own flags: where to listen, TLS
for remote browsers, the effect flags (`stream.options`) and the log level, and how they start reading them."""
from __future__ import annotations

import argparse
import logging
import sys

from stream.options import add_effect_arguments

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_listen_arguments(p: argparse.ArgumentParser, port: int) -> None:
    """--host, --port (default `port`), --cert, --key."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help=f"TCP port (default {port})")
    p.add_argument("--cert", help="TLS certificate (PEM) for HTTPS; needed for cameras in remote browsers")
    p.add_argument("--key", help="TLS private key (PEM) matching --cert")


def add_effect_and_log_arguments(p: argparse.ArgumentParser) -> None:
    """Every effect flag (`stream.options.add_effect_arguments`), then --log-level."""
    add_effect_arguments(p)
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def start_logging(args: argparse.Namespace) -> str | None:
    """Configure logging from --log-level; the one-line problem with --cert/--key, or None when they are usable."""
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    if bool(args.cert) != bool(args.key):
        return "--cert and --key go together; give both (PEM files) or neither"
    return None


def open_effect(args: argparse.Namespace):
    """The door's one batched `stream.effect.Effect` from its effect flags; None, with the one-line reason printed,
    when the flags or files are refused. Missing weights are not refused: the effect says so itself."""
    from stream.effect import Effect  # noqa: PLC0415
    from stream.options import config_from_args  # noqa: PLC0415

    try:
        return Effect.open(config_from_args(args), batching=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
