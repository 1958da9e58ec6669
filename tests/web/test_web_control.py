"""Live control of a running virtual camera: `stream.control` (the loopback endpoint, preview keys), `web.control`
(the page without media relaying to it) and `python -m stream --control-port` end to end. All on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest


def _demo_effect(**config):
    from stream.effect import Effect, EffectConfig

    return Effect.open(EffectConfig(demo=True, device="cpu", **config), batching=True)


def _call(url, data=None, headers=None, method=None):
    """(status, JSON) of one request; `headers` replace the defaults (JSON content type for POSTs)."""
    if data is not None and not isinstance(data, bytes):
        data = json.dumps(data).encode()
    base = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers={**base, **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture
def live(faces_dir):
    """A demo effect, one live session + driver fed a real face, behind a ControlServer on a free port."""
    import cv2

    from stream.control import ControlServer
    from stream.driver import FrameDriver

    effect = _demo_effect()
    session = effect.new_session()
    driver = FrameDriver(session).start()
    face = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (320, 240))
    for _ in range(3):
        driver.push(face)
        driver.get_output(timeout=10)
    server = ControlServer(effect, port=0).start()
    server.attach(session, driver)
    yield server, session, effect
    server.close()
    driver.stop()
    session.close()
    effect.close()


def test_control_endpoint_applies_controls_and_reports_the_stream(live):
    server, session, effect = live
    name = effect.available_directions[0]
    status, cfg = _call(f"{server.url}/config")
    assert status == 200 and cfg["kind"] == "virtual-camera" and cfg["directions"] == effect.available_directions
    assert cfg["state"] == "demo" and cfg["max_faces"] == 2
    status, reply = _call(f"{server.url}/controls", {"directions": {name: 2.5}, "max_faces": 1})
    assert status == 200 and reply["type"] == "controls_ok" and reply["max_faces"] == 1
    assert session.controls.directions == {name: 2.5} and session.max_faces == 1
    # fields left out keep their values
    status, reply = _call(f"{server.url}/controls", {"enabled": False})
    assert status == 200 and session.controls.directions == {name: 2.5} and session.controls.enabled is False
    status, stats = _call(f"{server.url}/stats")
    assert status == 200 and stats["type"] == "stats" and stats["controls"]["enabled"] is False
    assert stats["state"] in ("running", "waiting", "stale") and stats["frames_in"] == 3
    # refused, one line each, nothing applied
    before = session.controls
    for body, code, words in [(b"{nope", 400, "not JSON"), ({"directions": {"smiel": 1.0}}, 400, "unknown direction"),
                              ({"max_faces": 5}, 400, "max_faces must be an integer in [1, 2]"),
                              (("[" * 50 + "]" * 50).encode(), 400, "nested deeper"),
                              ({"directions": {name: float("1e9")}}, 400, "finite number")]:
        status, reply = _call(f"{server.url}/controls", body)
        assert status == code and words in reply["error"] and "\n" not in reply["error"], (body, reply)
    assert session.controls is before and session.max_faces == 1


def test_control_endpoint_refuses_pages_foreign_hosts_and_non_json(live):
    server, session, effect = live
    url = f"{server.url}/controls"
    assert _call(url, {"enabled": False}, {"Origin": "http://evil.example"})[0] == 403
    assert _call(url, {"enabled": False}, {"Origin": server.url})[0] == 403       # no page talks to it directly
    assert _call(f"{server.url}/config", headers={"Host": "rebind.attacker.example"})[0] == 403
    assert _call(url, {"enabled": False}, {"Content-Type": "text/plain"})[0] == 415
    assert _call(url, b"{" + b" " * 20000 + b"}")[0] == 413
    assert _call(f"{server.url}/nothing")[0] == 404
    assert session.controls.enabled is True
    with pytest.raises(ValueError, match="loopback only"):
        type(server)(effect, port=0, host="0.0.0.0")


def test_control_endpoint_before_the_camera_runs():
    from stream.control import ControlServer

    effect = _demo_effect()
    with ControlServer(effect, port=0) as server:
        assert _call(f"{server.url}/stats")[1]["state"] == "starting"
        status, reply = _call(f"{server.url}/controls", {"enabled": False})
        assert status == 503 and "not running yet" in reply["error"]
    effect.close()


def test_preview_keys_change_alpha_on_off_and_animation(faces_dir):
    from stream.control import ALPHA_KEY_STEP, apply_key
    from stream.controls import Controls
    from stream.jobs import LiveOutputs

    effect = _demo_effect()
    session = effect.new_session()
    first = effect.available_directions[0]
    try:
        assert "+0.5" in apply_key(session, ord("+")) and session.controls.directions == {first: ALPHA_KEY_STEP}
        apply_key(session, ord("="))
        apply_key(session, ord("-"))
        assert session.controls.directions == {first: ALPHA_KEY_STEP}
        apply_key(session, ord(" "))
        assert session.controls.enabled is False
        apply_key(session, ord("a"))
        assert session.controls.animate is True
        assert apply_key(session, ord("x")) is None
        session.set_controls(Controls(directions={first: 100.0}))
        apply_key(session, ord("+"))
        assert session.controls.directions == {first: 100.0}                 # clamped at the doors' limit
    finally:
        session.close()
        effect.close()
    # the preview window's other keys reach the live run
    class Sink:
        pressed = [ord("+"), ord(" ")]

        def close(self):
            pass

    outputs = LiveOutputs([Sink()])
    assert outputs.take_keys() == [ord("+"), ord(" ")] and outputs.take_keys() == []


def test_preview_keys_without_directions_say_why():
    from stream.control import apply_key
    from stream.effect import Effect, EffectConfig

    effect = Effect.open(EffectConfig(device="cpu", tracking_only=True), batching=False)
    session = effect.new_session()
    try:
        assert "no directions" in apply_key(session, ord("+"))
    finally:
        session.close()


def test_web_control_page_relays_the_pages_controls_to_the_camera(live):
    from aiohttp import web

    from web.control import ControlPage, control_url

    server, session, effect = live
    name = effect.available_directions[1]
    for bad in ("http://192.0.2.7:8765", "https://127.0.0.1:8765", "http://127.0.0.1", "http://evil.example:80"):
        with pytest.raises(ValueError, match="loopback address"):
            control_url(bad)
    assert control_url("localhost:8765") == "http://127.0.0.1:8765"

    async def scenario():
        import aiohttp

        out = {}
        for target in (server.url, "http://127.0.0.1:9"):        # the camera, then a port where nothing listens
            runner = web.AppRunner(ControlPage(target).make_app())
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            got = {}
            try:
                async with aiohttp.ClientSession() as s:
                    async with s.get(f"{url}/config") as r:
                        got["config"] = (r.status, await r.json())
                    async with s.post(f"{url}/controls", json={"directions": {name: 3.0}, "animate": True}) as r:
                        got["controls"] = (r.status, await r.json())
                    async with s.get(f"{url}/stats") as r:
                        got["stats"] = (r.status, await r.json())
                    async with s.post(f"{url}/controls", data=json.dumps({"enabled": False}),
                                      headers={"Origin": "http://evil.example", "Content-Type": "text/plain"}) as r:
                        got["cross_origin"] = r.status
                    async with s.get(f"{url}/") as r:
                        got["page"] = r.status
            finally:
                await runner.cleanup()
            out[target] = got
        return out

    out = asyncio.run(scenario())
    got = out[server.url]
    status, cfg = got["config"]
    assert status == 200 and cfg["kind"] == "remote" and cfg["control_url"] == server.url
    assert cfg["directions"] == effect.available_directions and set(cfg["alpha"]) == set(cfg["directions"])
    assert cfg["mode"] == "demo" and cfg["iceServers"] == []
    assert got["controls"][0] == 200 and got["controls"][1]["controls"]["directions"] == {name: 3.0}
    assert session.controls.directions == {name: 3.0} and session.controls.animate is True
    assert got["stats"][0] == 200 and got["stats"][1]["controls"]["directions"] == {name: 3.0}
    assert got["cross_origin"] == 403 and session.controls.enabled is True and got["page"] == 200
    down = out["http://127.0.0.1:9"]
    assert down["config"][0] == 200 and down["config"][1]["state"] == "unreachable"
    assert "does not answer" in down["config"][1]["notice"] and down["controls"][0] == 502


class _Recorder:
    """A pyvirtualcam backend that keeps the frames (no v4l2loopback here)."""
    sent: list = []

    def __init__(self, width, height, fps, fourcc, device, **kw):
        self.width, self.height = width, height

    def send(self, frame):
        _Recorder.sent.append(frame.copy())

    def close(self):
        pass

    def device(self):
        return "recorder0"

    def native_fourcc(self):
        return None


def test_stream_cli_control_port_drives_the_running_virtual_camera(faces_dir, tmp_path, capsys):
    """`python -m stream --image F --virtual-camera --control-port P`: while it runs, controls posted to P change
    what it sends; the port is closed when the run ends."""
    import cv2
    from pyvirtualcam.camera import BACKENDS, register_backend

    from stream.__main__ import main
    from web.loadtest import free_port

    face = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (320, 240))
    src = tmp_path / "face.png"
    cv2.imwrite(str(src), face)
    port = free_port()
    register_backend("mm-control-recorder", _Recorder)
    _Recorder.sent = []
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("rc", main([
        "--image", str(src), "--virtual-camera", "--vcam-backend", "mm-control-recorder", "--frames", "150",
        "--fps", "30", "--demo", "--direction", "smile", "--alpha", "4", "--control-port", str(port), "-q"])),
        daemon=True)
    try:
        runner.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        stats = {}
        while time.monotonic() < deadline:
            try:
                stats = _call(f"{url}/stats")[1]
                if stats.get("state") == "running" and _Recorder.sent:      # the tint is on the sent frames
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert stats.get("state") == "running", stats
        time.sleep(0.2)
        plain = len(_Recorder.sent)
        status, reply = _call(f"{url}/controls", {"enabled": False})
        assert status == 200 and reply["controls"]["enabled"] is False
        time.sleep(0.3)
        sent_off = len(_Recorder.sent)
        runner.join(60)
    finally:
        BACKENDS.pop("mm-control-recorder", None)
    assert result.get("rc") == 0, capsys.readouterr()
    assert "live control on http://127.0.0.1:" in capsys.readouterr().err
    frames = [np.frombuffer(f, np.uint8).reshape(240, 320, 3) if f.ndim == 1 else f for f in _Recorder.sent]
    # demo tint on (before the post) vs off (after): the picture changes back to the photo itself
    assert plain >= 1 and len(frames) > sent_off
    def diff(frame):       # to the photo, whichever channel order the backend got
        return min(float(np.abs(frame.astype(int) - f).mean()) for f in (face, face[..., ::-1]))

    assert diff(frames[-1]) < 1.0 < diff(frames[plain - 1]), (diff(frames[plain - 1]), diff(frames[-1]))
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2)


def test_stream_cli_control_port_needs_a_live_run(capsys, tmp_path):
    from stream.__main__ import main

    assert main(["--image", str(tmp_path / "x.png"), "--out", str(tmp_path / "o.mp4"), "--control-port", "1"]) == 2
    assert "--control-port drives a live run" in capsys.readouterr().err
