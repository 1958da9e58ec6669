"""stream.effect: the per-frame Effect on a real face frame with tiny random networks.

The networks are tiny random StyleGAN2 / ReStyle-pSp models (64 px, w_dim 32): the wiring is real (landmarks,
FFHQ alignment, temporal ReStyle, edit, one batched G call, paste-back), only the weights are not.
"""
from __future__ import annotations

import copy
import logging

import cv2
import numpy as np
import pytest
import torch

from stream.editor import crops_to_input
from stream.effect import (
    DOWNLOAD_COMMAND,
    Controls,
    Effect,
    EffectConfig,
    WeightsMissing,
    animation_t,
    landmark_jump,
)

RES = 64


# ---------------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tiny_nets():
    """(G, E, directions): tiny random generator, ReStyle-pSp encoder with G as decoder, two directions."""
    from engine.encoders import Encoder, build_network
    from engine.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(resolution=RES, w_dim=32, z_dim=32, n_mapping=2, channel_multiplier=1, channel_max=32)
    net = build_network("restyle_psp", num_ws=G.num_ws, w_dim=G.w_dim, widths=(8, 8, 16, 16), units=(1, 1, 1, 1),
                        input_size=64)
    E = Encoder(net, "restyle_psp", G.estimate_latent_avg(256), decoder=G, n_iters=5).eval()
    gen = torch.Generator().manual_seed(1)
    d1 = torch.randn(G.num_ws, G.w_dim, generator=gen) * 0.5
    d2 = torch.randn(G.num_ws, G.w_dim, generator=gen) * 0.5
    return G, E, {"smile": d1, "blink": d2, "both": d1 + d2}


