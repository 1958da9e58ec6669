"""What an untrusted request may make the page's server hold, and who may ask at all.

The page listens on 127.0.0.1, but every web page the user visits can reach 127.0.0.1, and so can every local
program. So:

* **Host** (DNS rebinding): a request must name this server -- an IP address, localhost, or the host of an
  `--allow-origin`; a page that rebinds its own name to 127.0.0.1 sends `Host: its.name` and gets 403.
* **Origin**: a request carrying an Origin must come from this server's own origin (same scheme://host:port as the
  request) or an `--allow-origin`; a POST must be `application/json` (a cross-site form or no-cors `text/plain`
  post can send neither; 403 / 415), or, on an upload route (POST /target), a photo's bytes as `image/*` or
  `application/octet-stream` (neither is a type a cross-site form or no-cors post may send: a browser preflights it,
  and no preflight is answered). Requests without Origin (non-browser clients, same-origin GETs) pass.
* **Bounds** (`Limits`): body bytes, JSON nesting, an SDP offer's bytes, lines, media sections (m-lines) and ICE
  candidates -- checked, and the SDP trial-parsed, off the event loop before anything is created (400 / 413);
  peers (an atomic reservation in `web.server`, 503); offers per client per second (`TokenBuckets`, 429); the time
  an answered peer may take to connect (`Limits.pending_s`, then it is closed); data-channel messages (`MessageGate`:
  bytes, nesting and rate per peer; the excess is dropped with one error a second, the channel stays open); target
  photo uploads (`Limits.max_target_*`: bytes read no further than the bound (413) nor longer than `target_read_s`
  (408), header checked before decoding (400), uploads per client per second (429), photos read at once (503), photos
  held and for how long).
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from stream.control import host_allowed, origin_of, parse_json

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """Bounds on what one request, client or peer can make the server hold (see the module docstring)."""

    max_body_bytes: int = 256 * 1024     # POST body (413 beyond); a browser's offer is 3-8 kB
    max_json_depth: int = 8              # {"sdp": ..., "type": ...} is depth 1; controls are depth 2
    max_sdp_bytes: int = 64 * 1024       # the SDP text
    max_sdp_lines: int = 800             # a browser's video + data offer has ~100-150 lines
    max_media_sections: int = 4          # m= lines: the page offers video + a data channel
    max_candidates: int = 64             # a=candidate lines (host, srflx, relay per interface)
    offers_per_s: float = 2.0            # offers per client (remote address) per second, sustained ...
    offer_burst: int = 8                 # ... after a burst of this many
    pending_s: float = 15.0              # an answered peer not connected by then is closed (ICE never finished)
    max_message_bytes: int = 8 * 1024    # one data-channel message
    messages_per_s: float = 30.0         # data-channel messages per peer per second, sustained ...
    message_burst: int = 60              # ... after a burst of this many
    max_target_bytes: int = 10 * 2**20   # an uploaded target photo (POST /target; 413 beyond, read no further)
    max_target_side: int = 4096          # ... its declared longest side, pixels (checked from the header: 400)
    max_target_pixels: int = 4096 * 4096  # ... its declared width × height
    targets_per_s: float = 0.5           # target uploads per client per second, sustained ...
    target_burst: int = 4                # ... after a burst of this many (429)
    max_target_reads: int = 2            # target photos being read (decoded, face found) at once (503 beyond)
    target_read_s: float = 30.0          # ... and the time one may take to arrive (408 beyond: no slow holder)
    max_targets_held: int = 16           # accepted target photos kept for the pages (the oldest go first)
    target_ttl_s: float = 600.0          # ... and for at most this long

    def __post_init__(self):
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {value!r}")

    def target_probe_limits(self):
        """The `stream.probe.Limits` an uploaded target photo's header is checked against."""
        from stream.probe import Limits as ProbeLimits  # noqa: PLC0415

        return ProbeLimits(max_bytes=self.max_target_bytes, max_side=self.max_target_side,
                           max_pixels=self.max_target_pixels)


class Refused(ValueError):
    """A request refused for what it is; `status` is the HTTP status, str() the one line for its sender."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------- offers
def parse_offer(text: str, limits: Limits) -> str:
    """The SDP of an offer body `{"sdp": ..., "type": "offer"}`, checked against `limits`; `Refused` otherwise.

    Cheap checks first (size, nesting, line counts), then aiortc's own SDP parser: a malformed offer is refused here,
    before a session or a peer connection exists. Meant to run in a worker thread (it is linear in the body).
    """
    try:
        params = parse_json(text, limits.max_json_depth)
    except ValueError as exc:
        raise Refused(f"the body is {exc}; send {{\"sdp\": ..., \"type\": \"offer\"}}") from None
    if not isinstance(params, dict) or not isinstance(params.get("sdp"), str) or params.get("type") != "offer":
        raise Refused("expected a JSON object {\"sdp\": <string>, \"type\": \"offer\"}")
    sdp = params["sdp"]
    check_sdp(sdp, limits)
    if "m=video" not in sdp:
        raise Refused("malformed SDP: the offer has no video section (m=video); send the camera track")
    from aiortc import sdp as aiortc_sdp  # noqa: PLC0415

    try:
        aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 -- whatever the parser says about a bad offer goes back to its sender
        raise Refused(f"malformed SDP offer: {type(exc).__name__}: {str(exc)[:200]}") from None
    return sdp


def check_sdp(sdp: str, limits: Limits) -> None:
    """`Refused` (400) when the SDP holds more than a browser's offer can (m-lines, candidates, lines, bytes)."""
    media = sdp.count("\nm=") + sdp.startswith("m=")
    if media > limits.max_media_sections:
        raise Refused(f"SDP offer with {media} media sections (m= lines); at most {limits.max_media_sections} "
                      "(the page sends one video track and a data channel)")
    lines = sdp.count("\n") + 1
    if lines > limits.max_sdp_lines:
        raise Refused(f"SDP offer of {lines} lines; at most {limits.max_sdp_lines}")
    size = len(sdp.encode("utf-8", "surrogatepass"))
    if size > limits.max_sdp_bytes:
        raise Refused(f"SDP offer of {size // 1024} kB; an offer is at most {limits.max_sdp_bytes // 1024} kB")
    candidates = sdp.count("a=candidate:")
    if candidates > limits.max_candidates:
        raise Refused(f"SDP offer with {candidates} ICE candidates; at most {limits.max_candidates}")


