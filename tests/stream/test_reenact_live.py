"""Reenactment on the live path (stream.reenact_live) and its camera door (`python -m directions reenact --camera`).

Tiny random networks (`tiny_weights.build_tiny_nets`: ReStyle-pSp + StyleGAN2, 64 px, w_dim 32): the wiring is
real, the pictures are not. The driver is a real face photo moving (`stream.clips.clip_with_landmarks`: its
MediaPipe landmarks found once and moved with the frames), faceless frames are flat; the target is another real
face (mona_lisa.jpg) found by the real still-image landmarker.
"""
from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
import torch

from directions import __main__ as cli
from directions.reenact import ReenactOptions
from stream import reenact_job
from stream import status as st
from stream.clips import clip_with_landmarks
from stream.driver import FrameDriver
from stream.editor import FaceJob
from stream.effect import Effect, EffectConfig
from stream.reenact_live import ReenactSession
from stream.sources import VideoFileSource

BETA = 10.0      # the tiny random encoder barely follows its input: the motion is amplified to show in pictures
CALIB = 5        # calibration latents (tiny runs)
SIZE = (240, 320)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def moving():
    """(frames, landmarker factory): 40 frames of the real face 01.jpg swaying, nodding, rolling."""
    return clip_with_landmarks(40, size=SIZE, face_height=150)


@pytest.fixture(scope="module")
def still():
    return clip_with_landmarks(30, size=SIZE, face_height=150, amplitude=0.0)


@pytest.fixture(scope="module")
def target(faces_dir):
    import cv2

    return cv2.resize(cv2.imread(str(faces_dir / "mona_lisa.jpg")), (200, 240), interpolation=cv2.INTER_AREA)


def make_effect(nets, factory, batching=False, mode="live"):
    G, E, deltas = nets
    return Effect(EffectConfig(device="cpu", smoothing=False, mode=mode), encoder=copy.deepcopy(E),
                  directions=deltas, batching=batching, landmarker_factory=factory)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def new_session(effect, target, still_landmarker, clock=None, **kwargs):
    kwargs = {"calibration": CALIB, "calibration_s": 0.0, "target_steps": 3, "settle": 2, **kwargs}
    options = kwargs.pop("options", ReenactOptions(rank=2, beta=BETA))
    return effect.new_reenact_session(target, options, clock=clock or time.monotonic,
                                      target_landmarker=still_landmarker, **kwargs)


def play(session, frames, clock, start=0):
    """Each frame awaits its own pass (wait=True); the fake clock moves 1/30 s per frame. -> [Output]."""
    outs = []
    for i, frame in enumerate(frames):
        clock.t = (start + i) / 30
        outs.append(session.process(frame, wait=True))
    return outs


def diff(a, b) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


# ------------------------------------------------------------------------------------------------ the editor


def test_editor_renders_render_ws_and_still_inverts_the_crop(nets, target):
    """render_ws replaces the edit's latent only: the crop's inversion (w, base, memory) is that of a plain job;
    rendering w + 3·Δ_smile through render_ws gives the pixels of the coefficient path."""
    effect = make_effect(nets, None)
    editor = effect.editor
    crop = np.ascontiguousarray(target[:editor.crop_size, :editor.crop_size])
    crop = np.resize(crop, (editor.crop_size, editor.crop_size, 3)).astype(np.uint8)
    zero = np.zeros(len(editor.names), np.float32)
    smile = zero.copy()
    smile[editor.names.index("smile")] = 3.0
    plain, edited = editor.edit([FaceJob(crop, zero), FaceJob(crop, smile)])
    assert plain.ws.shape == (editor.num_ws, editor.w_dim) and plain.ws.dtype == np.float32
    assert np.allclose(plain.ws, plain.memory.ws.numpy())
    w_smile = plain.ws + 3.0 * editor.deltas[editor.names.index("smile")].numpy()
    rendered, other = editor.edit([FaceJob(crop, zero, render_ws=w_smile), FaceJob(crop, smile)])
    assert diff(rendered.edit, edited.edit) <= 1 and diff(rendered.edit, plain.edit) > 10
    assert diff(rendered.base, plain.base) <= 1 and np.allclose(rendered.ws, plain.ws, atol=1e-5)
    assert diff(other.edit, edited.edit) <= 1  # the other row of the batch keeps its own edit
    with pytest.raises(ValueError, match=r"render_ws must be \[10, 32\]"):
        editor.edit([FaceJob(crop, zero, render_ws=np.zeros((3, 32), np.float32))])
    effect.close()


