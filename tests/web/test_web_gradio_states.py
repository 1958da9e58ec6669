"""Issue 11 and 15 for the Gradio app: every state said beside the output, bad uploads in the project's own words,
bounded photo outputs with moving progress, one α bound in every entry point, damage beside the clip.

The app's events are called through `Blocks.process_api` -- the path Gradio's HTTP API takes (payload checks,
preprocessing, the handler, postprocessing) -- with raw payloads as a browser or gradio_client sends them.
Networks are tiny and random; MediaPipe landmarks are real.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


# ------------------------------------------------------------------ helpers


def file_data(path: Path) -> dict:
    """A FileData payload, as the page or gradio_client sends an upload."""
    return {"path": str(path), "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


class Api:
    """Call an app's events by api name through `process_api`; `call` returns the outputs, `refusal` the message."""

    def __init__(self, app):
        from gradio.state_holder import SessionState

        self.app = app
        self.fns = {fn.api_name: fn for fn in app.fns.values() if fn.api_name}
        self.state = SessionState(app)

    def _run(self, name: str, inputs: list):
        return asyncio.run(self.app.process_api(self.fns[name], inputs, state=self.state))["data"]

    def call(self, name: str, *inputs):
        return self._run(name, list(inputs))

    def refusal(self, name: str, *inputs) -> str:
        """The message a refused call shows (gr.Error's message; any other exception's text)."""
        from gradio.exceptions import Error

        try:
            self._run(name, list(inputs))
        except Error as exc:
            return exc.message
        except Exception as exc:  # noqa: BLE001 -- what Gradio would show for anything else
            return str(exc)
        raise AssertionError(f"/{name} accepted {inputs!r}")

    def close(self) -> None:
        from web.gradio_edit import WebcamSession
        from web.gradio_reenact import ReenactWebcam

        for value in list(self.state.state_data.values()):
            if isinstance(value, (WebcamSession, ReenactWebcam)):
                value.close()


def status_of(app, elem_id: str) -> str:
    """The initial text of the Markdown with `elem_id` (each tab's status, the banner)."""
    found = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    assert len(found) == 1, elem_id
    return found[0].value


def small_face(faces_dir: Path, out: Path, size=(320, 240)) -> Path:
    import cv2

    cv2.imwrite(str(out), cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), size))
    return out


def no_face_photo(out: Path) -> Path:
    """A 320×240 picture of shapes on a gradient: nothing a face detector takes for a face."""
    import cv2

    img = np.zeros((240, 320, 3), np.uint8)
    img[...] = np.linspace(40, 200, 320, dtype=np.uint8)[None, :, None]
    cv2.rectangle(img, (40, 40), (120, 200), (0, 0, 255), -1)
    cv2.circle(img, (230, 120), 50, (255, 200, 0), -1)
    cv2.imwrite(str(out), img)
    return out


def no_temporary_paths(message: str) -> None:
    """The project's one line: no folder of any file, none of Gradio's internals."""
    for leak in ("/tmp", "/", "gradio", "preprocess", "on_photos", "on_clip", "Traceback", "Could not"):
        assert leak not in message, (leak, message)


@pytest.fixture(scope="module")
def effect():
    """Tiny networks; directions with different suggested α ranges, the narrower first (the sliders are built
    with eyes_closing's [0, 8]; smile suggests [0, 10])."""
    from directions.files import Direction
    from stream.effect import Effect, EffectConfig
    from tiny_weights import TINY_DIRECTION_META, build_tiny_nets

    _, E, deltas = build_tiny_nets()
    dirs = [Direction(name, deltas[name], dict(TINY_DIRECTION_META[name])) for name in ("eyes_closing", "smile")]
    eff = Effect(EffectConfig(device="cpu"), encoder=E, directions=dirs, batching=True)
    yield eff
    eff.close()


