"""engine.weights against a real HTTP server on 127.0.0.1 serving generated files (Range supported)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine import weights
from engine.weights import WeightsEntry

REPO = Path(__file__).resolve().parents[2]


class FileServer:
    """Serves {path: bytes}; honours `Range: bytes=N-`; records (path, range header, bytes sent) per request.

    ignore_range: answer 200 with the whole file even when a Range is asked.
    confirm_pages: {path: html} served (as text/html) instead of the file unless the query has confirm=...
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None, int]] = []
        self.ignore_range = False
        self.confirm_pages: dict[str, str] = {}
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the connection is cut (once)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path, _, query = self.path.partition("?")
                rng = self.headers.get("Range")
                if path in server.confirm_pages and "confirm=" not in query:
                    body = server.confirm_pages[path].encode()
                    server.requests.append((self.path, rng, 0))
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                key = path if path in server.files else path.rsplit("/", 1)[-1]
                data = server.files.get(key)
                if data is None:
                    server.requests.append((self.path, rng, 0))
                    self.send_error(404)
                    return
                start = 0
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        server.requests.append((self.path, rng, 0))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.drop_after.pop(path, None)
                if cut is not None:
                    body = body[:cut]
                    self.close_connection = True
                server.requests.append((self.path, rng, len(body)))  # before the body: the client may finish first
                self.wfile.write(body)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def _payload(n: int, seed: int) -> bytes:
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _add_entry(monkeypatch, name: str, url: str, sha256: str | None) -> WeightsEntry:
    e = WeightsEntry(name=name, filename=f"{name}.bin", url=url, page=url, source="test", approx_size_mb=0.1,
                     license="test", purpose="test", kind="encoder", sha256=sha256)
    monkeypatch.setitem(weights.MANIFEST, name, e)
    return e


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------- manifest


def test_manifest_has_the_contract_names_and_real_urls():
    for name in ("stylegan2-ffhq", "stylegan2-ffhq-pkl", "e4e-ffhq", "restyle-psp-ffhq", "restyle-e4e-ffhq",
                 "psp-ffhq", "arcface-ir-se50"):
        e = weights.MANIFEST[name]
        assert e.url.startswith("https://")
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        assert e.sha256 is not None or "not published" in e.sha256_note
        assert e.license and e.purpose and e.approx_size_mb > 0
    assert weights.MANIFEST["stylegan2-ffhq"].filename == "stylegan2-ffhq-config-f.pt"
    assert weights.MANIFEST["e4e-ffhq"].filename == "e4e_ffhq_encode.pt"
    assert weights.MANIFEST["restyle-psp-ffhq"].filename == "restyle_psp_ffhq_encode.pt"
    assert weights.MANIFEST["arcface-ir-se50"].filename == "model_ir_se50.pth"
    assert "id=1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT" in weights.MANIFEST["stylegan2-ffhq"].url
    assert set(weights.DEFAULT_NAMES) == {"stylegan2-ffhq", "e4e-ffhq", "restyle-psp-ffhq"}


def test_cache_dir_follows_micromotion_home(home):
    assert weights.cache_dir() == home / "weights"


# ---------------------------------------------------------------------------------------------- resolve


def test_resolve_existing_path_missing_name_and_unknown_name(home, tmp_path):
    f = tmp_path / "g.pt"
    f.write_bytes(b"x")
    assert weights.resolve(f) == f
    assert weights.resolve(str(f)) == f
    with pytest.raises(weights.MissingWeightsError) as info:
        weights.resolve("e4e-ffhq")
    assert "python -m engine.weights download e4e-ffhq" in str(info.value)
    assert info.value.command == "python -m engine.weights download e4e-ffhq"
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(weights.UnknownWeightsError) as info:
        weights.resolve("e5e-ffhq")
    assert "restyle-psp-ffhq" in str(info.value) and "stylegan2-ffhq" in str(info.value)
    with pytest.raises(FileNotFoundError, match="not found"):
        weights.resolve(tmp_path / "nope.pt")
    cached = weights.cache_dir() / "e4e_ffhq_encode.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"e4e")
    assert weights.resolve("e4e-ffhq") == cached


# ---------------------------------------------------------------------------------------------- download


def test_good_download_with_published_hash(home, server, monkeypatch):
    data = _payload(300_000, 1)
    server.files["/good.bin"] = data
    _add_entry(monkeypatch, "t-good", f"{server.base}/good.bin", hashlib.sha256(data).hexdigest())
    res = weights.download("t-good", progress=False, retries=0)
    assert res.status == "downloaded" and res.hash_origin == "published"
    assert res.path == home / "weights" / "t-good.bin"
    assert res.path.read_bytes() == data
    assert not res.path.with_name("t-good.bin.part").exists()
    assert weights.resolve("t-good") == res.path
    assert [r[1] for r in server.requests] == [None]
    # present → no second request
    assert weights.download("t-good", progress=False).status == "present"
    assert len(server.requests) == 1


