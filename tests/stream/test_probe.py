"""stream.probe: images and clips are judged from their headers, before a pixel is decoded.

The decompression bombs of issue 15 (a 164 kB PNG declaring 13000², a 198 kB mp4 of 8192² frames, 30000 frames at
1000 fps) are refused with one line, and the peak memory of the check stays small (measured in a fresh process:
ru_maxrss against the RSS just before the call).
"""
from __future__ import annotations

import pytest

from hostile_media import fast_long_clip, huge_frame_clip, huge_png, peak_rss_growth, pattern
from stream.probe import Limits, UploadRefused, probe_image, probe_video
from stream.sources import ImageSource, VideoFileSource, read_image

SETUP = "import av, cv2, numpy, PIL.Image\nfrom stream import probe, sources\np = {path!r}"
MAX_GROWTH_MB = 48  # one decoded 13000² image is 507 MB as BGR; one 8192² H.264 frame ~158 MB while probing


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    return {"png": huge_png(d / "huge.png"), "clip": huge_frame_clip(d / "huge.mp4"),
            "fast": fast_long_clip(d / "fast.mp4")}


@pytest.mark.parametrize("call", ["probe.probe_image(p)", "sources.read_image(p)", "sources.ImageSource(p)"])
def test_13000_squared_png_is_refused_from_its_header(bombs, call):
    assert bombs["png"].stat().st_size < 200_000
    got = peak_rss_growth(SETUP.format(path=str(bombs["png"])), call)
    assert got["outcome"].startswith("UploadRefused: 'huge.png' declares images of 13000×13000 pixels"), got
    assert got["growth_mb"] < MAX_GROWTH_MB, got


@pytest.mark.parametrize("call", ["probe.probe_video(p)", "sources.VideoFileSource(p)"])
def test_8192_squared_clip_is_refused_before_decoding(bombs, call):
    assert bombs["clip"].stat().st_size < 300_000
    got = peak_rss_growth(SETUP.format(path=str(bombs["clip"])), call)
    assert got["outcome"].startswith("UploadRefused: 'huge.mp4' declares frames of 8192×8192 pixels"), got
    assert got["growth_mb"] < MAX_GROWTH_MB, got


def test_30000_frames_at_1000_fps_is_refused(bombs):
    path = bombs["fast"]
    with pytest.raises(UploadRefused, match=r"declares 1000 frames per second, over the 240 fps limit"):
        probe_video(path)
    with pytest.raises(UploadRefused, match=r"declares 30000 frames, over the 18000 frame limit; trim it first"):
        probe_video(path, Limits(max_fps=None, max_frames=18_000))
    with pytest.raises(UploadRefused, match=r"lasts 30 s, over the 10 s limit"):
        probe_video(path, Limits(max_fps=None, max_frames=None, max_duration_s=10))
    with pytest.raises(UploadRefused, match="240 fps"):
        VideoFileSource(path)
    info = probe_video(path, Limits.unlimited())
    assert (info.frames, info.fps, info.width, info.height) == (30000, 1000.0, 16, 16)
    assert info.duration_s == pytest.approx(30.0)


def test_ordinary_media_pass_with_what_they_declare(tmp_path, faces_dir):
    info = probe_image(faces_dir / "mona_lisa.jpg")
    assert (info.format, info.width, info.height) == ("JPEG", 460, 686)
    assert read_image(faces_dir / "mona_lisa.jpg").shape == (686, 460, 3)
    import av
    from fractions import Fraction

    for suffix, codec in ((".mp4", "libx264"), (".webm", "libvpx")):
        path = tmp_path / f"clip{suffix}"
        with av.open(str(path), "w") as c:
            vs = c.add_stream(codec, rate=25)
            vs.width, vs.height, vs.pix_fmt = 128, 96, "yuv420p"
            for i in range(10):
                vf = av.VideoFrame.from_ndarray(pattern(i), format="bgr24")
                vf.pts, vf.time_base = i, Fraction(1, 25)
                for p in vs.encode(vf):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        info = probe_video(path)
        assert (info.width, info.height, info.fps, info.audio) == (128, 96, 25.0, False)
        assert info.frame_count == 10 and info.duration_s == pytest.approx(0.4)
        assert (info.frames is None) == (suffix == ".webm")  # webm declares no count: duration × rate


def test_files_that_are_not_media(tmp_path, faces_dir):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(UploadRefused, match="'junk.mp4' is not a readable video"):
        probe_video(junk)
    photo = tmp_path / "photo.mp4"
    photo.write_bytes((faces_dir / "01.jpg").read_bytes())
    with pytest.raises(UploadRefused, match="holds no video stream"):
        probe_video(photo)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(UploadRefused, match="could not be read as an image"):
        probe_image(text)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.gif")
    with pytest.raises(UploadRefused, match="is a GIF image"):
        probe_image(tmp_path / "a.gif")
    with pytest.raises(UploadRefused, match=r"over the 0.001 MB limit"):
        probe_image(faces_dir / "01.jpg", Limits(max_bytes=1049))
    with pytest.raises(FileNotFoundError):
        probe_image(tmp_path / "missing.png")


def test_webp_canvas_is_read_before_pil_opens_it(tmp_path):
    from PIL import Image

    for lossless in (False, True):
        path = tmp_path / f"x{int(lossless)}.webp"
        Image.new("RGB", (300, 200)).save(path, lossless=lossless)
        assert (probe_image(path).width, probe_image(path).height) == (300, 200)
        with pytest.raises(UploadRefused, match=r"300×200 pixels"):
            probe_image(path, Limits(max_side=256))
    # a hand-made VP8X header declaring a 16000×16000 canvas is refused from its 30 bytes
    head = b"RIFF" + (100).to_bytes(4, "little") + b"WEBP" + b"VP8X" + (10).to_bytes(4, "little") + b"\x00" * 4
    head += (15999).to_bytes(3, "little") + (15999).to_bytes(3, "little")
    (tmp_path / "bomb.webp").write_bytes(head + b"\x00" * 70)
    with pytest.raises(UploadRefused, match=r"16000×16000"):
        probe_image(tmp_path / "bomb.webp")


def test_a_clip_longer_than_its_header_said_is_stopped_while_decoding(tmp_path):
    """A header can lie: the source counts what it decodes (simulated by tightening the limit after the probe)."""
    from hostile_media import damaged_clip

    path, _ = damaged_clip(tmp_path / "clip.mp4", n=12, damage=())
    src = VideoFileSource(path)
    assert src._video.codec_context.options == {"max_pixels": str(4096 * 4096)}  # the decoder's own guard
    src.limits = Limits(max_frames=5)
    with src, pytest.raises(UploadRefused, match=r"holds more than 5 frames \(its header declared 12\)"):
        list(src)
    assert ImageSource  # same door for stills: read_image checks the header first (tests above)


def test_png_beyond_pils_own_guard_is_refused_with_our_message(tmp_path):
    """Over 2 × PIL's MAX_IMAGE_PIXELS PIL itself raises on open: still one UploadRefused line."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = tmp_path / "header-only.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    with pytest.raises(UploadRefused, match=r"'header-only.png' declares an image far over the limit") as info:
        probe_image(path, Limits.unlimited())
    assert str(tmp_path) not in str(info.value) and "\n" not in str(info.value)
