"""The WebRTC page: aiohttp serves one page; each browser gets a `web.peer.Peer` (its own Session and driver) around
the server's one `stream.effect.Effect` (the editor behind the batching backend, shared by every peer).

Routes:
  GET  /        the page (web/static)
  GET  /config  {"iceServers", "directions", "alpha": {name: slider hint}, "mode", "state", "notice", "command",
                 "skipped_directions": [[file, reason]], "staleness_ms"}
  GET  /stats   {"peers", "peer_ids", "rss_mb", "mode", "editor": {batches, mean_batch, edits_per_s, ...}}
  POST /offer   {"sdp", "type": "offer"} -> answer + "peer"; 400 {"error"} for bad JSON/SDP/no video,
                413 oversized, 503 full

The α range in /config is a hint (`web.hints`); the server refuses only non-finite α or |α| > 100.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from web.hints import alpha_hints
from web.ice import ice_servers_from_urls, restrict_host_candidates  # noqa: F401 -- re-exported for the doors

log = logging.getLogger("web.server")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_OFFER_BYTES = 256 * 1024          # an SDP offer is a few kB; anything this big is not one


@dataclass
class ServerConfig:
    """Knobs of the WebRTC server (all have safe defaults)."""

    ice_servers: list[dict] = field(default_factory=list)   # [{"urls": [...], "username", "credential"}]
    ice_addresses: list[str] | None = None  # host candidates to offer; None = all but loopback, else 127.0.0.1
    max_peers: int = 8                      # more -> HTTP 503
    peer_timeout_s: float = 10.0            # no input frame for this long (once started) -> peer closed
    connect_timeout_s: float = 30.0         # no first frame within this long -> peer closed
    stats_interval_s: float = 1.0           # stats message period on the data channel
    overlay: bool = False                   # draw the status line and fps on the edited stream


def effect_mode(info) -> str:
    """The page's mode word: "full" | "demo" | "tracking" (networks missing or --tracking-only)."""
    if info.available:
        return "demo" if info.state == "demo" else "full"
    return "tracking"


class WebServer:
    """Holds the effect and the live peers; builds the aiohttp application."""

    def __init__(self, effect, config: ServerConfig | None = None):
        self.effect = effect
        self.config = config or ServerConfig()
        self.peers: dict = {}
        self.mode = effect_mode(effect.info)
        restrict_host_candidates(self.config.ice_addresses)
        self._warm_up()

    def _warm_up(self) -> None:
        """Make and free one session now: the first browser then does not wait for the face tracker's lazy imports
        and model load."""
        self.effect.new_session().close()

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
        info = self.effect.info
        session_config = self.effect.config
        return web.json_response({
            "iceServers": self.config.ice_servers,
            "directions": list(info.direction_names),
            "alpha": alpha_hints(list(info.direction_names), info.direction_info()),
            "mode": self.mode,
            "state": info.state,
            "notice": info.notice,
            "command": info.command,
            "skipped_directions": [list(x) for x in info.skipped_directions],
            "staleness_ms": session_config.staleness_for(info.device_type),
        })

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "peers": len(self.peers),
            "peer_ids": sorted(self.peers),
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "mode": self.mode,
            "editor": self.effect.stats(),
        })

    async def offer(self, request: web.Request) -> web.Response:
        try:
            params = json.loads(await request.text())
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"offer larger than {MAX_OFFER_BYTES // 1024} kB: not an SDP offer"},
                                     status=413)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return _bad_request(f"the body is not JSON ({exc}); send {{\"sdp\": ..., \"type\": \"offer\"}}")
        if not isinstance(params, dict) or not isinstance(params.get("sdp"), str) or params.get("type") != "offer":
            return _bad_request("expected a JSON object {\"sdp\": <string>, \"type\": \"offer\"}")
        if "m=video" not in params["sdp"]:
            return _bad_request("malformed SDP: the offer has no video section (m=video); send the camera track")
        if len(self.peers) >= self.config.max_peers:
            return web.json_response({"error": f"server full ({self.config.max_peers} peers); try later"},
                                     status=503)
        return await self._answer(params["sdp"])

    async def _answer(self, sdp: str) -> web.Response:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription  # noqa: PLC0415

        from web.peer import Peer, make_effect_track  # noqa: PLC0415

        # a session loads a face tracker: off the event loop, other peers keep streaming meanwhile
        session = await asyncio.get_running_loop().run_in_executor(None, self.effect.new_session)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(**s) for s in self.config.ice_servers]))
        peer = Peer(self, pc, session)
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
            return _bad_request(f"malformed SDP offer: {type(exc).__name__}: {exc}")

        self.peers[peer.id] = peer
        peer.tasks.append(asyncio.ensure_future(peer.report()))
        log.info("peer %s: answered (%d peers)", peer.id, len(self.peers))
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "peer": peer.id})

    async def on_shutdown(self, app) -> None:
        await asyncio.gather(*(p.close("server shutting down") for p in list(self.peers.values())))


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
