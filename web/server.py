"""The WebRTC page: aiohttp serves one page, aiortc edits each peer's camera with the `Effect`.

One peer = one `RTCPeerConnection` + one `Peer`: its own stream state, its own controls (set over the
"controls" data channel as JSON, no renegotiation), and one `EffectTrack` sent back. Frames flow:

    browser camera → aiortc decoder → `Peer._pump` keeps only the LATEST frame (older ones are counted
    as dropped) → `EffectTrack.recv` hands it to a worker thread (`Effect.process`, off the event loop)
    → frame with the source's pts/time_base → browser.

At most one frame per peer is in the worker at any time, so nothing queues without bound. A peer that
vanishes without closing is freed by aiortc's ICE consent check ("failed") or, sooner, by the input
timeout (no frame for `peer_timeout_s`).

Messages on the data channel (JSON, one object per message):
  client → server  {"type": "controls", "controls": {"directions": {"smile": 2.0}, "animate": true,
                    "period_s": 2.0, "enabled": true}}
                   {"type": "ping", "t": <client ms>}
  server → client  {"type": "stats", "fps", "latency_ms", "process_ms", "frames_in", "frames_out",
                    "dropped", "errors", "controls": {...as applied...}, "size": [w, h]}
                   {"type": "controls_ok", "controls": {...}}   {"type": "pong", "t": ...}
                   {"type": "error", "message": "..."}          (to that client only)

GET /config → {"iceServers", "directions": [names], "alpha": {name: {"min", "max", "step", "default",
"method", "source"}}, "mode", "notice"}: the page's α slider takes min/max/step/default from the picked
direction's file (`alpha_range`, `alpha_default`; fallback [0, 5]). The range is a hint: the server only
refuses non-finite α or |α| > 100 (`stream.effect.Controls`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

log = logging.getLogger("web.server")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_OFFER_BYTES = 256 * 1024          # an SDP offer is a few kB; anything this big is not one
DEFAULT_ALPHA_RANGE = (0.0, 5.0)      # α slider range for a direction whose file records none
MAX_HINT_ALPHA = 100.0                # |α| bound of a usable hint (= stream.effect.MAX_ALPHA: the server's limit)


@dataclass
class EffectBinding:
    """What the server needs of an effect, whatever its kind (full, tracking-only, demo)."""

    effect: Any                                   # .process(frame_bgr, controls, state) -> frame_bgr
    parse_controls: Callable[[dict], Any]         # JSON dict -> controls; ValueError on bad input
    new_state: Callable[[], Any]                  # a fresh per-stream state
    directions: list[str]                         # names offered by the page's picker
    mode: str = "full"                            # "full" | "tracking" | "demo"
    notice: str | None = None                     # shown on the page (e.g. the weights command)
    controls_to_dict: Callable[[Any], dict] | None = None
    direction_info: dict = field(default_factory=dict)  # name -> {"alpha_range", "alpha_default", "method"}


def _nice_step(span: float) -> float:
    """A round slider step giving ~100-250 positions over `span` (1, 2 or 5 times a power of ten)."""
    raw = span / 100.0
    power = 10.0 ** math.floor(math.log10(raw))
    k = next(k for k in (5.0, 2.0, 1.0) if k * power <= raw * (1 + 1e-9))
    return float(f"{k * power:.6g}")


def alpha_hint(info: dict | None) -> dict:
    """The α slider for one direction: {"min", "max", "step", "default", "method", "source"}.

    info: `Effect.direction_info()[name]` (or None). The file's `alpha_range` [lo, hi] is used when it is two
    finite numbers lo < hi within ±MAX_HINT_ALPHA, else DEFAULT_ALPHA_RANGE ("source": "fallback"). The default
    is the file's `alpha_default` when it lies in the range, else the middle of the range's non-negative part
    ([0, 5] → 2.5, [-3, 3] → 1.5: a midpoint of 0 would be no edit at all). This is a UI hint only: the server
    accepts any finite |α| <= 100 (`stream.effect.Controls`), whatever the range says.
    """
    info = info or {}
    rng = info.get("alpha_range")
    source = "file"
    try:
        lo, hi = (float(v) for v in rng)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and max(-lo, hi) <= MAX_HINT_ALPHA):
            raise ValueError
    except (TypeError, ValueError):
        if rng is not None:
            log.warning("ignoring unusable alpha_range %r; the slider uses %s", rng, list(DEFAULT_ALPHA_RANGE))
        lo, hi = DEFAULT_ALPHA_RANGE
        source = "fallback"
    default = info.get("alpha_default")
    if not (isinstance(default, (int, float)) and not isinstance(default, bool) and lo <= default <= hi):
        default = (max(lo, 0.0) + hi) / 2 if hi > 0 else (lo + hi) / 2
    step = _nice_step(hi - lo)
    default = round(round(float(default) / step) * step, 6)
    return {"min": lo, "max": hi, "step": step, "default": min(max(default, lo), hi),
            "method": info.get("method"), "source": source}


def alpha_hints(names: list[str], direction_info: dict | None = None) -> dict:
    """{name: alpha_hint(...)} for every direction the page offers (missing metadata → the fallback)."""
    direction_info = direction_info or {}
    return {name: alpha_hint(direction_info.get(name)) for name in names}


@dataclass
class ServerConfig:
    """Knobs of the WebRTC server (all have safe defaults)."""

    ice_servers: list[dict] = field(default_factory=list)   # [{"urls": [...], "username", "credential"}]
    ice_addresses: list[str] | None = None  # host candidates to offer; None = all but loopback, else 127.0.0.1
    max_peers: int = 8                      # more → HTTP 503
    workers: int = 1                        # threads running Effect.process (shared by all peers)
    peer_timeout_s: float = 10.0            # no input frame for this long (once started) → peer closed
    connect_timeout_s: float = 30.0         # no first frame within this long → peer closed
    stats_interval_s: float = 1.0           # stats message period on the data channel


def controls_as_dict(controls: Any) -> dict:
    """Best-effort JSON view of a controls object (dataclass or plain)."""
    if dataclasses.is_dataclass(controls):
        d = dataclasses.asdict(controls)
    elif hasattr(controls, "to_dict"):
        d = controls.to_dict()
    else:
        d = dict(vars(controls))
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool, dict, list, type(None)))}


# ---------------------------------------------------------------------------------------------- ICE


_original_get_host_addresses = None


def restrict_host_candidates(addresses: list[str] | None) -> None:
    """Make aioice gather host candidates on `addresses` only (None: its default, or 127.0.0.1 if empty).

    aioice never offers 127.0.0.1 on its own; in a loopback-only network namespace (the tests) it would
    then offer nothing, so loopback is the fallback when no other interface has an address.
    """
    global _original_get_host_addresses
    import aioice.ice

    if _original_get_host_addresses is None:
        _original_get_host_addresses = aioice.ice.get_host_addresses
    original = _original_get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if addresses:
            return list(addresses)
        return original(use_ipv4, use_ipv6) or ["127.0.0.1"]

    aioice.ice.get_host_addresses = get_host_addresses


def ice_servers_from_urls(stun: list[str] | None = None, turn: list[str] | None = None,
                          turn_user: str | None = None, turn_password: str | None = None) -> list[dict]:
    """The ICE server list shared by the server and the page. Empty unless --stun/--turn are given."""
    servers: list[dict] = []
    for url in stun or []:
        servers.append({"urls": [url if url.startswith("stun:") else f"stun:{url}"]})
    for url in turn or []:
        entry = {"urls": [url if url.startswith(("turn:", "turns:")) else f"turn:{url}"]}
        if turn_user is not None:
            entry["username"] = turn_user
            entry["credential"] = turn_password or ""
        servers.append(entry)
    return servers


# --------------------------------------------------------------------------------------------- peers


@dataclass
class PeerStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    errors: int = 0
    window: list = field(default_factory=list)   # (t_out, latency_s, process_s) since the last report
    size: tuple = (0, 0)


class Peer:
    """One browser: its connection, stream state, controls, latest input frame and stats."""

    def __init__(self, server: "WebServer", pc, state):
        self.id = uuid.uuid4().hex[:8]
        self.server = server
        self.pc = pc
        self.state = state                      # the binding's per-stream state (closed with the peer)
        self.controls = server.binding.parse_controls({})
        self.channel = None
        self.latest = None                      # (av.VideoFrame, arrival monotonic s) or None
        self.new_frame = asyncio.Event()
        self.stats = PeerStats()
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.last_error_sent = 0.0
        self.inflight = None                    # concurrent.futures.Future of the frame in the worker

    # -- data channel --------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(json.dumps(message))
            except Exception as exc:  # channel closing under us: the peer is going away
                log.debug("peer %s: send failed: %s", self.id, exc)

    def on_message(self, raw) -> None:
        try:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise ValueError("a message must be a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            self.send({"type": "error", "message": f"bad message (not a JSON object): {exc}"})
            return
        kind = msg.get("type")
        if kind == "controls":
            try:
                self.controls = self.server.binding.parse_controls(msg.get("controls", {}))
            except (ValueError, TypeError, KeyError) as exc:
                self.send({"type": "error", "message": f"controls refused: {exc}"})
                return
            self.send({"type": "controls_ok", "controls": self.controls_view()})
        elif kind == "ping":
            self.send({"type": "pong", "t": msg.get("t")})
        else:
            self.send({"type": "error", "message": f"unknown message type {kind!r}; use 'controls' or 'ping'"})

    def controls_view(self) -> dict:
        to_dict = self.server.binding.controls_to_dict or controls_as_dict
        return to_dict(self.controls)

    # -- media ---------------------------------------------------------------------------------

    async def pump(self, track) -> None:
        """Read the browser's track as fast as it comes, keeping only the newest frame."""
        from aiortc.mediastreams import MediaStreamError

        cfg = self.server.config
        while not self.closed:
            timeout = cfg.peer_timeout_s if self.stats.frames_in else cfg.connect_timeout_s
            try:
                frame = await asyncio.wait_for(track.recv(), timeout=timeout)
            except asyncio.TimeoutError:
                await self.close(f"no video frame for {timeout:.0f} s")
                return
            except MediaStreamError:
                await self.close("the browser's track ended")
                return
            if self.latest is not None:
                self.stats.dropped += 1
            self.latest = (frame, time.monotonic())
            self.stats.frames_in += 1
            self.new_frame.set()

    def process(self, frame, controls, state):
        """Worker thread: av.VideoFrame → Effect → av.VideoFrame with the same pts/time_base."""
        from av import VideoFrame

        image = frame.to_ndarray(format="bgr24")
        t0 = time.monotonic()
        try:
            out = self.server.binding.effect.process(image, controls, state)
            error = None
        except Exception as exc:  # keep streaming the camera, tell the client
            log.exception("peer %s: effect failed", self.id)
            out, error = image, f"{type(exc).__name__}: {exc}"
        t1 = time.monotonic()
        result = VideoFrame.from_ndarray(out, format="bgr24")
        result.pts = frame.pts
        result.time_base = frame.time_base
        return result, t1 - t0, error, (image.shape[1], image.shape[0])

    async def next_output(self):
        from aiortc.mediastreams import MediaStreamError

        while True:
            if self.closed:
                raise MediaStreamError
            if self.latest is None:
                self.new_frame.clear()
                await self.new_frame.wait()
                continue
            frame, arrived = self.latest
            self.latest = None
            break
        job = self.server.executor.submit(self.process, frame, self.controls, self.state)
        self.inflight = job
        out, process_s, error, size = await asyncio.wrap_future(job)
        now = time.monotonic()
        self.stats.frames_out += 1
        self.stats.size = size
        self.stats.window.append((now, now - arrived, process_s))
        if error is not None:
            self.stats.errors += 1
            if now - self.last_error_sent > 2.0:
                self.last_error_sent = now
                self.send({"type": "error", "message": f"effect failed on a frame: {error}"})
        return out

    async def report(self) -> None:
        """Send stats over the data channel every `stats_interval_s`."""
        interval = self.server.config.stats_interval_s
        last = time.monotonic()
        while not self.closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            msg = self.snapshot(now - last)
            last = now
            self.send(msg)

    def snapshot(self, span_s: float | None = None) -> dict:
        window, self.stats.window = self.stats.window, []
        n = len(window)
        span = span_s or self.server.config.stats_interval_s
        effect_stats = {}
        state_stats = getattr(self.state, "stats", None)
        if callable(state_stats):
            try:
                full = state_stats()
                effect_stats = {k: full[k] for k in ("edited", "no_face", "errors", "faces", "stage_ms")
                                if k in full}
            except Exception:  # stats are best effort; the stream matters more
                log.debug("peer %s: state.stats failed", self.id, exc_info=True)
        return {
            "type": "stats",
            "peer": self.id,
            "fps": round(n / span, 2) if span > 0 else 0.0,
            "latency_ms": round(1000 * sum(w[1] for w in window) / n, 2) if n else None,
            "process_ms": round(1000 * sum(w[2] for w in window) / n, 2) if n else None,
            "frames_in": self.stats.frames_in,
            "frames_out": self.stats.frames_out,
            "dropped": self.stats.dropped,
            "errors": self.stats.errors + int(effect_stats.get("errors", 0) or 0),
            "effect": effect_stats,
            "size": list(self.stats.size),
            "mode": self.server.binding.mode,
            "controls": self.controls_view(),
        }

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("peer %s closed: %s", self.id, reason)
        self.new_frame.set()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.server.peers.pop(self.id, None)
        try:
            await self.pc.close()
        finally:
            job = self.inflight
            if job is not None and not job.done():   # never free the state under a running frame
                await asyncio.get_running_loop().run_in_executor(None, concurrent.futures.wait, [job])
            release = getattr(self.state, "close", None)
            if callable(release):
                try:
                    release()
                except Exception:
                    log.exception("peer %s: state.close failed", self.id)
            self.state = None
            self.latest = None


