"""Issue 13's Gradio doors: the Reenact tab (driver clip + target photo → video) and the Reenact live tab (the
webcam drives the photo), called through `Blocks.process_api` with raw payloads, as a browser sends them.

Tiny random networks (`tiny_weights.build_tiny_nets`: ReStyle-pSp + StyleGAN2, 64 px, w_dim 32, num_ws 10): the
wiring is real, the pictures are not. Landmarks are the real MediaPipe ones: the driver is the shared face 01.jpg
moving (`stream.clips.moving_face_clip`) with two flat, faceless frames and a 440 Hz audio track; the target is
another real face (mona_lisa.jpg).
"""
from __future__ import annotations

import json
import math
import os
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from test_web_gradio_states import Api, file_data, no_face_photo, no_temporary_paths, status_of

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

FPS = 12
N_FRAMES = 12
FACELESS = (5, 6)           # driver frames without a face
BETA = 10.0                 # the tiny random encoder barely follows its input: the motion is amplified
SIZE = (240, 320)           # driver frames (H, W)


def write_clip(path: Path, frames: list, fps: int = FPS, audio: bool = True, rate: int = 16000) -> Path:
    """H.264 mp4 of BGR frames with a mono AAC 440 Hz tone as long as the video."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if audio:
            sound = out.add_stream("aac", rate=rate)
            sound.layout = "mono"
            t = np.arange(int(len(frames) / fps * rate)) / rate
            tone = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
            for start in range(0, tone.size, 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
        for f in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def driver_frames(faces_dir: Path, n: int = N_FRAMES, faceless=FACELESS) -> list:
    """The face 01.jpg swaying and nodding (30 fps motion sampled every 2nd frame), `faceless` frames flat grey."""
    from stream.clips import moving_face_clip

    frames = list(moving_face_clip(faces_dir / "01.jpg", 2 * n, SIZE, face_height=170))[::2]
    for i in faceless:
        frames[i] = np.full_like(frames[i], 90)
    return frames


def decode(path: Path) -> dict:
    """Every video frame (BGR), the rate, and the decoded audio's duration."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        rate = float(vs.average_rate)
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(vs)]
    with av.open(str(path)) as c:
        audio = c.streams.audio[0] if c.streams.audio else None
        samples = sum(f.samples for f in c.decode(audio)) if audio is not None else 0
        sr = audio.codec_context.sample_rate if audio is not None else None
    return {"frames": frames, "fps": rate, "audio_s": samples / sr if sr else 0.0}


def args(driver, target, rank=2, layers="", beta=BETA, reference=None, smoothing=0.0, method="rpca",
         paste="residual") -> tuple:
    """The Reenact tab's inputs, in order, as raw payloads (uploads as FileData dicts)."""
    up = lambda p: None if p is None else file_data(p)   # noqa: E731
    return ("reenact", up(driver), up(target), rank, layers, beta, reference, smoothing, method, paste)


@pytest.fixture(scope="module")
def effect():
    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets

    _, E, deltas = build_tiny_nets()
    eff = Effect(EffectConfig(device="cpu"), encoder=E, directions=deltas, batching=True)
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
    import cv2

    d = tmp_path_factory.mktemp("reenact")
    frames = driver_frames(faces_dir)
    target = cv2.resize(cv2.imread(str(faces_dir / "mona_lisa.jpg")), (200, 240), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(d / "mona.jpg"), target)
    return {"driver": write_clip(d / "driver.mp4", frames), "target": d / "mona.jpg",
            "faceless_driver": write_clip(d / "nobody.mp4", [np.full_like(frames[0], 90)] * 6, audio=False),
            "shapes": no_face_photo(d / "shapes.png"), "frames": frames, "dir": d}


# ------------------------------------------------------------------ the clip door


