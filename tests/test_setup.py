"""Issue 11, a new user's first hour: ONE setup command fetches networks AND directions; every door shows it; an
install whose downloads fail still opens the page, which says what to run.

Downloads go to a 127.0.0.1 HTTP server only (a flat weights mirror: BASE/<weights file name>), or to a closed
127.0.0.1 port (offline). The networks served are random bytes: setup only fetches and hash-records them.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from directions import official
from directions.__main__ import main as directions_main
from directions.setup import SETUP_COMMAND, check
from engine import weights

REPO = Path(__file__).resolve().parents[1]
NAMES = official.OFFICIAL_NAMES
NO_PROXY_ENV = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class _CountingHandler(SimpleHTTPRequestHandler):
    requests: list  # set per server

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()


def _serve(root: Path):
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, handler.requests


@pytest.fixture
def mirror(tmp_path, official_directions_dir):
    """A flat weights mirror on 127.0.0.1: the five official d_latent files under their weights file names and
    small random stand-ins for the default networks (`networks=False` in `.build` leaves them out)."""
    servers = []

    def build(networks: bool = True):
        root = tmp_path / f"mirror{len(servers)}"
        root.mkdir()
        for name in NAMES:
            shutil.copyfile(official_directions_dir / f"{name}.pt",
                            root / weights.entry(official.weights_name(name)).filename)
        if networks:
            for i, name in enumerate(weights.DEFAULT_NAMES):
                (root / weights.entry(name).filename).write_bytes(os.urandom(1000 + i))
        httpd, requests = _serve(root)
        servers.append(httpd)
        return SimpleNamespace(base=f"http://127.0.0.1:{httpd.server_address[1]}", requests=requests)

    yield build
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------------------------ the command


def test_setup_fetches_networks_and_directions_then_skips_everything(home, mirror, capsys):
    """Problem 1: `download --default` fetched networks but no directions. One command now installs both, and
    running it again downloads nothing."""
    m = mirror()
    assert directions_main(["setup", "--base-url", m.base, "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in weights.DEFAULT_NAMES:
        assert weights.path_for(name).is_file(), name
    installed = sorted(p.name for p in (home / "directions").iterdir())
    assert installed == sorted(f"{n}.safetensors" for n in NAMES)
    from directions import files

    loaded = files.load_folder(home / "directions", num_ws=18, w_dim=512)
    assert sorted(loaded.names) == sorted(NAMES) and not loaded.skipped
    assert all(d.meta["method"] == "official" for d in loaded.directions)
    assert out.rstrip().splitlines()[-1].startswith("ready: 3 network(s)")
    assert check().ok

    first = len(m.requests)
    assert first == len(NAMES) + len(weights.DEFAULT_NAMES)
    mtimes = {p: p.stat().st_mtime_ns for p in (home / "directions").iterdir()}
    assert directions_main(["setup", "--base-url", m.base, "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert len(m.requests) == first  # idempotent: nothing fetched twice
    assert {p: p.stat().st_mtime_ns for p in (home / "directions").iterdir()} == mtimes
    assert again.count("already installed") == len(NAMES) and again.count("already present") == 3


def test_setup_partial_failure_installs_what_it_can_and_says_what_failed(home, mirror, capsys):
    m = mirror(networks=False)  # the networks 404
    assert directions_main(["setup", "--base-url", m.base, "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert sorted(p.stem for p in (home / "directions").iterdir()) == sorted(NAMES)
    for name in weights.DEFAULT_NAMES:
        assert f"{name}: FAILED" in captured.err and not weights.path_for(name).exists()
    assert "HTTP 404" in captured.err
    last = captured.err.rstrip().splitlines()[-1]
    assert last.startswith("setup incomplete: the networks ") and SETUP_COMMAND in last
    assert "track faces only" in last
    report = check()
    assert report.part_ok("direction") and not report.part_ok("network")


def test_setup_offline_fails_fast_with_one_line_per_cause(home, monkeypatch, capsys):
    monkeypatch.setenv("MICROMOTION_WEIGHTS_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    assert directions_main(["setup", "--no-progress"]) == 1
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert f"{', '.join(NAMES)}: FAILED — cannot download" in err  # one line for the five directions
    assert err.count("unreachable") == 1 + len(weights.DEFAULT_NAMES)
    assert not (home / "directions").exists() or not any((home / "directions").iterdir())


def test_setup_keeps_the_users_own_file_of_an_official_name(home, mirror, capsys):
    import torch

    from directions import files

    own = files.Direction("smile", torch.ones(18, 512), files.make_meta("rpca", rank=4))
    files.save(own, home / "directions" / "smile.safetensors")
    m = mirror()
    assert directions_main(["setup", "--base-url", m.base, "--no-progress"]) == 0
    assert "smile: kept (your own file" in capsys.readouterr().out
    assert files.load(home / "directions" / "smile.safetensors").meta["method"] == "rpca"
    assert all((home / "directions" / f"{n}.safetensors").is_file() for n in NAMES)


def test_setup_check_downloads_nothing(home, mirror, capsys):
    m = mirror()
    assert directions_main(["setup", "--check", "--base-url", m.base]) == 1
    captured = capsys.readouterr()
    assert m.requests == [] and not (home / "weights").exists()
    assert "smile: missing" in captured.out and "e4e-ffhq: missing" in captured.out
    assert captured.err.startswith("missing: the directions smile") and SETUP_COMMAND in captured.err


# ------------------------------------------------------------------------------------------------ what doors show


def test_every_missing_state_shows_the_one_setup_command(home):
    """Problem 1: the command the doors show is ONE constant, and it names a real sub-command."""
    from stream import loader, status
    from stream.effect import DOWNLOAD_COMMAND
    from stream.options import EffectConfig

    assert loader.DOWNLOAD_COMMAND is SETUP_COMMAND and status.DIRECTIONS_COMMAND is SETUP_COMMAND
    assert DOWNLOAD_COMMAND is SETUP_COMMAND
    assert SETUP_COMMAND.startswith("python -m directions ")
    from directions.__main__ import make_parser

    args = make_parser(SETUP_COMMAND.split()[3:]).parse_args(SETUP_COMMAND.split()[3:])
    assert args.func.__name__ == "cmd_setup"
    assert f"`{SETUP_COMMAND}`" in status.describe(status.DIRECTIONS_MISSING)

    standin = loader.load_editor(EffectConfig(device="cpu"))  # no networks in the empty home
    assert standin.info.state == "networks_missing" and standin.info.command == SETUP_COMMAND
    assert SETUP_COMMAND in standin.info.notice and "directions" in standin.info.notice


@pytest.fixture(scope="module")
def tiny_on_disk(tmp_path_factory):
    from tiny_weights import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("tiny"))


def test_networks_without_directions_say_why_and_what_to_run(tiny_on_disk, tmp_path):
    """Problem 1: networks loaded but no direction: the page said "full", the direction box "none installed" and
    nothing said why. The editor's info (what /config and the Gradio app show) now does."""
    from stream.loader import load_editor
    from stream.options import EffectConfig

    empty = tmp_path / "none"
    editor = load_editor(EffectConfig(encoder=str(tiny_on_disk["encoder"]), directions_dir=str(empty), device="cpu"))
    info = editor.info
    assert info.available and info.direction_names == []
    assert info.state == "directions_missing" and info.command == SETUP_COMMAND
    assert info.notice.startswith(f"no directions installed in {empty}") and SETUP_COMMAND in info.notice

    # a direction file made for other networks: the notice names it and why
    import torch

    from directions import files

    odd = tmp_path / "odd"
    files.save(files.Direction("smile", torch.zeros(18, 512), {}), odd / "smile.safetensors")
    info = load_editor(EffectConfig(encoder=str(tiny_on_disk["encoder"]), directions_dir=str(odd),
                                    device="cpu")).info
    assert info.state == "directions_missing" and info.command == SETUP_COMMAND
    assert "smile.safetensors skipped" in info.notice and "python -m directions build" in info.notice
    assert info.skipped_directions and info.skipped_directions[0][0].endswith("smile.safetensors")

    # with directions: ready, nothing to say
    info = load_editor(EffectConfig(encoder=str(tiny_on_disk["encoder"]),
                                    directions_dir=str(tiny_on_disk["directions_dir"]), device="cpu")).info
    assert info.state == "ready" and info.notice is None and info.command is None


