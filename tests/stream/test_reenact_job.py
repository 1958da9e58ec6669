"""The reenactment file job and its door `python -m directions reenact`, on tiny random networks and real faces.

The driver is a short clip of a real face (faces/01.jpg, its light and position changing per frame) with two
faceless frames and a 440 Hz audio track; the target is another real face (mona_lisa.jpg). Landmarks are the real
MediaPipe ones; the encoder (ReStyle-pSp, 64 px) and generator (StyleGAN2, 64 px, w_dim 32) are tiny and random:
the wiring is real, the pictures are not.
"""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from directions import __main__ as cli
from directions.reenact import ReenactOptions, reenact_sequence
from stream import reenact_job
from stream.sources import VideoFileSource

FPS = 10
N_FRAMES = 14
FACELESS = (6, 7)       # driver frames without a face
RES = 64
BETA = 10.0             # the tiny random encoder barely reacts to its input (latents move ~0.5 % of their size
                        # over the clip): the motion is amplified so that it shows in the pictures


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_nets():
    """(G, E): tiny random StyleGAN2 and ReStyle-pSp (2 iterations) with G as its decoder."""
    from engine.encoders import Encoder, build_network
    from engine.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(resolution=RES, w_dim=32, z_dim=32, n_mapping=2, channel_multiplier=1, channel_max=32).eval()
    net = build_network("restyle_psp", num_ws=G.num_ws, w_dim=G.w_dim, widths=(8, 12, 16, 24), units=(1, 1, 1, 1),
                        input_size=64)
    E = Encoder(net, "restyle_psp", G.estimate_latent_avg(256), decoder=G, n_iters=2).eval()
    return G, E


@pytest.fixture(scope="module")
def weights(tiny_nets, tmp_path_factory):
    """The tiny networks on disk: a ReStyle checkpoint (decoder inside) and a rosinality generator checkpoint."""
    G, E = tiny_nets
    root = tmp_path_factory.mktemp("weights")
    torch.save({"state_dict": dict(E.state_dict()),
                "opts": {"encoder_type": "BackboneEncoder", "input_nc": 6, "output_size": RES,
                         "n_iters_per_batch": 2, "start_from_latent_avg": True},
                "latent_avg": E.latent_avg.detach().clone()}, root / "encoder.pt")
    torch.save({"g_ema": G.state_dict(), "latent_avg": G.latent_avg.detach().clone()}, root / "generator.pt")
    return root


def write_clip(path, frames_bgr, fps=FPS, audio_s=None, rate=16000):
    """H.264 mp4 of BGR frames, with a mono AAC 440 Hz tone of `audio_s` seconds when given."""
    import av

    h, w = frames_bgr[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if audio_s:
            audio = out.add_stream("aac", rate=rate)
            audio.layout = "mono"
            t = np.arange(int(audio_s * rate)) / rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, tone.size, 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode(None):
                out.mux(packet)
        for f in frames_bgr:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)


def driver_frames(faces_dir, n=N_FRAMES, still=False):
    """n 256×320 frames of faces/01.jpg; moving: light and position change per frame, FACELESS frames are flat."""
    import cv2

    face = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (224, 224), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        canvas = np.full((256, 320, 3), 90, np.uint8)
        if still:
            canvas[16:240, 48:272] = face
        elif i in FACELESS:
            pass
        else:
            x = 40 + 3 * (i % 5)
            gain = 0.75 + 0.5 * (0.5 + 0.5 * np.sin(i))
            canvas[16:240, x:x + 224] = np.clip(face * gain, 0, 255).astype(np.uint8)
        frames.append(canvas)
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory, faces_dir):
    import cv2

    root = tmp_path_factory.mktemp("clips")
    write_clip(root / "driver.mp4", driver_frames(faces_dir), audio_s=N_FRAMES / FPS)
    write_clip(root / "still.mp4", driver_frames(faces_dir, still=True))
    target = cv2.resize(cv2.imread(str(faces_dir / "mona_lisa.jpg")), (200, 240), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "target.png"), target)
    cv2.imwrite(str(root / "blank.png"), np.full((120, 160, 3), 128, np.uint8))
    return root


def read_video(path):
    with VideoFileSource(path) as v:
        frames = [f for f, _ in v]
        return frames, v.fps, v.has_audio


def audio_seconds(path):
    import av

    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return sum(f.samples for f in c.decode(a)) / a.codec_context.sample_rate