def test_reenact_tab_keeps_the_drivers_frames_rate_and_audio_and_saves_the_options(api, effect, media,
                                                                                   monkeypatch):
    """Driver clip + target photo → the target moving like the driver: as many frames as the driver, its rate and
    audio; the options and fit beside the output and in the video's comment tag + its .json (upload names only);
    the faceless driver frames held and counted; the effect's own networks (nothing loaded a second time)."""
    from directions.reenact import ReenactOptions
    from stream import reenact_job

    def no_second_copy(*a, **k):
        raise AssertionError("the networks were loaded a second time")

    monkeypatch.setattr(reenact_job, "load_networks", no_second_copy)
    video, status, downloads, summary = api.call(*args(media["driver"], media["target"], smoothing=0.0))
    summary = getattr(summary, "root", summary)        # gr.JSON's payload
    path = Path(video["path"])
    got = decode(path)
    assert len(got["frames"]) == N_FRAMES and got["fps"] == pytest.approx(FPS)
    assert got["audio_s"] == pytest.approx(N_FRAMES / FPS, abs=0.1)
    assert all(f.shape[:2] == (240, 200) for f in got["frames"])           # the target photo's size
    frames = got["frames"]
    moved = [int(np.abs(f.astype(int) - frames[0].astype(int)).max()) for f in frames]
    assert max(moved) > 10, moved                       # the target moves with the driver (beyond codec noise)
    held = [int(np.abs(frames[i].astype(int) - frames[FACELESS[0] - 1].astype(int)).max()) for i in FACELESS]
    assert max(held) <= 6, held                         # no driver face: the last pose is held (H.264 noise only)

    meta = reenact_job.read_metadata(path)
    assert meta["options"] == ReenactOptions(rank=2, beta=BETA).to_dict()
    assert meta["subspace"]["method"] == "rpca" and meta["subspace"]["rank"] == 2 and meta["layers"] == [0, 10]
    assert meta["reference_frame"] == 0 and meta["frames"] == N_FRAMES and meta["held_frames"] == len(FACELESS)
    assert meta["paste_mode"] == "residual" and meta["door"] == "gradio"
    assert (meta["driver"], meta["target"]) == ("driver.mp4", "mona.jpg")
    assert meta["networks"] == "the effect's" and meta["device"] == "cpu"
    assert meta["precision"] == effect.editor.precision.name    # the live networks' own (CPU auto: bf16 G)
    assert summary["held_frame_indices"] == list(FACELESS) and summary["frames_written"] == N_FRAMES
    assert {k: summary[k] for k in meta} == meta                            # the JSON beside the output
    sidecar = [Path(d["path"]) for d in downloads if d["path"].endswith(".json")]
    assert len(downloads) == 2 and json.loads(sidecar[0].read_text()) == summary
    assert "/" not in json.dumps(meta) and "/" not in json.dumps(summary)  # no server folder is saved

    assert f"'mona.jpg' driven by 'driver.mp4': {N_FRAMES} frames at 12.00 fps (the driver's), audio kept" in status
    assert "motion: rpca rank 2, W+ layers 0:10, β 10, reference frame 0, smoothing 0 frames, paste residual" \
        in status, status
    assert f"no face in 2 of {N_FRAMES} driver frames: the last pose was held there" in status
    no_temporary_paths(status)