@pytest.fixture(scope="module")
def api(effect):
    from web.gradio_app import build_app

    a = Api(build_app(effect))
    yield a
    a.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory, faces_dir):
    from hostile_media import damaged_clip
    from test_web_gradio import make_face_clip

    d = tmp_path_factory.mktemp("media")
    return {"face": small_face(faces_dir, d / "face.jpg"), "no_face": no_face_photo(d / "shapes.png"),
            "clip": make_face_clip(faces_dir / "01.jpg", d / "face.mp4", n=4),
            "no_face_clip": damaged_clip(d / "pattern.mp4", n=6, damage=())[0],
            "damaged_clip": damaged_clip(d / "damaged.mp4", n=24, damage=(14,))[0],
            "dead_clip": damaged_clip(d / "dead.mp4", n=4, damage=(0, 1, 2, 3), gop=1)[0],
            "dir": d}


# ------------------------------------------------------------------ issue 11.4: no face in view is said


def test_no_face_in_view_is_said_beside_photo_and_clip_outputs(api, media):
    status, gifs, downloads, frames = api.call("photo", [file_data(media["no_face"]), file_data(media["face"])],
                                               "smile", 3.0, 4)
    assert "'shapes.png': no face in view; the photo is shown unchanged" in status, status
    assert "'face.jpg': 1 face edited in 4 of 4 frames" in status, status
    assert [g["caption"] for g in gifs] == ["shapes.png", "face.jpg"] and len(downloads) == 4 and len(frames) == 8

    _, status = api.call("clip", file_data(media["no_face_clip"]), "smile", 3.0, True, 2.0)
    assert "no face in view in 6 of 6 frames (they pass through unchanged)" in status, status


def test_face_too_small_is_said(media):
    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets
    from web.gradio_edit import render_image

    _, E, deltas = build_tiny_nets()
    far = Effect(EffectConfig(device="cpu", min_eye_dist_px=400), encoder=E, directions=deltas)
    out = render_image(far, media["face"], "smile", 3.0, n_frames=2, warmup=0, out_dir=media["dir"])
    assert out["line"] == "'face.jpg': face too small to edit: upload a photo where the face is larger"


# ------------------------------------------------------------------ issue 11.5 / 15: bad uploads


def test_bad_uploads_get_the_projects_message_without_temporary_paths(api, media, faces_dir):
    from web.gradio_uploads import UploadRefused, check_image_upload, check_video_upload

    d = media["dir"]
    (d / "notes.jpg").write_text("not a photo at all\n" * 20)
    (d / "notes.txt").write_text("hello")
    (d / "notes.mp4").write_text("not a video\n" * 20)
    for bad in ("notes.mp4", "face.jpg"):
        with pytest.raises(UploadRefused) as ours:
            check_video_upload(d / bad)
        got = api.refusal("clip", file_data(d / bad), "smile", 3.0, True, 2.0)
        assert got == str(ours.value)
        no_temporary_paths(got)
    for bad in ("notes.jpg", "notes.txt", media["clip"].name):
        with pytest.raises(UploadRefused) as ours:
            check_image_upload(d / bad)
        got = api.refusal("photo", [file_data(d / bad)], "smile", 3.0, 4)
        assert got == str(ours.value), (got, str(ours.value))
        no_temporary_paths(got)
    assert api.refusal("photo", None, "smile", 3.0, 4).startswith("no photo given")
    assert api.refusal("clip", None, "smile", 3.0, True, 2.0).startswith("no clip given")
    # a clip whose header passes but of which no frame decodes: refused while decoding, in our words
    got = api.refusal("clip", file_data(media["dead_clip"]), "smile", 3.0, True, 2.0)
    assert got.startswith("no frame of 'dead.mp4' could be decoded"), got
    no_temporary_paths(got)


def test_several_photos_in_one_go_with_one_refused(api, media):
    (media["dir"] / "broken.png").write_bytes(b"\x89PNG not really")
    status, gifs, downloads, frames = api.call(
        "photo", [file_data(media["face"]), file_data(media["dir"] / "broken.png"), file_data(media["face"])],
        "smile", 3.0, 4)
    assert len(gifs) == 2 and len(downloads) == 4 and len(frames) == 8
    assert status.count("'face.jpg': 1 face edited") == 2
    assert "- not used: 'broken.png' could not be read" in status
    assert sorted(Path(p["path"]).suffix for p in downloads) == [".gif", ".gif", ".mp4", ".mp4"]
    assert "over the limit of 8" in api.refusal("photo", [file_data(media["face"])] * 9, "smile", 3.0, 4)