# ------------------------------------------------------------------------------------------------ the job


def test_job_keeps_frames_rate_audio_and_saves_options(tiny_nets, clips, faces_dir):
    G, E = tiny_nets
    out = clips / "out.mp4"
    opts = ReenactOptions(rank=3, layers=(0, 6), beta=BETA, reference=1, smoothing=1.0)
    report = reenact_job.run_job(clips / "driver.mp4", clips / "target.png", out, E, G, opts, progress=False,
                                 extra_meta={"encoder": "tiny"})
    frames, fps, has_audio = read_video(out)
    assert report.frames == len(frames) == N_FRAMES
    assert fps == pytest.approx(FPS) and report.fps == pytest.approx(FPS)
    assert has_audio and report.audio
    assert audio_seconds(out) == pytest.approx(audio_seconds(clips / "driver.mp4"), abs=0.07)
    assert frames[0].shape == (240, 200, 3)  # the target photo's size
    assert report.held == len(FACELESS)
    # options in the mp4 comment tag and in the sidecar (which also names the held frames)
    tag = reenact_job.read_metadata(out)
    assert tag["options"] == opts.to_dict() and tag["paste_mode"] == "residual" and tag["encoder"] == "tiny"
    assert tag["reference_frame"] == 1 and tag["layers"] == [0, 6] and tag["frames"] == N_FRAMES
    side = json.loads(report.sidecar.read_text())
    assert side["options"] == opts.to_dict() and side["held_frame_indices"] == list(FACELESS)
    assert report.sidecar.name == "out.mp4.json" and not list(clips.glob(".*partial*"))
    # the face moves: later frames differ from the first (more than the codec's noise)
    diffs = [np.abs(frames[i].astype(int) - frames[0].astype(int)).max() for i in range(1, N_FRAMES)]
    assert max(diffs) > 10, diffs


def test_stages_still_driver_gives_the_target_reconstruction(tiny_nets, clips):
    """A still driver moves nothing beyond the pipeline's own jitter: the encoded "still" frames differ by up to
    ~10 grey levels (H.264) and the landmarks by ~1 px (MediaPipe detection on frame 0, tracking after)."""
    G, E = tiny_nets
    import cv2

    from stream.face.paste import paste_back

    photo = cv2.imread(str(clips / "target.png"))
    face = reenact_job.invert_target(photo, E)
    still = reenact_job.invert_driver(clips / "still.mp4", E, progress=False)
    moving = reenact_job.invert_driver(clips / "driver.mp4", E, progress=False)
    assert still.frames == N_FRAMES and still.missing == [] and moving.missing == list(FACELESS)
    rs = reenact_sequence(still.latents, face.latent, rank=3)
    rm = reenact_sequence(moving.latents, face.latent, rank=3)
    still_move = float((rs.latents - face.latent).abs().max())
    driver_move = float((rm.latents - face.latent).abs().max())
    print(f"\nlargest latent offset: still driver {still_move:.5f}, moving driver {driver_move:.5f}")
    assert still_move < 0.25 * driver_move, (still_move, driver_move)
    # rendered and pasted (residual): the still driver's frames are the target photo itself, within tolerance
    outs = list(reenact_job.render_frames(G, rs.latents, face, "residual", progress=False))
    assert len(outs) == N_FRAMES
    assert max(np.abs(f.astype(int) - photo.astype(int)).max() for f in outs) <= 3
    # replace: every frame is the photo with the target's own reconstruction G(V) pasted, within tolerance
    with torch.no_grad():
        recon = reenact_job.images_to_bgr(G(face.latent[None]))[0]
    pasted = paste_back(photo, recon, face.aligned, mode="replace")
    outs = list(reenact_job.render_frames(G, rs.latents, face, "replace", progress=False))
    assert max(np.abs(f.astype(int) - pasted.astype(int)).max() for f in outs) <= 3
    assert np.abs(pasted.astype(int) - photo.astype(int)).max() > 20  # (replace does paste something else)
    # the moving driver (amplified, see BETA) moves the pasted face well beyond that tolerance
    moved = reenact_sequence(moving.latents, face.latent, rank=3, beta=BETA).latents
    outs = list(reenact_job.render_frames(G, moved, face, "residual", progress=False))
    assert max(np.abs(f.astype(int) - photo.astype(int)).max() for f in outs) > 10
    # "none" writes the generated face crop itself
    crops = list(reenact_job.render_frames(G, rs.latents[:2], face, "none", progress=False))
    assert crops[0].shape == (RES, RES, 3)
    assert np.abs(crops[0].astype(int) - recon.astype(int)).max() <= 3