# ------------------------------------------------------------------------------------------------ install.sh


def _free_port() -> int:
    return _closed_port()


def _get_json(url: str, timeout: float = 2.0) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def test_install_weights_offline_still_opens_the_page(tmp_path):
    """Problem 2: `bash install.sh --weights && .venv/bin/python -m web` showed nothing when the download failed.
    With every download refused, install.sh exits 0 and says what failed; the venv works; the README's main
    command starts the page and /config names the setup command."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("install.sh needs the virtual environment the tests run in (MICROMOTION_VENV)")
    env = {k: v for k, v in os.environ.items() if k not in NO_PROXY_ENV}
    env.update(MICROMOTION_VENV=sys.prefix, MICROMOTION_HOME=str(tmp_path / "home"), NO_PROXY="127.0.0.1",
               MICROMOTION_WEIGHTS_BASE_URL=f"http://127.0.0.1:{_closed_port()}")
    env.pop("PYTHONPATH", None)
    res = subprocess.run(["bash", str(REPO / "install.sh"), "--weights"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Connection refused" in res.stderr and "setup incomplete" in res.stderr
    assert "install.sh: the install itself is complete" in res.stderr
    assert f"{sys.prefix}/bin/python -m directions setup" in res.stderr
    assert res.stdout.rstrip().splitlines()[-1].startswith(f"micromotion: environment ready in {sys.prefix} "
                                                            "(weights incomplete")

    port = _free_port()
    page = subprocess.Popen([f"{sys.prefix}/bin/python", "-m", "web", "--port", str(port), "--device", "cpu"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        config, deadline = None, time.monotonic() + 120
        while config is None and time.monotonic() < deadline and page.poll() is None:
            try:
                config = _get_json(f"http://127.0.0.1:{port}/config")
            except OSError:
                time.sleep(0.3)
        assert config is not None, f"the page did not start (exit {page.poll()})"
        assert config["mode"] == "tracking" and config["state"] == "networks_missing"
        assert config["command"] == SETUP_COMMAND and SETUP_COMMAND in config["notice"]
    finally:
        page.terminate()
        try:
            page.wait(timeout=20)
        except subprocess.TimeoutExpired:
            page.kill()
            page.wait()
