"""Video anchoring: frame choice, crop conversion, encoding with a tiny encoder, and a generated clip of a
real face (shifted a little per frame) through stream's landmarker + aligner; no-face clips are errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from directions.video import anchor_video, crops_to_tensor, describe_tried, read_video_frames, select_frames


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_encoder(G, input_size=64):
    """A real e4e `Encoder` with a tiny IR-SE body, for generator G."""
    from engine.encoders import Encoder, build_network

    torch.manual_seed(1)
    net = build_network("e4e", num_ws=G.num_ws, w_dim=G.w_dim, widths=(8, 8, 16, 16), units=(1, 1, 1, 1),
                        input_size=input_size)
    return Encoder(net, kind="e4e", latent_avg=torch.zeros(G.w_dim), decoder=G).eval()


@pytest.fixture(scope="module")
def tiny_G():
    from engine.stylegan2 import Generator

    torch.manual_seed(0)
    return Generator(resolution=32, w_dim=32, z_dim=32, n_mapping=2, channel_multiplier=1, channel_max=32).eval()


@pytest.fixture(scope="module")
def E(tiny_G):
    return tiny_encoder(tiny_G)


def write_clip(path, frames_bgr, fps=10):
    """Encode uint8 BGR frames [H, W, 3] to an H.264 mp4 with PyAV."""
    import av

    h, w = frames_bgr[0].shape[:2]
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames_bgr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def face_frames(faces_dir, n=8, shift=6):
    """n 320×256 frames of faces/01.jpg (a real face), moving right by `shift` px per frame."""
    import cv2

    face = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (256, 256), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        canvas = np.full((256, 320, 3), 90, np.uint8)
        x = 8 + i * shift
        canvas[:, x:x + 256] = face
        frames.append(canvas)
    return frames


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory, faces_dir):
    path = tmp_path_factory.mktemp("clips") / "face.mp4"
    write_clip(path, face_frames(faces_dir))
    return path


# ---------------------------------------------------------------------------------------------- pure helpers


def test_select_frames_spread_evenly():
    assert select_frames(100, 7) == [0, 17, 33, 50, 66, 83, 99]  # 16.5 and 82.5 round up
    assert select_frames(5, 7) == [0, 1, 2, 3, 4]
    assert select_frames(5, None) == [0, 1, 2, 3, 4]
    assert select_frames(9, 1) == [0]
    assert select_frames(2, 2) == [0, 1]
    with pytest.raises(ValueError):
        select_frames(0, 7)
    with pytest.raises(ValueError):
        select_frames(10, 0)


def test_crops_to_tensor_bgr_to_rgb_and_range():
    crop = np.zeros((16, 16, 3), np.uint8)
    crop[..., 0] = 255  # blue in BGR
    x = crops_to_tensor([crop, crop], 16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert torch.all(x[:, 2] == 1) and torch.all(x[:, :2] == -1)  # RGB: blue is the last channel
    assert crops_to_tensor([crop], 8).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        crops_to_tensor([crop.astype(np.float32)], 16)
    with pytest.raises(ValueError, match="one size"):
        crops_to_tensor([crop, np.zeros((8, 8, 3), np.uint8)], 16)
    with pytest.raises(ValueError, match="no aligned crops"):
        crops_to_tensor([], 16)


def test_describe_tried():
    assert describe_tried(list(range(120))) == "frames 0–119 (120 frames)"
    assert describe_tried(["a.png", "b.png"]) == "a.png, b.png (2 files)"


# ---------------------------------------------------------------------------------------------- anchors


def test_anchor_video_encodes_the_chosen_frames(E, tiny_G):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(12)]
    ws = anchor_video(crops, E, n=4)
    assert ws.shape == (4, tiny_G.num_ws, tiny_G.w_dim) and ws.dtype == torch.float32
    idx = select_frames(12, 4)
    with torch.no_grad():
        direct = E(crops_to_tensor([crops[i] for i in idx], E.input_size))
    torch.testing.assert_close(ws, direct)
    # tensor input, all frames, batching does not change the result
    x = crops_to_tensor(crops, 96)
    torch.testing.assert_close(anchor_video(x, E, n=None, batch_size=5)[idx], ws, rtol=1e-5, atol=1e-5)


def test_anchor_video_with_fewer_frames_than_asked(E, caplog):
    crops = [np.full((64, 64, 3), v, np.uint8) for v in (10, 200)]
    assert anchor_video(crops, E, n=7).shape[0] == 2
    assert "only 2" in caplog.text


def test_read_video_frames(face_clip):
    frames = list(read_video_frames(face_clip))
    assert [i for i, _ in frames] == list(range(8))
    assert frames[0][1].shape == (256, 320, 3) and frames[0][1].dtype == np.uint8
    assert len(list(read_video_frames(face_clip, max_frames=3))) == 3


def test_read_video_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_video_frames(tmp_path / "missing.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="cannot open video"):
        list(read_video_frames(bad))


def test_clip_to_anchors_through_stream_alignment(face_clip, E, tiny_G):
    from stream.face.clip import aligned_crops_from_source

    crops, labels = aligned_crops_from_source(face_clip, size=128, progress=False)
    assert labels == list(range(8))  # the face is found in every frame
    assert all(c.shape == (128, 128, 3) and c.dtype == np.uint8 for c in crops)
    # aligned: the face stays put in the crop while it moves in the frame
    assert np.abs(crops[0].astype(int) - crops[-1].astype(int)).mean() < 20
    ws = anchor_video(crops, E, n=3)
    assert ws.shape == (3, tiny_G.num_ws, tiny_G.w_dim) and torch.isfinite(ws).all()


def test_clip_without_a_face_names_the_frames_tried(tmp_path):
    from stream.face.clip import aligned_crops_from_source

    path = tmp_path / "empty.mp4"
    write_clip(path, [np.full((128, 160, 3), 40 + 10 * i, np.uint8) for i in range(5)])
    with pytest.raises(ValueError, match=r"no face found in .*empty\.mp4: tried frames 0–4 \(5 frames\)"):
        aligned_crops_from_source(path, progress=False)


def test_folder_without_a_face_names_the_files(tmp_path):
    import cv2

    from stream.face.clip import aligned_crops_from_source

    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.full((96, 96, 3), 128, np.uint8))
    with pytest.raises(ValueError, match=r"tried a\.png, b\.png \(2 files\)"):
        aligned_crops_from_source(tmp_path, is_folder=True, progress=False)


def test_folder_of_stills_gives_the_official_crops(tmp_path, faces_dir):
    """A folder is a set of stills, each aligned as the official scripts would (dlib's HOG box + 68 points):
    the crops match our transcription of the official recipe's crop, and not MediaPipe's."""
    import cv2

    from stream.face.align import align_face, ffhq_quad
    from stream.face.clip import aligned_crops_from_source
    from stream.face.ffhq_recipe import OfficialLandmarks, official_crop
    from stream.face.landmarks import FaceMeshLandmarker

    names = ("01.jpg", "mona_lisa.jpg", "pope.jpg")
    for i, name in enumerate(names):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.imread(str(faces_dir / name)))
    crops, labels = aligned_crops_from_source(tmp_path, size=128, is_folder=True, progress=False)
    assert labels == ["0.png", "1.png", "2.png"]
    official = OfficialLandmarks()
    with FaceMeshLandmarker(video_mode=False) as mp:
        for crop, name in zip(crops, names):
            image = cv2.imread(str(faces_dir / name))
            rgb = np.ascontiguousarray(image[..., ::-1])
            ref = official(rgb)[0]
            theirs = official_crop(rgb, ref, 128, transform_size=128)[..., ::-1].astype(int)
            lm = mp.detect(image)[0]
            mp_crop = align_face(image, lm, 128, quad=ffhq_quad(lm)).crop.astype(int)
            ours = np.abs(crop.astype(int) - theirs).mean()
            assert ours < 4.0 and ours < 0.7 * np.abs(mp_crop - theirs).mean(), name


def test_folder_of_wheels_has_no_face(tmp_path):
    """MediaPipe alone finds 'faces' in these (a pair of tyres, a colour wheel); the aligner's second opinion
    does not."""
    import cv2

    from stream.face.bench_align import negative_pictures
    from stream.face.clip import aligned_crops_from_source

    pictures = negative_pictures()
    for name in ("tyres", "colorwheel"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), pictures[name])
    with pytest.raises(ValueError, match="no face found"):
        aligned_crops_from_source(tmp_path, is_folder=True, progress=False)