def test_target_without_face_is_one_line(tiny_nets, clips):
    G, E = tiny_nets
    with pytest.raises(ValueError, match="no face found in .*blank.png"):
        reenact_job.run_job(clips / "driver.mp4", clips / "blank.png", clips / "x.mp4", E, G, progress=False)
    with pytest.raises(ValueError, match="outside this generator's W\\+ layers"):
        reenact_job.run_job(clips / "driver.mp4", clips / "target.png", clips / "x.mp4", E, G,
                            ReenactOptions(layers=(2, 40)), progress=False)
    assert not (clips / "x.mp4").exists()


def test_target_photo_is_checked_from_its_header_before_decoding(tiny_nets, clips):
    """The target is read as every door reads uploads (`stream.sources.read_image`): a file that is not a photo, or
    declares more pixels than the limit, is refused by name before anything is decoded or written."""
    from hostile_media import huge_png

    G, E = tiny_nets
    fake = clips / "notes.png"
    fake.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="'notes.png' could not be read as an image"):
        reenact_job.run_job(clips / "driver.mp4", fake, clips / "x.mp4", E, G, progress=False)
    huge = huge_png(clips / "huge.png")    # 13000 x 13000 declared, a few KB on disk
    with pytest.raises(ValueError, match="'huge.png' declares images of 13000×13000 pixels"):
        reenact_job.run_job(clips / "driver.mp4", huge, clips / "x.mp4", E, G, progress=False)
    assert not (clips / "x.mp4").exists()


# ------------------------------------------------------------------------------------------------ the door


def test_cli_reenact_with_tiny_weights_on_disk(weights, clips, capsys):
    out = clips / "cli.mp4"
    rc = cli.main(["reenact", "--driver", str(clips / "driver.mp4"), "--target", str(clips / "target.png"),
                   "--out", str(out), "--encoder", str(weights / "encoder.pt"),
                   "--generator", str(weights / "generator.pt"), "--device", "cpu", "--precision", "fp32",
                   "--rank", "2", "--layers", "2:", "--beta", "0.8", "--reference", "2", "--smoothing", "0.5",
                   "--method", "pca", "--paste-mode", "replace", "--batch", "4", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"{out}  ({N_FRAMES} frames, {FPS} fps, audio kept; pca rank 2, layers 2:{G_NUM_WS}" in captured.out
    assert "held 2" in captured.out and f"{out}.json" in captured.out
    frames, fps, has_audio = read_video(out)
    assert len(frames) == N_FRAMES and has_audio
    tag = reenact_job.read_metadata(out)
    assert tag["options"] == {"rank": 2, "layers": [2, None], "beta": 0.8, "reference": 2, "smoothing": 0.5,
                              "method": "pca", "lmbda": None, "max_fit_frames": 512}
    assert tag["layers"] == [2, G_NUM_WS] and tag["paste_mode"] == "replace"
    assert tag["generator"] == str(weights / "generator.pt") and len(tag["generator_sha256"]) == 64
    assert tag["device"] == "cpu" and tag["encoder_kind"] == "restyle_psp" and len(tag["encoder_sha256"]) == 64


G_NUM_WS = 2 * 6 - 2  # a 64 px StyleGAN2: num_ws = 2·log2(64) − 2


@pytest.mark.parametrize("args,message", [
    (["--driver", "DRIVER", "--preview"], "--preview and --seconds are for --camera"),
    (["--driver", "missing.mp4"], "--driver missing.mp4 does not exist"),
    (["--driver", "DRIVER", "--layers", "x"], "is not a range"),
    (["--driver", "DRIVER", "--rank", "0"], "rank must be >= 1"),
])
def test_cli_reenact_usage_errors_are_one_line(clips, capsys, args, message):
    args = [str(clips / "driver.mp4") if a == "DRIVER" else a for a in args]
    rc = cli.main(["reenact", *args, "--target", str(clips / "target.png"), "--out", str(clips / "e.mp4"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_cli_reenact_missing_weights_names_the_command(clips, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path / "home"))
    rc = cli.main(["reenact", "--driver", str(clips / "driver.mp4"), "--target", str(clips / "target.png"),
                   "--out", str(tmp_path / "o.mp4"), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "python -m engine.weights download restyle-psp-ffhq" in err and err.count("\n") == 1