def test_status_texts():
    assert st.describe(st.CALIBRATING, progress=(12, 40)).endswith("move your head (12/40)")
    assert st.describe(st.CALIBRATING, progress=(40, 40)) == "calibrating: learning the driver's motion"
    assert st.describe(st.DRIVING, edit_age_ms=80) == "driving the target; pose 80 ms old"
    assert st.describe(st.DRIVER_LOST) == "driver face lost: holding the last pose"
    assert {st.CALIBRATING, st.DRIVING, st.DRIVER_LOST} <= set(st.STATES)


# ------------------------------------------------------------------------------------------------ the session


def test_calibrates_drives_holds_a_lost_face_and_resumes(nets, moving, target, still_landmarker):
    frames, factory = moving
    effect = make_effect(nets, factory)
    clock = FakeClock()
    session = new_session(effect, target, still_landmarker, clock)
    blank = [np.full_like(frames[0], 90) for _ in range(4)]
    outs = play(session, frames[:20], clock) + play(session, blank, clock, 20) + play(session, frames[20:], clock, 24)
    states = [o.status.state for o in outs]
    assert all(o.frame.shape == target.shape and o.frame.dtype == np.uint8 for o in outs)
    # calibration first (settle=2 latents skipped, then CALIB collected), the photo untouched meanwhile
    first_drive = states.index(st.DRIVING)
    calib = [o for o in outs[:first_drive] if o.status.state == st.CALIBRATING]
    assert calib and all(diff(o.frame, target) == 0 for o in outs[:first_drive])
    assert calib[0].status.message.endswith(f"(0/{CALIB})") and f"({CALIB - 1}/{CALIB})" in calib[-1].status.message
    assert session.fit is not None and session.fit.frames == CALIB and session.fit.reference == 0
    # driving: the target moves with the driver, its pose one pass old (each frame its own pass here)
    driving = [o for o in outs[first_drive:20]]
    assert all(o.status.state == st.DRIVING and o.status.edited_faces == 1 for o in driving)
    assert all(o.status.edit_age_ms == pytest.approx(1000 / 30) for o in driving)
    assert max(diff(o.frame, target) for o in driving) > 20
    assert len({o.frame.tobytes() for o in driving}) > 3
    # the face is lost: the last pose is held (not the rest pose), the status says so
    lost = outs[20:24]
    assert all(o.status.state == st.DRIVER_LOST and "holding the last pose" in o.status.message for o in lost)
    assert all(np.array_equal(o.frame, lost[0].frame) for o in lost) and diff(lost[0].frame, target) > 20
    assert lost[-1].status.edit_age_ms > lost[0].status.edit_age_ms  # the held pose ages
    assert session.reenactor.state.held == 1  # one step holding the pose, then nothing sent while lost
    # found again: its memory restarts, the pose stays held while it settles, then it drives again
    back = outs[24:]
    assert back[0].status.state == st.DRIVER_LOST and "found again, settling" in back[0].status.message
    assert np.array_equal(back[0].frame, lost[0].frame)
    assert back[-1].status.state == st.DRIVING
    stats = session.stats()
    assert stats["errors"] == 0 and stats["reenact"]["phase"] == st.DRIVING
    assert stats["reenact"]["held_frames"] == states.count(st.DRIVER_LOST)
    summary = session.summary()
    assert summary["options"] == ReenactOptions(rank=2, beta=BETA).to_dict()
    assert summary["reference_frame"] == 0 and summary["calibration_frames"] == CALIB
    assert summary["subspace"]["rank"] == 2 and summary["layers"] == [0, effect.editor.num_ws]
    assert summary["paste_mode"] == "residual" and summary["calibration"] == CALIB
    json.dumps(summary)
    session.close()
    effect.close()


def test_a_still_driver_leaves_the_target_as_it_is(nets, still, moving, target, still_landmarker):
    """residual paste: photo + G(w_t) − G(V). Paper mode (every pass inverts its crop from the average latent): a
    still driver gives the same latent every pass, so the target stays the photo; the moving driver, same settings,
    moves it. (Live mode's temporal ReStyle on a still face converges with trained weights; a random tiny encoder's
    residual never vanishes, so its latents drift: that mode is not a still driver here.)"""
    results = {}
    for name, (frames, factory) in (("still", still), ("moving", moving)):
        effect = make_effect(nets, factory, mode="paper")
        clock = FakeClock()
        session = new_session(effect, target, still_landmarker, clock, options=ReenactOptions(rank=2, beta=BETA))
        outs = play(session, frames[:12], clock)
        driving = [o.frame for o in outs if o.status.state == st.DRIVING]
        assert len(driving) >= 5 and session.target.steps == 1, [o.status.state for o in outs]
        results[name] = max(diff(f, target) for f in driving)
        session.close()
        effect.close()
    print(f"\nlargest pixel change of the target: still driver {results['still']}, moving {results['moving']}")
    assert results["still"] <= 1 and results["moving"] > 3   # random tiny networks: any clear motion


