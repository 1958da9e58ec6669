"""`python -m directions.bench` — robust PCA benchmarks, in one run.

(a) Recovery, after Candès, Li, Ma, Wright 2011 (Table 1): D = L0 + S0 with L0 = X·Yᵀ, X, Y n×r with
    N(0, 1/n) entries, r = 0.05·n, and S0 = ±1 on a uniformly random 5 % of the entries. Reports the
    recovered rank, ‖L−L0‖F/‖L0‖F, ‖S−S0‖F/‖S0‖F, the iterations and the time, solved to
    ‖D−L−S‖F/‖D‖F ≤ 1e-7 (``stop="relative"``), with the reference's fixed μ and with Lin et al.'s μ schedule.
(b) Batching: one batched RPCA over 18 layers × (11 anchors × 512) — the shape of a text-anchored
    direction — against a Python loop over the layers of the same solver, with the official stopping rule
    (2 iterations) and run to convergence; reports time per call, speed-up and the largest difference.

    python -m directions.bench [--n 500] [--repeats 3] [--device cpu|cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time

from engine.runtime import synchronize as _sync

log = logging.getLogger(__name__)


def candes_problem(n: int, rank_frac: float = 0.05, sparse_frac: float = 0.05, seed: int = 0, dtype=None,
                   device: str = "cpu"):
    """(L0, S0, r): the planted low-rank + sparse problem of Candès et al. 2011 §4.1."""
    import torch  # noqa: PLC0415

    dtype = dtype or torch.float64
    g = torch.Generator().manual_seed(seed)
    r = max(1, round(rank_frac * n))
    X = torch.randn(n, r, generator=g, dtype=torch.float64) / n**0.5
    Y = torch.randn(n, r, generator=g, dtype=torch.float64) / n**0.5
    mask = torch.rand(n, n, generator=g, dtype=torch.float64) < sparse_frac
    S0 = torch.where(mask, torch.sign(torch.randn(n, n, generator=g, dtype=torch.float64)),
                     torch.zeros((), dtype=torch.float64))
    return (X @ Y.T).to(device, dtype), S0.to(device, dtype), r


def bench_recovery(n: int, dtypes, device: str, schedules=("fixed", "lin"), tol: float = 1e-7) -> list[dict]:
    import torch  # noqa: PLC0415

    from directions.rpca import numerical_rank, rpca  # noqa: PLC0415

    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        L0, S0, r = candes_problem(n, dtype=dtype, device=device)
        for schedule in schedules:
            _sync(device)
            t0 = time.perf_counter()
            res = rpca(L0 + S0, stop="relative", tol=tol, dtype=dtype, schedule=schedule)
            _sync(device)
            seconds = time.perf_counter() - t0
            L, S = res.L.double(), res.S.double()
            rows.append(dict(
                n=n, rank=r, sparse_frac=0.05, dtype=dtype_name, schedule=schedule, device=device,
                recovered_rank=int(numerical_rank(L, rtol=1e-4)),
                rel_err_L=float((L - L0.double()).norm() / L0.double().norm()),
                rel_err_S=float((S - S0.double()).norm() / S0.double().norm()),
                n_iter=int(res.n_iter), converged=bool(res.converged), seconds=seconds,
            ))
    return rows


def anchor_like(layers: int = 18, anchors: int = 11, w_dim: int = 512, seed: int = 4, device: str = "cpu"):
    """[layers, anchors, w_dim] float32: per layer base + t·direction + small noise + 1 % spikes (like W+ anchors)."""
    import torch  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    base = torch.randn(layers, 1, w_dim, generator=g)
    direction = torch.randn(layers, 1, w_dim, generator=g)
    t = torch.linspace(0, 1, anchors)[None, :, None]
    noise = 0.01 * torch.randn(layers, anchors, w_dim, generator=g)
    spikes = 3 * torch.sign(torch.randn(layers, anchors, w_dim, generator=g)) * (
        torch.rand(layers, anchors, w_dim, generator=g) < 0.01)
    return (base + t * direction + noise + spikes).to(device)


def _time(fn, repeats: int, device: str):
    times, out = [], None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_batching(repeats: int, device: str, layers: int = 18, anchors: int = 11, w_dim: int = 512) -> list[dict]:
    import torch  # noqa: PLC0415

    from directions.rpca import rpca  # noqa: PLC0415

    D = anchor_like(layers, anchors, w_dim, device=device)
    rows = []
    for mode, kwargs in [("official rule", {}), ("tol 1e-7", {"tol": 1e-7})]:
        rpca(D[:2], **kwargs)  # warm-up (allocator, LAPACK/cuSOLVER handles)
        t_batch, batched = _time(lambda: rpca(D, **kwargs), repeats, device)
        t_loop, looped = _time(lambda: [rpca(D[i], **kwargs) for i in range(layers)], repeats, device)
        L_loop = torch.stack([r.L for r in looped])
        n_loop = [int(r.n_iter) for r in looped]
        rows.append(dict(
            mode=mode, shape=f"{layers} x ({anchors} x {w_dim})", device=device,
            batched_s=t_batch, loop_s=t_loop, speedup=t_loop / t_batch,
            iterations=f"{int(batched.n_iter.min())}..{int(batched.n_iter.max())}",
            same_iterations=batched.n_iter.tolist() == n_loop,
            max_abs_diff=float((batched.L - L_loop).abs().max()),
        ))
    return rows


def print_tables(recovery: list[dict], batching: list[dict]) -> None:
    if recovery:
        print("(a) RPCA recovery, Candès et al. 2011 setup (rank 0.05·n, 5% gross ±1 errors), tol 1e-7 relative")
        print(f"{'n':>5} {'rank':>4} {'dtype':>8} {'schedule':>9} {'rec.rank':>8} {'|L-L0|/|L0|':>12} "
              f"{'|S-S0|/|S0|':>12} {'iters':>5} {'time s':>8}")
        for r in recovery:
            print(f"{r['n']:>5} {r['rank']:>4} {r['dtype']:>8} {r['schedule']:>9} {r['recovered_rank']:>8} "
                  f"{r['rel_err_L']:>12.2e} {r['rel_err_S']:>12.2e} {r['n_iter']:>5} {r['seconds']:>8.2f}")
    if batching:
        print()
        print("(b) one batched RPCA vs a per-layer Python loop of the same solver (median time per call)")
        print(f"{'mode':<14} {'shape':<18} {'iters':>7} {'batched s':>10} {'loop s':>9} {'speedup':>8} "
              f"{'same iters':>10} {'max|dL|':>9}")
        for r in batching:
            print(f"{r['mode']:<14} {r['shape']:<18} {r['iterations']:>7} {r['batched_s']:>10.4f} "
                  f"{r['loop_s']:>9.4f} {r['speedup']:>7.2f}x {str(r['same_iterations']):>10} "
                  f"{r['max_abs_diff']:>9.1e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m directions.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="matrix size of the recovery benchmark (Candès: 500)")
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"],
                        help="RPCA precisions to measure (default both)")
    parser.add_argument("--schedules", nargs="+", default=["fixed", "lin"], choices=["fixed", "lin"],
                        help="μ schedules to compare in (a): fixed (reference) and Lin et al.'s continuation")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats in (b) (median reported)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip", choices=["recovery", "batching"], default=None, help="leave one part out")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asked for but torch sees no CUDA device; use --device cpu")
        return 2
    recovery = [] if args.skip == "recovery" else bench_recovery(args.n, args.dtypes, args.device, args.schedules)
    batching = [] if args.skip == "batching" else bench_batching(args.repeats, args.device)
    print_tables(recovery, batching)
    if args.json:
        env = dict(torch=torch.__version__, threads=torch.get_num_threads(), python=platform.python_version(),
                   machine=platform.machine(), processor=platform.processor())
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(dict(recovery=recovery, batching=batching, env=env), fh, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
