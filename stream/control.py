"""Live control of a running `python -m stream` (virtual camera / preview): a loopback HTTP endpoint, the preview
window's keys, and the request rules the page's server shares.

    python -m stream --camera 0 --virtual-camera --control-port 8765
    python -m web --control http://127.0.0.1:8765        # the page's controls drive it (no media in the page)

Endpoint (binds 127.0.0.1 only; JSON in and out):
  GET  /config    {"kind": "virtual-camera", "directions", "direction_info", "state", "notice", "command",
                   "skipped_directions", "staleness_ms", "max_faces", "mode"}
  GET  /stats     {"type": "stats", "state", "message", "edit_age_ms", "fps", "latency_ms", "dropped", "errors",
                   "effect": {...}, "controls", "max_faces"} (the page's stats message, for the same readouts)
  POST /controls  {Controls fields..., "max_faces"?} -> {"type": "controls_ok", "controls", "max_faces"};
                  400 {"error"} (one line)
A request must name this machine (Host an IP literal or localhost: a DNS-rebinding page gets 403), carry no Origin
(no web page talks to it directly: `python -m web --control` relays the page's controls; 403), and a POST must be
application/json (415) of at most MAX_CONTROL_BYTES (413).

Preview window keys (`apply_key`): + / = raise α, - lower α (every chosen direction; the first one when none is
chosen), space switches the effect on/off, a toggles the animation; q / Esc quit (stream.sinks.PreviewSink).
"""
from __future__ import annotations

import ipaddress
import json
import re
import logging
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from stream.controls import MAX_ALPHA, Controls

log = logging.getLogger(__name__)

MAX_CONTROL_BYTES = 16 * 1024      # a controls message is ~200 bytes
MAX_JSON_DEPTH = 8                 # {"directions": {"smile": 3}} is depth 2
ALPHA_KEY_STEP = 0.5               # α change per + / - key press
SESSION_OPTIONS = ("max_faces",)   # per-stream options sent along with the controls (not Controls fields)
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')   # a string (skipped whole) or a bracket


