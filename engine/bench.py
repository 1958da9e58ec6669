"""python -m engine.bench: ms per forward of the generator and of each encoder at 256, per precision.

Random-weight networks of the full-size configurations (StyleGAN2 config-f 1024, IR-SE50 encoders): the speed
is real even though the weights are not. On CUDA: fp32 vs fp16 (and bf16 with --bf16), eager vs CUDA graphs.
On CPU: fp32, bf16 and fp16 eager (`--precisions`; bf16 is fast only with native bf16, fp16 is emulated on
most CPUs). The generator renders `--resolution` (default its full 1024; the live path renders 256 through
`out_resolution`). Variants of one network are timed interleaved (one run of each in turn), so a machine
whose load drifts biases none of them. Reported: the median wall time (ms), the fastest run (best ms: on a CPU
shared with other jobs, the least disturbed one) and the median CPU time of this process (cpu ms, all threads).

    python -m engine.bench [--device auto] [--reps N] [--batch B] [--resolution R] [--precisions fp32,bf16]
                           [--json out.json] [--small]
    python -m engine.bench --errors [--generator NAME|PATH] [--encoders ...]   (see engine.precision_errors)

Encoder rows time ONE network pass (ReStyle: one iteration's encoder, image ⊕ reconstruction, without the
decoder pass that a full iteration adds: see the generator row for that).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from typing import Callable, Sequence

log = logging.getLogger(__name__)
ENCODER_KINDS = ("psp", "e4e", "restyle_psp", "restyle_e4e")
CPU_PRECISIONS = ("fp32", "bf16", "fp16")


def build_generator(small: bool = False):
    from engine.stylegan2 import Generator  # noqa: PLC0415

    if small:
        return Generator(resolution=256, w_dim=512, n_mapping=2, channel_multiplier=1, channel_max=256)
    return Generator(resolution=1024, w_dim=512, n_mapping=8, channel_multiplier=2)


def build_encoder(kind: str, G, small: bool = False):
    """Random-weight encoder of `kind` for generator G (its decoder for ReStyle kinds)."""
    from engine.encoders import Encoder, build_network  # noqa: PLC0415

    extra = dict(widths=(32, 64, 128, 256), units=(1, 2, 3, 1)) if small else {}
    net = build_network(kind, num_ws=G.num_ws, w_dim=G.w_dim, input_size=256, **extra)
    return Encoder(net, kind, G.latent_avg.clone(), decoder=G if kind.startswith("restyle") else None)


def time_interleaved(fns: Sequence[Callable], reps: int, device) -> list[tuple[float, float, float]]:
    """(median wall ms, fastest wall ms, median process-CPU ms) of each `fn()` over `reps` rounds; every round
    runs each fn once, in turn (after one warm-up of each), so load that drifts during the measurement affects all
    of them alike. On a machine shared with other jobs the fastest run is the least disturbed one; the CPU time
    (all threads of this process) is the work done; on CUDA only the wall times mean anything."""
    from engine.runtime import synchronize  # noqa: PLC0415

    for fn in fns:
        fn()
    synchronize(device)
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            wall[i].append((time.perf_counter() - t0) * 1e3)
            cpu[i].append((time.process_time() - c0) * 1e3)
    return [(statistics.median(w), min(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def variants(device, bf16: bool, precisions: Sequence[str] | None = None) -> list[tuple[str, bool]]:
    """(precision, cuda_graphs) pairs to measure on this device: `precisions` if given (CPU default fp32, bf16,
    fp16; CUDA default fp32, fp16 and bf16 with `bf16`), each with and without CUDA graphs on CUDA."""
    if device.type != "cuda":
        return [(p, False) for p in (precisions or CPU_PRECISIONS)]
    precs = list(precisions or (["fp32", "fp16"] + (["bf16"] if bf16 else [])))
    return [(p, g) for p in precs for g in (False, True)]


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo ("model name"), else `platform.processor()`, else "cpu"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _inputs(net, kind: str | None, batch: int, dev, dtype):
    """(fn input, size label) for a prepared network: ws for the generator, an image batch for an encoder."""
    import torch  # noqa: PLC0415

    if kind is None:
        return torch.randn(batch, net.num_ws, net.w_dim, device=dev), None
    chans = 6 if kind.startswith("restyle") else 3
    x = torch.rand(batch, chans, net.input_size, net.input_size, device=dev, dtype=dtype) * 2 - 1
    return x, f"{net.input_size}px in"


def run(device="auto", reps: int | None = None, batch: int = 1, small: bool = False, bf16: bool = False,
        encoders: Sequence[str] = ENCODER_KINDS, resolution: int | None = None,
        precisions: Sequence[str] | None = None) -> dict:
    """Time the generator (rendering `resolution`, default its full size) and `encoders` at every variant."""
    import copy  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from engine.runtime import CudaGraphRunner, cpu_has_native_bf16, prepare, resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    reps = reps or (20 if dev.type == "cuda" else 3)
    torch.manual_seed(0)
    G0 = build_generator(small)
    r = resolution or G0.resolution
    if r not in G0.channels:
        raise ValueError(f"--resolution must be a power of two from 4 to {G0.resolution}, got {resolution}")
    rows = []
    nets = [("generator", None)] + [(f"encoder {k}", k) for k in encoders]
    for label, kind in nets:
        base = G0 if kind is None else build_encoder(kind, G0, small)
        runs = []
        for prec, graphs in variants(dev, bf16, precisions):
            net = prepare(copy.deepcopy(base), dev, prec)
            x, size = _inputs(net, kind, batch, dev, next(net.parameters()).dtype)
            fn = (lambda ws, G=net: G(ws, out_resolution=r)) if kind is None else net.encoder
            runs.append((prec, graphs, CudaGraphRunner(fn, enabled=graphs, name=label), x,
                         size or f"{r}px out"))
        with torch.inference_mode():
            times = time_interleaved([lambda run=run: run[2](run[3]) for run in runs], reps, dev)
        for (prec, graphs, runner, _, size), (ms, best_ms, cpu_ms) in zip(runs, times):
            rows.append({"network": label, "size": size, "batch": batch, "device": str(dev), "precision": prec,
                         "cuda_graphs": graphs and runner.stats["replays"] > 0, "ms": round(ms, 2),
                         "best_ms": round(best_ms, 2), "cpu_ms": round(cpu_ms, 2), "reps": reps})
            log.info("%s %s %s graphs=%s: %.1f ms", label, dev, prec, graphs, ms)
        del runs
    return {
        "benchmark": "engine.bench",
        "config": "small" if small else "full (StyleGAN2 config-f 1024, IR-SE50 encoders at 256)",
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "native_bf16": cpu_has_native_bf16() if dev.type == "cpu" else None,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def format_table(result: dict) -> str:
    head = (f"{'network':<22} {'size':<12} {'batch':>5} {'device':<7} {'prec':<5} {'graphs':<6} {'ms':>10} "
            f"{'best ms':>10} {'cpu ms':>10}")
    bf16 = "" if result.get("native_bf16") is None else f", native bf16: {'yes' if result['native_bf16'] else 'no'}"
    lines = [f"# {result['benchmark']} -- {result['config']}; torch {result['torch']}, "
             f"{result['device_name']}{bf16}, {result['threads']} threads", head, "-" * len(head)]
    for r in result["rows"]:
        best, cpu_ms = r.get("best_ms", float("nan")), r.get("cpu_ms", float("nan"))
        lines.append(f"{r['network']:<22} {r['size']:<12} {r['batch']:>5} {r['device']:<7} {r['precision']:<5} "
                     f"{'yes' if r['cuda_graphs'] else 'no':<6} {r['ms']:>10.1f} {best:>10.1f} {cpu_ms:>10.1f}")
    return "\n".join(lines)


def report(table: str, result: dict, json_path: str | None) -> None:
    """Print a benchmark's table; when `json_path` is given also write `result` there as JSON (indent 2)."""
    print(table)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {json_path}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__.splitlines()[0],
                                allow_abbrev=False)
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda[:N]")
    p.add_argument("--reps", type=int, default=None, help="timed runs per row (default 20 CUDA, 3 CPU)")
    p.add_argument("--batch", type=int, default=1, help="images per network call (default 1)")
    p.add_argument("--small", action="store_true", help="small configs (G 256, narrow encoders)")
    p.add_argument("--resolution", type=int, default=None,
                   help="generator output size (out_resolution; default the full resolution, 1024)")
    p.add_argument("--precisions", default=None,
                   help="comma-separated precisions to time (default CPU: fp32,bf16,fp16; CUDA: fp32,fp16)")
    p.add_argument("--bf16", action="store_true", help="also measure bf16 on CUDA")
    p.add_argument("--encoders", default=",".join(ENCODER_KINDS), help="comma-separated encoder kinds")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--errors", action="store_true", help="instead of speed: half-precision error tables vs fp32; "
                                                         "the other arguments go to python -m engine.precision_errors")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--errors" in argv:
        from engine import precision_errors  # noqa: PLC0415

        return precision_errors.main([a for a in argv if a != "--errors"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    kinds = [k for k in args.encoders.split(",") if k]
    bad = [k for k in kinds if k not in ENCODER_KINDS]
    if bad:
        print(f"error: unknown encoder kind(s) {bad}; use {', '.join(ENCODER_KINDS)}", file=sys.stderr)
        return 2
    precisions = [q.strip().lower() for q in args.precisions.split(",") if q.strip()] if args.precisions else None
    bad = [q for q in precisions or () if q not in CPU_PRECISIONS]
    if bad:
        print(f"error: unknown precision(s) {bad}; use {', '.join(CPU_PRECISIONS)}", file=sys.stderr)
        return 2
    try:
        result = run(args.device, args.reps, args.batch, args.small, args.bf16, kinds, args.resolution, precisions)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(format_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
