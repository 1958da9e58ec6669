"""Runtime policy for the networks: precision, device placement, CUDA-graph replay, pinned host transfers.

* `resolve_device(device)`              -- "auto" -> "cuda" when available, else "cpu"; a `torch.device`.
* `Precision`                           -- "fp32" | "fp16" | "bf16" policy on any device; "auto" = fp16 on CUDA;
                                           on a CPU with native bf16 (AVX512-BF16 / AMX) bf16 for the generator,
                                           fp32 for the encoders; else fp32 (numbers in the class docstring).
* `autocast_dtype(device, precision)`   -- the torch dtype the networks run in under that policy.
* `prepare(module, device, precision)`  -- eval, no grad, moved to the device and cast to the policy's dtype.
* `CudaGraphRunner(fn, warmup=3)`       -- capture `fn` once per input-shape signature into a `torch.cuda.CUDAGraph`
                                           and replay it; eager on CPU and when capture fails (logged once).
* `maybe_compile(fn, enabled)`          -- `torch.compile` as an opt-in (off by default everywhere).
* `PinnedTransfer`                      -- reusable pinned host buffers + non-blocking host<->device copies.

Torch is imported lazily inside functions: importing this module costs nothing and never touches CUDA.
"""
from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 dot-product units
_logged_once: set[str] = set()


def _log_once(key: str, level: int, msg: str, *args) -> None:
    """Log `msg` the first time `key` is seen in this process."""
    if key in _logged_once:
        return
    _logged_once.add(key)
    log.log(level, msg, *args)


# ---------------------------------------------------------------------------------------------------------------------
# Device and precision


def resolve_device(device: Any = "auto"):
    """A `torch.device` for "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:N" or a device.

    Raises ValueError (one line) when CUDA is asked for but not available.
    """
    import torch  # noqa: PLC0415

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} ({exc}); use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available here; use --device cpu (or auto)")
    return dev


@dataclass(frozen=True)
class Precision:
    """Numeric policy for the networks.

    name:   "fp32" | "fp16" | "bf16" -- the dtype parameters and activations use on the device.
    device: the device type the policy was resolved for ("cpu", "cuda", ...).
    auto:   resolved from "auto": `prepare` then keeps networks that mark themselves `cpu_auto_fp32` (the IR-SE
            encoders) in float32 on CPU.

    Every precision runs on every device when asked for: the generator and the encoders are guarded for half
    precision (engine/stylegan2.py: float32 styles, pre-normalised modulation, float32 demodulation and RGB
    accumulation, float16 activation clamp). "auto" resolves to:

    * CUDA: fp16 (tensor cores; its error is ~8x below bf16's).
    * CPU with native bf16 (AVX512-BF16 or AMX-BF16 flags): bf16 for the generator, fp32 for the encoders.
      Decided by measurement on the recipe checkpoints of ../shared/fixtures (tests/engine/test_half_precision.py,
      tests/engine/half_error_table.py = `python -m engine.bench --errors`, `python -m engine.bench --device cpu`;
      AMD EPYC with AVX512-BF16 and no AMX, 2 threads, measured in a quiet spell of a shared machine):
      - generator, bf16 vs fp32 image: 256 px max 0.024 / mean 0.0037 (3.0 / 0.47 grey levels of 0..255; the
        recipe image peaks at 3.2: 0.73 % / 0.11 % of the peak), 1024 px max 0.063 / mean 0.0071 (1.5 % / 0.17 %
        of its 4.1 peak); styles scaled to |s| <= 50: max 1.7 % / mean 0.20 % of the peak; never inf/NaN. Bound:
        max 3 %, mean 0.4 % of the peak (~8 and 1 bf16 unit roundoffs 2^-8): holds. Speed (median of 7
        interleaved runs): 256 px (the live size) fp32 522 ms, bf16 260 ms (2.0x); 1024 px 1140 vs 731 ms (1.6x).
      - IR-SE50 encoders, bf16 vs fp32 latents: e4e max 0.006 (bound 0.05 latent units: holds), but ReStyle-pSp
        (the live default) max 0.21 / mean 0.044 after one iteration, 0.91 / 0.19 after five: its deep residual
        body amplifies rounding ~25x on the recipe weights (fp16: 0.036). Bound broken, so "auto" keeps the
        encoders fp32 on CPU even though bf16 runs them ~2x faster (restyle_psp 489 -> 241 ms, e4e 934 -> 444 ms);
        "bf16" asked for explicitly runs them in bf16.
    * any other CPU or device: fp32 (bf16/fp16 there are emulated: slower than fp32).

    fp16 on a CPU without native fp16 arithmetic (no AVX512-FP16 / AMX-FP16; this AMD EPYC has none) is allowed
    but slow (no oneDNN kernels: reference convolutions; G at 256 px 18x, encoders 4x slower than fp32): logged
    once. Its error is ~8x below bf16's (G at 256 px: max 0.0034 / mean 0.0008).
    """

    name: str = "fp32"
    device: str = "cpu"
    auto: bool = False

    @staticmethod
    def resolve(precision: str | "Precision" | None, device: Any = "cpu") -> "Precision":
        """Validate `precision` ("fp32" | "fp16" | "bf16" | "auto"/None, see the class docstring) for `device`.
        A `Precision` keeps its name and `auto` flag."""
        dev_type = _device_type(device)
        auto = False
        if isinstance(precision, Precision):
            precision, auto = precision.name, precision.auto
        name = (precision or "auto").strip().lower()
        if name == "auto":
            name, auto = auto_precision(dev_type), True
        if name not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)} (or auto)")
        if dev_type == "cpu" and name == "fp16" and not cpu_has_native_fp16():
            _log_once("slow-fp16-cpu", logging.WARNING,
                      "fp16 asked for on a CPU without native fp16 arithmetic: it runs, but slower than fp32; "
                      "use bf16 (or auto) for a fast half precision on CPU")
        return Precision(name=name, device=dev_type, auto=auto)

    @property
    def dtype(self):
        """The torch dtype of this policy."""
        return autocast_dtype(self.device, self.name)

    @property
    def is_half(self) -> bool:
        return self.name != "fp32"

    def keeps_fp32(self, module) -> bool:
        """True when `module` stays float32 under this policy: an "auto" half policy on CPU and a module that
        marks itself `cpu_auto_fp32` (see the class docstring)."""
        return self.is_half and self.auto and self.device == "cpu" and bool(getattr(module, "cpu_auto_fp32", False))


