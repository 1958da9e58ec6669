"""One browser: its RTCPeerConnection, its Session (the stream's state), its latest-frame driver, its data channel.

    browser camera -> aiortc decoder -> `Peer.pump` pushes each frame into the FrameDriver (a newer frame replaces
    one still waiting) -> driver worker: av frame -> BGR -> Session.process (tracking, the freshest edit pasted)
    -> av frame with the source's pts/time_base -> `EffectTrack.recv` -> browser.

The networks run in the server's shared editor (`stream.serving`), batched with every other peer's faces, so the
output keeps the camera's rate while edits refresh at the editor's. A peer that vanishes without closing is freed
by aiortc's ICE consent check ("failed") or, sooner, by the input timeout (no frame for `peer_timeout_s`); closing
stops its driver and frees its session (tracker, face memories, its place in the editor's queue). The session is made at
the first video frame: an answered offer that never connects holds a peer connection only, and is closed after
`Limits.pending_s`.

Reenactment (the page's second mode): the peer's FrameDriver processes a `web.reenact.SessionSwitch`, which holds
the edit Session or a `stream.reenact_live.ReenactSession` driving a target photo uploaded through POST /target; the
output is then the target photo (its size) animated by the camera's face. Messages say what is wanted; one task at a
time (`_reconcile`) builds (off the event loop) and switches, so a burst of messages costs at most one build each
time it catches up. Options and paste mode apply to the running session; a new target or calibration window builds
a new one; the edit Session is kept meanwhile (its controls too) and comes back with {"type": "edit"}.

Data channel "controls" (JSON, one object per message):
  client -> server  {"type": "controls", "controls": {...stream.controls.Controls fields..., "max_faces"?}}
                    (fields left out keep their values; `stream.control.apply_controls`)  {"type": "ping", "t"}
                    {"type": "reenact", "target"?: token from POST /target, "options"?: {rank, layers, beta,
                     reference, smoothing, method} (directions.reenact.ReenactOptions), "paste_mode"?,
                     "calibration"?, "calibration_s"?}   (fields left out keep their values)
                    {"type": "recalibrate"}   {"type": "edit"} (back to editing the camera's face)
  server -> client  {"type": "stats", "fps", "latency_ms", "process_ms", "frames_in", "frames_out", "dropped",
                     "errors", "state", "message", "edit_age_ms", "effect": {...session stats...}, "size", "mode",
                     "controls", "max_faces", "refused_messages", "stream": "edit" | "reenact",
                     "reenact": null | {phase, calibration [done, total], target_ready, held_frames, fit_seconds,
                     options, paste_mode, calibration_s, target: {name, width, height, ...}}}
                    {"type": "controls_ok", "controls", "max_faces"}
                    {"type": "reenact_ok", "mode": "edit" | "reenact", "target", "options", "paste_mode",
                     "calibration", "calibration_s"}   {"type": "pong", "t"}
                    {"type": "error", "message"} (to that client only)
Messages are bounded (`web.guard.MessageGate`: bytes, nesting, rate); a refused one gets an error, never a closed
channel.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from stream.control import effect_stats
from web.guard import MessageGate
from web.reenact import KnownFaces, ReenactSettings, SessionSwitch

log = logging.getLogger("web.peer")
ERROR_REPORT_INTERVAL_S = 2.0
PENDING_CONTROLS = 8            # controls / reenact messages kept while the session is being made
QUEUED_TYPES = ("controls", "reenact", "recalibrate", "edit")   # messages applied once the session is made


def _to_bgr(frame):
    """av.VideoFrame -> uint8 [H, W, 3] BGR (runs in the driver's worker, off the event loop)."""
    return frame.to_ndarray(format="bgr24")


class Peer:
    """One browser's stream (see the module docstring)."""

    def __init__(self, server, pc):
        self.id = uuid.uuid4().hex[:8]
        self.server = server
        self.pc = pc
        self.session = None                     # made at the first video frame (`start_session`)
        self.driver = None
        self.switch = None                      # web.reenact.SessionSwitch: what the driver processes
        self.reenact = None                     # the ReenactSession in use (reenactment mode), else None
        self.reenact_target = None              # ... and its web.reenact.Target
        self._pending: list = []                # messages that came before the session (applied then)
        self._have = self._want = ("edit", None, None)   # (mode, Target, ReenactSettings): asked for / in use
        self._reconciling: asyncio.Task | None = None
        self._builds = 0
        self.channel = None
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.frames_in = self.frames_out = self.output_dropped = 0
        self.backlog_skipped = 0                # decoded frames skipped because a newer one was waiting
        self.size = (0, 0)
        self.window: list = []                  # (latency_s, process_s) of frames sent since the last report
        self.last_error_sent = 0.0
        self.gate = MessageGate(server.config.limits)
        self._loop = asyncio.get_running_loop()
        self._ready: tuple | None = None        # the newest (av.VideoFrame, info) waiting for recv
        self._new_output = asyncio.Event()

    async def start_session(self) -> bool:
        """Make this stream's Session and driver (off the event loop: a face tracker loads). Deferred to the first
        video frame so an answered offer that never connects holds no tracker. False if the peer closed meanwhile."""
        from stream.driver import FrameDriver  # noqa: PLC0415

        session = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.server.effect.new_session(stream_id=self.id))
        if self.closed:
            session.close()
            return False
        self.session = session
        self.switch = SessionSwitch(session)
        self.driver = FrameDriver(self.switch, prepare=_to_bgr, on_output=self._from_worker,
                                  overlay=self.server.config.overlay, name=f"peer-{self.id}").start()
        pending, self._pending = self._pending, []
        for msg in pending:
            self._handle(msg)
        return True

    # -- data channel --------------------------------------------------------------------------
    def send(self, message: dict) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(json.dumps(message))
            except Exception as exc:  # noqa: BLE001 -- channel closing under us: the peer is going away
                log.debug("peer %s: send failed: %s", self.id, exc)

    def on_message(self, raw) -> None:
        """One data-channel message. Whatever it holds, the answer is a message to this client only and the channel
        stays open: bounded (size, nesting, rate: `web.guard.MessageGate`), then handled."""
        msg, error = self.gate.admit(raw)
        if msg is None:
            if error is not None:
                self.send({"type": "error", "message": error})
            return
        if msg.get("type") in QUEUED_TYPES and self.session is None:   # before the first frame: applied then
            if len(self._pending) < PENDING_CONTROLS:
                self._pending.append(msg)
            else:
                self.send({"type": "error", "message": f"more than {PENDING_CONTROLS} messages before the first "
                                                       "video frame; this one is dropped"})
            return
        self._handle(msg)

    def _handle(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "controls":
            self._apply(msg.get("controls", {}))
        elif kind == "reenact":
            self._ask_reenact(msg)
        elif kind == "edit":
            self._want = ("edit", *self._want[1:])
            self._kick()
        elif kind == "recalibrate":
            if self.reenact is None:
                self.send({"type": "error", "message": "recalibrate: the stream is not reenacting; pick a target "
                                                       "photo first"})
                return
            self.reenact.recalibrate()
            self.send(self._reenact_reply())
        elif kind == "ping":
            t = msg.get("t")
            self.send({"type": "pong", "t": t if isinstance(t, (int, float)) else None})
        else:
            shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
            self.send({"type": "error", "message": f"unknown message type {shown!r}; use 'controls', 'reenact', "
                                                   "'recalibrate', 'edit' or 'ping'"})

    def _apply(self, controls) -> None:
        from stream.control import apply_controls  # noqa: PLC0415

        try:
            self.send(apply_controls(self.session, controls))
        except (ValueError, TypeError) as exc:
            self.send({"type": "error", "message": f"controls refused: {str(exc)[:300]}"})
        except Exception as exc:  # noqa: BLE001 -- a message must never close the channel; counted and logged once
            kind = self.session.errors.count(exc, where="message")
            self.send({"type": "error", "message": f"message failed: {kind}"})

    # -- reenactment -----------------------------------------------------------------------------
    def _ask_reenact(self, msg: dict) -> None:
        """A "reenact" message: the target and settings it asks for, checked now (one-line refusals); the switch
        itself is `_reconcile`'s."""
        _, target, settings = self._want
        try:
            if "target" in msg and (target is None or msg["target"] != target.token):   # (held: no store needed)
                target = self.server.targets.get(msg["target"])
            if target is None:
                raise ValueError("pick a target photo first (POST /target gives the token to send)")
            settings = (settings or ReenactSettings.default()).merged(msg, getattr(self.server.effect.editor,
                                                                                   "num_ws", None))
        except ValueError as exc:
            self.send({"type": "error", "message": f"reenactment refused: {str(exc)[:300]}"})
            return
        self._want = ("reenact", target, settings)
        self._kick()

    def _kick(self) -> None:
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = asyncio.ensure_future(self._reconcile())

    async def _reconcile(self) -> None:
        """Make what the messages asked for (`_want`) what the stream does (`_have`), one step at a time, each
        heavy one off the event loop; the newest wish wins. Never cancelled: a session built while the peer
        closed is closed here."""
        loop = asyncio.get_running_loop()
        while not self.closed and self._want != self._have:
            want = self._want
            mode, target, settings = want
            try:
                if mode == "edit":
                    await self._use(None, None)
                elif (self.reenact is not None and target is self._have[1]
                      and settings.same_session(self._have[2])):
                    self.reenact.set_options(settings.options)
                    self.reenact.paste_mode = settings.paste_mode     # the next render pastes with it
                else:
                    built = await loop.run_in_executor(None, self._build, target, settings)
                    if self.closed:
                        await loop.run_in_executor(None, built.close)
                        return
                    await self._use(built, target)
                    if self.closed:          # closed while switching: `close` may have missed it
                        await loop.run_in_executor(None, built.close)
                        return
            except Exception as exc:  # noqa: BLE001 -- told to this client; the stream goes on as it was
                if not isinstance(exc, ValueError):
                    log.warning("peer %s: reenactment failed: %s: %s", self.id, type(exc).__name__, exc)
                self.send({"type": "error", "message": f"reenactment refused: {str(exc)[:300]}"})
                if self._want is want:
                    self._want = self._have
                continue
            self._have = want
            self.send(self._reenact_reply())

    def _build(self, target, settings: ReenactSettings):
        """A ReenactSession for `target` (worker thread: its tracker loads; the target's face was found at upload)."""
        self._builds += 1
        return self.server.effect.new_reenact_session(
            target.photo, settings.options, paste_mode=settings.paste_mode, calibration=settings.calibration,
            calibration_s=settings.calibration_s, target_landmarker=KnownFaces(target.faces),
            stream_id=f"{self.id}-r{self._builds}")

    async def _use(self, reenact, target) -> None:
        """The driver processes `reenact` (None: the edit Session) from its next frame; the one replaced closes."""
        loop = asyncio.get_running_loop()
        old = await loop.run_in_executor(None, self.switch.use, reenact if reenact is not None else self.session)
        self.reenact, self.reenact_target = reenact, target
        if old is not self.session and old is not reenact:
            await loop.run_in_executor(None, old.close)

    def _reenact_reply(self) -> dict:
        mode, target, settings = self._have
        return {"type": "reenact_ok", "mode": mode, "target": None if target is None else target.summary(),
                **(settings.to_dict() if settings is not None else {})}

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
            frame = self._newest(track, frame)
            if frame is None:
                await self.close("the browser's track ended")
                return
            self.frames_in += 1
            if self.driver is None and not await self.start_session():
                return
            try:
                self.driver.push(frame, meta=(frame.pts, frame.time_base))
            except RuntimeError:  # the driver stopped: the peer is closing
                return

    def _newest(self, track, frame):
        """The newest decoded frame waiting on `track` (aiortc queues them without bound when this loop falls
        behind); older ones are skipped and counted as dropped. None: the track ended."""
        waiting = getattr(track, "_queue", None)     # aiortc's RemoteStreamTrack keeps an asyncio.Queue
        while waiting is not None and not waiting.empty():
            newer = waiting.get_nowait()
            if newer is None:
                return None
            self.backlog_skipped += 1
            self.frames_in += 1                 # received, then skipped: counted in and dropped
            frame = newer
        return frame

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
            if self.driver is not None:
                self.send(self.snapshot(now - last))
            last = now

    def snapshot(self, span_s: float | None = None) -> dict:
        window, self.window = self.window, []
        n = len(window)
        span = span_s or self.server.config.stats_interval_s
        s = self.driver.stats()
        effect = effect_stats(s)
        reenact = s.get("reenact")
        if reenact is not None:
            session, target = self.reenact, self.reenact_target
            reenact = {**reenact, "calibration_s": getattr(session, "calibration_s", None),
                       "target": None if target is None else target.summary()}
        return {
            "type": "stats", "peer": self.id,
            "fps": round(n / span, 2) if span > 0 else 0.0,
            "latency_ms": round(1000 * sum(w[0] for w in window) / n, 2) if n else None,
            "process_ms": round(1000 * sum(w[1] for w in window) / n, 2) if n else None,
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "dropped": s["dropped"] + self.output_dropped + self.backlog_skipped,
            "errors": s["errors_total"],
            "state": s.get("state"), "message": s.get("message"), "edit_age_ms": s.get("edit_age_ms"),
            "effect": effect, "size": list(self.size), "mode": self.server.mode,
            "controls": self.session.controls.to_dict(), "max_faces": self.session.max_faces,
            "refused_messages": self.gate.refused + self.gate.dropped,
            "stream": "reenact" if reenact is not None else "edit", "reenact": reenact,
        }

    async def expire_unless_connected(self, pending_s: float) -> None:
        """Close this peer if its connection is not up within `pending_s` (an answered offer whose ICE never
        finishes must not hold a place)."""
        await asyncio.sleep(pending_s)
        if not self.closed and self.pc.connectionState != "connected":
            await self.close(f"not connected within {pending_s:g} s (ICE did not finish)")

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
            if self.driver is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.driver.stop, False)
            if self.session is not None:
                self.session.close()
            if self.reenact is not None:
                self.reenact.close()
            self._ready = None


def make_effect_track(peer: Peer):
    """The edited camera of one peer, as an aiortc track (one `recv()` per frame sent)."""
    from aiortc import MediaStreamTrack  # noqa: PLC0415

    class EffectTrack(MediaStreamTrack):
        kind = "video"

        async def recv(self):
            return await peer.next_output()

    return EffectTrack()
