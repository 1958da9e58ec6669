"""Load test of `python -m web`: N aiortc peers send a moving face for S seconds, in parallel.

    python -m web.loadtest --peers 4 --seconds 60 --face ../shared/reference/faces/01.jpg [--json out.json]
        [--url http://127.0.0.1:8080 | server options after --, e.g. -- --demo]

Without --url it starts `python -m web` itself on a free port (extra arguments after `--` go to it).
It prints, per second: server RSS, peers, mean server latency and fps across peers; then per peer:
frames received, first-frame time, errors; and checks that a peer killed without closing is freed.
Media only ever goes to 127.0.0.1 (ICE host candidates are restricted to it). Run it in a loopback-only
network namespace to be sure:  unshare -n sh -c 'ip link set lo up && exec python -m web.loadtest ...'.
Environment: MICROMOTION_LOAD_SECONDS overrides the default --seconds.

Hostile clients (issue 15; tests/web/browser_probe.py --mode siege runs them against 4 Chromium pages):
`client_offer()` (a real offer SDP), `hostile_sdp(m_lines)`, `flood_offers(url, seconds, sdp)` (1200-m-line, nested,
cross-origin, foreign-Host, garbage and valid offers back to back), `flood_channel(url, frames, flood_s)` (a peer that
floods its data channel, then checks it still answers).
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("web.loadtest")
VIDEO_CLOCK = 90000


def moving_face_frames(image_bgr: np.ndarray, size=(320, 240), n: int = 60) -> list[np.ndarray]:
    """`n` frames [H,W,3] uint8 BGR of the face photo at `size` (w, h), drifting and nodding slightly."""
    import cv2

    w, h = size
    src = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        phase = 2 * math.pi * i / n
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 2.0 * math.sin(phase), 1.0)
        m[0, 2] += 3.0 * math.sin(phase)
        m[1, 2] += 2.0 * math.cos(phase)
        frames.append(cv2.warpAffine(src, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return frames


def make_face_track(frames: list[np.ndarray], fps: float = 30.0):
    """An aiortc video track looping over `frames` at `fps`, pts in a 1/90000 clock."""
    from aiortc import MediaStreamTrack
    from av import VideoFrame

    class FaceTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self):
            super().__init__()
            self.index = 0
            self.start = None

        async def recv(self):
            if self.start is None:
                self.start = time.monotonic()
            due = self.start + self.index / fps
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = VideoFrame.from_ndarray(frames[self.index % len(frames)], format="bgr24")
            frame.pts = int(self.index * VIDEO_CLOCK / fps)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            self.index += 1
            return frame

    return FaceTrack()


async def run_peer(url: str, frames: list[np.ndarray], seconds: float, controls: dict | None = None,
                   fps: float = 30.0, on_message=None, connected_event: asyncio.Event | None = None,
                   close: bool = True, until: asyncio.Event | None = None) -> dict:
    """One peer for `seconds` (or until `until` is set): send the face, receive the edited stream, log the server's
    messages.

    Returns {"frames", "first_frame_s", "sizes", "stats" (server stats messages), "errors", "acks",
    "last_frame" (ndarray BGR)}.
    """
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    result = {"frames": 0, "first_frame_s": None, "sizes": set(), "stats": [], "errors": [], "acks": [],
              "last_frame": None}
    t0 = time.monotonic()
    channel = pc.createDataChannel("controls")
    tasks = []

    @channel.on("open")
    def _open():
        if controls is not None:
            channel.send(json.dumps({"type": "controls", "controls": controls}))

    @channel.on("message")
    def _message(raw):
        msg = json.loads(raw)
        {"stats": result["stats"], "error": result["errors"], "controls_ok": result["acks"]}.get(
            msg.get("type"), []).append(msg)
        if on_message is not None:
            on_message(msg, channel)

    async def consume(track):
        from aiortc.mediastreams import MediaStreamError
        try:
            while True:
                frame = await track.recv()
                if result["first_frame_s"] is None:
                    result["first_frame_s"] = time.monotonic() - t0
                    if connected_event is not None:
                        connected_event.set()
                result["frames"] += 1
                result["sizes"].add((frame.width, frame.height))
                if result["frames"] % 15 == 0:
                    result["last_frame"] = frame.to_ndarray(format="bgr24")
        except MediaStreamError:
            pass

    @pc.on("track")
    def _track(track):
        tasks.append(asyncio.ensure_future(consume(track)))

    pc.addTrack(make_face_track(frames, fps))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/offer", json={"sdp": pc.localDescription.sdp,
                                                      "type": pc.localDescription.type}) as resp:
            answer = await resp.json()
            if resp.status != 200:
                await pc.close()
                raise RuntimeError(f"offer refused ({resp.status}): {answer.get('error')}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    result["peer"] = answer.get("peer")
    if until is None:
        await asyncio.sleep(seconds)
    else:
        try:
            await asyncio.wait_for(until.wait(), seconds)
        except asyncio.TimeoutError:
            pass
    if close:
        await pc.close()
        for t in tasks:
            t.cancel()
    result["sizes"] = sorted(result["sizes"])
    return result


# ------------------------------------------------------------------------------------------- hostile clients


async def client_offer(frames: list[np.ndarray] | None = None) -> str:
    """A real offer SDP (video + data channel) from an aiortc client that is closed at once (host candidates as
    `restrict_host_candidates` allows: call it with ["127.0.0.1"] first)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("controls")
        pc.addTrack(make_face_track(frames or [np.zeros((240, 320, 3), np.uint8)]))
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def hostile_sdp(m_lines: int = 1200) -> str:
    """An offer with `m_lines` video sections (~145 kB at 1200): each one a transceiver + transport to aiortc."""
    head = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE " +
            " ".join(str(i) for i in range(m_lines)) + "\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
            "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n")
    section = ("m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\na=sendonly\r\n"
               "a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n")
    return head + "".join(section.format(i=i) for i in range(m_lines))