def test_options_change_live_and_bad_ones_are_one_line(nets, moving, target, still_landmarker):
    frames, factory = moving
    effect = make_effect(nets, factory)
    clock = FakeClock()
    session = new_session(effect, target, still_landmarker, clock)
    play(session, frames[:12], clock)
    fit = session.fit
    assert fit is not None
    session.set_options({"beta": 2.0})                       # β: the same fit, a new reenactor
    play(session, frames[12:14], clock, 12)
    assert session.fit is fit and session.reenactor.beta == 2.0
    session.set_options({"rank": 3, "layers": "2:6"})        # the subspace: refit on the same calibration latents
    play(session, frames[14:16], clock, 14)
    assert session.fit is not fit and session.fit.subspace.rank == 3 and session.fit.subspace.layers == (2, 6)
    assert session.summary()["options"]["layers"] == [2, 6] and session.summary()["options"]["beta"] == 2.0
    with pytest.raises(ValueError, match="rank 5 needs more than 5 calibration latents"):
        session.set_options({"rank": 5})
    with pytest.raises(ValueError, match="outside this generator's W\\+ layers"):
        session.set_options({"layers": [4, 40]})
    with pytest.raises(ValueError, match="unknown reenactment option"):
        session.set_options({"bta": 1})
    session.recalibrate()
    out = session.process(frames[16], wait=True)
    assert out.status.state == st.CALIBRATING and session.fit is None and diff(out.frame, target) == 0
    session.close()
    with pytest.raises(ValueError, match="no face found in the target photo"):
        new_session(effect, np.full((100, 120, 3), 128, np.uint8), still_landmarker)
    with pytest.raises(ValueError, match="reference 7 is past the calibration window"):
        new_session(effect, target, still_landmarker, options=ReenactOptions(rank=2, reference=7))
    with pytest.raises(ValueError, match="live reenactment pastes with residual or replace"):
        new_session(effect, target, still_landmarker, paste_mode="none")
    effect.close()


def test_without_networks_the_target_is_shown_and_the_status_says_why(moving, target, still_landmarker):
    frames, factory = moving
    tracking = Effect.open(EffectConfig(device="cpu", smoothing=False, tracking_only=True), batching=False,
                           landmarker_factory=factory)
    demo = Effect.open(EffectConfig(device="cpu", demo=True, smoothing=False), batching=False,
                       landmarker_factory=factory)
    for effect, state, words in ((tracking, st.TRACKING_ONLY, "face tracking only"),
                                 (demo, st.NETWORKS_MISSING, "reenactment needs the StyleGAN networks")):
        session = effect.new_reenact_session(target, target_landmarker=still_landmarker)
        assert not session.available
        out = session.process(frames[0], wait=True)
        assert out.status.state == state and words in out.status.message and out.status.faces == 1
        assert np.array_equal(out.frame, target)
        session.close()
        effect.close()


def test_a_synthetic_camera_through_the_frame_driver(nets, moving, target, still_landmarker):
    """The door's way: frames pushed at a camera's pace through the latest-frame driver, the editor behind the
    batching backend; every output is the target (its size), the states go calibrating -> driving -> driver_lost."""
    frames, factory = moving
    effect = make_effect(nets, factory, batching=True)
    session = new_session(effect, target, still_landmarker)
    seen: list = []
    driver = FrameDriver(session, on_output=lambda frame, info: seen.append((frame.shape, info["status"]))).start()
    blank = np.full_like(frames[0], 90)

    def push_until(state, source, limit=1500):
        for i in range(limit):
            driver.push(source[i % len(source)])
            time.sleep(1 / 60)
            if seen and seen[-1][1] is not None and seen[-1][1].state == state:
                return i + 1
        raise AssertionError(f"no {state} output after {limit} frames; last {seen[-1][1] if seen else None}")

    push_until(st.DRIVING, frames)
    push_until(st.DRIVER_LOST, [blank])
    driver.stop(drain=True)
    stats = driver.stats()
    session.close()
    effect.close()
    assert stats["frames_in"] == stats["processed"] + stats["dropped"] == len(seen)
    assert all(shape == target.shape for shape, _ in seen)
    states = [s.state for _, s in seen]
    assert states.index(st.CALIBRATING) < states.index(st.DRIVING) < states.index(st.DRIVER_LOST)
    assert stats["errors"] == 0 and stats["reenact"]["phase"] == st.DRIVING and stats["edits"] > CALIB
    assert seen[-1][1].message == "driver face lost: holding the last pose"


