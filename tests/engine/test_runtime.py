"""engine.runtime: precision policy, prepare, CUDA-graph runner (eager fallback on CPU; graphs on GPU)."""
from __future__ import annotations

import logging

import pytest
import torch

from engine import runtime
from engine.runtime import CudaGraphRunner, PinnedTransfer, Precision, autocast_dtype, prepare

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_precision_resolve_and_cpu_forcing(caplog):
    assert Precision.resolve("fp32", "cpu").dtype == torch.float32
    assert Precision.resolve("auto", "cpu").name == "fp32"
    assert Precision.resolve("auto", "cuda").name == "fp16"
    assert Precision.resolve("bf16", "cuda").dtype == torch.bfloat16
    runtime._logged_once.discard("force-fp32-cpu-fp16")
    with caplog.at_level(logging.INFO, logger="engine.runtime"):
        p = Precision.resolve("fp16", "cpu")
        Precision.resolve("fp16", "cpu")
    assert p.name == "fp32" and p.dtype == torch.float32 and not p.is_half
    assert sum("running fp32" in r.getMessage() for r in caplog.records) == 1  # logged once
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Precision.resolve("fp8", "cpu")
    assert autocast_dtype("cpu", "fp16") == torch.float32
    assert autocast_dtype("cuda:0", "fp16") == torch.float16


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
    out = prepare(net, "cpu", "fp16")  # forced fp32 on CPU
    assert out is net and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x), net(x))  # dropout off in eval


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