def hostile_bodies(valid_sdp: str) -> list[tuple[str, bytes, dict]]:
    """(name, body, extra headers) of the offers a hostile client sends in turn."""
    deep = "[" * 50000 + "]" * 50000
    return [
        ("mlines", json.dumps({"sdp": hostile_sdp(), "type": "offer"}).encode(), {}),
        ("nested", ('{"sdp": "m=video", "type": "offer", "x": ' + deep + "}").encode(), {}),
        ("cross-origin", json.dumps({"sdp": valid_sdp, "type": "offer"}).encode(),
         {"Origin": "http://evil.example", "Content-Type": "text/plain"}),
        ("rebind", json.dumps({"sdp": valid_sdp, "type": "offer"}).encode(), {"Host": "rebind.attacker.example"}),
        ("valid", json.dumps({"sdp": valid_sdp, "type": "offer"}).encode(), {}),
        ("garbage", b"\xff\xfe" + os.urandom(2000), {}),
    ]


async def flood_offers(url: str, seconds: float, valid_sdp: str, concurrency: int = 4) -> dict:
    """Post hostile and valid offers back to back from `concurrency` tasks for `seconds`; {name: {status: n}}."""
    import aiohttp

    bodies = hostile_bodies(valid_sdp)
    counts: dict = {name: {} for name, _, _ in bodies}
    deadline = time.monotonic() + seconds

    async def worker(k: int, session) -> None:
        i = k
        while time.monotonic() < deadline:
            name, body, extra = bodies[i % len(bodies)]
            i += 1
            headers = {"Content-Type": "application/json", **extra}
            try:
                async with session.post(f"{url}/offer", data=body, headers=headers) as r:
                    await r.read()
                    status = str(r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status = type(exc).__name__
            counts[name][status] = counts[name].get(status, 0) + 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(k, session) for k in range(concurrency)))
    return counts


HOSTILE_MESSAGES = [
    "[" * 900 + "]" * 900,
    '{"type": "controls", "controls": {"directions": {"x": ' + "[" * 900 + "]" * 900 + "}}}",
    '{"type": ' + "[" * 500 + "]" * 500 + "}",
    "x" * 60000,
    "{not json",
    '{"type": "controls", "controls": {"directions": {"nope": 1e308}}}',
    '{"type": "controls", "controls": {"max_faces": 1000000}}',
    '{"type": "ping", "t": ' + '"' + "y" * 4000 + '"}',
]