def _make_effect_track(peer: Peer):
    from aiortc import MediaStreamTrack

    class EffectTrack(MediaStreamTrack):
        """The edited camera of one peer: one `recv()` per frame sent."""

        kind = "video"

        def __init__(self):
            super().__init__()
            self.peer = peer

        async def recv(self):
            return await self.peer.next_output()

    return EffectTrack()


# -------------------------------------------------------------------------------------------- server


class WebServer:
    """Holds the effect, the worker pool and the live peers; builds the aiohttp application."""

    def __init__(self, binding: EffectBinding, config: ServerConfig | None = None):
        self.binding = binding
        self.config = config or ServerConfig()
        self.peers: dict[str, Peer] = {}
        self.executor = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="effect")
        restrict_host_candidates(self.config.ice_addresses)
        self._warm_up()

    def _warm_up(self) -> None:
        """Make and free one stream state now: the first browser then does not wait for the face tracker's
        lazy imports and model load (and no peer is pinned by tracebacks those imports may keep)."""
        state = self.binding.new_state()
        release = getattr(state, "close", None)
        if callable(release):
            release()

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_OFFER_BYTES)
        app.router.add_get("/", self.index)
        app.router.add_get("/config", self.get_config)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/offer", self.offer)
        app.router.add_static("/static/", STATIC_DIR)
        app.on_shutdown.append(self.on_shutdown)
        return app

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response({
            "iceServers": self.config.ice_servers,
            "directions": list(self.binding.directions),
            "alpha": alpha_hints(list(self.binding.directions), self.binding.direction_info),
            "mode": self.binding.mode,
            "notice": self.binding.notice,
        })

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "peers": len(self.peers),
            "peer_ids": sorted(self.peers),
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "mode": self.binding.mode,
        })

    async def offer(self, request: web.Request) -> web.Response:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

        try:
            params = json.loads(await request.text())
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"offer larger than {MAX_OFFER_BYTES // 1024} kB: not an SDP offer"},
                                     status=413)
        except (ValueError, UnicodeDecodeError) as exc:
            return _bad_request(f"the body is not JSON ({exc}); send {{\"sdp\": ..., \"type\": \"offer\"}}")
        if not isinstance(params, dict) or not isinstance(params.get("sdp"), str) or params.get("type") != "offer":
            return _bad_request("expected a JSON object {\"sdp\": <string>, \"type\": \"offer\"}")
        if "m=video" not in params["sdp"]:
            return _bad_request("malformed SDP: the offer has no video section (m=video); send the camera track")
        if len(self.peers) >= self.config.max_peers:
            return web.json_response({"error": f"server full ({self.config.max_peers} peers); try later"},
                                     status=503)

        # a stream state may load a face tracker: off the event loop, other peers keep streaming meanwhile
        state = await asyncio.get_running_loop().run_in_executor(None, self.binding.new_state)
        ice = [RTCIceServer(**s) for s in self.config.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        peer = Peer(self, pc, state)
        got_video = []

        @pc.on("datachannel")
        def on_datachannel(channel):
            peer.channel = channel
            channel.on("message", peer.on_message)

        @pc.on("connectionstatechange")
        async def on_state():
            log.info("peer %s: connection %s", peer.id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await peer.close(f"connection {pc.connectionState}")

        @pc.on("track")
        def on_track(track):
            if track.kind != "video" or got_video:
                return
            got_video.append(track)
            pc.addTrack(_make_effect_track(peer))
            peer.tasks.append(asyncio.ensure_future(peer.pump(track)))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type="offer"))
            if not got_video:
                raise ValueError("the offer carries no video track")
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:
            await peer.close(f"offer refused: {type(exc).__name__}: {exc}")
            return _bad_request(f"malformed SDP offer: {type(exc).__name__}: {exc}")

        self.peers[peer.id] = peer
        peer.tasks.append(asyncio.ensure_future(peer.report()))
        log.info("peer %s: answered (%d peers)", peer.id, len(self.peers))
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "peer": peer.id})

    async def on_shutdown(self, app) -> None:
        await asyncio.gather(*(p.close("server shutting down") for p in list(self.peers.values())))
        self.executor.shutdown(wait=False, cancel_futures=True)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# ------------------------------------------------------------------------------------------- effects


