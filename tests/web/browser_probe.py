"""Drive headless Chromium against `python -m web` and write what it saw as JSON (run inside a netns).

    unshare -n sh -c 'ip link set lo up && exec python tests/web/browser_probe.py --face F --out R.json
                      --workdir D [--mode basic|states|reenact|siege] [--shots DIR] [--seconds S]
                      [--target PHOTO] [-- <python -m web options>]'

basic (default): a y4m clip of the face (320×240, slight motion) feeds Chromium's fake camera; the page is opened,
"Start" clicked; we wait for the edited stream (video size, frames shown, currentTime, playback quality),
then move the α slider through the data channel and wait for the server's stats to echo it. Pixel means
of the edited video's centre are sampled before and after the change.

states: three servers (no weights; tiny networks without directions; tiny networks with directions), one Chromium
whose camera shows the face for 3 s then nothing for 2 s (looped); each page's status line is read for its state
(networks missing, directions missing, running, no face), 3 s of the edited stream are recorded with the page's
Record button (MediaRecorder) and written to the workdir; --shots DIR saves a screenshot of each state.

reenact: one server (the given options: tiny networks), a camera showing the face 4 s then nothing 2 s (looped): the
page's reenact mode is picked, bad target photos are refused (a text file, a photo without a face, one over the byte
limit: the page's check and the server's 413), calibration is shortened on the page, the target photo is uploaded,
Start: the stream switches to the target's size and picture, the status line goes calibrating (n/total) -> driving ->
driver face lost (the camera's blank part) -> driving; the stream is recorded; Recalibrate; back to "edit my face".

directions: 4 Chromium pages stream from one server (the demo editor: a colour per direction), each page on its own
direction through the one batched editor; each page's picture is sampled (edited minus camera, over the face) and
the server's batch statistics are read: every page must show its own direction's colour.

siege: 4 Chromium pages stream from one server while a hostile client floods it with offers (1200 m-lines, nested
JSON, cross-origin, foreign Host, garbage, valid offers that never connect) and a hostile peer floods its data
channel; every second the server's RSS and peers and each page's fps / latency / frames are sampled.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"    # Debian's package
# wait_for_function takes arrow functions only: a bare expression is eval'd in the page, which its CSP forbids
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
    # several pages in one window (siege): the tabs behind the first must not be throttled or paused
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows", "--disable-background-media-suspend",
]


def write_face_y4m(face_path: Path, out: Path, n: int = 60) -> None:
    """A 320×240 4:2:0 y4m of the face, slightly moving (Chromium loops it as its fake camera)."""
    import cv2

    from stream.sources import write_y4m
    from web.loadtest import moving_face_frames

    write_y4m(moving_face_frames(cv2.imread(str(face_path)), size=(320, 240), n=n), out, fps=30)


CENTRE_MEAN_JS = """() => {
  const v = document.getElementById('remote');
  if (!v.videoWidth) return null;
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(c.width / 4, c.height / 4, c.width / 2, c.height / 2).data;
  let r = 0, gg = 0, b = 0; const n = d.length / 4;
  for (let i = 0; i < d.length; i += 4) { r += d[i]; gg += d[i + 1]; b += d[i + 2]; }
  return [r / n, gg / n, b / n];
}"""

DIFF_JS = """() => {
  // mean |edited - camera| over the centre of the picture (where the face is), both drawn at 320x240
  const grab = (id) => { const v = document.getElementById(id); const c = document.createElement('canvas');
    c.width = 320; c.height = 240; const g = c.getContext('2d'); g.drawImage(v, 0, 0, 320, 240);
    return g.getImageData(80, 60, 160, 120).data; };
  const a = grab('remote'), b = grab('local'); let s = 0;
  for (let i = 0; i < a.length; i += 4) s += Math.abs(a[i] - b[i]) + Math.abs(a[i+1] - b[i+1]) + Math.abs(a[i+2] - b[i+2]);
  return s / (a.length / 4 * 3);
}"""

STATE_JS = """() => {
  const v = document.getElementById('remote'); const mm = window.micromotion;
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  return {w: v.videoWidth, h: v.videoHeight, t: v.currentTime, shown: mm.framesShown,
          first_ms: mm.firstFrameMs, stats: mm.lastStats, error: mm.lastError, acked: mm.controlsAcked,
          decoded: q ? q.totalVideoFrames : null, state: mm.pc ? mm.pc.connectionState : null,
          config: mm.config};
}"""


SLIDER_JS = """() => { const a = document.getElementById('alpha');
  return {min: parseFloat(a.min), max: parseFloat(a.max), step: parseFloat(a.step), value: parseFloat(a.value),
          shown: document.getElementById('alpha-value').textContent,
          direction: document.getElementById('direction').value}; }"""


def probe(url: str, y4m: Path, user_dir: Path, alpha: float) -> dict:
    from playwright.sync_api import sync_playwright

    result: dict = {"console": []}
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(user_dir), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
        try:
            page = ctx.new_page()
            page.on("console", lambda m: result["console"].append(m.text))
            page.goto(url)
            page.wait_for_function("() => window.micromotion && window.micromotion.ready", timeout=20000)
            t_click = time.monotonic()
            page.click("#start")
            page.wait_for_function("() => window.micromotion.framesShown > 0", timeout=60000)
            result["first_frame_s"] = round(time.monotonic() - t_click, 3)
            s0 = page.evaluate(STATE_JS)
            time.sleep(3.0)
            s1 = page.evaluate(STATE_JS)
            result["before"], result["after_3s"] = s0, s1
            result["fps_shown"] = round((s1["shown"] - s0["shown"]) / 3.0, 2)
            page.wait_for_function("() => window.micromotion.lastStats !== null", timeout=20000)
            result["notice"] = page.inner_text("#notice") if page.is_visible("#notice") else None
            result["status_text"] = page.inner_text("#status")     # what is missing, with its command
            result["centre_before"] = page.evaluate(CENTRE_MEAN_JS)
            result["diff_before"] = sum(page.evaluate(DIFF_JS) for _ in range(5)) / 5
            directions = s1["config"]["directions"]
            result["direction"] = directions[0] if directions else None
            if directions:
                # a control change through the page's own slider → data channel → server
                result["change"] = "alpha"
                page.evaluate(f"""() => {{ const a = document.getElementById('alpha'); a.value = '{alpha}';
                                         a.dispatchEvent(new Event('input')); }}""")
                echo = f"Object.values(s.controls.directions || {{}}).some(v => Math.abs(v - {alpha}) < 1e-6)"
            else:
                # no directions (no weights): switch the effect off with the page's checkbox
                result["change"] = "enabled"
                page.click("#enabled")
                echo = "s.controls.enabled === false"
            page.wait_for_function(f"() => {{ const s = window.micromotion.lastStats; return s && {echo}; }}",
                                   timeout=20000)
            t_echo = page.evaluate("window.micromotion.lastStats.frames_out")
            page.wait_for_function(f"() => window.micromotion.lastStats.frames_out > {t_echo} + 5", timeout=20000)
            time.sleep(1.0)
            result["centre_after"] = page.evaluate(CENTRE_MEAN_JS)
            result["diff_after"] = sum(page.evaluate(DIFF_JS) for _ in range(5)) / 5
            result["after_change"] = page.evaluate(STATE_JS)
            result["sliders"] = {}
            if directions:
                # the α slider follows the picked direction's suggested range (GET /config "alpha")
                result["sliders"][directions[0]] = page.evaluate(SLIDER_JS)
                for other in directions[1:]:
                    page.select_option("#direction", other)
                    result["sliders"][other] = page.evaluate(SLIDER_JS)
                    page.wait_for_function(f"""() => {{ const s = window.micromotion.lastStats;
                        return s && {json.dumps(other)} in (s.controls.directions || {{}}); }}""", timeout=20000)
                    result["echo_after_pick"] = page.evaluate("window.micromotion.lastStats.controls")
            # an unknown direction: the error comes back to this page only
            page.evaluate("""() => window.micromotion.sendControls({directions: {no_such_direction: 1.0}})""")
            page.wait_for_function("() => window.micromotion.lastError !== null", timeout=10000)
            result["unknown_direction_error"] = page.evaluate("window.micromotion.lastError")
        finally:
            ctx.close()
    return result


# ------------------------------------------------------------------------------------------------ states


def write_face_and_blank_y4m(face_path: Path, out: Path, face_s: float = 3.0, blank_s: float = 2.0) -> None:
    """A 320×240 y4m: the face moving for `face_s`, then a faceless gradient for `blank_s` (Chromium loops it)."""
    import cv2
    import numpy as np

    from stream.sources import write_y4m
    from web.loadtest import moving_face_frames

    faces = moving_face_frames(cv2.imread(str(face_path)), size=(320, 240), n=int(30 * face_s))
    ramp = np.linspace(60, 190, 320, dtype=np.float32)[None, :, None]
    blank = np.broadcast_to(ramp, (240, 320, 3)).astype(np.uint8)
    write_y4m(faces + [blank] * int(30 * blank_s), out, fps=30)


STATUS_JS = """() => { const s = document.getElementById('status'); const f = document.getElementById('face');
  const reasons = [...document.querySelectorAll('#controls-reason li')].map(li => li.textContent);
  const disabled = [...document.querySelectorAll('input, select, button')].filter(e => e.disabled).map(e => e.id);
  const read = id => document.getElementById(id).textContent;
  return {state: s.dataset.state, kind: s.dataset.kind, text: s.innerText, face: f.dataset.face,
          notice: document.getElementById('notice').hidden ? null : document.getElementById('notice').innerText,
          reasons, disabled, mode: read('mode'),
          readouts: {fps: read('fps'), latency: read('latency'), dropped: read('dropped'), edit_age: read('edit-age')}};
}"""

RECORD_JS = """async (seconds) => {
  const mm = window.micromotion;
  if (!mm.startRecording()) return null;
  await new Promise(r => setTimeout(r, seconds * 1000));
  const blob = await mm.stopRecording();
  const data = await new Promise(r => { const fr = new FileReader(); fr.onload = () => r(fr.result); fr.readAsDataURL(blob); });
  return {type: blob.type, size: blob.size, b64: data.split(',')[1]};
}"""


def _wait_state(page, states: list[str], timeout_s: float) -> dict:
    """Wait until the status line shows one of `states`; its STATUS_JS reading."""
    page.wait_for_function(f"() => {json.dumps(states)}.includes(document.getElementById('status').dataset.state)",
                           timeout=timeout_s * 1000)
    return page.evaluate(STATUS_JS)


def _shot(page, shots: Path | None, name: str) -> None:
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"page-{name}.png"), full_page=True)


def decode_webm(path: Path) -> dict:
    """Frames, size and codec of a recording, decoded with PyAV."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f for f in c.decode(stream)]
        return {"frames": len(frames), "width": frames[0].width if frames else None,
                "height": frames[0].height if frames else None, "codec": stream.codec_context.name,
                "span_s": round(float(frames[-1].time - frames[0].time), 3) if len(frames) > 1 and
                frames[0].time is not None else None,
                "mean_luma": round(float(frames[len(frames) // 2].to_ndarray(format="gray").mean()), 1) if frames else None}


def probe_states(urls: dict, y4m: Path, user_dir: Path, work: Path, shots: Path | None, record_s: float) -> dict:
    """Each server's page: the status line before and after Start; on the full server also no face, a recording,
    the before/after split and Stop clearing the readouts."""
    import base64

    from playwright.sync_api import sync_playwright

    result: dict = {"console": []}
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(user_dir), executable_path=CHROMIUM, headless=True, viewport={"width": 1100, "height": 900},
            args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
        try:
            for name, expect in (("no_weights", ["networks_missing"]), ("no_directions", ["directions_missing"]),
                                 ("full", ["running"])):
                page = ctx.new_page()
                page.on("console", lambda m: result["console"].append(m.text))
                page.goto(urls[name])
                page.wait_for_function("() => window.micromotion && window.micromotion.ready", timeout=20000)
                got = {"idle": page.evaluate(STATUS_JS)}
                _shot(page, shots, f"{name}-idle")
                page.click("#start")
                got["streaming"] = _wait_state(page, expect, 90)
                _shot(page, shots, expect[0].replace("_", "-"))
                if name == "full":
                    got["no_face"] = _wait_state(page, ["no_face"], 30)
                    _shot(page, shots, "no-face")
                    page.evaluate("""() => { const a = document.getElementById('alpha'); a.value = a.max * 0.75;
                                           a.dispatchEvent(new Event('input')); }""")
                    page.wait_for_function("""() => { const s = window.micromotion.lastStats;
                        return s && Object.values(s.controls.directions).some(v => v > 0); }""", timeout=20000)
                    got["running_again"] = _wait_state(page, ["running"], 60)
                    page.click("#split")
                    page.evaluate("""() => { const r = document.getElementById('split-pos'); r.value = '40';
                                           r.dispatchEvent(new Event('input')); }""")
                    time.sleep(0.5)
                    _shot(page, shots, "split")
                    got["split_visible"] = page.is_visible("#before")
                    rec = page.evaluate(RECORD_JS, record_s)
                    if rec is not None:
                        path = work / "recording.webm"
                        path.write_bytes(base64.b64decode(rec.pop("b64")))
                        rec["decoded"] = decode_webm(path)
                    got["recording"] = rec
                    got["download"] = page.evaluate("""() => { const a = document.getElementById('download');
                        return {hidden: a.hidden, name: a.download, text: a.textContent}; }""")
                    _shot(page, shots, "recorded")
                    page.click("#enabled")
                    got["off"] = _wait_state(page, ["off"], 20)
                    _shot(page, shots, "effect-off")
                page.click("#stop")
                got["stopped"] = page.evaluate(STATUS_JS)
                _shot(page, shots, f"{name}-stopped")
                result[name] = got
                page.close()
            if "remote" in urls:
                result["remote"] = probe_remote(ctx, urls["remote"], urls["camera"], shots)
        finally:
            ctx.close()
    return result


def probe_remote(ctx, url: str, camera: str, shots: Path | None) -> dict:
    """The page without media (`python -m web --control`): its status line follows the virtual camera, its α
    slider and "effect on" box change the camera's controls."""
    import urllib.request

    def camera_controls():
        return json.loads(urllib.request.urlopen(f"{camera}/stats", timeout=5).read())["controls"]

    page = ctx.new_page()
    got: dict = {}
    page.goto(url)
    page.wait_for_function("() => window.micromotion && window.micromotion.ready", timeout=20000)
    got["status"] = _wait_state(page, ["running"], 60)
    got["widgets"] = page.evaluate(SLIDER_JS)
    got["videos_hidden"] = not page.is_visible("#remote")
    got["source_reason"] = page.inner_text("#source-reason")
    page.evaluate("""() => { const a = document.getElementById('alpha'); a.value = '1.5';
                           a.dispatchEvent(new Event('input')); }""")
    page.wait_for_function("() => window.micromotion.controlsAcked !== null", timeout=10000)
    got["camera_after_alpha"] = camera_controls()
    _shot(page, shots, "remote")
    page.click("#enabled")
    got["off"] = _wait_state(page, ["off"], 20)
    got["camera_after_off"] = camera_controls()
    page.close()
    return got


class _Recorder:
    """A pyvirtualcam backend that drops the frames (there is no v4l2loopback device here)."""

    def __init__(self, width, height, fps, fourcc, device, **kw):
        self.frames = 0

    def send(self, frame):
        self.frames += 1

    def close(self):
        pass

    def device(self):
        return "probe-recorder"

    def native_fourcc(self):
        return None


def start_virtual_camera(face: Path, work: Path, port: int):
    """`python -m stream --image FACE --virtual-camera --control-port PORT --demo ...` in a thread of this process
    (its pyvirtualcam backend is registered here); returns the thread."""
    import threading

    import cv2
    from pyvirtualcam.camera import register_backend

    from stream.__main__ import main as stream_main

    register_backend("probe-recorder", _Recorder)
    still = work / "camera-face.png"
    cv2.imwrite(str(still), cv2.resize(cv2.imread(str(face)), (320, 240)))
    argv = ["--image", str(still), "--virtual-camera", "--vcam-backend", "probe-recorder", "--frames", "100000",
            "--fps", "15", "--demo", "--direction", "smile", "--alpha", "4", "--control-port", str(port), "-q"]
    thread = threading.Thread(target=stream_main, args=(argv,), daemon=True, name="virtual-camera")
    thread.start()
    return thread


def run_states(args, work: Path) -> dict:
    """Start the three servers (in parallel), probe them, stop them."""
    from tiny_weights import server_args, write_tiny_weights
    from web.loadtest import free_port, start_server, wait_serving

    weights = write_tiny_weights(work / "weights")
    empty = work / "no-directions"
    empty.mkdir(exist_ok=True)
    home = work / "empty-home"
    home.mkdir(exist_ok=True)
    plans = {"no_weights": ([], {"MICROMOTION_HOME": str(home)}),
             "no_directions": (["--encoder", str(weights["encoder"]), "--directions-dir", str(empty),
                                "--device", "cpu"], {}),
             "full": (server_args(weights), {})}
    y4m = work / "face-and-blank.y4m"
    write_face_and_blank_y4m(Path(args.face), y4m)
    servers, urls = {}, {}
    try:
        for name, (extra, env) in plans.items():
            port = free_port()
            servers[name] = (start_server(port, extra, work / f"server-{name}.log", env=env, wait=False), port)
            urls[name] = f"http://127.0.0.1:{port}/"
        cam_port, page_port = free_port(), free_port()
        start_virtual_camera(Path(args.face), work, cam_port)
        urls["camera"] = f"http://127.0.0.1:{cam_port}"
        _wait_url(f"{urls['camera']}/stats")
        urls["remote"] = f"http://127.0.0.1:{page_port}/"
        servers["remote"] = (start_server(page_port, ["--control", urls["camera"]], work / "server-remote.log",
                                          wait=False), page_port)
        for name, (proc, port) in servers.items():
            wait_serving(proc, port, work / f"server-{name}.log")
        shots = Path(args.shots) if args.shots else None
        return probe_states(urls, y4m, work / "chromium-profile", work, shots, args.record_seconds)
    finally:
        for proc, _ in servers.values():
            _stop(proc)


# ------------------------------------------------------------------------------------------------ reenact

TARGET_DIFF_JS = """() => {
  // mean |stream - X| per channel, both drawn at the stream's size: X = the target photo (the page's thumbnail,
  // the uploaded file) and the camera
  const v = document.getElementById('remote'); const w = v.videoWidth, h = v.videoHeight;
  if (!w) return null;
  const grab = (el) => { const c = document.createElement('canvas'); c.width = w; c.height = h;
    const g = c.getContext('2d'); g.drawImage(el, 0, 0, w, h); return g.getImageData(0, 0, w, h).data; };
  const out = grab(v), photo = grab(document.getElementById('target-thumb')), cam = grab(document.getElementById('local'));
  const mean = (a, b) => { let s = 0; for (let i = 0; i < a.length; i += 4)
    s += Math.abs(a[i] - b[i]) + Math.abs(a[i+1] - b[i+1]) + Math.abs(a[i+2] - b[i+2]); return s / (a.length / 4 * 3); };
  return {w, h, photo: mean(out, photo), camera: mean(out, cam)};
}"""

UPLOAD_JS = """async ([name, size]) => {
  // the server's own bound: a body over the byte limit, sent past the page's check
  const r = await fetch('/target?name=' + encodeURIComponent(name), {method: 'POST',
    headers: {'Content-Type': 'application/octet-stream'}, body: new Blob([new Uint8Array(size)])});
  return {status: r.status, error: (await r.json()).error};
}"""


def _set_value(page, element_id: str, value) -> None:
    """Type a value into a page input and fire its change event (as the user's edit does)."""
    page.evaluate("""([id, v]) => { const e = document.getElementById(id); e.value = v;
                     e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); }""",
                  [element_id, str(value)])


def _refusal(page, path: Path) -> dict:
    """Pick `path` as the target photo; the status line once the server (or the page) has answered."""
    page.set_input_files("#target-file", str(path))
    page.wait_for_function("() => !window.micromotion.reenact.uploading && "
                           "['target_refused', 'target_ready', 'switching', 'calibrating']"
                           ".includes(document.getElementById('status').dataset.state)", timeout=30000)
    return page.evaluate(STATUS_JS)


def probe_reenact(url: str, y4m: Path, user_dir: Path, work: Path, target: Path, shots: Path | None,
                  record_s: float) -> dict:
    """What the page showed at each step (STATUS_JS readings, stats, picture differences, the recording)."""
    import cv2
    import numpy as np

    notes = work / "notes.txt"
    notes.write_text("not a photo\n" * 20)
    wall = work / "wall.png"
    ramp = np.linspace(60, 190, 320, dtype=np.float32)[None, :, None]
    cv2.imwrite(str(wall), np.broadcast_to(ramp, (240, 320, 3)).astype(np.uint8))
    big = work / "big.jpg"
    big.write_bytes(b"\xff" * (11 * 2**20))
    result: dict = {"console": []}
    try:
        _drive_reenact(result, url, y4m, user_dir, work, target, shots, record_s, (notes, wall, big))
    except Exception as exc:  # noqa: BLE001 -- reported with what was seen so far; the test asserts on it
        import traceback

        result["failure"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
    return result


def _drive_reenact(result: dict, url: str, y4m: Path, user_dir: Path, work: Path, target: Path,
                   shots: Path | None, record_s: float, bad: tuple) -> None:
    import base64

    from playwright.sync_api import sync_playwright

    notes, wall, big = bad
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(user_dir), executable_path=CHROMIUM, headless=True, viewport={"width": 1100, "height": 1000},
            args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
        try:
            page = ctx.new_page()
            page.on("console", lambda m: result["console"].append(m.text))
            page.goto(url)
            page.wait_for_function("() => window.micromotion && window.micromotion.ready", timeout=20000)
            result["config"] = page.evaluate("window.micromotion.config.reenact")
            page.click("#mode-reenact")
            result["pick"] = page.evaluate(STATUS_JS)
            result["panel_visible"] = page.is_visible("#reenact-panel")
            result["refused"] = {}
            for key, path, shot in (("notes", notes, "not-an-image"), ("wall", wall, "no-face"),
                                    ("big", big, "too-large")):
                result["refused"][key] = _refusal(page, path)
                _shot(page, shots, f"reenact-refused-{shot}")
            result["server_413"] = page.evaluate(UPLOAD_JS, ["big.jpg", 11 * 2**20])
            # a short calibration (tiny networks on a busy CPU), the fast fit, a visible β
            for element_id, value in (("calibration", 8), ("calibration-s", 1), ("method", "pca"), ("beta", 3)):
                _set_value(page, element_id, value)
            result["ready"] = _refusal(page, target)
            result["target"] = page.evaluate("window.micromotion.reenact.target")
            _shot(page, shots, "reenact-ready")
            page.click("#start")
            t0 = time.monotonic()
            tw, th = result["target"]["width"], result["target"]["height"]
            page.wait_for_function(f"""() => {{ const v = document.getElementById('remote');
                return v.videoWidth === {tw} && v.videoHeight === {th}; }}""", timeout=90000)
            result["switched_s"] = round(time.monotonic() - t0, 1)
            result["calibrating"] = _wait_state(page, ["calibrating"], 60)
            result["calibrating_stats"] = page.evaluate("window.micromotion.lastStats")
            result["picture_calibrating"] = page.evaluate(TARGET_DIFF_JS)
            _shot(page, shots, "reenact-calibrating")
            result["driving"] = _wait_state(page, ["driving"], 120)
            result["driving_s"] = round(time.monotonic() - t0, 1)
            result["driving_stats"] = page.evaluate("window.micromotion.lastStats")
            _shot(page, shots, "reenact-driving")
            result["lost"] = _wait_state(page, ["driver_lost"], 30)
            result["lost_stats"] = page.evaluate("window.micromotion.lastStats")
            _shot(page, shots, "reenact-driver-lost")
            result["driving_again"] = _wait_state(page, ["driving"], 60)
            rec = page.evaluate(RECORD_JS, record_s)
            if rec is not None:
                path = work / "reenact.webm"
                path.write_bytes(base64.b64decode(rec.pop("b64")))
                rec["decoded"] = decode_webm(path)
            result["recording"] = rec
            # β at once; Recalibrate starts over
            _set_value(page, "beta", 1.5)
            page.wait_for_function("() => { const s = window.micromotion.lastStats; "
                                   "return s && s.reenact && s.reenact.options.beta === 1.5; }", timeout=20000)
            page.click("#recalibrate")
            result["recalibrated"] = _wait_state(page, ["calibrating"], 30)
            # back to the camera's own face
            page.click("#mode-edit")
            page.wait_for_function("""() => { const v = document.getElementById('remote');
                const s = window.micromotion.lastStats;
                return v.videoWidth === 320 && v.videoHeight === 240 && s && s.stream === 'edit'; }""",
                                   timeout=60000)
            result["edit_again"] = page.evaluate(STATUS_JS)
            result["error"] = page.evaluate("window.micromotion.lastError")
            page.click("#stop")
        finally:
            ctx.close()


def run_reenact(args, work: Path, server_args: list[str]) -> dict:
    from web.loadtest import free_port, start_server

    y4m = work / "face-and-blank.y4m"
    write_face_and_blank_y4m(Path(args.face), y4m, face_s=4.0, blank_s=2.0)
    port = free_port()
    server = start_server(port, server_args, work / "server.log")
    try:
        return probe_reenact(f"http://127.0.0.1:{port}/", y4m, work / "chromium-profile", work, Path(args.target),
                             Path(args.shots) if args.shots else None, args.record_seconds)
    finally:
        _stop(server)


# ------------------------------------------------------------------------------------------------ siege

PAGE_JS = """() => { const mm = window.micromotion; const s = mm.lastStats || {};
  const q = document.getElementById('remote').getVideoPlaybackQuality();
  return {shown: mm.framesShown, decoded: q.totalVideoFrames, state: mm.pc ? mm.pc.connectionState : null,
          fps: s.fps, latency_ms: s.latency_ms,
          frames_out: s.frames_out, effect_state: s.state, error: mm.lastError}; }"""


def _attack(url: str, face: str, seconds: float, out: dict) -> None:
    """The hostile client (its own thread and event loop): a data-channel flood from a connected peer, then offer
    floods from 4 tasks for the rest of the time."""
    import asyncio

    import cv2

    from web.loadtest import client_offer, flood_channel, flood_offers, moving_face_frames
    from web.server import restrict_host_candidates

    async def attack():
        restrict_host_candidates(["127.0.0.1"])
        frames = moving_face_frames(cv2.imread(face), n=30)
        sdp = await client_offer(frames)
        channel = asyncio.ensure_future(flood_channel(url, frames, seconds - 2.0, big=False))
        await asyncio.sleep(min(3.0, seconds / 4))     # the flooding peer takes its place before the offer flood
        out["offers"] = await flood_offers(url, seconds - min(3.0, seconds / 4) - 1.0, sdp)
        out["channel"] = await channel

    try:
        asyncio.run(attack())
    except Exception as exc:  # noqa: BLE001 -- reported, the test asserts on it
        out["failure"] = f"{type(exc).__name__}: {exc}"


def udp_counters() -> dict:
    """This network namespace's UDP counters (/proc/net/snmp): receive-buffer drops show a starved reader."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}
    except (OSError, IndexError, ValueError):
        return {}


def run_siege(args, work: Path, server_args: list[str]) -> dict:
    """`args.pages` Chromium pages stream from one server for `args.seconds` under attack; a row per second."""
    import threading
    import urllib.request

    from playwright.sync_api import sync_playwright

    from web.loadtest import free_port, start_server

    y4m = work / "face.y4m"
    write_face_y4m(Path(args.face), y4m)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, [*server_args, "--offer-rate", "50"], work / "server.log")
    report: dict = {"seconds": args.seconds, "pages": args.pages, "timeline": [], "attack": {},
                    "udp_before": udp_counters()}

    def sample(t0: float, pages) -> dict:
        t = time.monotonic()
        stats = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=10).read())
        api_ms = (time.monotonic() - t) * 1e3
        return {"t_s": round(t - t0, 1), "rss_mb": stats["rss_mb"], "peers": stats["peers"],
                "pending": stats.get("pending"), "refused": stats.get("refused"), "api_ms": round(api_ms, 1),
                "lag_ms": stats.get("loop_lag_ms"),
                "pages": [p.evaluate(PAGE_JS) for p in pages]}

    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(work / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
            try:
                pages = [ctx.new_page() for _ in range(args.pages)]
                for page in pages:
                    page.goto(url + "/")
                    page.wait_for_function("() => window.micromotion && window.micromotion.ready", timeout=30000)
                    page.click("#start")
                for page in pages:
                    page.wait_for_function("() => window.micromotion.framesShown > 0", timeout=120000)
                t0 = time.monotonic()
                report["before"] = []
                for _ in range(2):                  # two rows before the attack starts
                    time.sleep(1.0)
                    report["before"].append(sample(t0, pages))
                attacker = threading.Thread(target=_attack, args=(url, args.face, args.seconds, report["attack"]),
                                            daemon=True)
                t0 = time.monotonic()
                if args.attack:
                    attacker.start()
                k = 0
                while time.monotonic() - t0 < args.seconds:      # a row a second (or as fast as sampling goes)
                    k += 1
                    time.sleep(max(0.0, t0 + k - time.monotonic()))
                    report["timeline"].append(sample(t0, pages))
                if args.attack:
                    attacker.join(60)
                time.sleep(1.0)
                report["after"] = sample(t0, pages)
                if shots := (Path(args.shots) if args.shots else None):
                    _shot(pages[0], shots, "siege")
            finally:
                ctx.close()
        t_closed = time.monotonic()          # closed pages are freed by DTLS close, consent loss or --peer-timeout
        while True:
            report["peers_after_close"] = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=10).read())["peers"]
            if report["peers_after_close"] == 0 or time.monotonic() - t_closed > 30:
                break
            time.sleep(0.5)
        report["freed_after_s"] = round(time.monotonic() - t_closed, 1)
        report["udp_after"] = udp_counters()
    finally:
        _stop(server)
    return report


TINT_JS = """() => {
  // mean (edited - camera) per RGB channel over the centre of the picture (where the face is), both at 320x240
  const grab = (id) => { const v = document.getElementById(id); const c = document.createElement('canvas');
    c.width = 320; c.height = 240; const g = c.getContext('2d'); g.drawImage(v, 0, 0, 320, 240);
    return g.getImageData(100, 50, 120, 140).data; };
  const a = grab('remote'), b = grab('local'); const d = [0, 0, 0]; const n = a.length / 4;
  for (let i = 0; i < a.length; i += 4) { d[0] += a[i] - b[i]; d[1] += a[i+1] - b[i+1]; d[2] += a[i+2] - b[i+2]; }
  return d.map(x => x / n);
}"""


def run_directions(args, work: Path, server_args: list[str]) -> dict:
    """`args.pages` pages, page k on direction k (one α): their pictures and controls as the server reports them."""
    import urllib.request

    from playwright.sync_api import sync_playwright

    from web.loadtest import free_port, start_server

    y4m = work / "face.y4m"
    write_face_y4m(Path(args.face), y4m)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, [*server_args, "--demo", "--max-batch", "8", "--gather-ms", "20"],
                          work / "server.log")
    report: dict = {"pages": []}
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(work / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
            try:
                pages = [ctx.new_page() for _ in range(args.pages)]
                names = []
                for k, page in enumerate(pages):
                    page.goto(url + "/")
                    page.wait_for_function("() => window.micromotion && window.micromotion.ready", timeout=30000)
                    names = page.evaluate("window.micromotion.config.directions")
                    page.click("#start")
                for page in pages:
                    page.wait_for_function("() => window.micromotion.framesShown > 0", timeout=120000)
                for k, page in enumerate(pages):
                    name = names[k % len(names)]
                    page.evaluate(f"() => window.micromotion.sendControls({{directions: {{{name!r}: 5.0}}}})")
                    page.wait_for_function(f"""() => {{ const s = window.micromotion.lastStats;
                        return s && s.controls.directions[{name!r}] === 5 && s.effect.edited > 3; }}""",
                                           timeout=60000)
                time.sleep(2.0)
                for k, page in enumerate(pages):
                    tints = [page.evaluate(TINT_JS) for _ in range(5)]
                    report["pages"].append({"direction": names[k % len(names)],
                                            "tint_rgb": [sum(t[c] for t in tints) / 5 for c in range(3)],
                                            "stats": page.evaluate("window.micromotion.lastStats")})
                report["server"] = json.loads(urllib.request.urlopen(f"{url}/stats", timeout=10).read())
            finally:
                ctx.close()
    finally:
        _stop(server)
    return report


def _wait_url(url: str, timeout_s: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except Exception:
        proc.kill()


def main() -> int:
    argv = sys.argv[1:]
    server_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, server_args = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser()
    p.add_argument("--face", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--mode", choices=("basic", "states", "reenact", "siege", "directions"), default="basic")
    p.add_argument("--shots", help="states/reenact/siege: save page screenshots (page-*.png) in this folder")
    p.add_argument("--target", help="reenact: the target photo (a face)")
    p.add_argument("--record-seconds", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=12.0, help="siege: how long the pages stream under attack")
    p.add_argument("--pages", type=int, default=4, help="siege: real Chromium pages")
    p.add_argument("--no-attack", dest="attack", action="store_false",
                   help="siege: the same pages and sampling without the hostile client (a baseline)")
    args = p.parse_args(argv)
    from web.loadtest import free_port, start_server

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.mode != "basic":
        report: dict = {}
        try:
            if args.mode == "states":
                report = run_states(args, work)
            elif args.mode == "reenact":
                report = run_reenact(args, work, server_args)
            elif args.mode == "directions":
                report = run_directions(args, work, server_args)
            else:
                report = run_siege(args, work, server_args)
        except Exception as exc:  # report what failed; the test asserts on it
            import traceback

            report["failure"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
        return 0
    y4m = work / "face.y4m"
    write_face_y4m(Path(args.face), y4m)
    port = free_port()
    server = start_server(port, server_args, work / "server.log")
    report: dict = {}
    try:
        report = probe(f"http://127.0.0.1:{port}/", y4m, work / "chromium-profile", args.alpha)
    except Exception as exc:  # report what failed; the test asserts on it
        report["failure"] = f"{type(exc).__name__}: {exc}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except Exception:
            server.kill()
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