async def flood_channel(url: str, frames: list[np.ndarray], flood_s: float, per_s: float = 500.0,
                        big: bool = True) -> dict:
    """One peer that streams and, once its data channel answers, floods it with hostile messages at `per_s` for
    `flood_s` seconds (as fast as the transport takes them); then sends one valid controls message and waits for its
    answer. big=False leaves out the 60 kB message (more messages per second through a slow transport).
    {"sent", "errors", "acks_after_flood", "frames", "error_kinds"}."""
    messages = [m for m in HOSTILE_MESSAGES if big or len(m) < 8192]
    state = {"sent": 0, "acks": 0, "channel": None}
    first_message = asyncio.Event()
    done = asyncio.Event()
    flood_over = asyncio.Event()

    def on_message(msg, channel):
        state["channel"] = channel
        first_message.set()
        if msg.get("type") == "controls_ok" and flood_over.is_set():
            state["acks"] += 1
            done.set()

    async def flood():
        await first_message.wait()
        ch = state["channel"]
        t_end = time.monotonic() + flood_s
        while time.monotonic() < t_end and ch.readyState == "open":
            # as fast as the transport takes it (a client-side backlog would only delay this client's own messages)
            if ch.bufferedAmount < 256 * 1024:
                for _ in range(max(1, int(per_s / 20))):
                    ch.send(messages[state["sent"] % len(messages)])
                    state["sent"] += 1
            await asyncio.sleep(0.05)
        drain_end = time.monotonic() + 20
        while ch.bufferedAmount > 0 and time.monotonic() < drain_end:   # what is still buffered here goes first
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.2)             # let the gate's bucket refill: the next message must be answered
        flood_over.set()
        if ch.readyState == "open":
            ch.send(json.dumps({"type": "controls", "controls": {"enabled": True}}))
        try:
            await asyncio.wait_for(done.wait(), 10)
        except asyncio.TimeoutError:
            done.set()

    flooder = asyncio.ensure_future(flood())
    result = await run_peer(url, frames, flood_s + 120, controls={"enabled": True}, on_message=on_message,
                            until=done)
    flooder.cancel()
    return {"sent": state["sent"], "errors": len(result["errors"]), "acks_after_flood": state["acks"],
            "frames": result["frames"], "error_kinds": sorted({e["message"][:80] for e in result["errors"]})}


# ------------------------------------------------------------------------------------------- driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, server_args: list[str], log_path: Path | None = None, env: dict | None = None,
                 wait: bool = True) -> subprocess.Popen:
    """`python -m web` on 127.0.0.1:`port` with loopback ICE candidates; returns once it serves (wait=False: at
    once; then call `wait_serving`). `env`: extra environment variables."""
    cmd = [sys.executable, "-m", "web", "--port", str(port), "--ice-address", "127.0.0.1", *server_args]
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
                            env={**os.environ, **(env or {})})
    if wait:
        wait_serving(proc, port, log_path)
    return proc


def wait_serving(proc: subprocess.Popen, port: int, log_path: Path | None = None) -> None:
    """Return once `proc` answers /config on 127.0.0.1:`port` (RuntimeError if it exits or takes 120 s)."""
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"python -m web exited with {proc.returncode}" +
                               (f"; see {log_path}" if log_path else ""))
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=1).read()
            return
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("python -m web did not start serving within 120 s")


