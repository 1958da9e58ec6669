"""The Gradio webcam tab in a real headless Chromium (fake camera = a real face), loopback namespace only.

The app runs in this process with the full Effect on tiny random networks; we count the frames it edits.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from test_web_browser import _skip_reason
from web_netns import rerun_in_netns


class CountingEffect:
    """The real effect, counting the frames its sessions processed (the webcam frames that reached the server)."""

    def __init__(self, effect):
        self._effect = effect
        self.sessions = []

    def __getattr__(self, name):
        return getattr(self._effect, name)

    def new_session(self, *args, **kwargs):
        session = self._effect.new_session(*args, **kwargs)
        self.sessions.append(session)
        return session

    @property
    def calls(self) -> int:
        return sum(s.counters.frames for s in self.sessions)


@pytest.mark.browser
def test_gradio_webcam_tab_streams_edited_frames(request, tmp_path, faces_dir):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if rerun_in_netns(request, timeout=300):
        return
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from playwright.sync_api import sync_playwright

    from browser_probe import CHROMIUM, CHROMIUM_FLAGS, write_face_y4m
    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets
    from web.gradio_app import build_app
    from web.loadtest import free_port

    _, E, deltas = build_tiny_nets()
    effect = CountingEffect(Effect(EffectConfig(device="cpu"), encoder=E, directions=deltas, batching=True))
    app = build_app(effect)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    y4m = tmp_path / "face.y4m"
    write_face_y4m(faces_dir / "01.jpg", y4m)
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
            try:
                page = ctx.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_role("tab", name="Webcam").click()
                page.get_by_text("Click to Access Webcam").click()
                page.get_by_role("button", name="capture photo").click()
                deadline = time.monotonic() + 60
                while effect.calls < 10 and time.monotonic() < deadline:
                    time.sleep(0.5)
                srcs = [img.get_attribute("src") or "" for img in page.locator("img").all()]
                status = page.locator("#webcam-status")     # the live state and the edit's age, beside the output
                while "ms old" not in status.inner_text() and time.monotonic() < deadline:
                    time.sleep(0.2)
                line = status.inner_text()
            finally:
                ctx.close()
    finally:
        app.close()
    assert effect.calls >= 10, f"only {effect.calls} webcam frames reached the effect"
    assert any("/gradio_api/file=" in s for s in srcs), srcs   # the edited frame is shown
    assert re.search(r"(^|\n)running: editing 1 face; edit \d+ ms old$", line.strip()), line


@pytest.mark.browser
def test_gradio_reenact_live_tab_calibrates_then_drives_the_photo(request, tmp_path, faces_dir):
    """The Reenact live tab in Chromium: a target photo uploaded, the fake camera (a real face, moving) streams;
    the status line goes calibrating (n/N) → driving (the pose's age) and the driven photo is shown."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if rerun_in_netns(request, timeout=300):
        return
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import cv2
    from playwright.sync_api import sync_playwright

    from browser_probe import CHROMIUM, CHROMIUM_FLAGS, write_face_y4m
    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets
    from web.gradio_app import build_app
    from web.loadtest import free_port

    _, E, deltas = build_tiny_nets()
    effect = Effect(EffectConfig(device="cpu"), encoder=E, directions=deltas, batching=True)
    app = build_app(effect)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    y4m, target = tmp_path / "face.y4m", tmp_path / "mona.jpg"
    write_face_y4m(faces_dir / "01.jpg", y4m)
    cv2.imwrite(str(target), cv2.resize(cv2.imread(str(faces_dir / "mona_lisa.jpg")), (200, 240)))
    seen = []
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
            try:
                page = ctx.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_role("tab", name="Reenact live").click()
                page.locator("#reenact-live-target input[type=file]").set_input_files(str(target))
                page.locator("#reenact-live-target img").wait_for(timeout=30_000)
                cam = page.locator("#reenact-live-camera")
                cam.get_by_text("Click to Access Webcam").click()
                cam.get_by_role("button", name="capture photo").click()
                status = page.locator("#reenact-live-status")
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    text = status.inner_text().strip()
                    if not seen or seen[-1] != text:
                        seen.append(text)
                    if text.startswith("driving:"):
                        break
                    time.sleep(0.2)
                shown = page.locator("#reenact-live-output img").get_attribute("src") or ""
            finally:
                ctx.close()
    finally:
        app.close()
        effect.close()
    assert any(re.search(r"^calibrating: start with a neutral face, then move your head \(\d+/40\)$", s)
               for s in seen), seen
    assert re.search(r"^driving: driving the target; pose \d+ ms old$", seen[-1]), seen
    assert "/gradio_api/file=" in shown, shown