@pytest.fixture(scope="module")
def face_frame(faces_dir):
    """A 480x640 BGR frame with the (downscaled) real face 01.jpg in it, on a textured background."""
    face = cv2.imread(str(faces_dir / "01.jpg"))
    face = cv2.resize(face, (300, 300), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    frame = rng.integers(40, 200, (480, 640, 3), dtype=np.uint8)
    frame[90:390, 170:470] = face
    return frame


@pytest.fixture(scope="module")
def face_landmarks(face_frame):
    """Real MediaPipe landmarks of the face in `face_frame` (still-image mode), [478, 2]."""
    from stream.face.landmarks import FaceMeshLandmarker

    with FaceMeshLandmarker(max_faces=2, video_mode=False) as lm:
        found = lm.detect(face_frame)
    assert len(found) == 1, "MediaPipe should find the face of 01.jpg"
    return found[0]


class ReplayLandmarker:
    """Returns the given landmark sets for every frame that is not flat (a flat frame has no face)."""

    def __init__(self, faces, fail_on=None):
        self.faces = [np.asarray(f, np.float32) for f in faces]
        self.calls = 0
        self.fail_on = fail_on or {}

    def detect(self, frame):
        self.calls += 1
        if self.calls in self.fail_on:
            raise self.fail_on[self.calls]
        if np.ptp(frame) == 0:
            return []
        return [f.copy() for f in self.faces]

    def close(self):
        pass


def make_effect(tiny_nets, landmarks=None, mode="live", **cfg):
    G, E, dirs = tiny_nets
    E = copy.deepcopy(E)  # the effect prepares its modules in place
    config = EffectConfig(device="cpu", mode=mode, smoothing=False, **cfg)
    factory = None if landmarks is None else (lambda: ReplayLandmarker(landmarks))
    return Effect(config, encoder=E, directions=dirs, landmarker_factory=factory)


def frame_mask(effect, frame, landmarks, dilate=3):
    """Where paste-back may write: the feathered face mask warped into the frame, dilated a little."""
    from stream.face.align import align_face
    from stream.face.paste import face_mask

    aligned = align_face(frame, landmarks, size=effect.info.crop_size)
    mask = face_mask(aligned, aligned.size)
    warped = cv2.warpAffine(mask.astype(np.float32), aligned.inverse_at(mask.shape[0]),
                            (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR)
    region = (warped > 0).astype(np.uint8)
    return cv2.dilate(region, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)) > 0


# ---------------------------------------------------------------------------------------------------------------------
# end to end


def test_real_face_edited_inside_mask_only(tiny_nets, face_frame, face_landmarks):
    effect = make_effect(tiny_nets)  # the real MediaPipe landmarker, video mode
    state = effect.new_session()
    controls = Controls(directions={"smile": 3.0}, paste_mode="residual")
    try:
        out = effect.process(face_frame, controls, state)
    finally:
        state.close()
    assert out.shape == face_frame.shape and out.dtype == np.uint8 and out is not face_frame
    stats = state.stats()
    assert stats["edited"] == 1 and stats["errors"] == 0
    inside = frame_mask(effect, face_frame, face_landmarks, dilate=0)
    outside = ~frame_mask(effect, face_frame, face_landmarks, dilate=6)
    diff = np.abs(out.astype(int) - face_frame.astype(int)).max(axis=2)
    assert diff[inside].mean() > 2.0, "the face should change"
    assert np.array_equal(out[outside], face_frame[outside]), "pixels outside the mask must be untouched"
    for stage in ("landmarks", "align", "encode", "generate", "paste"):
        assert stats["stage_ms"][stage] >= 0.0


def test_no_face_and_disabled_pass_through(tiny_nets, face_frame, face_landmarks):
    effect = make_effect(tiny_nets, [face_landmarks])
    state = effect.new_session()
    flat = np.full((240, 320, 3), 128, np.uint8)
    out = effect.process(flat, Controls(directions={"smile": 3.0}), state)
    assert out is flat and np.all(out == 128)
    off = effect.process(face_frame, Controls(directions={"smile": 3.0}, enabled=False), state)
    assert off is face_frame
    stats = state.stats()
    assert stats["no_face"] == 1 and stats["disabled"] == 1 and stats["edited"] == 0


def test_no_face_with_real_landmarker(tiny_nets):
    effect = make_effect(tiny_nets)
    state = effect.new_session()
    noise = np.random.default_rng(3).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    before = noise.copy()
    try:
        out = effect.process(noise, Controls(directions={"smile": 3.0}), state)
    finally:
        state.close()
    assert out is noise and np.array_equal(out, before)


def test_animation_sweep(tiny_nets, face_frame, face_landmarks):
    c = Controls(directions={"smile": 2.0}, animate=True, period_s=2.0)
    ts = [animation_t(c, s) for s in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)]
    assert ts == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.5])
    assert animation_t(Controls(t=0.3), 123.0) == pytest.approx(0.3)

    effect = make_effect(tiny_nets, [face_landmarks])
    now = [100.0]
    state = effect.new_session(clock=lambda: now[0])
    outs = []
    for s in (0.0, 1.0):  # t = 0 then t = 1
        now[0] = 100.0 + s
        outs.append(effect.process(face_frame, c, state))
        assert state.stats()["t"] == pytest.approx(s)
    # residual paste with t = 0: G(w') - G(w) = 0, so the frame comes back exactly; t = 1 edits it
    assert np.array_equal(outs[0], face_frame)
    assert not np.array_equal(outs[1], face_frame)


def test_mixed_directions_are_summed(tiny_nets, face_frame, face_landmarks):
    effect = make_effect(tiny_nets, [face_landmarks], mode="paper")  # stateless encoding: same w each time
    mixed = effect.process(face_frame, Controls(directions={"smile": 1.5, "blink": 1.5}), effect.new_session())
    summed = effect.process(face_frame, Controls(directions={"both": 1.5}), effect.new_session())
    single = effect.process(face_frame, Controls(directions={"smile": 1.5}), effect.new_session())
    assert np.abs(mixed.astype(int) - summed.astype(int)).max() <= 1
    assert np.abs(mixed.astype(int) - single.astype(int)).max() > 5


