"""Drive headless Chromium against `python -m web` and write what it saw as JSON (run inside a netns).

    unshare -n sh -c 'ip link set lo up && exec python tests/web/browser_probe.py --face F --out R.json
                      --workdir D [-- <python -m web options>]'

Steps: a y4m clip of the face (320×240, slight motion) feeds Chromium's fake camera; the page is opened,
"Start" clicked; we wait for the edited stream (video size, frames shown, currentTime, playback quality),
then move the α slider through the data channel and wait for the server's stats to echo it. Pixel means
of the edited video's centre are sampled before and after the change.
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

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"    # Debian's package
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
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
            page.wait_for_function("window.micromotion && window.micromotion.ready", timeout=20000)
            t_click = time.monotonic()
            page.click("#start")
            page.wait_for_function("window.micromotion.framesShown > 0", timeout=60000)
            result["first_frame_s"] = round(time.monotonic() - t_click, 3)
            s0 = page.evaluate(STATE_JS)
            time.sleep(3.0)
            s1 = page.evaluate(STATE_JS)
            result["before"], result["after_3s"] = s0, s1
            result["fps_shown"] = round((s1["shown"] - s0["shown"]) / 3.0, 2)
            page.wait_for_function("window.micromotion.lastStats !== null", timeout=20000)
            result["notice"] = page.inner_text("#notice") if page.is_visible("#notice") else None
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
            page.wait_for_function(f"window.micromotion.lastStats.frames_out > {t_echo} + 5", timeout=20000)
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
            page.wait_for_function("window.micromotion.lastError !== null", timeout=10000)
            result["unknown_direction_error"] = page.evaluate("window.micromotion.lastError")
        finally:
            ctx.close()
    return result


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
    args = p.parse_args(argv)
    from web.loadtest import free_port, start_server

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
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