# ------------------------------------------------------------------ issue 11.6: bounded outputs, moving progress


def test_a_large_photo_is_edited_at_a_bounded_size_with_progress(effect, faces_dir, tmp_path):
    import av
    import cv2
    from PIL import Image

    from web.gradio_edit import render_image
    from web.gradio_uploads import Limits

    big = tmp_path / "big.jpg"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (3142, 3820)))
    seen = []
    out = render_image(effect, big, "smile", 3.0, n_frames=3, warmup=1, out_dir=tmp_path,
                       progress=lambda fraction, text: seen.append((fraction, text)))
    lim = Limits()
    assert out["size"] == (842, 1024) and out["resized"] == ((3142, 3820), (842, 1024))
    assert "edited at 842×1024 (uploaded 3142×3820" in out["line"], out["line"]
    assert all(max(f.shape[:2]) == lim.work_side for f in out["frames"])
    assert all(max(f.shape[:2]) <= lim.frame_side for f in out["thumbs"])
    with Image.open(out["gif"]) as gif:
        assert max(gif.size) <= lim.gif_side and gif.n_frames == 4
    assert out["gif"].stat().st_size < 2 * 2**20
    with av.open(str(out["video"])) as c:
        assert max(c.streams.video[0].width, c.streams.video[0].height) <= lim.work_side
    # progress moves: said before the work starts, after every frame, through writing, up to 1
    fractions = [f for f, _ in seen]
    assert seen[0] == (0.0, "reading the photo") and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(set(fractions)) >= 1 + 1 + 3 + 2, seen
    assert any(text == "frame 3 of 3" for _, text in seen)


def test_photo_tab_progress_and_gallery_fit_the_panel(api, media):
    """The handler reports progress per frame of every photo; the galleries have few enough columns for a
    half-width panel and grow with their content (nothing clipped)."""
    fn = api.fns["photo"]
    seen = []

    class Recorder:
        def __call__(self, fraction, desc=None):
            seen.append((fraction, desc))

    fn.fn([file_data(media["face"]), file_data(media["face"])], "smile", 2.0, 3, progress=Recorder())
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(set(fractions)) >= 2 * (5 + 3)
    assert any(d.startswith("photo 2 of 2 'face.jpg': frame 3 of 3") for _, d in seen), seen
    galleries = [b for b in api.app.blocks.values() if type(b).__name__ == "Gallery"]
    # gradio's "auto" (and None) is a fixed ~500 px box with a scroll bar; "max-content" shows every frame
    assert len(galleries) == 2 and all(g.columns <= 4 and g.height == "max-content" for g in galleries)


# ------------------------------------------------------------------ issue 11.8: one α bound in every entry point


def test_alpha_bounds_equal_in_every_entry_point(api, media):
    """smile's 9.5 lies outside the range the sliders were built with (eyes_closing's [0, 8]) and inside its own
    suggested [0, 10]: every event takes it, and every α up to ±MAX_ALPHA; beyond, all refuse with the words of
    `Controls` (the page's data channel and the CLI use the same)."""
    from stream.controls import MAX_ALPHA, Controls
    from web.hints import MAX_HINT_ALPHA

    face, clip = file_data(media["face"]), file_data(media["clip"])
    calls = {"webcam": lambda a: ("webcam", face, "smile", a, False, 2.0, None),
             "clip": lambda a: ("clip", clip, "smile", a, False, 2.0),
             "photo": lambda a: ("photo", [face], "smile", a, 2)}
    for name, args in calls.items():   # accepted = answered (a refusal raises)
        assert len(api.call(*args(9.5))) in (2, 3, 4), name
    for alpha in (MAX_ALPHA, -MAX_ALPHA):
        assert len(api.call(*calls["webcam"](alpha))) == 3
    with pytest.raises(ValueError) as controls:
        Controls.from_dict({"directions": {"smile": MAX_ALPHA + 0.5}})
    for name, args in calls.items():
        assert api.refusal(*args(MAX_ALPHA + 0.5)) == str(controls.value), name
    assert api.refusal(*calls["photo"]("9.5")) == "alpha of 'smile' must be a number, got '9.5'"
    sliders = [b for b in api.app.blocks.values() if type(b).__name__ == "Slider" and b.label == "α (strength)"]
    assert len(sliders) == 3 and all(-MAX_ALPHA <= s.minimum < s.maximum <= MAX_ALPHA for s in sliders)
    assert MAX_HINT_ALPHA == MAX_ALPHA