def test_residual_vs_replace(tiny_nets, face_frame, face_landmarks):
    effect = make_effect(tiny_nets, [face_landmarks], mode="paper")
    none = {"smile": 0.0}
    res0 = effect.process(face_frame, Controls(directions=none, paste_mode="residual"), effect.new_session())
    rep0 = effect.process(face_frame, Controls(directions=none, paste_mode="replace"), effect.new_session())
    assert np.array_equal(res0, face_frame)  # nothing to add
    assert not np.array_equal(rep0, face_frame)  # the (random) generator's face replaces the real one
    rep3 = effect.process(face_frame, Controls(directions={"smile": 3.0}, paste_mode="replace"), effect.new_session())
    res3 = effect.process(face_frame, Controls(directions={"smile": 3.0}, paste_mode="residual"), effect.new_session())
    # replace pastes G(w'); residual adds G(w') - G(w): they differ from each other by (G(w) - real face)
    assert not np.array_equal(rep3, res3)
    inside = frame_mask(effect, face_frame, face_landmarks, dilate=0)
    d_rep = np.abs(rep3.astype(int) - rep0.astype(int))[inside]
    d_res = np.abs(res3.astype(int) - face_frame.astype(int))[inside]
    assert d_rep.mean() > 1 and d_res.mean() > 1


def test_several_faces_batched(tiny_nets, face_frame, face_landmarks):
    wide = np.concatenate([face_frame, face_frame], axis=1)  # the face twice, side by side
    second = face_landmarks + np.array([face_frame.shape[1], 0], np.float32)
    effect = make_effect(tiny_nets, [face_landmarks, second])
    seen = []
    fwd = effect.editor.E.encoder.forward
    effect.editor.E.encoder.forward = lambda x: (seen.append(tuple(x.shape)), fwd(x))[1]
    state = effect.new_session()
    out = effect.process(wide, Controls(directions={"smile": 3.0}), state)
    assert seen == [(2, 6, 64, 64)]  # one encoder call for both faces
    left, right = out[:, :640], out[:, 640:]
    assert not np.array_equal(left, face_frame) and not np.array_equal(right, face_frame)
    # same face, same latent start -> the same edit (up to float rounding across the batch)
    assert np.abs(left.astype(int) - right.astype(int)).max() <= 1
    assert len(state.faces) == 2 and all(t.memory is not None for t in state.faces)


def test_temporal_restyle_refines_and_resets(tiny_nets, face_frame, face_landmarks):
    effect = make_effect(tiny_nets, [face_landmarks])
    land = ReplayLandmarker([face_landmarks])
    effect._landmarker_factory = lambda: land
    state = effect.new_session()
    c = Controls(directions={"smile": 2.0})
    effect.process(face_frame, c, state)
    (mem,) = [t.memory for t in state.faces]
    w1 = mem.ws.clone()
    effect.process(face_frame, c, state)
    (mem,) = [t.memory for t in state.faces]
    w2 = mem.ws.clone()
    # one step per frame from the previous (w, G(w)): the latent moves on
    assert not torch.allclose(w1, w2)
    # the same as two ReStyle iterations from the average
    x = torch.from_numpy(np.stack([mem_crop(effect, face_frame, face_landmarks)]))
    with torch.no_grad():
        ref = effect.editor.E(crops_to_input(x, 64, torch.float32), n_iters=2)[0]
    torch.testing.assert_close(w2, ref, rtol=1e-4, atol=1e-4)
    assert state.stats()["resets"] == 0
    moved = face_landmarks + np.array([150.0, 0.0], np.float32)  # a jump by half a face
    moved_frame = np.ascontiguousarray(np.roll(face_frame, 150, axis=1))  # (the face moves too: it is checked)
    land.faces = [moved]
    effect.process(moved_frame, c, state)
    # a new track (tracker) or a jump (effect): either way ONE iteration from the average, not from w2
    (mem,) = [t.memory for t in state.faces]
    x = torch.from_numpy(np.stack([mem_crop(effect, moved_frame, moved)]))
    with torch.no_grad():
        ref1 = effect.editor.E(crops_to_input(x, 64, torch.float32), n_iters=1)[0]
    torch.testing.assert_close(mem.ws, ref1, rtol=1e-4, atol=1e-4)


