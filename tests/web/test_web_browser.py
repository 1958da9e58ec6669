"""A real headless Chromium, its fake camera fed a real face, talks WebRTC to `python -m web` on loopback.

The browser and the server run in a network namespace with only `lo` (ENVIRONMENT.md); the probe script
(browser_probe.py) starts the server, drives the page with playwright and writes what it saw as JSON.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from web_netns import netns_missing_reason, run_loopback

PROBE = Path(__file__).with_name("browser_probe.py")
CHROMIUM = "/usr/bin/chromium"


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return "Debian's chromium is not installed (apt-get install chromium; install.sh --test does it)"
    return netns_missing_reason()


def run_probe(tmp_path: Path, face: Path, server_args: list[str], extra_env: dict | None = None) -> dict:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "probe.json"
    res = run_loopback([sys.executable, str(PROBE), "--face", str(face), "--out", str(out),
                        "--workdir", str(tmp_path / "work"), "--", *server_args], timeout=300,
                       extra_env=extra_env)
    assert out.exists(), f"probe wrote nothing:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    report = json.loads(out.read_text())
    log = (tmp_path / "work" / "server.log")
    assert "failure" not in report, f"{report.get('failure')}\nserver log:\n" + \
        (log.read_text()[-4000:] if log.exists() else "")
    return report


def _check_stream(report: dict) -> None:
    before, after = report["before"], report["after_3s"]
    # the edited stream arrives with the camera's size, and frames advance
    assert (before["w"], before["h"]) == (320, 240)
    assert after["shown"] > before["shown"] and after["t"] > before["t"]
    assert after["decoded"] > before["decoded"]
    assert after["state"] == "connected"
    stats = after["stats"]
    assert stats["frames_out"] > 0 and stats["errors"] == 0 and stats["size"] == [320, 240]
    assert "unknown direction" in report["unknown_direction_error"]
    print(f"\nbrowser ({stats['mode']}): first frame {report['first_frame_s']} s after Start, "
          f"{report['fps_shown']} fps shown, server {stats['fps']} fps, latency {stats['latency_ms']} ms")


@pytest.mark.browser
def test_browser_without_weights_tracks_the_face_and_says_how_to_get_them(tmp_path, faces_dir):
    """The product path with no weights installed: the real Effect in tracking-only mode (MediaPipe)."""
    home = tmp_path / "empty-home"
    home.mkdir()
    report = run_probe(tmp_path, faces_dir / "01.jpg", [], extra_env={"MICROMOTION_HOME": str(home)})
    _check_stream(report)
    assert report["after_3s"]["stats"]["mode"] == "tracking"
    assert "python -m engine.weights download" in report["notice"]
    assert report["after_3s"]["stats"]["effect"]["tracked"] > 0, "the face was not tracked in the stream"
    assert report["after_3s"]["stats"]["state"] == "networks_missing"
    # the page's "effect on" box went over the data channel: echoed, and the tracking overlay is gone
    assert report["change"] == "enabled"
    assert report["after_change"]["stats"]["controls"]["enabled"] is False
    assert report["diff_before"] > report["diff_after"] + 3, (report["diff_before"], report["diff_after"])


@pytest.mark.browser
@pytest.mark.parametrize("serve", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_browser_full_effect_tiny_weights_alpha_slider_edits_the_face(tmp_path, faces_dir, serve):
    """The full Effect (landmarks → align → ReStyle encoder → edit → generator → paste) with tiny random
    weights loaded from disk by `python -m web`; moving the α slider edits the face in the returned video.
    serve="ray": the networks run in a Ray Serve replica of a private Ray on 127.0.0.1 (`--serve ray`)."""
    from ray_support import web_serving
    from tiny_weights import server_args, write_tiny_weights

    weights = write_tiny_weights(tmp_path / "weights")
    with web_serving(serve) as (serve_args, env):
        report = run_probe(tmp_path, faces_dir / "01.jpg", server_args(weights) + serve_args, extra_env=env)
    assert ("editor on Ray Serve" in (tmp_path / "work" / "server.log").read_text()) == (serve == "ray")
    _check_stream(report)
    assert report["after_3s"]["stats"]["mode"] == "full"
    assert report["notice"] is None
    assert report["change"] == "alpha"
    assert report["after_change"]["stats"]["controls"]["directions"] == {report["direction"]: 4.0}
    assert report["after_change"]["stats"]["effect"]["edited"] > 0
    # α = 0 in residual paste leaves the camera picture; α = 4 moves the face away from it
    assert report["diff_after"] > report["diff_before"] + 3, (report["diff_before"], report["diff_after"])
    # the α slider follows each direction file's suggested range (tiny_weights.TINY_DIRECTION_META):
    # eyes_closing [0, 8] (no default), smile [0, 10] default 5; picking smile moves the slider to 5 and sends it
    from tiny_weights import TINY_DIRECTION_META

    sliders = report["sliders"]
    assert set(sliders) == set(TINY_DIRECTION_META)
    for name, slider in sliders.items():
        assert [slider["min"], slider["max"]] == TINY_DIRECTION_META[name]["alpha_range"], (name, slider)
        assert slider["direction"] == name
    first, picked = report["direction"], [n for n in sliders if n != report["direction"]][0]
    assert sliders[first]["value"] == 4.0                      # the value the test set, within [0, 8]
    expected = TINY_DIRECTION_META[picked].get("alpha_default", sum(TINY_DIRECTION_META[picked]["alpha_range"]) / 2)
    assert sliders[picked]["value"] == expected
    assert report["echo_after_pick"]["directions"] == {picked: expected}
