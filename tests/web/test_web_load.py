"""Load: 4 aiortc peers at once, the full Effect with tiny random weights, for a short while (MICROMOTION_LOAD_SECONDS, default 10), on loopback.

No errors, resident memory bounded, latest-frame-only (nothing queues), closed peers and a peer killed
without closing are freed. The full 60 s run: MICROMOTION_LOAD_SECONDS=60 or `python -m web.loadtest`.
"""
from __future__ import annotations

import json
import os
import statistics
import sys

import pytest

from web_netns import netns_missing_reason, run_loopback


@pytest.mark.slow
def test_four_peers_load(tmp_path, faces_dir):
    reason = netns_missing_reason()
    if reason:
        pytest.skip(reason)
    from tiny_weights import server_args, write_tiny_weights

    seconds = float(os.environ.get("MICROMOTION_LOAD_SECONDS", 10))
    weights = write_tiny_weights(tmp_path / "weights")
    out = tmp_path / "load.json"
    res = run_loopback([sys.executable, "-m", "web.loadtest", "--face", str(faces_dir / "01.jpg"),
                        "--peers", "4", "--seconds", str(seconds), "--json", str(out),
                        "--server-log", str(tmp_path / "server.log"), "--", *server_args(weights), "--peer-timeout", "5"],
                       timeout=seconds + 180)
    assert res.returncode == 0 and out.exists(), f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    print("\n" + res.stdout)
    report = json.loads(out.read_text())
    for peer in report["per_peer"]:
        assert "error" not in peer, peer
        assert peer["frames"] > 0 and peer["sizes"] == [[320, 240]]
        assert peer["server_errors"] == [] and peer["last_stats"]["errors"] == 0
        s = peer["last_stats"]
        assert 0 <= s["frames_in"] - s["frames_out"] - s["dropped"] <= 2, s
    timeline = [row for row in report["timeline"] if row["latency_ms"] is not None]
    assert len(timeline) >= 3
    assert max(row["peers"] for row in timeline) == 4
    rss = [row["rss_mb"] for row in timeline]
    assert max(rss) - rss[0] < 150, f"server RSS grew {rss[0]} → {max(rss)} MB"
    # latency does not grow (a queue would make it climb without bound): last quarter vs first quarter
    q = max(1, len(timeline) // 4)
    first = statistics.mean(r["latency_ms"] for r in timeline[:q])
    last = statistics.mean(r["latency_ms"] for r in timeline[-q:])
    assert last < 3 * first + 250, (first, last)
    assert report["peers_after_close"] == 0
    assert report["vanish"]["peers_during"] == report["vanish"]["peers_before"] + 1
    assert report["vanish"]["freed"], report["vanish"]
