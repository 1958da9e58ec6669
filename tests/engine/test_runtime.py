"""engine.runtime: precision policy, prepare, CUDA-graph runner (eager fallback on CPU; graphs on GPU)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from engine import runtime
from engine.runtime import CudaGraphRunner, PinnedTransfer, Precision, autocast_dtype, prepare

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_precision_resolve_runs_half_on_cpu_when_asked(caplog, monkeypatch):
    assert Precision.resolve("fp32", "cpu").dtype == torch.float32
    assert Precision.resolve("auto", "cuda").name == "fp16"
    assert Precision.resolve("bf16", "cuda").dtype == torch.bfloat16
    p = Precision.resolve("bf16", "cpu")
    assert p.name == "bf16" and p.dtype == torch.bfloat16 and p.is_half and p.device == "cpu"
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"avx512f"}))  # no native fp16 / bf16
    runtime._logged_once.discard("slow-fp16-cpu")
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        p = Precision.resolve("fp16", "cpu")
        Precision.resolve("fp16", "cpu")
    assert p.name == "fp16" and p.dtype == torch.float16  # runs as asked ...
    assert sum("slower than fp32" in r.getMessage() for r in caplog.records) == 1  # ... with one warning
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Precision.resolve("fp8", "cpu")
    assert autocast_dtype("cpu", "fp16") == torch.float16
    assert autocast_dtype("cuda:0", "bf16") == torch.bfloat16


@pytest.mark.parametrize("flags, expected", [
    ({"avx512f", "avx512_bf16"}, "bf16"),   # AVX512-BF16 (e.g. AMD Zen 4, Intel Cooper Lake+)
    ({"avx512f", "amx_bf16"}, "bf16"),      # AMX (Intel Sapphire Rapids+)
    ({"avx2"}, "fp32"),                     # bf16 would be emulated: slower than fp32
    (set(), "fp32"),                        # no /proc/cpuinfo (macOS, Windows)
])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, flags, expected):
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset(flags))
    assert Precision.resolve("auto", "cpu").name == expected
    assert Precision.resolve(None, "cpu").name == expected
    assert Precision.resolve("auto", "cuda").name == "fp16"
    assert Precision.resolve("auto", "mps").name == "fp32"


def test_cpu_flags_are_read_from_proc_cpuinfo():
    flags = runtime._cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").exists():
        assert flags  # x86 and arm Linux both list a flags line
    assert runtime.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_resolve_device_errors():
    assert runtime.resolve_device("cpu").type == "cpu"
    assert runtime.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        runtime.resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.resolve_device("cuda")


def test_prepare_eval_nograd_and_keep_fp32():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5))
    net.train()
    out = prepare(net, "cpu", "bf16", keep_fp32=(torch.nn.BatchNorm2d,))  # half precision runs on CPU too
    assert out is net and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    assert [p.dtype for p in net.parameters()] == [torch.bfloat16] * 2 + [torch.float32] * 2
    x = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    assert torch.equal(net(x), net(x))  # dropout off in eval
    prepare(net, "cpu", "fp32")
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_graph_runner_eager_on_cpu_matches_fn():
    calls = []

    def fn(a, b):
        calls.append(tuple(a.shape))
        return a * 2 + b, a - b

    runner = CudaGraphRunner(fn, warmup=2)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    y1, y2 = runner(a, b)
    assert torch.equal(y1, a * 2 + b) and torch.equal(y2, a - b)
    y1, _ = runner(torch.ones(5, 4), torch.zeros(5, 4))  # another shape: still eager, still right
    assert torch.equal(y1, torch.full((5, 4), 2.0))
    assert runner.stats == {"captures": 0, "replays": 0, "eager": 2, "failures": 0}
    assert calls == [(3, 4), (5, 4)]


def test_graph_runner_signature():
    sig = CudaGraphRunner.signature([torch.zeros(2, 3), torch.zeros(1, dtype=torch.float16)])
    assert sig == (((2, 3), "torch.float32", "cpu"), ((1,), "torch.float16", "cpu"))


def test_pinned_transfer_cpu_roundtrip():
    import numpy as np

    pt = PinnedTransfer("cpu")
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    t = pt.to_device(arr)
    back = pt.to_host(t * 2)
    assert back.dtype == np.uint8 and np.array_equal(back, arr * 2)


@pytest.mark.gpu
@needs_cuda
def test_graph_runner_cuda_capture_replay_and_recapture():
    lin = torch.nn.Linear(16, 8).cuda().eval()

    def fn(x):
        return torch.relu(lin(x))

    runner = CudaGraphRunner(fn, warmup=2)
    with torch.no_grad():
        for n in (4, 4, 2, 4):
            x = torch.randn(n, 16, device="cuda")
            y = runner(x)
            torch.testing.assert_close(y, fn(x), rtol=1e-5, atol=1e-5)
    assert runner.stats["captures"] == 2 and runner.stats["replays"] == 4


@pytest.mark.gpu
@needs_cuda
def test_graph_runner_capture_failure_falls_back():
    def fn(x):
        return x[x > 0].sum().reshape(1)  # data-dependent shape: capture fails

    runner = CudaGraphRunner(fn)
    x = torch.randn(8, device="cuda")
    with torch.no_grad():
        y = runner(x)
    torch.testing.assert_close(y, fn(x))
    assert runner.stats["failures"] == 1


@pytest.mark.gpu
@needs_cuda
def test_pinned_transfer_cuda_roundtrip():
    import numpy as np

    pt = PinnedTransfer("cuda")
    arr = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    t = pt.to_device(arr)
    assert t.is_cuda
    assert np.array_equal(pt.to_host(t), arr)


def test_auto_policy_on_cpu_keeps_marked_networks_fp32(monkeypatch):
    """"auto" on a bf16 CPU: the generator goes bf16, a network marked `cpu_auto_fp32` (the encoders) stays fp32;
    asked for explicitly, bf16 covers both. 4-D half weights become channels_last."""
    class Marked(torch.nn.Conv2d):
        cpu_auto_fp32 = True

    def make():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Marked(4, 4, 3))

    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    auto = Precision.resolve("auto", "cpu")
    assert (auto.name, auto.auto) == ("bf16", True)
    assert Precision.resolve(auto, "cpu") == auto  # a resolved policy keeps its flag
    net = prepare(make(), "cpu", auto)
    assert net[0].weight.dtype == torch.bfloat16 and net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net[1].weight.dtype == torch.float32 and net[1].weight.is_contiguous()
    net = prepare(make(), "cpu", "bf16")
    assert net[1].weight.dtype == torch.bfloat16
    assert not Precision.resolve("auto", "cuda").keeps_fp32(Marked(1, 1, 1))  # CUDA auto: fp16 everywhere