async def get_json(url: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return await resp.json()


async def vanish_check(url: str, face: str, timeout_s: float) -> dict:
    """Start a peer in a child process, SIGKILL it once it streams, time how long the server takes to free it."""
    before = (await get_json(f"{url}/stats"))["peers"]
    child = subprocess.Popen([sys.executable, "-m", "web.loadtest", "--client-only", "--url", url,
                              "--face", face, "--seconds", "600"],
                             cwd=Path(__file__).resolve().parents[1],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, child.stdout.readline), 60)
        if "streaming" not in line:
            raise RuntimeError(f"vanishing client did not start streaming: {line!r}")
        during = (await get_json(f"{url}/stats"))["peers"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed = time.monotonic()
    while time.monotonic() - killed < timeout_s:
        now = (await get_json(f"{url}/stats"))["peers"]
        if now <= before:
            return {"peers_before": before, "peers_during": during, "freed": True,
                    "freed_after_s": round(time.monotonic() - killed, 2)}
        await asyncio.sleep(0.5)
    return {"peers_before": before, "peers_during": during, "freed": False, "freed_after_s": None}


async def load(url: str, face_path: str, peers: int, seconds: float, vanish_timeout_s: float = 45.0) -> dict:
    """Run `peers` peers for `seconds`, sampling server RSS and stats each second; then the vanish check."""
    import cv2

    image = cv2.imread(face_path)
    if image is None:
        raise FileNotFoundError(f"cannot read face image {face_path}")
    frames = moving_face_frames(image)
    timeline: list[dict] = []
    latest: dict[str, dict] = {}

    def on_message(msg, _channel):
        if msg.get("type") == "stats":
            latest[msg["peer"]] = msg

    async def sample():
        start = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            stats = await get_json(f"{url}/stats")
            live = list(latest.values())
            lat = [m["latency_ms"] for m in live if m.get("latency_ms") is not None]
            timeline.append({"t_s": round(time.monotonic() - start, 1), "rss_mb": stats["rss_mb"],
                             "peers": stats["peers"],
                             "latency_ms": round(statistics.mean(lat), 1) if lat else None,
                             "fps_per_peer": round(statistics.mean(m["fps"] for m in live), 1) if live else None})

    sampler = asyncio.ensure_future(sample())
    controls = [{"directions": {}, "animate": True, "period_s": 2.0, "enabled": True} for _ in range(peers)]
    results = await asyncio.gather(*(run_peer(url, frames, seconds, controls=c, on_message=on_message)
                                     for c in controls), return_exceptions=True)
    sampler.cancel()
    await asyncio.sleep(3.0)
    after = await get_json(f"{url}/stats")
    vanish = await vanish_check(url, face_path, vanish_timeout_s)
    per_peer = []
    for r in results:
        if isinstance(r, BaseException):
            per_peer.append({"error": f"{type(r).__name__}: {r}"})
        else:
            last = r["stats"][-1] if r["stats"] else {}
            per_peer.append({"frames": r["frames"], "first_frame_s": r["first_frame_s"], "sizes": r["sizes"],
                             "server_errors": r["errors"], "acks": len(r["acks"]),
                             "last_stats": {k: last.get(k) for k in ("frames_in", "frames_out", "dropped",
                                                                     "errors", "fps", "latency_ms")}})
    return {"peers": peers, "seconds": seconds, "timeline": timeline, "per_peer": per_peer,
            "peers_after_close": after["peers"], "rss_after_mb": after["rss_mb"], "vanish": vanish}


def print_report(report: dict) -> None:
    print(f"{'t_s':>6} {'rss_mb':>8} {'peers':>5} {'latency_ms':>10} {'fps/peer':>8}")
    for row in report["timeline"]:
        print(f"{row['t_s']:>6} {row['rss_mb']:>8} {row['peers']:>5} {str(row['latency_ms']):>10} "
              f"{str(row['fps_per_peer']):>8}")
    for i, p in enumerate(report["per_peer"]):
        print(f"peer {i}: {p}")
    print(f"peers after close: {report['peers_after_close']}; rss after: {report['rss_after_mb']} MB")
    print(f"vanished peer: {report['vanish']}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    server_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, server_args = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m web.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (default: start one on a free port)")
    p.add_argument("--face", required=True, help="face photo for the synthetic camera")
    p.add_argument("--peers", type=int, default=4, help="simultaneous synthetic browsers (default 4)")
    p.add_argument("--seconds", type=float, default=float(os.environ.get("MICROMOTION_LOAD_SECONDS", 10)),
                   help="how long they stream (default 10, or $MICROMOTION_LOAD_SECONDS)")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--server-log", help="write the started server's log here")
    p.add_argument("--client-only", action="store_true",
                   help="internal: run only the synthetic browsers against --url (the load test's child process)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from web.server import restrict_host_candidates

    restrict_host_candidates(["127.0.0.1"])
    if args.client_only:
        return asyncio.run(_client_only(args))
    proc = None
    url = args.url
    if url is None:
        port = free_port()
        proc = start_server(port, server_args, Path(args.server_log) if args.server_log else None)
        url = f"http://127.0.0.1:{port}"
    try:
        report = asyncio.run(load(url, args.face, args.peers, args.seconds))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


async def _client_only(args) -> int:
    import cv2

    frames = moving_face_frames(cv2.imread(args.face))
    connected = asyncio.Event()
    task = asyncio.ensure_future(run_peer(args.url, frames, args.seconds, connected_event=connected))
    await connected.wait()
    print("streaming", flush=True)
    await task
    return 0


if __name__ == "__main__":
    sys.exit(main())
