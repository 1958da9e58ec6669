"""`python -m web --control http://127.0.0.1:8765`: the page without media, driving a running
`python -m stream --camera 0 --virtual-camera --control-port 8765` on this machine (`stream.control`).

Routes (the same Host/Origin rules as the media page, `web.guard`):
  GET  /          the page; /config says "kind": "remote", so it shows no camera and no Start, and sends its
                  controls to POST /controls
  GET  /config    the camera's /config + "kind": "remote", "alpha" (slider hints), "mode", "iceServers": [],
                  "control_url"; when the camera does not answer: "state": "unreachable" and a notice saying so
  GET  /stats     the camera's stats message (the page's readouts and status line); 502 {"error"} when unreachable
  POST /controls  forwarded to the camera; its answer (or 502 {"error"}) comes back
The camera runs on this machine: its address must be loopback (`control_url` refuses anything else).
"""
from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from aiohttp import web

from stream.control import parse_json
from web.guard import Limits, RequestRules, guard_middleware
from web.hints import alpha_hints
from web.server import STATIC_DIR, effect_mode

log = logging.getLogger(__name__)
TIMEOUT_S = 3.0


def control_url(url: str) -> str:
    """`url` normalised ("http://127.0.0.1:8765"); one-line ValueError unless it is http on a loopback address."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        loopback = parts.scheme == "http" and parts.hostname is not None and (
            parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback)
        port = parts.port
    except ValueError:
        loopback, port = False, None
    if not loopback or port is None:
        raise ValueError(f"--control {url!r}: give the camera's loopback address, e.g. http://127.0.0.1:8765 "
                         "(python -m stream ... --control-port 8765 on this machine)")
    return f"http://127.0.0.1:{port}" if parts.hostname == "localhost" else f"http://{parts.hostname}:{port}"


class ControlPage:
    """The page's server in remote-control mode (see the module docstring)."""

    def __init__(self,
                 url: str,                              # the camera's control endpoint (loopback)
                 allow_origins=(),                      # as `python -m web --allow-origin`
                 limits: Limits | None = None):
        self.url = control_url(url)
        self.limits = limits or Limits()
        self.rules = RequestRules(allow_origins)
        self._client = None

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_body_bytes, middlewares=[guard_middleware(self.rules)])
        app.router.add_get("/", lambda request: web.FileResponse(STATIC_DIR / "index.html"))
        app.router.add_get("/config", self.get_config)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/controls", self.post_controls)
        app.router.add_static("/static/", STATIC_DIR)
        app.on_cleanup.append(self._close)
        return app

    async def _call(self, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
        """(status, JSON) from the camera; (502, {"error"}) when it does not answer."""
        import aiohttp  # noqa: PLC0415

        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        try:
            async with self._client.request(method, self.url + path, data=body,
                                            headers={"Content-Type": "application/json"} if body else None) as r:
                return r.status, await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return 502, {"error": f"the virtual camera at {self.url} does not answer ({type(exc).__name__}); is "
                                  f"`python -m stream ... --virtual-camera --control-port {urlsplit(self.url).port}` "
                                  "running?"}

    async def get_config(self, request: web.Request) -> web.Response:
        status, cfg = await self._call("GET", "/config")
        if status != 200:
            cfg = {"directions": [], "direction_info": {}, "state": "unreachable", "notice": cfg.get("error"),
                   "command": None, "skipped_directions": [], "max_faces": 1, "available": False}
        names = list(cfg.get("directions", []))
        return web.json_response({**cfg, "kind": "remote", "control_url": self.url, "iceServers": [],
                                  "alpha": alpha_hints(names, cfg.get("direction_info") or {}),
                                  "mode": effect_mode(cfg.get("available"), cfg.get("state"))})

    async def get_stats(self, request: web.Request) -> web.Response:
        status, body = await self._call("GET", "/stats")
        return web.json_response(body, status=status)

    async def post_controls(self, request: web.Request) -> web.Response:
        try:
            text = await request.text()
            parse_json(text, self.limits.max_json_depth)      # refuse here what the camera would refuse anyway
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "controls too large"}, status=413)
        except (ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"error": f"controls refused: {exc}"}, status=400)
        status, body = await self._call("POST", "/controls", text)
        return web.json_response(body, status=status)

    async def _close(self, app) -> None:
        if self._client is not None:
            await self._client.close()