# ------------------------------------------------------------------ every state, every tab


def test_networks_missing_is_said_in_every_tab_with_the_command(home, media):
    from stream.effect import Effect, EffectConfig
    from web.gradio_app import build_app

    eff = Effect.open(EffectConfig(device="cpu"), batching=True)
    assert eff.info.state == "networks_missing" and eff.info.command
    app = build_app(eff)
    for tab in ("banner", "photo-status", "clip-status", "webcam-status"):
        text = status_of(app, tab)
        assert eff.info.notice in text and eff.info.command in text, (tab, text)
    api = Api(app)
    try:
        status = api.call("photo", [file_data(media["face"])], None, 0.0, 2)[0]
        assert f"'face.jpg': face tracked (outline drawn), not edited: {eff.info.notice}" in status, status
        line = api.call("webcam", file_data(media["face"]), None, 0.0, False, 2.0, None)[1]
        assert eff.info.command in line, line
    finally:
        api.close()
        eff.close()


def test_no_directions_and_unusable_direction_files_are_said(tmp_path, media):
    import torch

    from directions.files import Direction, save
    from stream.effect import Effect, EffectConfig
    from stream.status import DIRECTIONS_COMMAND
    from tiny_weights import build_tiny_nets
    from web.gradio_app import build_app
    from web.gradio_status import file_names_only

    G, E, _ = build_tiny_nets()
    bare = Effect(EffectConfig(device="cpu"), encoder=E, directions={})
    app = build_app(bare)
    for tab in ("banner", "photo-status", "clip-status", "webcam-status"):
        assert f"no directions installed" in status_of(app, tab) and DIRECTIONS_COMMAND in status_of(app, tab)
    status = Api(app).call("photo", [file_data(media["face"])], None, 0.0, 2)[0]
    assert f"'face.jpg': no directions installed: faces are reconstructed, not edited; run `{DIRECTIONS_COMMAND}`" \
        in status, status

    folder = tmp_path / "dirs"
    folder.mkdir()
    save(Direction("wide", torch.zeros(G.num_ws, G.w_dim * 2), {}), folder / "wide")   # another generator's
    (folder / "junk.safetensors").write_bytes(b"not a tensor file")
    eff = Effect(EffectConfig(device="cpu", directions_dir=str(folder)), encoder=E)
    app = build_app(eff)
    text = status_of(app, "photo-status")
    assert len(eff.info.skipped_directions) == 2
    for file, reason in eff.info.skipped_directions:
        assert f"direction file '{Path(file).name}' not used: {file_names_only(reason)}" in text
    assert "'wide.safetensors' not used: direction 'wide' is" in text, text
    assert "'junk.safetensors' not used: junk.safetensors: not a direction file" in text, text
    assert str(folder) not in text   # the server's folders are not shown


def test_demo_runs_in_gradio(media):
    """`python -m web.gradio --demo`: the TintEditor through every tab, said to be a demo."""
    from stream.effect import Effect
    from stream.options import config_from_args
    from web.gradio import build_parser
    from web.gradio_app import build_app

    eff = Effect.open(config_from_args(build_parser().parse_args(["--demo", "--device", "cpu"])), batching=True)
    app = build_app(eff)
    assert eff.info.state == "demo" and eff.info.notice in status_of(app, "banner")
    api = Api(app)
    try:
        status, gifs, _, frames = api.call("photo", [file_data(media["face"])], "smile", 5.0, 2)
        assert "'face.jpg': 1 face edited in 2 of 2 frames" in status and len(gifs) == 1 and len(frames) == 2
    finally:
        api.close()
        eff.close()