def mem_crop(effect, frame, landmarks):
    """The crop the effect's tracker (default aligner, no smoothing) makes of this face."""
    from stream.face.tracking import FaceTracker

    with FaceTracker(landmarker=ReplayLandmarker([landmarks]), align_size=effect.info.crop_size, smooth=False,
                     aligner=effect.config.aligner_for(effect.info.device_type)) as t:
        return t.track(frame, 0.0)[0].aligned.crop


def test_two_streams_are_independent(tiny_nets, face_frame, face_landmarks):
    effect = make_effect(tiny_nets, [face_landmarks])
    c = Controls(directions={"smile": 2.0})
    a = effect.new_session()
    a_first = effect.process(face_frame, c, a)
    for _ in range(2):
        effect.process(face_frame, c, a)
    b = effect.new_session()
    b_first = effect.process(face_frame, c, b)
    assert np.array_equal(a_first, b_first)  # B starts fresh: A's history does not leak into it
    (wa,), (wb,) = [t.memory.ws for t in a.faces], [t.memory.ws for t in b.faces]
    assert not torch.allclose(wa, wb)
    assert a.stats()["frames"] == 3 and b.stats()["frames"] == 1


def test_exception_passes_frame_through_counted_logged_once(tiny_nets, face_frame, face_landmarks, caplog):
    fails = {2: RuntimeError("landmarker crashed"), 3: RuntimeError("landmarker crashed"),
             4: MemoryError("out of memory")}
    effect = make_effect(tiny_nets)
    effect._landmarker_factory = lambda: ReplayLandmarker([face_landmarks], fail_on=fails)
    state = effect.new_session()
    c = Controls(directions={"smile": 3.0})
    outs = []
    with caplog.at_level(logging.ERROR, logger="stream.session"):
        for _ in range(5):
            outs.append(effect.process(face_frame, c, state))
    assert [o is face_frame for o in outs] == [False, True, True, True, False]
    stats = state.stats()
    assert stats["errors"] == 3 and stats["edited"] == 2 and stats["frames"] == 5
    assert stats["errors_by_kind"] == {"RuntimeError: landmarker crashed": 2, "MemoryError: out of memory": 1}
    logged = [r for r in caplog.records if "passed through unchanged" in r.getMessage()]
    assert len(logged) == 2  # once per kind