# ---------------------------------------------------------------------------------------------- request rules
def host_name(host_header: str | None) -> str | None:
    """The name part of a Host header ("[::1]:8080" -> "::1", "Localhost:80" -> "localhost"); None if absent."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else None
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".") or None


def is_ip_literal(name: str | None) -> bool:
    try:
        ipaddress.ip_address(name or "")
    except ValueError:
        return False
    return True


def host_allowed(host_header: str | None, names=()) -> bool:
    """True when the Host header names this server: an IP address, localhost, or one of `names`.

    A page on another site reaching 127.0.0.1 through DNS rebinding sends its own name (Host: evil.example): refused.
    """
    name = host_name(host_header)
    if name is None:
        return False
    return is_ip_literal(name) or name == "localhost" or name in {n.lower() for n in names}


def origin_of(url: str) -> str:
    """"https://Cam.example:443/x" -> "https://cam.example" (scheme://host[:port], default port dropped)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an origin: {url!r}; give scheme://host[:port], e.g. https://cam.example.org:8080")
    default = {"http": 80, "https": 443}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{host}{port}"


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """True when `text` nests JSON arrays/objects deeper than `max_depth` (strings skipped; linear, no recursion)."""
    if text.count("[") + text.count("{") <= max_depth:     # the usual case: nothing to scan
        return False
    depth = 0
    for m in _JSON_TOKENS.finditer(text):
        ch = m.group()
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def parse_json(text: str, max_depth: int = MAX_JSON_DEPTH):
    """json.loads with a nesting bound; ValueError (one line) for bad or too deeply nested JSON."""
    if json_depth_exceeds(text, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels; send a flat object")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None


# ---------------------------------------------------------------------------------------------- what doors show
def door_config(info, config) -> dict:
    """What every door tells its user before a frame is seen (the page's and the control endpoint's /config).

    state: "ready" | "demo" | "networks_missing" | "tracking_only" | "directions_missing" (networks loaded, no
    direction file usable); notice: the one line saying what is missing (None when ready); command: the one command
    that fixes it; skipped_directions: [[file, reason]] of direction files that did not fit.
    """
    return {"directions": list(info.direction_names), "direction_info": info.direction_info(), "state": info.state,
            "notice": info.notice, "command": info.command, "skipped_directions": [list(x) for x in info.skipped_directions],
            "staleness_ms": config.staleness_for(info.device_type), "max_faces": config.max_faces,
            "available": info.available, "editor_mode": info.mode}


# ---------------------------------------------------------------------------------------------- applying controls
def split_session_options(data) -> tuple[dict, dict]:
    """A controls message -> (Controls fields, session options such as max_faces)."""
    if not isinstance(data, dict):
        raise ValueError(f"controls must be a JSON object, got {type(data).__name__}")
    fields = {k: v for k, v in data.items() if k not in SESSION_OPTIONS}
    return fields, {k: data[k] for k in SESSION_OPTIONS if k in data}


def apply_controls(session, data) -> dict:
    """Validate and apply one controls message to `session`; the reply {"type": "controls_ok", ...}.

    ValueError (one line) when anything is refused; then nothing is applied.
    """
    fields, options = split_session_options(data)
    controls = Controls.from_dict({**session.controls.to_dict(), **fields}, session.info.direction_names)
    if "max_faces" in options:
        session.set_max_faces(options["max_faces"])
    session.set_controls(controls)
    return {"type": "controls_ok", "controls": controls.to_dict(), "max_faces": session.max_faces}


def apply_key(session, key: int) -> str | None:
    """A preview-window key press -> new controls on `session`; the one line to print (None: not a control key)."""
    c = session.controls
    names = list(session.info.direction_names)
    if key in (ord("+"), ord("="), ord("-"), ord("_")):
        if not names:
            return "no directions to strengthen: " + (session.info.notice or "install some directions")
        step = ALPHA_KEY_STEP if key in (ord("+"), ord("=")) else -ALPHA_KEY_STEP
        chosen = dict(c.directions) or {names[0]: 0.0}
        new = replace(c, directions={n: min(max(a + step, -MAX_ALPHA), MAX_ALPHA) for n, a in chosen.items()})
    elif key == ord(" "):
        new = replace(c, enabled=not c.enabled)
    elif key in (ord("a"), ord("A")):
        new = replace(c, animate=not c.animate)
    else:
        return None
    session.set_controls(new)
    alphas = ", ".join(f"{n} {a:+.1f}" for n, a in new.directions.items()) or "no direction"
    return f"controls: {alphas}; effect {'on' if new.enabled else 'off'}; animate {'on' if new.animate else 'off'}"


EFFECT_STAT_KEYS = ("tracked", "edited", "edits", "no_face", "too_small", "waiting", "stale", "faces", "stage_ms",
                    "edit_age_ms", "max_edit_age_ms", "batch")


def effect_stats(stats: dict) -> dict:
    """The "effect" part of a stats message (the page's and the control endpoint's) from a driver's stats."""
    return {k: stats.get(k) for k in EFFECT_STAT_KEYS}


def live_stats(driver) -> dict:
    """The page's stats message (web.peer.Peer.snapshot's keys) for a live run's driver."""
    s = driver.stats()
    effect = effect_stats(s)
    return {"type": "stats", "fps": round(s.get("fps_out", 0.0), 2), "latency_ms": round(s.get("latency_ms", 0.0), 2),
            "process_ms": round(s.get("stage_ms", {}).get("process", 0.0), 2), "frames_in": s.get("frames_in"),
            "frames_out": s.get("processed"), "dropped": s.get("dropped"),
            "errors": s["errors_total"], "state": s.get("state"),
            "message": s.get("message"), "edit_age_ms": s.get("edit_age_ms"), "effect": effect,
            "controls": s.get("controls"), "max_faces": s.get("max_faces")}


# ---------------------------------------------------------------------------------------------- the endpoint
class ControlServer:
    """The loopback control endpoint of a live run (see the module docstring). `attach` the run's session and
    driver once they exist; until then /stats says "starting" and /controls answers 503."""

    def __init__(self,
                 effect,                     # stream.effect.Effect: its info and config answer /config
                 port: int = 8765,           # TCP port on 127.0.0.1 (0: any free port, see .port)
                 host: str = "127.0.0.1"):   # loopback only; a non-loopback address is refused
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the control endpoint listens on loopback only, not {host}; use 127.0.0.1")
        self.effect = effect
        self.session = None
        self.driver = None
        self._lock = threading.Lock()
        try:
            self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port} for --control-port ({exc.strerror or exc}); "
                          "pick another port") from None
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ControlServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="micromotion-control", daemon=True)
        self._thread.start()
        log.info("live control on %s (python -m web --control %s)", self.url, self.url)
        return self

    def attach(self, session, driver) -> None:
        with self._lock:
            self.session, self.driver = session, driver

    def detach(self) -> None:
        with self._lock:
            self.session = self.driver = None

    def close(self) -> None:
        self.detach()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "ControlServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- answers (status, body) ----------------------------------------------------------------------------------
    def config(self) -> dict:
        return {"kind": "virtual-camera", **door_config(self.effect.info, self.effect.config)}

    def stats(self) -> tuple[int, dict]:
        with self._lock:
            driver = self.driver
        if driver is None:
            return 200, {"type": "stats", "state": "starting", "message": "the camera is starting"}
        return 200, live_stats(driver)

    def controls(self, body: str) -> tuple[int, dict]:
        with self._lock:
            session = self.session
        if session is None:
            return 503, {"error": "the camera is not running yet; try again in a moment"}
        try:
            return 200, apply_controls(session, parse_json(body))
        except ValueError as exc:
            return 400, {"error": f"controls refused: {exc}"}


def _make_handler(server: ControlServer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "micromotion-control"

        def log_message(self, fmt, *args):  # noqa: A003 -- quiet: the stream's stderr is the user's status line
            log.debug("control: " + fmt, *args)

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _refused(self) -> bool:
            if not host_allowed(self.headers.get("Host")):
                self._reply(403, {"error": f"Host {self.headers.get('Host')!r} is not this machine; "
                                           "address the endpoint as 127.0.0.1"})
                return True
            if self.headers.get("Origin") is not None:
                self._reply(403, {"error": "web pages may not drive the camera directly; use "
                                           "python -m web --control " + server.url})
                return True
            return False

        def do_GET(self):  # noqa: N802 -- http.server's naming
            if self._refused():
                return
            if self.path == "/config":
                self._reply(200, server.config())
            elif self.path == "/stats":
                self._reply(*server.stats())
            else:
                self._reply(404, {"error": f"no such endpoint {self.path!r}; use /config, /stats, POST /controls"})

        def do_POST(self):  # noqa: N802
            if self._refused():
                return
            if self.path != "/controls":
                self._reply(404, {"error": f"no such endpoint {self.path!r}; POST /controls"})
                return
            if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
                self._reply(415, {"error": "send the controls as Content-Type: application/json"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_CONTROL_BYTES:
                self._reply(413, {"error": f"controls larger than {MAX_CONTROL_BYTES // 1024} kB (or no length)"})
                self.close_connection = True
                return
            try:
                body = self.rfile.read(length).decode("utf-8")
            except UnicodeDecodeError:
                self._reply(400, {"error": "controls refused: the body is not UTF-8 JSON"})
                return
            self._reply(*server.controls(body))

    return Handler