def demo_binding() -> EffectBinding:
    """The stand-in effect (`--demo`): no weights, no tracker; tints the frame centre following α."""
    from web.standin import DemoControls, DemoEffect, DemoState

    effect = DemoEffect()
    return EffectBinding(
        effect=effect,
        parse_controls=lambda d: DemoControls.from_dict(d, available=effect.available_directions),
        new_state=DemoState,
        directions=list(effect.available_directions),
        mode="demo",
        notice="Demo effect (a colour tint following α), not the face edit: start without --demo for the real one.",
    )


def effect_config_from_args(args):
    """`stream.effect.EffectConfig` from the shared effect options (see `web.__main__.add_effect_arguments`)."""
    from stream.effect import EffectConfig

    options = {
        "generator": getattr(args, "generator", None),
        "encoder": getattr(args, "encoder", None),
        "directions": tuple(getattr(args, "direction", None) or ()),
        "directions_dir": getattr(args, "directions_dir", None),
        "device": getattr(args, "device", None),
        "precision": getattr(args, "precision", None),
        "live_resolution": getattr(args, "live_resolution", None),
    }
    return EffectConfig(**{k: v for k, v in options.items() if v not in (None, ())})


def binding_for_effect(effect, mode: str | None = None, notice: str | None = None) -> EffectBinding:
    """Wrap a `stream.effect.Effect` (full or tracking-only) for the server."""
    from stream.effect import Controls

    names = list(effect.available_directions)
    tracking = bool(getattr(effect, "is_tracking_only", False))
    return EffectBinding(
        effect=effect,
        parse_controls=lambda d: Controls.from_dict(d, names),
        new_state=effect.new_state,
        directions=names,
        mode=mode or ("tracking" if tracking else "full"),
        notice=notice if notice is not None else getattr(effect, "notice", None),
        controls_to_dict=lambda c: c.to_dict(),
        direction_info=effect_direction_info(effect),
    )


def effect_direction_info(effect) -> dict:
    """`effect.direction_info()` when the effect has it (stream.effect.Effect), else {} (→ fallback hints)."""
    info = getattr(effect, "direction_info", None)
    if not callable(info):
        return {}
    try:
        return dict(info())
    except Exception:  # a hint must never stop the server
        log.warning("direction_info() failed; the α sliders use the fallback range", exc_info=True)
        return {}


def load_binding(args) -> EffectBinding:
    """The effect named by the command line: --demo, --tracking-only, or the full effect.

    Missing weights are not an error: the page then runs face tracking only and shows the one command
    that fetches them (`web.gradio_app.load_effect`, shared with the Gradio app).
    """
    if getattr(args, "demo", False):
        return demo_binding()
    from web.gradio_app import load_effect

    effect, notice = load_effect(effect_config_from_args(args), tracking_only=getattr(args, "tracking_only", False))
    return binding_for_effect(effect, notice=notice)