def test_network_exception_passes_through(tiny_nets, face_frame, face_landmarks):
    effect = make_effect(tiny_nets, [face_landmarks])
    state = effect.new_session()
    runner = effect.editor._synth_runner
    good = runner.fn
    runner.fn = lambda *a: (_ for _ in ()).throw(RuntimeError("CUDA error: an illegal memory access"))
    assert effect.process(face_frame, Controls(directions={"smile": 3.0}), state) is face_frame
    runner.fn = good
    assert effect.process(face_frame, Controls(directions={"smile": 3.0}), state) is not face_frame
    assert state.stats()["errors"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# controls, config, missing weights


def test_controls_from_dict_validation():
    c = Controls.from_dict({"directions": {"smile": 2, "blink": -1.5}, "animate": True, "period_s": 3},
                           available=["smile", "blink"])
    assert c.directions == {"smile": 2.0, "blink": -1.5} and c.animate and c.period_s == 3.0
    assert Controls.from_dict(c.to_dict()) == c
    bad = [
        ({"directions": {"frown": 1}}, "unknown direction"),
        ({"directions": {"smile": "lots"}}, "must be a number"),
        ({"directions": {"smile": float("nan")}}, "finite"),
        ({"directions": {"smile": 1e6}}, "finite number in"),
        ({"directions": [1, 2]}, "object of name"),
        ({"animate": "yes"}, "true or false"),
        ({"period_s": 0}, "period_s"),
        ({"t": 1.5}, "t must be"),
        ({"paste_mode": "blend"}, "paste_mode"),
        ({"speed": 1}, "unknown control"),
    ]
    for data, msg in bad:
        with pytest.raises(ValueError, match=msg):
            Controls.from_dict(data, available=["smile", "blink"])
    with pytest.raises(ValueError, match="JSON object"):
        Controls.from_dict([("a", 1)])


def test_config_validation():
    with pytest.raises(ValueError, match="unknown mode"):
        EffectConfig(mode="fast")
    with pytest.raises(ValueError, match="max_faces"):
        EffectConfig(max_faces=0)
    assert EffectConfig(directions="smile").directions == ("smile",)


def test_unknown_direction_in_process_is_a_clear_error(tiny_nets, face_frame, face_landmarks):
    effect = make_effect(tiny_nets, [face_landmarks])
    with pytest.raises(ValueError, match="unknown direction"):
        effect.process(face_frame, {"directions": {"frown": 1.0}})
    assert sorted(effect.available_directions) == ["blink", "both", "smile"]


def test_landmark_jump():
    a = np.zeros((478, 2), np.float32)
    a[:, 0] = np.linspace(0, 100, 478)
    assert landmark_jump(a, a) == 0.0
    assert landmark_jump(a, a + 50) == pytest.approx(np.hypot(50, 50) / 100)


def test_no_weights_raises_weightsmissing_with_the_command(tmp_path, monkeypatch, face_frame, face_landmarks):
    from engine.weights import MissingWeightsError

    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path))
    with pytest.raises(WeightsMissing) as info:
        Effect(EffectConfig(device="cpu"))
    assert isinstance(info.value, MissingWeightsError)
    assert DOWNLOAD_COMMAND in str(info.value) and info.value.command == DOWNLOAD_COMMAND
    assert str(info.value).count("python -m ") == 1  # ONE command (networks and directions)

    effect = Effect.open(EffectConfig(device="cpu"), batching=False,
                         landmarker_factory=lambda: ReplayLandmarker([face_landmarks]))
    assert not effect.info.available and DOWNLOAD_COMMAND in effect.notice
    state = effect.new_session()
    out = effect.process(face_frame, Controls(), state)
    assert out.shape == face_frame.shape and not np.array_equal(out, face_frame)  # the face is drawn
    flat = np.zeros((100, 100, 3), np.uint8)
    assert effect.process(flat, Controls(), state) is flat


def test_directions_loaded_from_files(tiny_nets, tmp_path, face_frame, face_landmarks):
    from directions.files import Direction, save

    G, E, dirs = tiny_nets
    save(Direction("smile", dirs["smile"], {}), tmp_path / "smile.safetensors")
    save(Direction("blink", dirs["blink"][:1], {"layers": "all"}), tmp_path / "blink.safetensors")  # [1, w_dim]
    config = EffectConfig(device="cpu", directions_dir=str(tmp_path), smoothing=False)
    effect = Effect(config, encoder=copy.deepcopy(E), landmarker_factory=lambda: ReplayLandmarker([face_landmarks]))
    assert sorted(effect.available_directions) == ["blink", "smile"]
    torch.testing.assert_close(effect.editor.deltas[effect.available_directions.index("blink")],
                               dirs["blink"][:1].expand(G.num_ws, G.w_dim))
    only = Effect(EffectConfig(device="cpu", directions=("smile",), directions_dir=str(tmp_path)),
                  encoder=copy.deepcopy(E))
    assert only.available_directions == ["smile"]
    with pytest.raises(FileNotFoundError, match="frown"):
        Effect(EffectConfig(device="cpu", directions=("frown",), directions_dir=str(tmp_path)),
               encoder=copy.deepcopy(E))
    out = effect.process(face_frame, Controls(directions={"smile": 2.0, "blink": 1.0}), effect.new_session())
    assert out is not face_frame


