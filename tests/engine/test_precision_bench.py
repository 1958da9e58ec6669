"""`python -m engine.bench` CPU precision rows and `python -m engine.precision_errors` on tiny networks (wiring,
table and JSON; the speed and error figures themselves come from the full-size runs, never from tests)."""
from __future__ import annotations

import json

import torch

from engine import bench, precision_errors
from gen_helpers import make_tiny_generator
from test_encoder_checkpoints import tiny_checkpoint


def test_bench_times_every_cpu_precision_interleaved(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--device", "cpu", "--small", "--resolution", "32", "--precisions", "fp32,bf16",
                     "--encoders", "e4e", "--reps", "1", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = [(r["network"], r["precision"], r["size"]) for r in result["rows"]]
    assert rows == [("generator", "fp32", "32px out"), ("generator", "bf16", "32px out"),
                    ("encoder e4e", "fp32", "256px in"), ("encoder e4e", "bf16", "256px in")]
    assert all(r["ms"] >= r["best_ms"] > 0 and r["cpu_ms"] > 0 and not r["cuda_graphs"] for r in result["rows"])
    assert isinstance(result["native_bf16"], bool)
    table = capsys.readouterr().out
    assert "native bf16" in table and table.count(" bf16 ") >= 2


def test_bench_rejects_bad_precision_and_resolution(capsys):
    assert bench.main(["--device", "cpu", "--precisions", "fp8"]) == 2
    assert "unknown precision" in capsys.readouterr().err
    assert bench.main(["--device", "cpu", "--small", "--resolution", "48", "--encoders", ""]) == 2
    assert "--resolution must be a power of two" in capsys.readouterr().err


def test_interleaved_timing_runs_each_function_in_turn():
    calls = []
    times = bench.time_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], reps=2, device="cpu")
    assert calls == ["a", "b", "a", "b", "a", "b"]  # one warm-up each, then alternating
    assert len(times) == 2 and all(len(t) == 3 and t[0] >= t[1] >= 0 for t in times)  # (median, best, CPU ms)


def test_error_table_on_tiny_checkpoints(tmp_path, capsys):
    G = make_tiny_generator(channel_max=32)
    gen_path = tmp_path / "g.pt"
    torch.save({"g_ema": G.state_dict(), "latent_avg": G.latent_avg.clone()}, gen_path)
    enc_path, _ = tiny_checkpoint(tmp_path / "e.pt")  # ReStyle-pSp + its tiny decoder
    out = tmp_path / "errors.json"
    rc = bench.main(["--errors", "--generator", str(gen_path), "--encoder", str(enc_path), "--resolution", "16",
                     "--iters", "1,2", "--batch", "1", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    gen = [r for r in rows if r["network"] == "generator"]
    assert [(r["precision"], r["case"]) for r in gen] == [(p, c) for p in ("bf16", "fp16")
                                                         for c in ("ws", "mapped", "styles<=50")]
    enc = [r for r in rows if r["network"] == "encoder restyle_psp"]
    assert {(r["precision"], r["case"], r["what"]) for r in enc} == {
        (p, f"iters={n}", w) for p in ("bf16", "fp16") for n in (1, 2) for w in ("ws", "image")}
    for r in rows:
        assert r["finite"] and r["max"] >= r["p99.9"] >= 0 and r["max"] >= r["mean"]
        assert r["max"] <= 0.05 * max(r["peak"], 1.0)  # half precision, not a broken network
        if r["what"] == "image":
            assert abs(r["max_grey"] - 127.5 * r["max"]) < 1e-9
    table = capsys.readouterr().out
    assert "max grey" in table and "styles<=50" in table


def test_style_scaling_reaches_the_target():
    G = make_tiny_generator(channel_max=32)
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    k = precision_errors.scale_for_style_max(G, ws, 40.0)
    with torch.no_grad():
        peak = max(float(s.abs().max()) for s in precision_errors.conv_styles(G, ws * k))
    assert k > 1 and abs(peak - 40.0) < 1e-3


def test_missing_generator_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path))
    assert precision_errors.main(["--generator", "stylegan2-ffhq"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "python -m engine.weights download" in err
