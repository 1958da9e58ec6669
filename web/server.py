"""The WebRTC page: aiohttp serves one page; each browser gets a `web.peer.Peer` (its own Session and driver) around
the server's one `stream.effect.Effect` (the editor behind the batching backend, shared by every peer).

Routes:
  GET  /        the page (web/static)
  GET  /config  {"iceServers", "directions", "alpha": {name: slider hint}, "mode", "state", "notice", "command",
                 "skipped_directions": [[file, reason]], "staleness_ms", "max_faces", "kind": "media"}
                 (state/notice/command: `stream.control.door_config`), "reenact": {available, notice, defaults,
                 methods, paste_modes, calibration, calibration_s, max_calibration, num_ws, target_side,
                 max_target_mb, max_target_side} (the reenactment mode's options and bounds)
  GET  /stats   {"peers", "peer_ids", "pending", "rss_mb", "mode", "editor": {batches, mean_batch, edits_per_s, ...},
                 "refused": {reason: count}, "loop_lag_ms": {"max", "mean"} (event-loop lateness since the last call)}
  POST /offer   {"sdp", "type": "offer"} -> answer + "peer"; 400 {"error"} for bad JSON/SDP/no video, 413 oversized,
                429 too many offers from this client, 503 full
  POST /target  a target photo's bytes (Content-Type image/* or application/octet-stream; ?name=FILE for the
                messages) -> {"target": token, "name", "width", "height", "source_size", "faces", "scaled"} for the
                data channel's "reenact" message (`web.peer`, `web.reenact`); 400 not a photo / too many pixels /
                no face, 408 too slow to arrive, 413 too many bytes, 429 too many uploads from this client, 503
                photos being read

Untrusted requests (`web.guard`): Host and Origin rules on every route, bounds on every offer (checked and parsed in
a worker thread before anything is made), an atomic peer reservation, offers per client per second, a connect
deadline for answered peers, data-channel message bounds. Media addresses follow the bind address
(`web.ice.addresses_for_bind`) unless `ServerConfig.ice_addresses` says otherwise.

The α range in /config is a hint (`web.hints`); the server refuses only non-finite α or |α| > 100.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from stream.control import door_config
from web.guard import Limits, Refused, RequestRules, TokenBuckets, guard_middleware, parse_offer
from web.hints import alpha_hints
from web.reenact import MAX_CALIBRATION, TARGET_SIDE, TargetStore, clean_name, load_target
from web.ice import (  # noqa: F401 -- ice_servers_from_urls, restrict_host_candidates re-exported for the doors
    addresses_for_bind, ice_servers_from_urls, restrict_host_candidates, tolerate_slow_consent)

log = logging.getLogger("web.server")

STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclass
class ServerConfig:
    """Knobs of the WebRTC server (all have safe defaults)."""

    ice_servers: list[dict] = field(default_factory=list)   # [{"urls": [...], "username", "credential"}]
    host: str = "127.0.0.1"                 # the HTTP bind address (media addresses follow it)
    ice_addresses: list[str] | None = None  # host candidates to offer; None = follow `host` (addresses_for_bind)
    allow_origins: tuple = ()               # origins besides the page's own that may call the API
    max_peers: int = 8                      # more -> HTTP 503 (answered + being answered, reserved atomically)
    peer_timeout_s: float = 10.0            # no input frame for this long (once started) -> peer closed
    connect_timeout_s: float = 30.0         # no first frame within this long -> peer closed
    stats_interval_s: float = 1.0           # stats message period on the data channel
    overlay: bool = False                   # draw the status line and fps on the edited stream
    target_side: int = TARGET_SIDE          # a reenactment target's longest side as streamed (scaled down to it)
    limits: Limits = field(default_factory=Limits)   # request / peer / message bounds (web.guard)

    @property
    def media_addresses(self) -> list[str] | None:
        """The ICE host candidate addresses: the explicit ones, else those of the bind address."""
        return self.ice_addresses if self.ice_addresses else addresses_for_bind(self.host)


def effect_mode(available: bool, state: str | None) -> str:
    """The page's mode word from an editor's `available` and `state` (its EditorInfo, or a door's /config body):
    "full" | "demo" | "tracking" (networks missing or --tracking-only)."""
    if available:
        return "demo" if state == "demo" else "full"
    return "tracking"


class WebServer:
    """Holds the effect and the live peers; builds the aiohttp application."""

    def __init__(self, effect, config: ServerConfig | None = None):
        self.effect = effect
        self.config = config or ServerConfig()
        self.peers: dict = {}
        self.reserved = 0                   # offers holding a peer place while being answered (see `offer`)
        self.refused: Counter = Counter()   # refused requests by reason (GET /stats)
        self.mode = effect_mode(effect.info.available, effect.info.state)
        limits = self.config.limits
        self.rules = RequestRules(self.config.allow_origins)
        self.offer_rate = TokenBuckets(limits.offers_per_s, limits.offer_burst)
        self.target_rate = TokenBuckets(limits.targets_per_s, limits.target_burst)
        self.targets = TargetStore(limits.max_targets_held, limits.target_ttl_s)
        self.reading_targets = 0            # uploads being read now (bounded by limits.max_target_reads)
        restrict_host_candidates(self.config.media_addresses)
        tolerate_slow_consent()
        self._warm_up()

    def _warm_up(self) -> None:
        """Make and free one session now: the first browser then does not wait for the face tracker's lazy imports
        and model load."""
        self.effect.new_session().close()

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.limits.max_body_bytes,
                              middlewares=[guard_middleware(self.rules)])
        app.router.add_get("/", self.index)
        app.router.add_get("/config", self.get_config)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/offer", self.offer)
        app.router.add_post("/target", self.upload_target)
        app.router.add_static("/static/", STATIC_DIR)
        app.on_startup.append(self._start_lag_monitor)
        app.on_shutdown.append(self.on_shutdown)
        return app

    async def _start_lag_monitor(self, app) -> None:
        self._lag = [0.0, 0.0, 0]           # max, sum, count of the event loop's lateness (ms) since /stats
        self._lag_task = asyncio.ensure_future(self._watch_lag())

    async def _watch_lag(self, period_s: float = 0.1) -> None:
        """How late the event loop wakes up (everything on it -- ICE consent, SCTP, offers -- waits as long)."""
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(period_s)
            late = max(0.0, (loop.time() - t - period_s) * 1e3)
            self._lag = [max(self._lag[0], late), self._lag[1] + late, self._lag[2] + 1]

    def _take_lag(self) -> dict:
        lag, self._lag = getattr(self, "_lag", [0.0, 0.0, 0]), [0.0, 0.0, 0]
        return {"max": round(lag[0], 1), "mean": round(lag[1] / lag[2], 1) if lag[2] else None}

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def get_config(self, request: web.Request) -> web.Response:
        info = self.effect.info
        return web.json_response({
            **door_config(info, self.effect.config),
            "kind": "media",
            "iceServers": self.config.ice_servers,
            "alpha": alpha_hints(list(info.direction_names), info.direction_info()),
            "mode": self.mode,
            "reenact": self.reenact_config(),
        })

    def reenact_config(self) -> dict:
        """The reenactment mode's options, defaults and bounds (GET /config "reenact"). Without networks the
        defaults and methods are left out: they live with the motion model (torch), which such a server never
        loads for /config -- its page greys the options and streams the target as it is."""
        from stream.reenact_calibration import (  # noqa: PLC0415
            CALIBRATION, CALIBRATION_S, LIVE_PASTE_MODES, can_reenact)
        from stream.reenact_live import DEMO_NOTICE  # noqa: PLC0415

        info, limits = self.effect.info, self.config.limits
        available = can_reenact(info)
        config = {"available": available, "notice": None, "paste_modes": list(LIVE_PASTE_MODES),
                  "calibration": CALIBRATION, "calibration_s": CALIBRATION_S, "max_calibration": MAX_CALIBRATION,
                  "num_ws": getattr(self.effect.editor, "num_ws", None), "target_side": self.config.target_side,
                  "max_target_mb": round(limits.max_target_bytes / 2**20, 2),
                  "max_target_side": limits.max_target_side}
        if not available:
            return {**config, "notice": DEMO_NOTICE if info.state == "demo" else info.notice}
        from directions.reenact import METHODS, ReenactOptions  # noqa: PLC0415

        return {**config, "defaults": ReenactOptions().to_dict(), "methods": list(METHODS)}

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "peers": len(self.peers),
            "peer_ids": sorted(self.peers),
            "pending": self.reserved,
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "mode": self.mode,
            "editor": self.effect.stats(),
            "refused": dict(self.refused),
            "loop_lag_ms": self._take_lag(),
            "targets": len(self.targets),
            "reading_targets": self.reading_targets,
        })

    # -- offers --------------------------------------------------------------------------------------------------
    async def offer(self, request: web.Request) -> web.Response:
        """Rate (per client) -> body (bounded) -> checks and SDP parse in a worker thread -> a peer place, reserved
        before the first await that follows -> the answer. Every refusal is one line to its sender."""
        limits = self.config.limits
        if not self.offer_rate.allow(request.remote):
            return self._refuse("rate", f"too many offers from this client (at most {limits.offers_per_s:g} a second "
                                        f"after {limits.offer_burst}); wait a moment and start again", 429)
        try:
            text = await request.text()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse("size", f"offer larger than {limits.max_body_bytes // 1024} kB: not an SDP offer",
                                413)
        except UnicodeDecodeError as exc:
            return self._refuse("json", f"the body is not JSON ({exc}); send {{\"sdp\": ..., \"type\": \"offer\"}}")
        try:
            sdp = await asyncio.get_running_loop().run_in_executor(None, parse_offer, text, limits)
        except Refused as exc:
            return self._refuse("offer", str(exc), exc.status)
        # the reservation: check and take in one step (no await between), released once the peer is in self.peers
        # or refused -- so simultaneous offers can never hold more than max_peers places
        if len(self.peers) + self.reserved >= self.config.max_peers:
            return self._refuse("full", f"server full ({self.config.max_peers} peers); try later", 503)
        self.reserved += 1
        try:
            return await self._answer(sdp)
        finally:
            self.reserved -= 1

    # -- target photos -------------------------------------------------------------------------------------------
    async def upload_target(self, request: web.Request) -> web.Response:
        """Rate (per client) -> photos being read -> bytes (read no further than the bound) -> header checked, decoded,
        scaled, face found in a worker thread -> held under a token. Every refusal is one line to its sender."""
        limits = self.config.limits
        if not self.target_rate.allow(request.remote):
            return self._refuse("target_rate", f"too many target photos from this client (at most "
                                               f"{limits.targets_per_s:g} a second after {limits.target_burst}); "
                                               "wait a moment and pick it again", 429)
        if self.reading_targets >= limits.max_target_reads:
            return self._refuse("target_busy", f"{self.reading_targets} target photos are being read; try again in "
                                               "a moment", 503)
        name = clean_name(request.query.get("name"))
        self.reading_targets += 1
        try:
            try:
                data = await asyncio.wait_for(read_bounded(request, limits.max_target_bytes), limits.target_read_s)
            except asyncio.TimeoutError:
                return self._refuse("target_slow", f"'{name}' took longer than {limits.target_read_s:g} s to arrive; "
                                                   "send it again", 408)
            if data is None:
                mb = limits.max_target_bytes / 2**20
                return self._refuse("target_size", f"'{name}' is over the {mb:.3g} MB limit for a target photo; "
                                                   "use a smaller file", 413)
            if not data:
                return self._refuse("target", "no photo in the request: send the photo's bytes as the body")
            target = await asyncio.get_running_loop().run_in_executor(
                None, load_target, data, name, limits, self.effect.info.crop_size, self.config.target_side,
                self.effect.config.feather_px)
        except ValueError as exc:            # stream.probe.UploadRefused, no face: the project's one line
            return self._refuse("target", str(exc).splitlines()[0][:400])
        finally:
            self.reading_targets -= 1
        self.targets.add(target)
        log.info("target photo %s accepted: %dx%d (uploaded %dx%d)", target.name, target.photo.shape[1],
                 target.photo.shape[0], *target.source_size)
        return web.json_response(target.summary())

    def _refuse(self, reason: str, message: str, status: int = 400) -> web.Response:
        self.refused[reason] += 1
        return web.json_response({"error": message}, status=status)

    async def _answer(self, sdp: str) -> web.Response:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription  # noqa: PLC0415

        from web.peer import Peer, make_effect_track  # noqa: PLC0415

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(**s) for s in self.config.ice_servers]))
        peer = Peer(self, pc)     # its session (a face tracker) is made at the first video frame
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
            pc.addTrack(make_effect_track(peer))
            peer.tasks.append(asyncio.ensure_future(peer.pump(track)))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if not got_video:
                raise ValueError("the offer carries no video track")
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # noqa: BLE001 -- anything aiortc says about a bad offer goes back to its sender
            await peer.close(f"offer refused: {type(exc).__name__}: {exc}")
            return self._refuse("offer", f"malformed SDP offer: {type(exc).__name__}: {str(exc)[:200]}")

        self.peers[peer.id] = peer
        peer.tasks.append(asyncio.ensure_future(peer.report()))
        peer.tasks.append(asyncio.ensure_future(peer.expire_unless_connected(self.config.limits.pending_s)))
        log.info("peer %s: answered (%d peers)", peer.id, len(self.peers))
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "peer": peer.id})

    async def on_shutdown(self, app) -> None:
        if getattr(self, "_lag_task", None) is not None:
            self._lag_task.cancel()
        await asyncio.gather(*(p.close("server shutting down") for p in list(self.peers.values())))


async def read_bounded(request: web.Request, max_bytes: int) -> bytes | None:
    """The request body, or None as soon as it is over `max_bytes` (a declared Content-Length first: nothing read)."""
    if request.content_length is not None and request.content_length > max_bytes:
        return None
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(256 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
