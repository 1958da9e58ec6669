"""Small files that declare a lot (decompression bombs), clips with damaged packets, and a peak-memory probe.

Shared by tests/stream (stream.probe, sources) and tests/web (the Gradio upload checks). Everything is written on
the fly; the biggest (`huge_frame_clip`) costs one 8192² x264 encode (~2 s, ~0.7 GB while encoding).
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def huge_png(path: Path, side: int = 13000) -> Path:
    """A grayscale PNG declaring side×side pixels, all black: ~164 kB on disk for 13000² (169 MB of pixels,
    507 MB as BGR). Streamed row by row, so writing it needs no big buffer."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


def _encode(path: Path, width: int, height: int, n: int, fps, codec: str = "libx264", options=None,
            frame_fn=None, audio_rate: int | None = None) -> Path:
    """Encode n frames (frame_fn(i) -> BGR uint8, else flat grey) to `path`, optionally with a sine track
    (AAC in mp4/mov, MP2 otherwise: re-encoded by FileSink) of the same length."""
    import av

    rate = Fraction(fps)
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=rate, options=options or {})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        aus = None
        if audio_rate:
            aus = c.add_stream("aac" if path.suffix in (".mp4", ".mov") else "mp2", rate=audio_rate)
            aus.layout = "mono"
        flat = None
        for i in range(n):
            if frame_fn is not None:
                vf = av.VideoFrame.from_ndarray(frame_fn(i), format="bgr24")
            else:
                if flat is None:
                    flat = av.VideoFrame(width, height, "yuv420p")
                    for plane in flat.planes:
                        plane.update(np.full(plane.buffer_size, 128, np.uint8))
                vf = flat
            vf.pts, vf.time_base = i, 1 / rate
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if aus is not None:
            total = int(audio_rate * n / rate)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / audio_rate)).astype(np.float32)
            for start in range(0, total, 1024):
                af = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = audio_rate, start, Fraction(1, audio_rate)
                for p in aus.encode(af):
                    c.mux(p)
            for p in aus.encode():
                c.mux(p)
    return path


def huge_frame_clip(path: Path, side: int = 8192, n: int = 2) -> Path:
    """An H.264 mp4 of n flat side×side frames: ~198 kB for 8192² (one decoded frame ≈ 100 MB of YUV)."""
    return _encode(path, side, side, n, 30, options={"preset": "ultrafast", "tune": "zerolatency",
                                                     "threads": "1"})


def fast_long_clip(path: Path, n: int = 30000, fps: int = 1000, side: int = 16) -> Path:
    """A tiny H.264 mp4 declaring n frames at `fps` (30000 at 1000 fps: 30 s, ~0.4 MB)."""
    return _encode(path, side, side, n, fps, options={"preset": "ultrafast"})


def pattern(i: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A BGR frame that encodes its index: a bright bar moving right, green level i*6."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 1] = (i * 6) % 256
    frame[:, (4 * i) % (w - 8):(4 * i) % (w - 8) + 8] = 255
    return frame


def damaged_clip(path: Path, n: int = 36, fps: int = 12, damage=(18,), b_frames: int = 0, gop: int = 12,
                 audio_rate: int | None = None) -> tuple[Path, list[int]]:
    """An H.264 mp4 of `pattern` frames whose packets number `damage` (decode order) have their 4-byte NAL
    length overwritten with 0xFF: the decoder rejects them (AVERROR_INVALIDDATA), as with a damaged download.

    Returns (path, [pts of the damaged packets in frame units]).
    """
    import av

    _encode(path, 128, 96, n, fps, options={"g": str(gop), "bf": str(b_frames), "preset": "ultrafast"},
            frame_fn=pattern, audio_rate=audio_rate)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        packets = [(p.pos, p.pts) for p in c.demux(vs) if p.size]
        tb = vs.time_base
    data = bytearray(path.read_bytes())
    hit = []
    for k in damage:
        pos, pts = packets[k]
        data[pos:pos + 4] = b"\xff\xff\xff\xff"
        hit.append(round(float(pts * tb) * fps))
    path.write_bytes(bytes(data))
    return path, hit


def peak_rss_growth(setup: str, call: str, repo: Path = REPO) -> dict:
    """Run `setup` then `call` in a fresh Python (code from `repo`); return {"growth_mb", "outcome"}.

    growth_mb: the process's peak RSS (VmHWM) after `call` minus its RSS (VmRSS) just before -- an upper bound of
    what `call` added at its peak. (Not ru_maxrss: Linux carries it over from the parent across fork + exec.)
    outcome: "ok" or "<ExceptionType>: <message>". `setup` should import what `call` imports lazily, so that
    imports are not counted.
    """
    code = (
        "import json, sys\n"
        "def kb(field):\n"
        "    line = [ln for ln in open('/proc/self/status') if ln.startswith(field + ':')][0]\n"
        "    return int(line.split()[1])\n"
        f"sys.path.insert(0, {str(repo)!r})\n"
        f"{setup}\n"
        "before = kb('VmRSS')\n"
        "try:\n"
        f"    {call}\n"
        "    outcome = 'ok'\n"
        "except Exception as exc:\n"
        "    outcome = f'{type(exc).__name__}: {exc}'\n"
        "after = kb('VmHWM')\n"
        "print(json.dumps({'growth_mb': (after - before) / 1024, 'outcome': outcome}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