def test_progress_moves_through_every_stage_and_a_large_target_is_edited_bounded(effect, media, tmp_path):
    """The bar moves (fractions rise to 1 through the target, every driver frame, the fit, every rendered frame);
    a target larger than the working size is edited scaled down, said, and saved; the output has its size."""
    import cv2

    from directions.reenact import ReenactOptions
    from web.gradio_uploads import Limits
    from web.gradio_reenact import ReenactNetworks, reenact_clip
    from web.gradio_status import reenact_lines

    seen = []
    result = reenact_clip(ReenactNetworks(effect), media["driver"], media["target"], ReenactOptions(rank=2, beta=BETA),
                          "replace", out_dir=tmp_path, limits=Limits(work_side=160),
                          progress=lambda fraction, text: seen.append((fraction, text)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    texts = [t for _, t in seen]
    for text in ("finding and inverting the target face", f"inverting driver frame {N_FRAMES} of {N_FRAMES}",
                 "learning the driver's motion (rpca, rank 2)", f"rendering frame {N_FRAMES} of {N_FRAMES}"):
        assert text in texts, (text, texts)
    assert len(set(fractions)) >= N_FRAMES + 4
    assert result["size"] == (133, 160) and result["resized"] == ((200, 240), (133, 160))
    assert result["metadata"]["target_size"] == [133, 160] and result["metadata"]["target_uploaded_size"] == [200, 240]
    assert "target edited at 133×160 (uploaded 200×240, larger than the working size)" in reenact_lines(result)
    first = decode(result["video"])["frames"][0]
    assert first.shape[:2] == (160, 134)        # 4:2:0 video: an odd width gets one replicated column
    assert not list(tmp_path.glob("target-*"))  # the scaled target's working copy is gone
    assert cv2.imread(str(media["target"])).shape[:2] == (240, 200)   # the upload is untouched


def test_what_the_work_finds_is_said_beside_the_output(api, media):
    """No face in the target photo, none in any driver frame, too few face frames for the rank: no video, the
    reason beside it in the app's words (fields, not CLI flags; upload names, not server paths)."""
    said = []
    video, status, downloads, summary = api.call(*args(media["driver"], media["shapes"]))
    assert video is None and downloads is None and summary is None
    said.append(status)
    assert status == ("- **not reenacted**: no face found in 'shapes.png'; use a photo where one face is visible "
                      "and reasonably large"), status
    said.append(api.call(*args(media["faceless_driver"], media["target"]))[1])
    assert said[-1] == "- **not reenacted**: no driver frame has a face; use a clip where one face is visible"
    said.append(api.call(*args(media["driver"], media["target"], rank=12))[1])
    assert said[-1] == (f"- **not reenacted**: the driver has {N_FRAMES - len(FACELESS)} frames with a face: too few "
                        "for a rank-12 motion subspace; pass rank 9 or less, or use a longer clip"), said[-1]
    said.append(api.call(*args(media["driver"], media["target"], reference="5"))[1])   # the text box's payload
    assert said[-1] == ("- **not reenacted**: reference frame 5 of the driver has no face; pick a frame with a face "
                        "(the first is 0)"), said[-1]
    for text in said:
        no_temporary_paths(text.removeprefix("- **not reenacted**: "))


def test_bad_payloads_are_refused_in_one_line_before_any_work(api, effect, media):
    from web.gradio_app import build_app
    from web.gradio_uploads import Limits, UploadRefused, check_image_upload, check_video_upload

    d, face, clip = media["dir"], media["target"], media["driver"]
    expected = {
        "rank must be a whole number, got 2.5": args(clip, face, rank=2.5),
        "rank must be a finite number in [1, 64], got 0.0": args(clip, face, rank=0),
        "rank must be a number, got '2'": args(clip, face, rank="2"),
        "layers 'x' is not a range; write A:B (W+ layers A to B-1), e.g. 4:8": args(clip, face, layers="x"),
        "layers 0:12 are outside this generator's W+ layers 0:10; pass a range A:B with 0 <= A < B <= 10":
            args(clip, face, layers="0:12"),
        "beta must be a finite number, got nan": args(clip, face, beta=float("nan")),
        "smoothing must be a finite number in [0, 50], got 400.0": args(clip, face, smoothing=400.0),
        "method 'ica' is unknown; use one of rpca, pca, none": args(clip, face, method="ica"),
        "paste mode 'blend' is unknown; use one of residual, replace, none": args(clip, face, paste="blend"),
        "reference frame must be a whole number, got 1.5": args(clip, face, reference=1.5),
        "reference frame must be a whole number >= 0 or blank (the first frame with a face), got 'one'":
            args(clip, face, reference="one"),
    }
    for message, call in expected.items():
        assert api.refusal(*call) == message, message
    (d / "notes.txt").write_text("hello")
    for driver, target, check, bad in ((face, face, check_video_upload, face), (clip, d / "notes.txt",
                                                                              check_image_upload, d / "notes.txt")):
        with pytest.raises(UploadRefused) as ours:
            check(bad)
        got = api.refusal(*args(driver, target))
        assert got == str(ours.value), (got, str(ours.value))
        no_temporary_paths(got)
    assert api.refusal(*args(None, face)).startswith("no clip given")
    assert api.refusal(*args(clip, None)).startswith("no photo given")
    got = Api(build_app(effect, limits=Limits(max_driver_frames=5))).refusal(*args(clip, face))
    assert got == f"the driver clip 'driver.mp4' has {N_FRAMES} frames, over the reenactment limit of 5; upload a " \
                  "shorter clip", got


# ------------------------------------------------------------------ networks


def test_networks_missing_and_demo_are_said_in_both_reenact_tabs(home, media):
    from stream.effect import Effect, EffectConfig
    from stream.options import config_from_args
    from web.gradio import build_parser
    from web.gradio_app import build_app

    eff = Effect.open(EffectConfig(device="cpu"), batching=True)
    assert eff.info.state == "networks_missing" and eff.info.command
    app = build_app(eff)
    api = Api(app)
    try:
        for tab in ("reenact-status", "reenact-live-status"):
            text = status_of(app, tab)
            assert eff.info.notice in text and eff.info.command in text, (tab, text)
            assert "no directions installed" not in text    # directions do not matter to a reenactment
        video, status, _, _ = api.call(*args(media["driver"], media["target"]))
        assert video is None and status.startswith("- **not reenacted**: ") and eff.info.command in status, status
        frame = file_data(media["target"])
        _, line, _ = api.call("reenact_webcam", frame, file_data(media["target"]), 2, "", BETA, None, 0.0, "rpca",
                              "residual", 5, 0.0, None)
        assert eff.info.command in line, line
    finally:
        api.close()
        eff.close()

    demo = Effect.open(config_from_args(build_parser().parse_args(["--demo", "--device", "cpu"])), batching=True)
    try:
        _, status, _, _ = Api(build_app(demo)).call(*args(media["driver"], media["target"]))
        assert status == ("- **not reenacted**: demo effect: reenactment needs the StyleGAN networks; fetch them "
                          "with `python -m directions setup` and start without --demo"), status
    finally:
        demo.close()


def test_without_a_local_editor_the_networks_are_loaded_once(tmp_path):
    """An effect whose editor is not in this process (a remote backend): the clip job loads the networks once,
    fp32, from the effect's config; unloadable ones are said, in one line without server folders."""
    from types import SimpleNamespace

    from stream.editor import EditorInfo
    from stream.options import EffectConfig
    from tiny_weights import write_tiny_weights
    from web.gradio_reenact import NotReenacted, ReenactNetworks

    weights = write_tiny_weights(tmp_path / "w")
    info = EditorInfo(available=True, state="ready", notice=None, command=None, mode="live", crop_size=64,
                      direction_names=[], direction_meta={}, skipped_directions=[])
    remote = SimpleNamespace(info=info, editor=None, config=EffectConfig(encoder=str(weights["encoder"]),
                                                                         device="cpu"))
    networks = ReenactNetworks(remote)
    E, G, meta = networks.get()
    assert networks.get()[0] is E and networks.get()[1] is G
    assert (G.num_ws, G.w_dim) == (E.num_ws, E.w_dim) == (10, 32)
    assert meta["networks"] == "loaded for reenactment" and meta["precision"] == "fp32"
    import hashlib

    assert meta["encoder"] == "encoder.pt"
    assert meta["encoder_sha256"] == hashlib.sha256(weights["encoder"].read_bytes()).hexdigest()
    gone = SimpleNamespace(info=info, editor=None, config=EffectConfig(encoder=str(tmp_path / "nowhere" / "e.pt"),
                                                                       device="cpu"))
    with pytest.raises(NotReenacted) as exc:
        ReenactNetworks(gone).get()
    assert str(exc.value).startswith("the networks could not be loaded: ") and str(tmp_path) not in str(exc.value)


# ------------------------------------------------------------------ live


def test_live_reenactment_calibrates_drives_and_holds_a_lost_face(effect, media):
    """The webcam's face drives the target photo: calibrating (n/N) → driving (the pose's age) → driver lost
    (holding the last pose) when the face leaves; options change live; recalibrate starts over."""
    from directions.reenact import ReenactOptions
    from web.gradio_reenact import ReenactWebcam

    options = ReenactOptions(rank=2, beta=BETA)
    live = ReenactWebcam(effect, file_data(media["target"]), options, calibration=5, calibration_s=0.0)
    moving = [np.ascontiguousarray(f[..., ::-1]) for f in media["frames"][:FACELESS[0]]]
    rgb = moving + moving[-2:0:-1]          # forth and back: a head that moves without jumping
    seen = []
    try:
        assert live.line == "waiting for the camera to drive 'mona.jpg'"

        def until(state: str, frames: list, opts=options) -> str:
            deadline = time.monotonic() + 90
            k = 0
            while time.monotonic() < deadline:
                out = live.step(frames[k % len(frames)], opts)
                k += 1
                time.sleep(0.03)                      # a camera's pace: the editor keeps up with the face
                if out is not None:
                    assert out.shape == (240, 200, 3)     # the target photo's size, RGB
                if live.status is not None:
                    seen.append(live.line)
                    if live.status.state == state:
                        return live.line
            raise AssertionError(f"no {state!r} within 90 s; last: {live.line}")

        line = until("driving", rgb)
        assert line.startswith("**driving**: driving the target; pose ") and line.endswith(" ms old"), line
        assert any(s.startswith("**calibrating**: ") and "(" in s for s in seen), seen
        line = until("driver_lost", [np.full_like(rgb[0], 90)])
        assert line == "**driver lost**: driver face lost: holding the last pose", line
        until("driving", rgb, ReenactOptions(rank=2, beta=-BETA, smoothing=1.0))
        assert live.session.options.beta == -BETA and live.session.options.smoothing == 1.0
        live.recalibrate()
        assert until("calibrating", rgb).startswith("**calibrating**: ")
    finally:
        live.close()


def test_live_tab_says_why_it_cannot_start(api, media):
    frame = file_data(media["target"])     # any picture serves as a webcam frame payload

    def call(target, **kw):
        values = {"rank": 2, "layers": "", "beta": BETA, "reference": None, "smoothing": 0.0, "method": "rpca",
                  "paste": "residual", "calibration": 5, "calibration_s": 0.0, **kw}
        return api.call("reenact_webcam", frame, None if target is None else file_data(target), *values.values(),
                        None)

    out, line, _ = call(None)
    assert out is None and line == ("**not started**: no target photo given; upload the face photo the camera "
                                    "should drive"), line
    out, line, _ = call(media["shapes"])
    assert out is None and line == ("**not started**: no face found in 'shapes.png'; use a photo where one face is "
                                    "visible and reasonably large"), line
    _, line, _ = call(media["target"], paste="none")
    assert line == "**not started**: paste mode 'none' is unknown live; use one of residual, replace", line
    _, line, _ = call(media["target"], rank=8)
    assert line == ("**not started**: rank 8 needs more than 5 calibration latents; pass a rank of at most 4 or a "
                    "longer calibration"), line
    out, line, _ = call(media["target"])      # the same target: new options start what could not start
    assert out is not None and out["path"] and line.startswith(("**calibrating**", "**waiting**", "waiting")), line
    assert api.call("reenact_recalibrate", None)[0] == \
        "**calibrating**: recalibrating: start with a neutral face, then move your head"
    fresh = Api(api.app)                        # another browser: nothing started there
    assert fresh.call("reenact_recalibrate", None)[0].startswith("**not started**: nothing to recalibrate yet")


def test_a_clip_reenactment_and_a_live_edit_share_the_effect(effect, media, tmp_path):
    """The clip job runs on the effect's own networks while the webcam tab's live session edits through the
    effect's batching worker: both go on, neither spoils the other."""
    import threading

    import cv2

    from directions.reenact import ReenactOptions
    from web.gradio_edit import WebcamSession
    from web.gradio_reenact import ReenactNetworks, reenact_clip

    webcam = WebcamSession(effect)
    rgb = np.ascontiguousarray(cv2.resize(media["frames"][0], (320, 240))[..., ::-1])
    states, stop = [], threading.Event()

    def stream() -> None:
        while not stop.is_set():
            webcam.step(rgb, "smile", 3.0, animate=True)
            if webcam.status is not None:
                states.append(webcam.status.state)

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    try:
        result = reenact_clip(ReenactNetworks(effect), media["driver"], media["target"],
                              ReenactOptions(rank=2, beta=BETA), out_dir=tmp_path)
        n_during = len(states)
    finally:
        stop.set()
        worker.join(timeout=30)
        webcam.close()
    assert result["frames"] == N_FRAMES and result["held"] == len(FACELESS)
    assert len(decode(result["video"])["frames"]) == N_FRAMES
    assert n_during > 0 and "running" in states and "error" not in states, states[-10:]
