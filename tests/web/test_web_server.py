"""`web.server`: bad input on /offer, per-client errors, several peers each with its own controls.

HTTP-only checks run here on 127.0.0.1; tests that move media re-run themselves in a loopback-only
network namespace (see web_netns.py).
"""
from __future__ import annotations

import asyncio
import json

import numpy as np
from pathlib import Path
import pytest

from web_netns import rerun_in_netns


def _demo_effect():
    """The network-free demo editor (`--demo`) behind the real batching backend and sessions."""
    from stream.effect import Effect, EffectConfig

    return Effect.open(EffectConfig(demo=True, device="cpu"), batching=True)


async def _serve(effect, **config):
    from aiohttp import web

    from web.server import ServerConfig, WebServer

    server = WebServer(effect, ServerConfig(ice_addresses=["127.0.0.1"], **config))
    runner = web.AppRunner(server.make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return server, runner, f"http://127.0.0.1:{port}"


async def _post(url, data, content_type="application/json"):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=data, headers={"Content-Type": content_type}) as r:
            return r.status, await r.json()


async def _get(url):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status, await r.json()


BAD_OFFERS = [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (json.dumps([1, 2, 3]).encode(), "expected a JSON object"),
    (json.dumps({"sdp": "v=0", "type": "answer"}).encode(), "expected a JSON object"),
    (json.dumps({"sdp": 42, "type": "offer"}).encode(), "expected a JSON object"),
    (json.dumps({"sdp": "hello", "type": "offer"}).encode(), "no video section"),
    (json.dumps({"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=garbage\r\n", "type": "offer"}).encode(),
     "malformed SDP"),
    (json.dumps({"sdp": "m=video\n" + "x" * 1000, "type": "offer"}).encode(), "malformed SDP"),
]


def test_bad_offers_get_400_with_message_and_server_keeps_serving():
    from web.guard import Limits

    async def scenario():
        server, runner, url = await _serve(_demo_effect(), limits=Limits(offer_burst=50))   # not the rate here
        try:
            for body, expected in BAD_OFFERS:
                status, reply = await _post(f"{url}/offer", body)
                assert status == 400, (body, reply)
                assert expected in reply["error"], (body, reply)
            status, reply = await _post(f"{url}/offer", b"x" * (300 * 1024))
            assert status == 413 and "not an SDP offer" in reply["error"]
            assert not server.peers, "a refused offer must not leave a peer behind"
            status, cfg = await _get(f"{url}/config")
            assert status == 200 and cfg["directions"] and cfg["iceServers"] == []
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_ice_servers_empty_unless_asked():
    from web.server import ice_servers_from_urls

    assert ice_servers_from_urls() == []
    servers = ice_servers_from_urls(["stun.example.org:3478"], ["turn.example.org:3478"], "u", "p")
    assert servers == [{"urls": ["stun:stun.example.org:3478"]},
                       {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]


def test_host_candidates_restricted_and_loopback_fallback(monkeypatch):
    import aioice.ice

    from web import ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    monkeypatch.setattr(ice, "_original_get_host_addresses", lambda use_ipv4, use_ipv6: [])
    ice.restrict_host_candidates(None)
    assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
    ice.restrict_host_candidates(["127.0.0.1"])
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]