class TokenBuckets:
    """A token bucket per key (client address): `allow(key)` takes a token or says no. At most `max_keys` buckets
    are kept (the least recently used go first: a refill to full is all they would hold anyway)."""

    def __init__(self,
                 rate_per_s: float,          # tokens added per second
                 burst: int,                 # bucket size (tokens a fresh key starts with)
                 max_keys: int = 4096,       # buckets kept
                 clock=time.monotonic):
        self.rate, self.burst, self.max_keys, self.clock = float(rate_per_s), float(burst), int(max_keys), clock
        self._buckets: OrderedDict = OrderedDict()     # key -> (tokens, t)

    def allow(self, key) -> bool:
        now = self.clock()
        tokens, t = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - t) * self.rate)
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return ok


# ---------------------------------------------------------------------------------------------- data channel
class MessageGate:
    """One peer's data-channel intake: size, nesting and rate bounds. `admit(raw)` -> (message dict | None,
    error line | None). Refused messages are counted; errors for dropped floods are reported once a second."""

    def __init__(self, limits: Limits, clock=time.monotonic):
        self.limits = limits
        self.clock = clock
        self.bucket = TokenBuckets(limits.messages_per_s, limits.message_burst, max_keys=1, clock=clock)
        self.dropped = 0          # messages dropped for the rate
        self.refused = 0          # messages refused for size / nesting / not JSON
        self._last_flood_report = -1e9

    def admit(self, raw) -> tuple[dict | None, str | None]:
        if not self.bucket.allow(0):
            self.dropped += 1
            now = self.clock()
            if now - self._last_flood_report >= 1.0:
                self._last_flood_report = now
                return None, (f"too many messages: at most {self.limits.messages_per_s:g} a second; "
                              f"{self.dropped} dropped so far")
            return None, None
        size = len(raw)
        if size > self.limits.max_message_bytes:
            self.refused += 1
            return None, f"message of {size} bytes refused; at most {self.limits.max_message_bytes}"
        try:
            text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
            msg = parse_json(text, self.limits.max_json_depth)
            if not isinstance(msg, dict):
                raise ValueError("a message must be a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            self.refused += 1
            return None, f"bad message (not a JSON object): {exc}"
        return msg, None


# ---------------------------------------------------------------------------------------------- who may ask
UPLOAD_PATHS = ("/target",)                 # POST routes whose body is a file's bytes, not JSON
UPLOAD_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")


class RequestRules:
    """The Host and Origin rules of the page's API (see the module docstring)."""

    def __init__(self, allow_origins=()):
        self.origins = {origin_of(o) for o in allow_origins}     # ValueError (one line) for a malformed one
        self.hosts = {urlsplit(o).hostname for o in self.origins}

    def refusal(self, method: str, scheme: str, host: str | None, origin: str | None,
                content_type: str | None, path: str = "") -> Refused | None:
        """None when the request may proceed, else the `Refused` (403 / 415) to answer."""
        if not host_allowed(host, self.hosts):
            return Refused(f"Host {host!r} is not this server's name; open the page by its address "
                           "(http://127.0.0.1:PORT) or start the server with --allow-origin SCHEME://NAME:PORT", 403)
        if origin is not None and not self.origin_allowed(origin, scheme, host):
            return Refused(f"requests from {origin} are refused (another site); the page's own origin is "
                           f"{scheme}://{host}. A deployment behind another origin: --allow-origin ORIGIN", 403)
        kind = (content_type or "").split(";")[0].strip().lower()
        if method == "POST" and path in UPLOAD_PATHS:
            if kind not in UPLOAD_TYPES:
                return Refused(f"send the photo's bytes with Content-Type {', '.join(UPLOAD_TYPES)} "
                               f"(got {kind or 'none'})", 415)
        elif method == "POST" and kind != "application/json":
            return Refused("send JSON with Content-Type: application/json", 415)
        return None

    def origin_allowed(self, origin: str, scheme: str, host: str | None) -> bool:
        try:
            normal = origin_of(origin)
        except ValueError:      # "null" (sandboxed frames, file://) and anything else that is not an origin
            return False
        if normal in self.origins:
            return True
        try:
            return normal == origin_of(f"{scheme}://{host}")
        except ValueError:
            return False


def guard_middleware(rules: RequestRules):
    """aiohttp middleware: the Host/Origin/content-type rules, then security headers on every answer."""
    from aiohttp import web  # noqa: PLC0415

    @web.middleware
    async def guard(request, handler):
        refused = rules.refusal(request.method, request.scheme, request.headers.get("Host"),
                                request.headers.get("Origin"), request.headers.get("Content-Type"), request.path)
        if refused is not None:
            log.info("refused %s %s from %s: %s", request.method, request.path, request.remote, refused)
            response = web.json_response({"error": str(refused)}, status=refused.status)
        else:
            response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return guard


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}
