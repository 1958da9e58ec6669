"""One browser: its RTCPeerConnection, its Session (the stream's state), its latest-frame driver, its data channel.

    browser camera -> aiortc decoder -> `Peer.pump` pushes each frame into the FrameDriver (a newer frame replaces
    one still waiting) -> driver worker: av frame -> BGR -> Session.process (tracking, the freshest edit pasted)
    -> av frame with the source's pts/time_base -> `EffectTrack.recv` -> browser.

The networks run in the server's shared editor (`stream.serving`), batched with every other peer's faces, so the
output keeps the camera's rate while edits refresh at the editor's. A peer that vanishes without closing is freed
by aiortc's ICE consent check ("failed") or, sooner, by the input timeout (no frame for `peer_timeout_s`); closing
stops its driver and frees its session (tracker, face memories, its place in the editor's queue).

Data channel "controls" (JSON, one object per message):
  client -> server  {"type": "controls", "controls": {...stream.controls.Controls fields...}}  {"type": "ping", "t"}
  server -> client  {"type": "stats", "fps", "latency_ms", "process_ms", "frames_in", "frames_out", "dropped",
                     "errors", "state", "message", "edit_age_ms", "effect": {...session stats...}, "size", "mode",
                     "controls"}   {"type": "controls_ok", "controls"}   {"type": "pong", "t"}
                    {"type": "error", "message"} (to that client only)
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

log = logging.getLogger("web.peer")
ERROR_REPORT_INTERVAL_S = 2.0


def _to_bgr(frame):
    """av.VideoFrame -> uint8 [H, W, 3] BGR (runs in the driver's worker, off the event loop)."""
    return frame.to_ndarray(format="bgr24")


class Peer:
    """One browser's stream (see the module docstring)."""

    def __init__(self, server, pc, session):
        from stream.driver import FrameDriver  # noqa: PLC0415

        self.id = session.id
        self.server = server
        self.pc = pc
        self.session = session
        self.channel = None
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.frames_in = self.frames_out = self.output_dropped = 0
        self.size = (0, 0)
        self.window: list = []                  # (latency_s, process_s) of frames sent since the last report
        self.last_error_sent = 0.0
        self._loop = asyncio.get_running_loop()
        self._ready: tuple | None = None        # the newest (av.VideoFrame, info) waiting for recv
        self._new_output = asyncio.Event()
        self.driver = FrameDriver(session, prepare=_to_bgr, on_output=self._from_worker,
                                  overlay=server.config.overlay, name=f"peer-{self.id}").start()

    # -- data channel --------------------------------------------------------------------------
    def send(self, message: dict) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(json.dumps(message))
            except Exception as exc:  # noqa: BLE001 -- channel closing under us: the peer is going away
                log.debug("peer %s: send failed: %s", self.id, exc)

    def on_message(self, raw) -> None:
        try:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise ValueError("a message must be a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.send({"type": "error", "message": f"bad message (not a JSON object): {exc}"})
            return
        kind = msg.get("type")
        if kind == "controls":
            try:
                applied = self.session.set_controls(msg.get("controls", {}))
            except (ValueError, TypeError) as exc:
                self.send({"type": "error", "message": f"controls refused: {exc}"})
                return
            self.send({"type": "controls_ok", "controls": applied.to_dict()})
        elif kind == "ping":
            self.send({"type": "pong", "t": msg.get("t")})
        else:
            self.send({"type": "error", "message": f"unknown message type {kind!r}; use 'controls' or 'ping'"})

    # -- media ---------------------------------------------------------------------------------
    async def pump(self, track) -> None:
        """Read the browser's track as fast as it comes; each frame goes to the driver's slot."""
        from aiortc.mediastreams import MediaStreamError  # noqa: PLC0415

        cfg = self.server.config
        while not self.closed:
            timeout = cfg.peer_timeout_s if self.frames_in else cfg.connect_timeout_s
            try:
                frame = await asyncio.wait_for(track.recv(), timeout=timeout)
            except asyncio.TimeoutError:
                await self.close(f"no video frame for {timeout:.0f} s")
                return
            except MediaStreamError:
                await self.close("the browser's track ended")
                return
            self.frames_in += 1
            try:
                self.driver.push(frame, meta=(frame.pts, frame.time_base))
            except RuntimeError:  # the driver stopped: the peer is closing
                return

    def _from_worker(self, frame_bgr, info: dict) -> None:
        """Driver worker thread: wrap the output as an av frame with the source's timing, hand it to the loop."""
        from av import VideoFrame  # noqa: PLC0415

        out = VideoFrame.from_ndarray(frame_bgr, format="bgr24")
        out.pts, out.time_base = info["meta"]
        self.size = (frame_bgr.shape[1], frame_bgr.shape[0])
        try:
            self._loop.call_soon_threadsafe(self._deliver, out, info)
        except RuntimeError:  # the event loop is closed (server shutting down)
            pass

    def _deliver(self, frame, info: dict) -> None:
        if self._ready is not None:
            self.output_dropped += 1
        self._ready = (frame, info)
        self._new_output.set()

    async def next_output(self):
        """The newest processed frame (waiting for one); MediaStreamError once the peer is closed."""
        from aiortc.mediastreams import MediaStreamError  # noqa: PLC0415

        while self._ready is None:
            if self.closed:
                raise MediaStreamError
            self._new_output.clear()
            await self._new_output.wait()
        if self.closed:
            raise MediaStreamError
        (frame, info), self._ready = self._ready, None
        self.frames_out += 1
        latency = time.monotonic() - info["t_capture"]
        self.window.append((latency, self.driver.stage_ms.get("process", 0.0) / 1e3))
        self._report_error(info)
        return frame

    def _report_error(self, info: dict) -> None:
        status = info.get("status")
        if status is None or status.state != "error":
            return
        now = time.monotonic()
        if now - self.last_error_sent > ERROR_REPORT_INTERVAL_S:
            self.last_error_sent = now
            self.send({"type": "error", "message": f"the effect failed on a frame: {status.message}"})

    # -- stats ---------------------------------------------------------------------------------
    async def report(self) -> None:
        """Send stats over the data channel every `stats_interval_s`."""
        interval = self.server.config.stats_interval_s
        last = time.monotonic()
        while not self.closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.send(self.snapshot(now - last))
            last = now

    def snapshot(self, span_s: float | None = None) -> dict:
        window, self.window = self.window, []
        n = len(window)
        span = span_s or self.server.config.stats_interval_s
        s = self.driver.stats()
        effect = {k: s.get(k) for k in ("tracked", "edited", "edits", "no_face", "too_small", "waiting", "stale", "faces",
                                        "stage_ms", "edit_age_ms", "max_edit_age_ms", "batch")}
        return {
            "type": "stats", "peer": self.id,
            "fps": round(n / span, 2) if span > 0 else 0.0,
            "latency_ms": round(1000 * sum(w[0] for w in window) / n, 2) if n else None,
            "process_ms": round(1000 * sum(w[1] for w in window) / n, 2) if n else None,
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "dropped": s["dropped"] + self.output_dropped,
            "errors": s["errors"] + s["driver_errors"]["errors"],
            "state": s.get("state"), "message": s.get("message"), "edit_age_ms": s.get("edit_age_ms"),
            "effect": effect, "size": list(self.size), "mode": self.server.mode,
            "controls": self.session.controls.to_dict(),
        }

    # -- lifecycle -----------------------------------------------------------------------------
    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("peer %s closed: %s", self.id, reason)
        self._new_output.set()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.server.peers.pop(self.id, None)
        try:
            await self.pc.close()
        finally:
            # never free the session under a running frame: stop (join) the driver first, off the event loop
            await asyncio.get_running_loop().run_in_executor(None, self.driver.stop, False)
            self.session.close()
            self._ready = None


def make_effect_track(peer: Peer):
    """The edited camera of one peer, as an aiortc track (one `recv()` per frame sent)."""
    from aiortc import MediaStreamTrack  # noqa: PLC0415

    class EffectTrack(MediaStreamTrack):
        kind = "video"

        async def recv(self):
            return await peer.next_output()

    return EffectTrack()