def test_two_peers_own_controls_and_errors_stay_with_their_client(request, faces_dir):
    """Media test (loopback namespace): A sends an unknown direction → only A hears of it; B's α applies."""
    if rerun_in_netns(request):
        return
    import cv2

    from web.loadtest import moving_face_frames, run_peer
    from web.server import restrict_host_candidates

    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets

    restrict_host_candidates(["127.0.0.1"])
    frames = moving_face_frames(cv2.imread(str(faces_dir / "01.jpg")), n=30)
    _, E, deltas = build_tiny_nets()
    effect = Effect(EffectConfig(device="cpu"), encoder=E, directions=deltas, batching=True)
    states = []
    make_session = effect.new_session
    effect.new_session = lambda **kw: states.append(make_session(**kw)) or states[-1]
    direction = effect.available_directions[0]

    async def scenario():
        server, runner, url = await _serve(effect, stats_interval_s=0.5)
        assert server.mode == "full"
        sent = {"a": False}

        def a_messages(msg, channel):
            if msg["type"] == "stats" and not sent["a"] and msg["frames_out"] > 0:
                sent["a"] = True
                channel.send(json.dumps({"type": "controls", "controls": {"directions": {"nope": 1.0}}}))
                channel.send("{this is not json")

        try:
            a, b = await asyncio.gather(
                run_peer(url, frames, 6.0, controls={"directions": {direction: 0.0}}, on_message=a_messages),
                run_peer(url, frames, 6.0, controls={"directions": {direction: 3.5}}))
            # a malformed offer in the middle of it all does not disturb anyone
            status, _ = await _post(f"{url}/offer", b"{")
            assert status == 400
            await asyncio.sleep(1.0)
            status, stats = await _get(f"{url}/stats")
        finally:
            await runner.cleanup()
        return a, b, stats

    a, b, stats = asyncio.run(scenario())
    assert stats["peers"] == 0, "closed peers must be freed"
    import gc

    from web.peer import Peer
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, Peer)], "Peer objects outlived their connection"
    assert len(states) == 3 and all(st.tracker is None for st in states), "stream states were not closed"
    for r in (a, b):
        assert r["frames"] > 10 and r["sizes"] == [(320, 240)]
        last = r["stats"][-1]
        assert last["errors"] == 0
        # latest-frame only: at most one frame waiting and one in the worker
        assert 0 <= last["frames_in"] - last["frames_out"] - last["dropped"] <= 2
    assert "unknown direction" in a["errors"][0]["message"] and "'nope'" in a["errors"][0]["message"]
    assert any("not a JSON object" in m["message"] for m in a["errors"])
    assert b["errors"] == [], "errors of one client must not reach another"
    assert a["stats"][-1]["controls"]["directions"] == {direction: 0.0}, "a refused change keeps the old controls"
    assert b["stats"][-1]["controls"]["directions"] == {direction: 3.5}
    # each peer's α shows in its own pixels: α = 0 (residual paste) returns the camera picture, α = 3.5 does not.
    # Distance of a received frame to the closest sent frame, over the face:
    def distance(frame):
        face = (slice(60, 180), slice(80, 240))
        return min(float(np.abs(frame[face].astype(np.float32) - f[face]).mean()) for f in frames)

    assert a["last_frame"] is not None and b["last_frame"] is not None
    d_a, d_b = distance(a["last_frame"]), distance(b["last_frame"])
    assert d_b > d_a + 5, (d_a, d_b)
    assert a["stats"][-1]["effect"]["edited"] > 0 and b["stats"][-1]["effect"]["edited"] > 0


def test_cli_refuses_bad_tls_options_with_one_line(capsys, tmp_path):
    from web.__main__ import main
    from web.gradio import main as gradio_main

    for door in (main, gradio_main):   # both web doors: one rule, refused before any effect is loaded
        assert door(["--demo", "--key", str(tmp_path / "k.pem")]) == 2
        assert "--cert and --key go together" in capsys.readouterr().err
    assert main(["--demo", "--cert", str(tmp_path / "c.pem")]) == 2
    assert "--cert and --key go together" in capsys.readouterr().err
    assert main(["--demo", "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")]) == 2
    assert "cannot load --cert/--key" in capsys.readouterr().err