def test_stray_direction_file_in_folder_is_skipped_but_a_named_one_is_refused(tiny_nets, tmp_path, caplog):
    import torch as _torch

    from directions.files import Direction, save

    G, E, dirs = tiny_nets
    save(Direction("smile", dirs["smile"], {}), tmp_path / "smile.safetensors")
    wrong = _torch.zeros(G.num_ws + 2, G.w_dim)  # made for a generator with more layers
    save(Direction("other", wrong, {}), tmp_path / "other.safetensors")
    with caplog.at_level(logging.WARNING, logger="stream.loader"):
        effect = Effect(EffectConfig(device="cpu", directions_dir=str(tmp_path)), encoder=copy.deepcopy(E))
    assert effect.available_directions == ["smile"]
    assert any("other.safetensors" in r.getMessage() for r in caplog.records)
    with pytest.raises(Exception, match="made for another generator"):
        Effect(EffectConfig(device="cpu", directions=("other",), directions_dir=str(tmp_path)),
               encoder=copy.deepcopy(E))


def test_feather_setting_reaches_the_mask(tiny_nets, face_frame, face_landmarks):
    c = Controls(directions={"smile": 3.0})
    soft = make_effect(tiny_nets, [face_landmarks], mode="paper", feather_px=30.0)
    hard = make_effect(tiny_nets, [face_landmarks], mode="paper", feather_px=1.0)
    a = soft.process(face_frame, c, soft.new_session())
    b = hard.process(face_frame, c, hard.new_session())
    changed = lambda img: (np.abs(img.astype(int) - face_frame.astype(int)).max(axis=2) > 0)  # noqa: E731
    assert changed(a).sum() > changed(b).sum()  # a wider feather reaches further out


def test_live_mode_renders_at_live_resolution_and_paper_mode_at_full(tiny_nets, face_frame, face_landmarks):
    G, E, dirs = tiny_nets
    small = RES // 2
    live = make_effect(tiny_nets, [face_landmarks], live_resolution=small)
    paper = make_effect(tiny_nets, [face_landmarks], mode="paper", live_resolution=small)
    assert (live.editor.render_resolution, live.info.crop_size) == (small, small)
    assert (paper.editor.render_resolution, paper.info.crop_size) == (RES, RES)
    calls = []
    real_forward = live.editor.G.forward
    live.editor.G.forward = lambda ws, out_resolution=None: calls.append(out_resolution) or real_forward(ws, out_resolution)
    c = Controls(directions={"smile": 3.0})
    state = live.new_session()
    out = live.process(face_frame, c, state)
    assert calls == [small]
    assert out is not face_frame and out.shape == face_frame.shape
    outside = frame_mask(live, face_frame, face_landmarks) == 0
    assert np.array_equal(out[outside], face_frame[outside])
    with pytest.raises(ValueError, match="live_resolution"):
        EffectConfig(live_resolution=100)


def test_file_and_photo_jobs_align_as_the_encoders_were_trained_on_any_device(tiny_nets, face_landmarks):
    """Live streams on a CPU editor use MediaPipe's quad (dlib's cost competes with the networks there); a file or
    photo job (`offline`) always uses dlib68 unless --aligner says otherwise -- the page, Gradio and the CLI alike."""
    effect = make_effect(tiny_nets, [face_landmarks])
    live, offline = effect.new_session(), effect.new_session(offline=True)
    try:
        assert live.tracker.aligner == "mediapipe" and offline.tracker.aligner == "dlib68"
    finally:
        live.close(), offline.close()
    pinned = make_effect(tiny_nets, [face_landmarks], aligner="mediapipe")
    session = pinned.new_session(offline=True)
    assert session.tracker.aligner == "mediapipe"
    session.close()


def test_an_editor_without_directions_says_so_in_every_door(tiny_nets):
    """An editor built with networks but no direction (e.g. the camera reenactment door's) is in the
    directions_missing state itself, with the notice and the setup command every door shows (stream.control)."""
    from stream.control import door_config
    from stream.status import DIRECTIONS_COMMAND

    effect = make_effect(tiny_nets)
    bare = Effect(EffectConfig(device="cpu"), encoder=copy.deepcopy(tiny_nets[1]), directions={})
    assert effect.info.state == "ready" and door_config(effect.info, effect.config)["notice"] is None
    cfg = door_config(bare.info, bare.config)
    assert bare.info.available and cfg["state"] == "directions_missing" and cfg["command"] == DIRECTIONS_COMMAND
    assert "faces are reconstructed, not edited" in cfg["notice"]