def test_resumed_download_requests_only_the_remainder(home, server, monkeypatch):
    data = _payload(500_000, 2)
    server.files["/resume.bin"] = data
    _add_entry(monkeypatch, "t-resume", f"{server.base}/resume.bin", hashlib.sha256(data).hexdigest())
    part = home / "weights" / "t-resume.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:123_456])
    res = weights.download("t-resume", progress=False, retries=0)
    assert res.path.read_bytes() == data
    assert server.requests == [("/resume.bin", "bytes=123456-", len(data) - 123_456)]
    assert res.bytes_fetched == len(data) - 123_456
    assert not part.exists()


def test_connection_dropped_mid_transfer_resumes_on_retry(home, server, monkeypatch):
    data = _payload(400_000, 9)
    server.files["/drop.bin"] = data
    server.drop_after["/drop.bin"] = 150_000
    _add_entry(monkeypatch, "t-drop", f"{server.base}/drop.bin", hashlib.sha256(data).hexdigest())
    res = weights.download("t-drop", progress=False, retries=2)
    assert res.path.read_bytes() == data
    assert server.requests == [("/drop.bin", None, 150_000), ("/drop.bin", "bytes=150000-", 250_000)]


def test_server_ignoring_range_restarts_from_zero(home, server, monkeypatch):
    data = _payload(200_000, 3)
    server.files["/norange.bin"] = data
    server.ignore_range = True
    _add_entry(monkeypatch, "t-norange", f"{server.base}/norange.bin", hashlib.sha256(data).hexdigest())
    part = home / "weights" / "t-norange.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not stay in front")
    res = weights.download("t-norange", progress=False, retries=0)
    assert res.path.read_bytes() == data
    assert server.requests[0][1] is not None and server.requests[0][2] == len(data)


def test_complete_part_file_answered_416_is_kept(home, server, monkeypatch):
    data = _payload(50_000, 4)
    server.files["/done.bin"] = data
    _add_entry(monkeypatch, "t-done", f"{server.base}/done.bin", hashlib.sha256(data).hexdigest())
    part = home / "weights" / "t-done.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    res = weights.download("t-done", progress=False, retries=0)
    assert res.path.read_bytes() == data and res.bytes_fetched == 0


def test_wrong_hash_discards_the_file(home, server, monkeypatch):
    data = _payload(100_000, 5)
    server.files["/bad.bin"] = data
    _add_entry(monkeypatch, "t-bad", f"{server.base}/bad.bin", "0" * 64)
    with pytest.raises(weights.HashMismatchError) as info:
        weights.download("t-bad", progress=False, retries=0)
    msg = str(info.value)
    assert "\n" not in msg and "discarded" in msg and hashlib.sha256(data).hexdigest() in msg and "0" * 64 in msg
    assert not (home / "weights" / "t-bad.bin").exists()
    assert not (home / "weights" / "t-bad.bin.part").exists()
    with pytest.raises(weights.MissingWeightsError):
        weights.resolve("t-bad")


def test_server_unreachable_is_one_clear_line(home, monkeypatch):
    _add_entry(monkeypatch, "t-down", f"http://127.0.0.1:{_closed_port()}/x.bin", None)
    with pytest.raises(weights.DownloadError) as info:
        weights.download("t-down", progress=False, retries=3)  # unreachable: no retries, fails at once
    msg = str(info.value)
    assert "\n" not in msg and "unreachable" in msg and "127.0.0.1" in msg
    assert not (home / "weights" / "t-down.bin").exists()


def test_http_404_is_a_clear_error(home, server, monkeypatch):
    _add_entry(monkeypatch, "t-404", f"{server.base}/missing.bin", None)
    with pytest.raises(weights.DownloadError, match="HTTP 404"):
        weights.download("t-404", progress=False, retries=0)


def test_cache_dir_not_writable_even_for_root(tmp_path, monkeypatch, server):
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MICROMOTION_HOME", str(blocker / "home"))
    server.files["/w.bin"] = b"abc"
    _add_entry(monkeypatch, "t-ro", f"{server.base}/w.bin", None)
    with pytest.raises(weights.CacheNotWritableError) as info:
        weights.download("t-ro", progress=False, retries=0)
    msg = str(info.value)
    assert str(blocker / "home" / "weights") in msg and "MICROMOTION_HOME" in msg and "\n" not in msg
    assert server.requests == []