# ------------------------------------------------------------------ clip damage (issue 15), webcam state


def test_lost_frames_of_a_damaged_clip_are_said_beside_it(api, media):
    video, status = api.call("clip", file_data(media["damaged_clip"]), "smile", 3.0, True, 2.0)
    assert "damaged input: 1 frame(s) of 'damaged.mp4' could not be decoded" in status, status
    assert "24 frames at 12.00 fps" in status
    no_temporary_paths(status.split("damaged input: ", 1)[1])


def test_webcam_status_line_says_the_live_state_and_the_edits_age(effect, faces_dir):
    import cv2

    from web.gradio_edit import WebcamSession

    rgb = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (320, 240))[..., ::-1].copy()
    session = WebcamSession(effect)
    try:
        assert session.line.startswith("waiting for the camera")

        def until(state: str, frame: np.ndarray) -> str:
            """Step (an edit arrives asynchronously; a loaded machine may take a while) until `state`."""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                session.step(frame, "smile", 3.0, animate=False)
                if session.status is not None and session.status.state == state:
                    return session.line
            raise AssertionError(f"no {state!r} within 60 s; last: {session.line}")

        line = until("running", rgb)
        assert line.startswith("**running**: editing 1 face; edit ") and line.endswith(" ms old"), line
        assert until("no_face", np.zeros_like(rgb)) == "**no face**: no face in view"
    finally:
        session.close()


def test_status_words_for_every_state():
    """The lines beside the outputs, from FrameStatus as the sessions make them (stream.status.describe)."""
    from stream import status as st
    from web.gradio_status import clip_lines, photo_line, result_status, webcam_line

    def frame(state, **kw):
        return st.FrameStatus(state, message=st.describe(state, bound_ms=1000.0, **kw), **kw)

    assert webcam_line(frame(st.STALE, edit_age_ms=1500.0)) == \
        "**stale**: edit too old (1.5 s > 1.0 s): showing the camera until a fresh one arrives"
    assert webcam_line(frame(st.FACE_TOO_SMALL)) == \
        "**face too small**: face too small to edit: come closer to the camera"
    assert webcam_line(frame(st.WAITING)) == "**waiting**: face found; computing its first edit"
    assert webcam_line(frame(st.RUNNING, faces=2, edit_age_ms=80.0)) == "**running**: editing 2 faces; edit 80 ms old"
    mixed = [frame(st.RUNNING, faces=1)] * 3 + [frame(st.NO_FACE)]
    mixed[0] = st.FrameStatus(st.RUNNING, faces=1, edited_faces=1, message="editing 1 face")
    assert photo_line("a.jpg", mixed) == "'a.jpg': 1 face edited in 3 of 4 frames; no face in view in 1 frame"
    result = {"frames": 10, "fps": 25.0, "audio": False, "seconds": 1.5, "damage": "2 frame(s) of 'c.mp4' ...",
              "states": {st.RUNNING: 6, st.NO_FACE: 3, st.ERROR: 1}}
    assert clip_lines(result) == [
        "10 frames at 25.00 fps, audio none in the input, 1.5 s", "faces edited in 6 of 10 frames",
        "no face in view in 3 of 10 frames (they pass through unchanged)",
        "failed in 1 of 10 frames (they pass through unchanged)", "damaged input: 2 frame(s) of 'c.mp4' ..."]

    class Info:   # EditorInfo's fields that the texts read
        available, notice, command, direction_names = True, None, None, []
        skipped_directions = [("/x/old.safetensors", "made for another generator")]

    text = result_status(Info, ["'a.jpg': no directions installed: faces are reconstructed, not edited; run "
                                f"`{st.DIRECTIONS_COMMAND}`"])
    assert text.count("no directions installed") == 1 and "'old.safetensors' not used: made for another" in text
