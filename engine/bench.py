"""python -m engine.bench: ms per forward of the generator at 1024 and of each encoder at 256.

Random-weight networks of the full-size configurations (StyleGAN2 config-f 1024, IR-SE50 encoders): the speed
is real even though the weights are not. On CUDA: fp32 vs fp16 (and bf16 with --bf16), eager vs CUDA graphs.
On CPU: fp32 eager (few repetitions, the median is reported).

    python -m engine.bench [--device auto] [--reps N] [--batch B] [--json out.json] [--small]

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


def time_fn(fn: Callable, reps: int, device) -> float:
    """Median ms of `fn()` over `reps` runs after one warm-up (CUDA synchronised around each run)."""
    from engine.runtime import synchronize  # noqa: PLC0415

    fn()
    synchronize(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def variants(device, bf16: bool) -> list[tuple[str, bool]]:
    """(precision, cuda_graphs) pairs to measure on this device."""
    if device.type != "cuda":
        return [("fp32", False)]
    precs = ["fp32", "fp16"] + (["bf16"] if bf16 else [])
    return [(p, g) for p in precs for g in (False, True)]


def run(device="auto", reps: int | None = None, batch: int = 1, small: bool = False, bf16: bool = False,
        encoders: Sequence[str] = ENCODER_KINDS) -> dict:
    import copy  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from engine.runtime import CudaGraphRunner, prepare, resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    reps = reps or (20 if dev.type == "cuda" else 3)
    torch.manual_seed(0)
    G0 = build_generator(small)
    rows = []
    nets = [("generator", None)] + [(f"encoder {k}", k) for k in encoders]
    for label, kind in nets:
        base = G0 if kind is None else build_encoder(kind, G0, small)
        for prec, graphs in variants(dev, bf16):
            net = prepare(copy.deepcopy(base), dev, prec)
            dtype = next(net.parameters()).dtype
            if kind is None:
                x = torch.randn(batch, net.num_ws, net.w_dim, device=dev)
                size = f"{net.resolution}px out"
                fn = net
            else:
                chans = 6 if kind.startswith("restyle") else 3
                x = torch.rand(batch, chans, net.input_size, net.input_size, device=dev, dtype=dtype) * 2 - 1
                size = f"{net.input_size}px in"
                fn = net.encoder
            runner = CudaGraphRunner(fn, enabled=graphs, name=label)
            with torch.inference_mode():
                ms = time_fn(lambda: runner(x), reps, dev)
            rows.append({"network": label, "size": size, "batch": batch, "device": str(dev), "precision": prec,
                         "cuda_graphs": graphs and runner.stats["replays"] > 0, "ms": round(ms, 2),
                         "reps": reps})
            log.info("%s %s %s graphs=%s: %.1f ms", label, dev, prec, graphs, ms)
            del net, runner
    return {
        "benchmark": "engine.bench",
        "config": "small" if small else "full (StyleGAN2 config-f 1024, IR-SE50 encoders at 256)",
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def format_table(result: dict) -> str:
    head = f"{'network':<22} {'size':<12} {'batch':>5} {'device':<7} {'prec':<5} {'graphs':<6} {'ms':>10}"
    lines = [f"# {result['benchmark']} -- {result['config']}; torch {result['torch']}, "
             f"{result['device_name']}, {result['threads']} threads", head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(f"{r['network']:<22} {r['size']:<12} {r['batch']:>5} {r['device']:<7} {r['precision']:<5} "
                     f"{'yes' if r['cuda_graphs'] else 'no':<6} {r['ms']:>10.1f}")
    return "\n".join(lines)


def report(table: str, result: dict, json_path: str | None) -> None:
    """Print a benchmark's table; when `json_path` is given also write `result` there as JSON (indent 2)."""
    print(table)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {json_path}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda[:N]")
    p.add_argument("--reps", type=int, default=None, help="timed runs per row (default 20 CUDA, 3 CPU)")
    p.add_argument("--batch", type=int, default=1, help="images per network call (default 1)")
    p.add_argument("--small", action="store_true", help="small configs (G 256, narrow encoders)")
    p.add_argument("--bf16", action="store_true", help="also measure bf16 on CUDA")
    p.add_argument("--encoders", default=",".join(ENCODER_KINDS), help="comma-separated encoder kinds")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    kinds = [k for k in args.encoders.split(",") if k]
    bad = [k for k in kinds if k not in ENCODER_KINDS]
    if bad:
        print(f"error: unknown encoder kind(s) {bad}; use {', '.join(ENCODER_KINDS)}", file=sys.stderr)
        return 2
    try:
        result = run(args.device, args.reps, args.batch, args.small, args.bf16, kinds)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(format_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