def test_unpublished_hash_recorded_at_first_download_then_tamper_detected(home, server, monkeypatch, capsys):
    data = _payload(80_000, 6)
    server.files["/tofu.bin"] = data
    _add_entry(monkeypatch, "t-tofu", f"{server.base}/tofu.bin", None)
    assert weights.main(["download", "t-tofu", "--no-progress", "--retries", "0"]) == 0
    out = capsys.readouterr().out
    assert "no sha256 is published" in out and "recorded" in out and hashlib.sha256(data).hexdigest() in out
    rec = json.loads((home / "weights" / "hashes.json").read_text())
    assert rec["t-tofu.bin"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert weights.expected_sha256("t-tofu") == (hashlib.sha256(data).hexdigest(), "recorded")

    assert weights.main(["verify", "t-tofu"]) == 0
    assert "t-tofu: ok" in capsys.readouterr().out

    path = home / "weights" / "t-tofu.bin"
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert weights.verify("t-tofu").status == "mismatch"
    assert weights.main(["verify", "t-tofu"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "python -m engine.weights download t-tofu" in out
    assert path.exists()  # verify never deletes

    # a re-download is checked against the recorded hash: a changed server file is refused
    path.unlink()
    server.files["/tofu.bin"] = _payload(80_000, 7)
    with pytest.raises(weights.HashMismatchError, match="recorded"):
        weights.download("t-tofu", progress=False, retries=0)


def test_drive_style_confirmation_page_is_followed(home, server, monkeypatch):
    data = _payload(150_000, 8)
    server.files["/download"] = data
    page = (f'<html><body>Google Drive can\'t scan this file for viruses.'
            f'<form id="download-form" action="{server.base}/download" method="get">'
            f'<input type="submit" value="Download anyway"/>'
            f'<input type="hidden" name="id" value="ABC"><input type="hidden" name="export" value="download">'
            f'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1">'
            f'</form></body></html>')
    server.confirm_pages["/uc"] = page
    _add_entry(monkeypatch, "t-drive", f"{server.base}/uc?export=download&id=ABC", hashlib.sha256(data).hexdigest())
    res = weights.download("t-drive", progress=False, retries=0)
    assert res.path.read_bytes() == data
    assert server.requests[0][0].startswith("/uc?") and server.requests[1][0].startswith("/download?")
    assert "confirm=t" in server.requests[1][0] and "id=ABC" in server.requests[1][0]


def test_web_page_without_a_way_forward_is_a_clear_error(home, server, monkeypatch):
    server.confirm_pages["/quota"] = "<html><body>Too many users have viewed or downloaded this file</body></html>"
    _add_entry(monkeypatch, "t-quota", f"{server.base}/quota", None)
    with pytest.raises(weights.DownloadError, match="web page instead of t-quota.bin"):
        weights.download("t-quota", progress=False, retries=0)
    assert not (home / "weights" / "t-quota.bin").exists()


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_download_default_with_base_url_then_list_and_verify(home, server, capsys):
    blobs = {}
    for i, name in enumerate(weights.DEFAULT_NAMES):
        blobs[name] = _payload(10_000 + i, 10 + i)
        server.files["/" + weights.MANIFEST[name].filename] = blobs[name]
    assert weights.main(["download", "--default", "--base-url", server.base + "/", "--no-progress", "--retries", "0"]) == 0
    out = capsys.readouterr().out
    for name in weights.DEFAULT_NAMES:
        assert (home / "weights" / weights.MANIFEST[name].filename).read_bytes() == blobs[name]
        assert f"{name}: downloaded" in out
    assert out.rstrip().endswith("`python -m directions setup` fetches them (and skips these networks)")  # issue 11
    assert weights.main(["list"]) == 0
    table = capsys.readouterr().out
    line = next(l for l in table.splitlines() if l.startswith("e4e-ffhq"))
    assert "yes" in line and "recorded" in line
    line = next(l for l in table.splitlines() if l.startswith("psp-ffhq"))
    assert " no " in line and "not published" in line
    assert weights.main(["verify"]) == 0
    assert capsys.readouterr().out.count(": ok") == 3
    assert weights.main(["list", "--long"]) == 0
    long = capsys.readouterr().out
    assert "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl" in long
    assert long.count("license:") == len(weights.MANIFEST)


def test_cli_errors_are_one_line(home, monkeypatch, capsys):
    assert weights.main(["download", "no-such-weights"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown weights name") and "\n" not in err
    monkeypatch.setenv("MICROMOTION_WEIGHTS_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    assert weights.main(["download", "psp-ffhq", "--no-progress", "--retries", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "unreachable" in err and "\n" not in err


def test_cli_list_runs_as_a_module_without_torch(home):
    code = ("import runpy, sys; sys.argv=['x','list']; "
            "sys.modules['torch'] = None; runpy.run_module('engine.weights', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "stylegan2-ffhq-config-f.pt" in proc.stdout and "arcface-ir-se50" in proc.stdout


def test_name_for_path(home):
    assert weights.name_for_path(weights.cache_dir() / "e4e_ffhq_encode.pt") == "e4e-ffhq"
    assert weights.name_for_path("/elsewhere/model_ir_se50.pth") == "arcface-ir-se50"
    assert weights.name_for_path("/elsewhere/other.pt") is None