# ------------------------------------------------------------------------------------------------ the camera door


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from tiny_weights import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


class FakeWebcam:
    """Stands in for stream.sources.WebcamSource: the moving face (then a few faceless frames), at 30 fps."""

    frames: list = []
    opened: list = []

    def __init__(self, index=0, **_):
        self.index, self.fps, self.width, self.height = index, 30.0, SIZE[1], SIZE[0]
        FakeWebcam.opened.append(index)

    def __iter__(self):
        for i, frame in enumerate(FakeWebcam.frames):
            time.sleep(1 / 30)
            yield frame, i / 30

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_cli_camera_writes_the_target_video_with_its_options(weights, moving, target, tmp_path, monkeypatch, capsys):
    import cv2

    from stream import sources

    frames, _ = moving
    FakeWebcam.frames = frames[:30] + [np.full_like(frames[0], 90)] * 3
    monkeypatch.setattr(sources, "WebcamSource", FakeWebcam)
    cv2.imwrite(str(tmp_path / "target.png"), target)
    out = tmp_path / "cam.mp4"
    rc = cli.main(["reenact", "--camera", "3", "--target", str(tmp_path / "target.png"), "--out", str(out),
                   "--encoder", str(weights["encoder"]), "--device", "cpu", "--rank", "2", "--layers", "1:8",
                   "--beta", "4", "--smoothing", "1", "--calibration", "4", "--calibration-seconds", "0", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert FakeWebcam.opened[-1] == 3 and f"{out}  (" in captured.out and f"{out}.json" in captured.out
    with VideoFileSource(out) as video:
        written = [f for f, _ in video]
    assert written and all(f.shape == target.shape for f in written)
    tag = reenact_job.read_metadata(out)
    assert tag["options"] == {"rank": 2, "layers": [1, 8], "beta": 4.0, "reference": None, "smoothing": 1.0,
                              "method": "rpca", "lmbda": None, "max_fit_frames": 512}
    assert tag["live"] is True and tag["driver"] == "camera 3" and tag["calibration"] == 4
    assert tag["calibration_s"] == 0.0 and tag["paste_mode"] == "residual" and tag["frames"] == len(written)
    assert tag["encoder_kind"] == "restyle_psp" and len(tag["encoder_sha256"]) == 64 and tag["device"] == "cpu"
    side = json.loads((tmp_path / "cam.mp4.json").read_text())
    print("\nstates written:", side["states"], "stats:", {k: side["stats"][k] for k in ("frames_in", "dropped", "edits")})
    assert side["options"] == tag["options"] and sum(side["states"].values()) == len(written)
    assert side["stats"]["frames_in"] == len(FakeWebcam.frames)
    assert "[micromotion] calibrating" in captured.err  # -q: state changes on stderr
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("args,message", [
    (["--paste-mode", "none"], "live reenactment pastes with residual or replace"),
    (["--rank", "6", "--calibration", "4"], "rank 6 needs more than 4 calibration latents"),
    (["--seconds", "0"], "--seconds must be > 0"),
    (["--camera-fails"], "cannot open webcam 0: check that a camera is connected"),
])
def test_cli_camera_usage_errors_are_one_line(target, tmp_path, monkeypatch, capsys, args, message):
    import cv2

    from stream import sources

    def refuse(index=0, **_):
        raise RuntimeError(f"cannot open webcam {index}: check that a camera is connected and not used by another "
                           f"program, or pick another index")

    monkeypatch.setattr(sources, "WebcamSource", refuse if args == ["--camera-fails"] else FakeWebcam)
    args = [] if args == ["--camera-fails"] else args
    cv2.imwrite(str(tmp_path / "t.png"), target)
    rc = cli.main(["reenact", "--camera", "0", "--target", str(tmp_path / "t.png"), "--out", str(tmp_path / "o.mp4"),
                   *args, "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