def auto_precision(device_type: str) -> str:
    """The "auto" policy for a device type: "fp16" on CUDA, "bf16" on a CPU with native bf16, else "fp32"."""
    if device_type == "cuda":
        return "fp16"
    if device_type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist, e.g. macOS / Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (x86 AVX512-BF16 or AMX-BF16)."""
    return any(flag in _cpu_flags() for flag in _NATIVE_BF16_FLAGS)


def cpu_has_native_fp16() -> bool:
    """True when this CPU has fp16 arithmetic instructions (x86 AVX512-FP16 or AMX-FP16)."""
    return any(flag in _cpu_flags() for flag in ("avx512_fp16", "amx_fp16"))


def _device_type(device: Any) -> str:
    if device is None:
        return "cpu"
    if isinstance(device, str):
        return device.split(":")[0].strip().lower() or "cpu"
    return str(getattr(device, "type", device))


def autocast_dtype(device: Any, precision: str):
    """torch dtype for `precision` ("fp32" | "fp16" | "bf16") on `device` (the same on every device)."""
    import torch  # noqa: PLC0415

    del device  # every device runs every precision (see Precision)
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def prepare(module, device: Any = "cpu", precision: str | Precision = "fp32", keep_fp32: Sequence[type] = ()):
    """Ready a network for inference: `eval()`, `requires_grad_(False)`, moved to `device`, cast to the policy
    (a float32 module under fp32 is left as it is; a half one is cast back to float32). Under a half policy the
    4-D weights are also made channels_last, the layout half-precision activations run in.

    keep_fp32: module classes whose parameters/buffers stay float32 under a half policy (e.g. normalisation
               layers whose statistics overflow in fp16). Their inputs are then cast by the caller or by autocast.
               Under an "auto" policy on CPU, submodules marked `cpu_auto_fp32` stay float32 too (`Precision`).
    Buffers that are not floating point (e.g. `num_batches_tracked`) are never cast. Returns the same module.
    """
    import torch  # noqa: PLC0415

    from engine.ops import HALF_DTYPES  # noqa: PLC0415

    policy = Precision.resolve(precision, device)
    dev = resolve_device(device)
    module = module.eval().requires_grad_(False).to(dev)
    if policy.is_half or any(p.is_floating_point() and p.dtype != torch.float32 for p in module.parameters()):
        module = module.to(policy.dtype)  # also back to float32 from an earlier half policy
    if policy.is_half:
        keep = tuple(keep_fp32)
        for sub in module.modules():
            if (keep and isinstance(sub, keep)) or policy.keeps_fp32(sub):
                sub.to(torch.float32)
        # half-precision activations run channels_last (oneDNN / tensor-core layout): 4-D conv weights too, once,
        # instead of a layout copy inside every conv call
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.ndim == 4 and tensor.dtype in HALF_DTYPES:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module


# ---------------------------------------------------------------------------------------------------------------------
# CUDA graphs


def _flatten(out) -> tuple[list, Callable[[list], Any]]:
    """Flat list of tensors in `out` (a tensor or a tuple/list of tensors) and a function rebuilding the structure."""
    import torch  # noqa: PLC0415

    if isinstance(out, torch.Tensor):
        return [out], lambda flat: flat[0]
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        kind = type(out)
        return list(out), lambda flat: kind(flat)
    raise TypeError(f"CudaGraphRunner: fn must return a tensor or a tuple of tensors, got {type(out).__name__}")


class _Captured:
    """One captured graph: static input buffers, the graph, static outputs."""

    def __init__(self, graph, static_in: list, static_out: list, rebuild: Callable):
        self.graph = graph
        self.static_in = static_in
        self.static_out = static_out
        self.rebuild = rebuild


class CudaGraphRunner:
    """Replay `fn(*tensors)` from a CUDA graph captured once per input-shape signature.

    fn:            a pure tensor function (no host sync, no data-dependent shapes, no CPU tensors created
                   inside); returns a tensor or a tuple of tensors.
    warmup:        eager iterations on a side stream before capture (lets cuDNN/cuBLAS pick algorithms and
                   allocate workspaces outside the graph).
    enabled:       False -> always eager.
    max_graphs:    captured signatures kept (least recently used dropped). A new signature -- e.g. the number of
                   faces changed -- is captured on first sight; one seen before is replayed without recapture.
    clone_outputs: True -> return copies; False (default) -> return the static output buffers, valid until the
                   next call (the caller copies them to the host right away).

    Calls with CPU tensors, without CUDA, or after a capture failure (logged once, with the reason) run `fn`
    eagerly, so callers never need a separate code path. Run it under `torch.no_grad()` / inference mode.
    """

    def __init__(
        self,
        fn: Callable,
        warmup: int = 3,
        enabled: bool = True,
        max_graphs: int = 8,
        clone_outputs: bool = False,
        name: str = "",
    ):
        self.fn = fn
        self.warmup = int(warmup)
        self.enabled = bool(enabled)
        self.max_graphs = int(max_graphs)
        self.clone_outputs = bool(clone_outputs)
        self.name = name or getattr(fn, "__name__", "fn")
        self._graphs: "OrderedDict[tuple, _Captured]" = OrderedDict()
        self._failed: set[tuple] = set()
        self._pool = None
        self.stats = {"captures": 0, "replays": 0, "eager": 0, "failures": 0}

    @staticmethod
    def signature(args: Sequence) -> tuple:
        """(shape, dtype, device) of every tensor argument: a new signature means a new capture."""
        return tuple((tuple(a.shape), str(a.dtype), str(a.device)) for a in args)

    def _graphable(self, args: Sequence) -> bool:
        import torch  # noqa: PLC0415

        if not self.enabled or not args:
            return False
        if not all(isinstance(a, torch.Tensor) and a.is_cuda for a in args):
            return False
        return bool(torch.cuda.is_available())

    def __call__(self, *args):
        if not self._graphable(args):
            self.stats["eager"] += 1
            return self.fn(*args)
        sig = self.signature(args)
        if sig in self._failed:
            self.stats["eager"] += 1
            return self.fn(*args)
        cap = self._graphs.get(sig)
        if cap is None:
            try:
                cap = self._capture(args)
            except Exception as exc:  # noqa: BLE001 -- any capture failure falls back to eager, once logged
                self._failed.add(sig)
                self.stats["failures"] += 1
                _log_once(f"graph-fail-{self.name}-{type(exc).__name__}", logging.WARNING,
                          "CUDA graph capture of %s failed (%s: %s); running it eagerly",
                          self.name, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                self.stats["eager"] += 1
                return self.fn(*args)
            self._graphs[sig] = cap
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(sig)
            for dst, src in zip(cap.static_in, args):
                dst.copy_(src, non_blocking=True)
        cap.graph.replay()
        self.stats["replays"] += 1
        out = cap.static_out
        if self.clone_outputs:
            out = [t.clone() for t in out]
        return cap.rebuild(out)

    def _capture(self, args: Sequence) -> _Captured:
        """Warm up on a side stream, then capture `fn` on static copies of `args`."""
        import torch  # noqa: PLC0415

        static_in = [a.detach().clone() for a in args]
        side = torch.cuda.Stream(device=static_in[0].device)
        side.wait_stream(torch.cuda.current_stream(static_in[0].device))
        with torch.cuda.stream(side):
            for _ in range(max(self.warmup, 1)):
                self.fn(*static_in)
        torch.cuda.current_stream(static_in[0].device).wait_stream(side)
        torch.cuda.synchronize(static_in[0].device)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (another stream's landmarks, a web worker) does not
        # invalidate this capture; only this thread's unsafe calls do.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            out = self.fn(*static_in)
        flat, rebuild = _flatten(out)
        self.stats["captures"] += 1
        log.info("captured CUDA graph for %s, input shapes %s", self.name, [tuple(a.shape) for a in args])
        return _Captured(graph, static_in, flat, rebuild)

    def reset(self) -> None:
        """Drop every captured graph (e.g. after the weights changed)."""
        self._graphs.clear()
        self._failed.clear()


def maybe_compile(fn: Callable, enabled: bool = False, mode: str = "max-autotune-no-cudagraphs") -> Callable:
    """`torch.compile(fn, mode=mode)` when `enabled`, else `fn`. Falls back to `fn` (logged once) on failure.

    The default mode leaves CUDA graphs to `CudaGraphRunner` so the two can be combined.
    """
    if not enabled:
        return fn
    import torch  # noqa: PLC0415

    try:
        return torch.compile(fn, mode=mode, dynamic=False)
    except Exception as exc:  # noqa: BLE001
        _log_once("compile-fail", logging.WARNING, "torch.compile unavailable (%s); running eagerly", exc)
        return fn


# ---------------------------------------------------------------------------------------------------------------------
# Pinned host buffers


class PinnedTransfer:
    """Host <-> device copies through reusable pinned buffers with non-blocking transfers.

    `to_device(array)` stages a numpy array (or CPU tensor) in a pinned buffer of its shape/dtype and issues a
    non-blocking H2D copy; the buffer is not reused before that copy finished (a CUDA event guards it).
    `to_host(tensor)` issues a non-blocking D2H copy into a pinned buffer, waits for it, and returns a numpy
    array that owns its memory (a copy of the pinned buffer, so it stays valid after the next call).
    On CPU devices both are plain conversions without copies where possible.
    """

    def __init__(self, device: Any = "cpu"):
        import torch  # noqa: PLC0415

        self.device = resolve_device(device)
        self._cuda = self.device.type == "cuda"
        self._buffers: dict = {}
        self._events: dict = {}
        self._torch = torch

    def _buffer(self, key: tuple, shape, dtype):
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._torch.empty(shape, dtype=dtype, pin_memory=True)
            self._buffers[key] = buf
        ev = self._events.get(key)
        if ev is not None:
            ev.synchronize()  # the previous copy through this buffer has finished
        return buf

    def to_device(self, array):
        """numpy array / CPU tensor -> tensor on the device (same dtype)."""
        torch = self._torch
        src = torch.from_numpy(array) if not isinstance(array, torch.Tensor) else array
        if not self._cuda:
            return src
        key = ("h2d", tuple(src.shape), src.dtype)
        buf = self._buffer(key, tuple(src.shape), src.dtype)
        buf.copy_(src)
        out = buf.to(self.device, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(self.device))
        self._events[key] = ev
        return out

    def to_host(self, tensor):
        """tensor on the device -> numpy array (a fresh array the caller owns)."""
        torch = self._torch
        if not tensor.is_cuda:
            return tensor.detach().numpy().copy()
        key = ("d2h", tuple(tensor.shape), tensor.dtype)
        buf = self._buffer(key, tuple(tensor.shape), tensor.dtype)
        buf.copy_(tensor.detach(), non_blocking=True)
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(tensor.device))
        self._events[key] = ev
        ev.synchronize()
        return buf.numpy().copy()


def synchronize(device: Any) -> None:
    """Wait for queued CUDA work on `device` (a no-op on CPU); used to time stages honestly."""
    if _device_type(device) == "cuda":
        import torch  # noqa: PLC0415

        torch.cuda.synchronize(device)


__all__ = [
    "PRECISIONS",
    "CudaGraphRunner",
    "PinnedTransfer",
    "Precision",
    "auto_precision",
    "autocast_dtype",
    "cpu_has_native_bf16",
    "cpu_has_native_fp16",
    "maybe_compile",
    "prepare",
    "resolve_device",
    "synchronize",
]
