"""The page's reenactment mode (issue 13's live door): POST /target and the peer's switch to a ReenactSession.

HTTP checks talk to an in-process server on 127.0.0.1 (no media moves). The peer checks drive a real `web.peer.Peer`
in-process -- its data-channel messages, its FrameDriver and SessionSwitch, the tiny random networks
(`tiny_weights.build_tiny_nets`) behind the batching backend, real MediaPipe tracking -- with the camera's frames
pushed as av frames and no WebRTC: the face clip, then frames without a face (the lost driver). The browser itself
is tested in test_web_browser.py.
"""
from __future__ import annotations

import asyncio
import copy
import json
import time

import numpy as np
import pytest

CALIB = 5            # calibration latents (tiny runs)


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def face_jpg(faces_dir) -> bytes:
    return (faces_dir / "mona_lisa.jpg").read_bytes()


def _blank(w=320, h=240) -> np.ndarray:
    ramp = np.linspace(60, 190, w, dtype=np.float32)[None, :, None]
    return np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8).copy()


def _demo_effect():
    from stream.effect import Effect, EffectConfig

    return Effect.open(EffectConfig(demo=True, device="cpu"), batching=True)


def _tiny_effect():
    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets

    G, E, deltas = build_tiny_nets()
    return Effect(EffectConfig(device="cpu", smoothing=False), encoder=copy.deepcopy(E), directions=deltas,
                  batching=True)


async def _serve(effect, **config):
    from aiohttp import web

    from web.server import ServerConfig, WebServer

    config.setdefault("ice_addresses", ["127.0.0.1"])
    server = WebServer(effect, ServerConfig(**config))
    runner = web.AppRunner(server.make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return server, runner, f"http://127.0.0.1:{port}"


async def _upload(url, data, name="photo.jpg", content_type="application/octet-stream", headers=None):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/target", params={"name": name}, data=data,
                          headers={"Content-Type": content_type, **(headers or {})}) as r:
            return r.status, await r.json(content_type=None)


# ---------------------------------------------------------------------------------------------- POST /target


