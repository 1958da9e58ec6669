"""`python -m web`: the live page. Open http://127.0.0.1:8080 in a browser on this machine.

Remote browsers only grant the camera to secure pages: give `--host 0.0.0.0 --cert cert.pem --key key.pem`.
No STUN/TURN server is used unless `--stun`/`--turn` is given (TURN is only needed across NATs).
Media (ICE) addresses follow --host: the default 127.0.0.1 keeps the media on this machine too.
`--control http://127.0.0.1:8765` serves the page without media, driving a running
`python -m stream --virtual-camera --control-port 8765` (`web.control`).
"""
from __future__ import annotations

import argparse
import logging
import ssl
import sys

from web.door_args import add_effect_and_log_arguments, add_listen_arguments, open_effect, start_logging
from web.guard import Limits, RequestRules


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m web", description="micromotion live page (WebRTC)")
    add_listen_arguments(p, port=8080)
    p.add_argument("--stun", action="append", default=[], metavar="HOST:PORT",
                   help="STUN server for the page and the server (repeatable; default: none)")
    p.add_argument("--turn", action="append", default=[], metavar="HOST:PORT",
                   help="TURN server (only needed when browser and server sit behind different NATs)")
    p.add_argument("--turn-user", help="TURN user name")
    p.add_argument("--turn-password", help="TURN password")
    p.add_argument("--ice-address", action="append", default=None, metavar="IP",
                   help="offer media (ICE host candidates) on this address only (repeatable; default: follow "
                        "--host: 127.0.0.1 keeps media on this machine, 0.0.0.0 offers every interface)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="another origin allowed to call the page's API and to name this server in Host, e.g. "
                        "https://cam.example.org:8443 behind a proxy (repeatable; default: the page's own "
                        "origin only)")
    p.add_argument("--max-peers", type=positive_int, default=8, help="simultaneous browsers (default 8)")
    p.add_argument("--peer-timeout", type=positive_float, default=10.0,
                   help="free a peer after this many seconds without a video frame (default 10)")
    p.add_argument("--connect-timeout", type=positive_float, default=Limits.pending_s,
                   help="free an answered peer whose connection is not up after this many seconds "
                        f"(default {Limits.pending_s:g})")
    p.add_argument("--offer-rate", type=positive_float, default=Limits.offers_per_s,
                   help="offers (Start clicks) accepted per client address per second, after a burst of "
                        f"{Limits.offer_burst} (default {Limits.offers_per_s:g})")
    p.add_argument("--control", metavar="URL",
                   help="serve the page without media and send its controls to a running `python -m stream "
                        "--virtual-camera --control-port PORT` on this machine, e.g. http://127.0.0.1:8765 "
                        "(no effect is loaded here)")
    add_effect_and_log_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = start_logging(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    ssl_context = None
    if args.cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            print(f"error: cannot load --cert/--key ({exc}); give a PEM certificate and its key", file=sys.stderr)
            return 2
    elif args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("web").warning(
            "serving plain HTTP on %s: browsers on other machines refuse the camera to non-https pages; "
            "add --cert cert.pem --key key.pem", args.host)

    if args.control:
        return _serve_control(args, ssl_context)

    from web.server import ServerConfig, WebServer, ice_servers_from_urls

    try:
        limits = Limits(offers_per_s=args.offer_rate, pending_s=args.connect_timeout)
        RequestRules(args.allow_origin)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    effect = open_effect(args)
    if effect is None:
        return 2
    if effect.notice:
        logging.getLogger("web").warning("%s", effect.notice)
    config = ServerConfig(
        ice_servers=ice_servers_from_urls(args.stun, args.turn, args.turn_user, args.turn_password),
        host=args.host,
        ice_addresses=args.ice_address,
        allow_origins=tuple(args.allow_origin),
        max_peers=args.max_peers,
        peer_timeout_s=args.peer_timeout,
        overlay=bool(args.overlay),
        limits=limits,
    )
    server = WebServer(effect, config)
    scheme = "https" if ssl_context else "http"
    print(f"micromotion: open {scheme}://{args.host}:{args.port}/  (mode: {server.mode})", flush=True)
    try:
        return _listen(server.make_app(), args, ssl_context,
                       access_log=logging.getLogger("aiohttp.access") if args.log_level.upper() == "DEBUG" else None)
    finally:
        effect.close()


def _listen(app, args, ssl_context, **kwargs) -> int:
    """Serve `app` on --host/--port until stopped: 0, or 2 with one line when the address cannot be bound."""
    from aiohttp import web

    try:
        web.run_app(app, host=args.host, port=args.port, ssl_context=ssl_context, print=None, **kwargs)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); pick another --port",
              file=sys.stderr)
        return 2
    return 0


def _serve_control(args, ssl_context) -> int:
    """`--control URL`: the page without media, relaying its controls to a running virtual camera."""
    from web.control import ControlPage

    try:
        page = ControlPage(args.control, allow_origins=args.allow_origin)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scheme = "https" if ssl_context else "http"
    print(f"micromotion: open {scheme}://{args.host}:{args.port}/  (controls of the virtual camera at {page.url})",
          flush=True)
    return _listen(page.make_app(), args, ssl_context)


if __name__ == "__main__":
    sys.exit(main())