def test_config_advertises_ice_servers_only_when_given():
    from web.server import ServerConfig, WebServer, ice_servers_from_urls

    async def scenario():
        from aiohttp import web

        servers = ice_servers_from_urls(stun=["stun.example.org:3478"])
        server = WebServer(_demo_effect(), ServerConfig(ice_servers=servers, ice_addresses=["127.0.0.1"]))
        runner = web.AppRunner(server.make_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            return await _get(f"http://127.0.0.1:{port}/config")
        finally:
            await runner.cleanup()

    status, cfg = asyncio.run(scenario())
    assert status == 200 and cfg["iceServers"] == [{"urls": ["stun:stun.example.org:3478"]}]


def test_config_carries_each_directions_alpha_range_from_its_file(tmp_path):
    """Tiny direction FILES with different metadata → /config "alpha" per direction (range, default, step);
    a file without a range gets the fallback [0, 5]. The range is a UI hint: the server still takes any
    finite |α| <= 100 and refuses NaN / absurd magnitudes."""
    import torch

    from directions.files import Direction, save
    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets

    G, E, _ = build_tiny_nets()
    metas = {
        "official_smile": {"method": "official", "alpha_range": [0.0, 10.0], "alpha_default": 5.0},
        "ifg_age": {"method": "interfacegan", "alpha_range": [-3.0, 3.0]},
        "video_blink": {"method": "video", "alpha_range": [0.0, 2.0], "alpha_default": 7.0},  # default outside
        "bare": {"source": "no range recorded"},
    }
    folder = tmp_path / "directions"
    folder.mkdir()
    gen = torch.Generator().manual_seed(3)
    for name, meta in metas.items():
        save(Direction(name, torch.randn(G.num_ws, G.w_dim, generator=gen), meta), folder / name)
    effect = Effect(EffectConfig(device="cpu", directions_dir=str(folder)), encoder=E)
    info = effect.direction_info()
    assert info["official_smile"] == {"alpha_range": [0.0, 10.0], "alpha_default": 5.0, "method": "official"}
    assert info["bare"] == {"alpha_range": None, "alpha_default": None, "method": None}
    async def scenario():
        server, runner, url = await _serve(effect)
        try:
            return await _get(f"{url}/config")
        finally:
            await runner.cleanup()

    status, cfg = asyncio.run(scenario())
    assert status == 200 and sorted(cfg["directions"]) == sorted(metas)
    alpha = cfg["alpha"]
    assert set(alpha) == set(metas)
    pick = {name: (h["min"], h["max"], h["default"], h["step"], h["source"]) for name, h in alpha.items()}
    assert pick["official_smile"] == (0.0, 10.0, 5.0, 0.1, "file")
    assert pick["ifg_age"] == (-3.0, 3.0, 1.5, 0.05, "file")      # no default: middle of the positive part
    assert pick["video_blink"] == (0.0, 2.0, 1.0, 0.02, "file")    # a default outside the range is ignored
    assert pick["bare"] == (0.0, 5.0, 2.5, 0.05, "fallback")
    assert alpha["official_smile"]["method"] == "official" and alpha["bare"]["method"] is None

    # the suggested range does not bind the server: α = 20 on a [0, 2] direction is accepted ...
    assert effect.parse_controls({"directions": {"video_blink": 20.0}}).directions == {"video_blink": 20.0}
    assert effect.parse_controls({"directions": {"ifg_age": -9.0}}).directions == {"ifg_age": -9.0}
    # ... while non-finite or absurd values are refused with one line, as before
    for bad in (float("nan"), float("inf"), 1e6):
        with pytest.raises(ValueError, match="finite number"):
            effect.parse_controls({"directions": {"video_blink": bad}})


def test_alpha_hint_fallbacks_for_unusable_metadata():
    from web.hints import alpha_hint, alpha_hints

    for bad in (None, [1.0, 1.0], [5.0, 0.0], [0.0, float("nan")], [0.0, 1e6], "wide", [1.0]):
        h = alpha_hint({"alpha_range": bad})
        assert (h["min"], h["max"], h["default"], h["source"]) == (0.0, 5.0, 2.5, "fallback"), bad
    assert alpha_hint(None)["source"] == "fallback"
    h = alpha_hint({"alpha_range": [-4.0, -1.0]})                 # an all-negative range: its middle
    assert (h["min"], h["max"], h["default"]) == (-4.0, -1.0, -2.5)
    # the demo effect's directions carry no metadata: each gets the fallback
    assert {n: v["max"] for n, v in alpha_hints(["a", "b"], {}).items()} == {"a": 5.0, "b": 5.0}


def test_a_duplicate_or_stray_direction_file_is_skipped_and_the_page_still_starts(tmp_path):
    """A copy `smile (1).safetensors` and a file for another generator in the folder: the page starts with the
    good directions and /config names each skipped file with its reason."""
    import shutil

    import torch

    from directions.files import Direction, save
    from stream.effect import Effect, EffectConfig
    from tiny_weights import write_tiny_weights

    weights = write_tiny_weights(tmp_path / "w")
    folder = weights["directions_dir"]
    shutil.copy(folder / "smile.safetensors", folder / "smile (1).safetensors")
    save(Direction("wide", torch.zeros(40, 32), {}), folder / "wide.safetensors")   # another generator's layout
    effect = Effect.open(EffectConfig(encoder=str(weights["encoder"]), directions_dir=str(folder), device="cpu"))

    async def scenario():
        server, runner, url = await _serve(effect)
        try:
            return await _get(f"{url}/config")
        finally:
            await runner.cleanup()

    status, cfg = asyncio.run(scenario())
    effect.close()
    assert status == 200 and cfg["mode"] == "full" and sorted(cfg["directions"]) == ["eyes_closing", "smile"]
    skipped = {Path(f).name: reason for f, reason in cfg["skipped_directions"]}
    assert set(skipped) == {"smile (1).safetensors", "wide.safetensors"}
    assert "duplicate" in skipped["smile (1).safetensors"] or "already" in skipped["smile (1).safetensors"]