def test_target_upload_accepts_a_face_photo_and_refuses_bad_ones_with_one_line(tmp_path, face_jpg):
    """A face photo -> a token, scaled to the stream's size (even sides); a text file, a PNG declaring 169 MP, a photo
    without a face, an empty body: 400 with the project's line (stream.probe / find_target); too many bytes: 413
    (declared, and streamed without a length); too slow to arrive: 408; nothing is held for a refused photo."""
    from hostile_media import huge_png
    from web.guard import Limits

    big = huge_png(tmp_path / "huge.png").read_bytes()

    async def chunks(data: bytes):
        for i in range(0, len(data), 64 * 1024):
            yield data[i:i + 64 * 1024]

    async def slow():
        yield b"\xff\xd8\xff"
        await asyncio.sleep(2.5)
        yield b"\x00" * 100

    async def scenario():
        limits = Limits(max_target_bytes=2 * 2**20, target_burst=50, target_read_s=1.0)
        server, runner, url = await _serve(_demo_effect(), limits=limits, target_side=200)
        try:
            status, got = await _upload(url, face_jpg, "mona lisa.jpg")
            assert status == 200, got
            assert got["name"] == "mona_lisa.jpg" and got["faces"] >= 1 and got["scaled"] is True
            assert max(got["width"], got["height"]) <= 200 and got["width"] % 2 == 0 and got["height"] % 2 == 0
            assert server.targets.get(got["target"]).photo.shape == (got["height"], got["width"], 3)
            refusals = [
                (b"these are my notes\n" * 50, "notes.txt", 400,
                 "'notes.txt' could not be read as an image (not a known image format); give a jpg or png photo"),
                (big, "huge.png", 400, "'huge.png' declares images of 13000×13000 pixels"),
                (_png(_blank()), "wall.png", 400, "no face found in 'wall.png'; use a photo where one face is visible"),
                (b"", "empty.jpg", 400, "no photo in the request"),
                (b"\xff" * (2 * 2**20 + 1), "big.jpg", 413, "'big.jpg' is over the 2 MB limit for a target photo"),
                (chunks(b"\xff" * (3 * 2**20)), "streamed.jpg", 413, "'streamed.jpg' is over the 2 MB limit"),
                (slow(), "slow.jpg", 408, "'slow.jpg' took longer than 1 s to arrive"),
            ]
            for data, name, want_status, want in refusals:
                status, reply = await _upload(url, data, name)
                assert status == want_status and reply["error"].startswith(want), (name, status, reply)
                assert "\n" not in reply["error"]
            assert len(server.targets) == 1
            assert server.refused["target"] == 4 and server.refused["target_size"] == 2
            assert server.refused["target_slow"] == 1 and server.reading_targets == 0
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_target_upload_is_guarded_like_every_route(face_jpg):
    """Host/Origin rules (403), the upload types only (415: a cross-site form's types are refused), uploads per
    client per second (429), photos read at once (503), photos held (the oldest go) -- and /config says the bounds."""
    import threading

    import web.server
    from web.guard import Limits

    async def scenario():
        limits = Limits(targets_per_s=0.01, target_burst=4, max_target_reads=1, max_targets_held=2)
        server, runner, url = await _serve(_demo_effect(), limits=limits)
        try:
            status, reply = await _upload(url, face_jpg, headers={"Origin": "http://evil.example"})
            assert status == 403 and "another site" in reply["error"]
            status, reply = await _upload(url, face_jpg, headers={"Host": "rebind.example"})
            assert status == 403 and "not this server's name" in reply["error"]
            for kind in ("text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                         "application/json"):
                status, reply = await _upload(url, face_jpg, content_type=kind)
                assert status == 415 and "image/jpeg" in reply["error"], (kind, reply)
            # refused before the rate (no token taken); then 4 uploads pass the rate (one of them 503), the 5th is 429
            tokens = []
            for kind in ("image/jpeg", "application/octet-stream"):
                status, got = await _upload(url, face_jpg, content_type=kind)
                assert status == 200, got
                tokens.append(got["target"])
            # a slow read holds the one place: a second upload meanwhile is 503
            started, release = threading.Event(), threading.Event()
            real = web.server.load_target

            def slow(*args):
                started.set()
                release.wait(10)
                return real(*args)

            web.server.load_target = slow
            try:
                first = asyncio.ensure_future(_upload(url, face_jpg))
                await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
                status, reply = await _upload(url, face_jpg)
                assert status == 503 and "being read" in reply["error"], reply
                release.set()
                status, got = await first
                assert status == 200
                tokens.append(got["target"])
            finally:
                web.server.load_target = real
                release.set()
            status, reply = await _upload(url, face_jpg)
            assert status == 429 and "too many target photos" in reply["error"]
            # at most 2 held: the first token is gone, with the line the page shows
            with pytest.raises(ValueError, match="pick the photo again"):
                server.targets.get(tokens[0])
            assert server.targets.get(tokens[2]).token == tokens[2]
            import aiohttp

            async with aiohttp.ClientSession() as s:
                async with s.get(f"{url}/config") as r:
                    cfg = (await r.json())["reenact"]
            assert cfg["available"] is False and "reenactment needs the StyleGAN networks" in cfg["notice"]
            assert cfg["max_target_mb"] == 10 and cfg["paste_modes"] == ["residual", "replace"]
            assert "defaults" not in cfg and cfg["calibration"] == 40   # no motion model (torch) loaded for /config
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_target_store_expires_and_settings_refuse_bad_options():
    from web.reenact import MAX_CALIBRATION, ReenactSettings, Target, TargetStore

    t = [0.0]
    store = TargetStore(max_held=3, ttl_s=60, clock=lambda: t[0])
    photo = np.zeros((4, 4, 3), np.uint8)
    store.add(Target("a", "a.jpg", photo, [np.zeros((478, 2))], (4, 4), created=0.0))
    t[0] = 61.0
    with pytest.raises(ValueError, match="gone after 1 minutes"):
        store.get("a")
    with pytest.raises(ValueError, match="not held here"):
        store.get(["not", "a", "token"])
    base = ReenactSettings.default()
    got = base.merged({"options": {"beta": 2.5, "layers": "2:6"}, "calibration": 10, "paste_mode": "replace"}, 10)
    assert got.options.beta == 2.5 and got.options.layers == (2, 6) and got.options.rank == 4
    assert got.calibration == 10 and got.paste_mode == "replace" and not got.same_session(base)
    assert base.merged({"options": {"beta": 0.5}}).same_session(base)
    for msg, want in [({"options": {"rank": 12}, "calibration": 10}, "rank 12 needs more than 10 calibration"),
                      ({"options": {"reference": 40}}, "reference 40 is past the calibration window"),
                      ({"options": {"layers": "4:20"}}, "layers"),
                      ({"options": {"method": "magic"}}, "reenact method 'magic' is unknown"),
                      ({"options": {"warp": 1}}, "unknown reenactment option(s) warp"),
                      ({"options": "rank=4"}, "must be an object"),
                      ({"calibration": MAX_CALIBRATION + 1}, f"calibration must be a number from 2 to {MAX_CALIBRATION}"),
                      ({"calibration_s": "soon"}, "calibration_s must be a number"),
                      ({"paste_mode": "none"}, "live reenactment pastes with residual or replace")]:
        with pytest.raises(ValueError, match=None) as err:
            base.merged(msg, 10)
        assert want in str(err.value), (msg, str(err.value))


# ---------------------------------------------------------------------------------------------- the peer


class _Channel:
    readyState = "open"

    def __init__(self):
        self.sent: list[dict] = []

    def send(self, text):
        self.sent.append(json.loads(text))

    def of(self, kind):
        return [m for m in self.sent if m.get("type") == kind]


class _PC:
    connectionState = "connected"

    async def close(self):
        pass


def _av(frame_bgr):
    from av import VideoFrame

    return VideoFrame.from_ndarray(frame_bgr, format="bgr24")


async def _feed(peer, frames, seconds, until=None, fps=30.0):
    """Push `frames` (looped) at `fps` for at most `seconds` or until `until(snapshot)`; the last snapshot."""
    from fractions import Fraction

    t0 = time.monotonic()
    i = 0
    snap = None
    while time.monotonic() - t0 < seconds:
        peer.driver.push(_av(frames[i % len(frames)]), meta=(i * 3000, Fraction(1, 90000)))
        i += 1
        await asyncio.sleep(1 / fps)
        if i % 5 == 0:
            snap = peer.snapshot(1.0)
            if until is not None and until(snap):
                return snap
    return peer.snapshot(1.0)


def test_peer_switches_to_the_target_calibrates_drives_holds_a_lost_face_and_comes_back(faces_dir, face_jpg):
    """One peer, in-process: "reenact" with an uploaded target -> the output is the target photo (its size), the
    status goes calibrating (n/total) -> driving; frames without a face -> driver_lost, "holding the last pose",
    the same picture every frame; options apply in place (β) or refit; recalibrate starts over; "edit" brings the
    camera back with its controls; bad messages get one-line errors; closing frees both sessions."""
    import cv2

    from web.loadtest import moving_face_frames
    from web.peer import Peer

    frames = moving_face_frames(cv2.imread(str(faces_dir / "01.jpg")), size=(320, 240), n=60)
    blank = [_blank()]

    async def scenario():
        effect = _tiny_effect()
        server, runner, url = await _serve(effect)
        channel = _Channel()
        peer = Peer(server, _PC())
        peer.channel = channel
        try:
            status, target = await _upload(url, face_jpg, "mona.jpg")
            assert status == 200, target
            import aiohttp

            async with aiohttp.ClientSession() as s:
                async with s.get(f"{url}/config") as r:
                    cfg = (await r.json())["reenact"]
            assert cfg["available"] is True and cfg["notice"] is None and cfg["num_ws"] == effect.editor.num_ws
            assert cfg["defaults"]["rank"] == 4 and cfg["methods"] == ["rpca", "pca", "none"]
            # before the first frame: the messages wait for the session
            peer.on_message(json.dumps({"type": "controls", "controls": {"directions": {"smile": 2.0}}}))
            peer.on_message(json.dumps({"type": "reenact", "target": target["target"], "calibration": CALIB,
                                        "calibration_s": 0.2, "options": {"rank": 2, "beta": 4.0}}))
            assert await peer.start_session()
            await asyncio.sleep(0)
            snap = await _feed(peer, frames, 60, until=lambda s: s["stream"] == "reenact")
            ok = channel.of("reenact_ok")[-1]
            assert ok["mode"] == "reenact" and ok["target"]["name"] == "mona.jpg" and ok["calibration"] == CALIB
            assert ok["options"]["rank"] == 2 and ok["options"]["beta"] == 4.0
            seen = []
            snap = await _feed(peer, frames, 90, until=lambda s: seen.append(s["state"]) or s["state"] == "driving")
            assert snap["state"] == "driving", (seen[-5:], snap["message"], channel.of("error"))
            assert "calibrating" in seen
            assert snap["size"] == [target["width"], target["height"]]
            assert snap["reenact"]["phase"] == "driving" and snap["reenact"]["calibration"] == [CALIB, CALIB]
            assert snap["message"].startswith("driving the target") and snap["controls"]["directions"] == {"smile": 2.0}
            driving = []
            for _ in range(3):
                await _feed(peer, frames, 0.5)
                driving.append(peer.driver.get_output(5)[0])
            assert driving[0].shape == (target["height"], target["width"], 3)
            photo = server.targets.get(target["target"]).photo
            assert max(np.abs(d.astype(int) - photo).max() for d in driving) > 10, "the target is not moved"
            assert not all(np.array_equal(driving[0], d) for d in driving[1:]), "a moving driver moves the target"
            # the driver's face is lost: the last pose holds, the status says so
            snap = await _feed(peer, blank, 30, until=lambda s: s["state"] == "driver_lost")
            assert snap["state"] == "driver_lost" and snap["message"] == "driver face lost: holding the last pose"
            held = []
            for _ in range(3):
                await _feed(peer, blank, 0.5)
                held.append(peer.driver.get_output(5)[0])
            assert all(np.array_equal(held[0], h) for h in held[1:]), "a lost driver must hold the last pose"
            assert peer.snapshot(1.0)["reenact"]["held_frames"] > 0
            # the face comes back: driving again
            snap = await _feed(peer, frames, 60, until=lambda s: s["state"] == "driving")
            assert snap["state"] == "driving"
            # β in place (same session), a new calibration window builds a new one
            session = peer.reenact
            peer.on_message(json.dumps({"type": "reenact", "options": {"beta": 1.5}, "paste_mode": "replace"}))
            await _feed(peer, frames, 5, until=lambda s: s["reenact"]["options"]["beta"] == 1.5)
            assert peer.reenact is session and session.paste_mode == "replace"
            peer.on_message(json.dumps({"type": "recalibrate"}))
            snap = await _feed(peer, frames, 10, until=lambda s: s["state"] == "calibrating")
            assert snap["state"] == "calibrating"
            # refused: bad options, unknown token, the session goes on as it was
            before = len(channel.of("error"))
            for msg in ({"type": "reenact", "options": {"rank": 9}},
                        {"type": "reenact", "target": "no-such-token"},
                        {"type": "reenact", "calibration": 1}):
                peer.on_message(json.dumps(msg))
            errors = [m["message"] for m in channel.of("error")[before:]]
            assert len(errors) == 3 and all(e.startswith("reenactment refused: ") for e in errors), errors
            assert "rank 9 needs more than 5" in errors[0] and "pick the photo again" in errors[1]
            assert peer.reenact is session
            # back to the edit session: the camera's size, its controls kept; the reenact session is closed
            peer.on_message(json.dumps({"type": "edit"}))
            snap = await _feed(peer, frames, 20, until=lambda s: s["stream"] == "edit" and s["size"] == [320, 240])
            assert snap["stream"] == "edit" and snap["reenact"] is None and snap["size"] == [320, 240]
            assert channel.of("reenact_ok")[-1]["mode"] == "edit" and peer.reenact is None and session.closed
            assert snap["controls"]["directions"] == {"smile": 2.0}
            peer.on_message(json.dumps({"type": "recalibrate"}))
            assert "not reenacting" in channel.of("error")[-1]["message"]
            # and reenacting again takes the held target (no token needed)
            peer.on_message(json.dumps({"type": "reenact"}))
            snap = await _feed(peer, frames, 30, until=lambda s: s["stream"] == "reenact")
            assert snap["stream"] == "reenact" and peer.reenact is not session
            last = peer.reenact
        finally:
            await peer.close("test over")
            await runner.cleanup()
            effect.close()
        assert last.closed, "closing the peer closes its reenactment session"

    asyncio.run(scenario())


def test_peer_without_networks_shows_the_target_as_it_is_and_says_why(faces_dir, face_jpg):
    """The demo editor (no networks): reenact mode streams the target photo unchanged with the status
    networks_missing and the command that fetches them."""
    import cv2

    from web.loadtest import moving_face_frames
    from web.peer import Peer

    frames = moving_face_frames(cv2.imread(str(faces_dir / "01.jpg")), size=(320, 240), n=30)

    async def scenario():
        server, runner, url = await _serve(_demo_effect())
        channel = _Channel()
        peer = Peer(server, _PC())
        peer.channel = channel
        try:
            status, target = await _upload(url, face_jpg, "mona.jpg")
            assert await peer.start_session()
            peer.on_message(json.dumps({"type": "reenact", "target": target["target"]}))
            snap = await _feed(peer, frames, 30, until=lambda s: s["stream"] == "reenact" and s["state"])
            snap = await _feed(peer, frames, 1)
            assert snap["state"] == "networks_missing" and "python -m directions setup" in snap["message"]
            out = peer.driver.get_output(5)[0]
            photo = server.targets.get(target["target"]).photo
            assert np.array_equal(out, photo), "without networks the target is shown as it is"
        finally:
            await peer.close("test over")
            await runner.cleanup()

    asyncio.run(scenario())
