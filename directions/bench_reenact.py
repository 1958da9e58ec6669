"""`python -m directions.bench_reenact` — reenactment on planted latents: how well each projection transfers motion.

A driver is built from a known identity, a known low-rank motion and sparse gross noise (plus small dense noise):

    w_t = identity + M·c_t + s_t + e_t        per W+ layer: M_l [w_dim, rank] orthonormal × the layer's amplitude,
                                              c_t smooth (sinusoids), s_t = ±gross on a random share of entries

The planted transfer to a target V is V + β·M·(c_t − c_ref). Each method's transfer
V + β·(pose(w_t) − pose(w_ref)) is compared with it: relative error ‖ŵ − w*‖_F / ‖β·M·(c − c_ref)‖_F over all
frames. Methods: ``raw`` (offsets as they are), ``pca`` (plain centred PCA basis, linear projection), ``rpca``
(robust PCA basis + the robust per-frame fit: the default), and the ablation ``rpca_linear`` (robust basis, linear
projection) which shows how much of the gain is the basis and how much the per-frame fit.

    python -m directions.bench_reenact [--seeds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics

METHODS = ("raw", "pca", "rpca_linear", "rpca")
PLANTED_DEFAULTS = dict(num_ws=8, w_dim=64, frames=90, rank=3, amplitude=2.0, noise=0.02, still_layers=2)


@dataclasses.dataclass
class Planted:
    driver: "torch.Tensor"      # [T, num_ws, w_dim] driver latents
    identity: "torch.Tensor"    # [num_ws, w_dim]
    basis: "torch.Tensor"       # [num_ws, w_dim, rank] planted motion directions (orthonormal × layer amplitude)
    coefs: "torch.Tensor"       # [T, rank] planted motion coefficients
    target: "torch.Tensor"      # [num_ws, w_dim] V_target

    def motion(self, reference: int = 0, beta: float = 1.0) -> "torch.Tensor":
        """The planted transfer β·M·(c_t − c_ref): [T, num_ws, w_dim]."""
        import torch  # noqa: PLC0415

        dc = self.coefs - self.coefs[reference]
        return beta * torch.einsum("tr,ldr->tld", dc, self.basis)


def planted_driver(
    num_ws: int = 8,            # W+ layers
    w_dim: int = 64,            # latent width
    frames: int = 90,           # driver frames
    rank: int = 3,              # planted motion rank per layer
    amplitude: float = 2.0,     # motion coefficient amplitude
    gross: float = 3.0,         # magnitude of the sparse gross errors
    sparse_frac: float = 0.05,  # share of entries with a gross error
    noise: float = 0.02,        # dense noise σ
    still_layers: int = 2,      # the last layers do not move (planted amplitude 0)
    cycles: tuple = (0.5, 3.0),  # each motion coefficient runs a random number of sine cycles in this range
    seed: int = 0,
) -> Planted:
    import torch  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    identity = torch.randn(num_ws, w_dim, generator=g)
    q, _ = torch.linalg.qr(torch.randn(num_ws, w_dim, rank, generator=g))          # orthonormal per layer
    scale = torch.linspace(1.0, 0.5, num_ws)
    scale[num_ws - still_layers:] = 0.0
    basis = q * scale[:, None, None]
    t = torch.arange(frames, dtype=torch.float32)[:, None]
    freq = cycles[0] + torch.rand(1, rank, generator=g) * (cycles[1] - cycles[0])   # cycles over the clip
    phase = torch.rand(1, rank, generator=g) * 6.283
    coefs = amplitude * torch.sin(6.283 * freq * t / frames + phase)
    clean = identity + torch.einsum("tr,ldr->tld", coefs, basis)
    mask = torch.rand(frames, num_ws, w_dim, generator=g) < sparse_frac
    sign = torch.sign(torch.randn(frames, num_ws, w_dim, generator=g))
    driver = clean + gross * sign * mask + noise * torch.randn(frames, num_ws, w_dim, generator=g)
    target = torch.randn(num_ws, w_dim, generator=g)
    return Planted(driver=driver, identity=identity, basis=basis, coefs=coefs, target=target)


def transfer_errors(p: Planted, rank: int = 3, reference: int = 0, beta: float = 1.0) -> dict:
    """Relative transfer error of each method on a planted driver: {method: ‖ŵ − w*‖ / ‖w* − V‖}."""
    from directions.reenact import reenact_sequence  # noqa: PLC0415

    motion = p.motion(reference, beta)
    want = p.target + motion
    scale = float(motion.norm())
    out, fitted = {}, {}
    for method in ("raw", "pca", "rpca"):
        res = reenact_sequence(p.driver, p.target, rank=rank, reference=reference, beta=beta,
                               method="none" if method == "raw" else method)
        out[method] = float((res.latents - want).norm()) / scale
        fitted[method] = res.subspace
    sub = dataclasses.replace(fitted["rpca"], method="pca")   # the RPCA basis, poses by plain projection
    poses = sub.pose(p.driver)
    got = p.target + beta * (poses - poses[reference])
    out["rpca_linear"] = float((got - want).norm()) / scale
    return {m: out[m] for m in METHODS}


def run(seeds: int = 3, settings=None) -> dict:
    settings = settings or [dict(gross=0.0, sparse_frac=0.0), dict(gross=3.0, sparse_frac=0.02),
                            dict(gross=3.0, sparse_frac=0.05), dict(gross=6.0, sparse_frac=0.10)]
    rows = []
    for s in settings:
        errs = [transfer_errors(planted_driver(seed=k, **s)) for k in range(seeds)]
        rows.append({**s, "seeds": seeds, **{m: statistics.fmean(e[m] for e in errs) for m in METHODS}})
    return {"rows": rows, "planted": PLANTED_DEFAULTS}


def format_table(result: dict) -> str:
    head = f"{'gross':>6} {'share':>6} | " + " ".join(f"{m:>11}" for m in METHODS)
    lines = ["relative transfer error ‖ŵ − w*‖ / ‖w* − V‖ (mean over seeds; lower is better)", head,
             "-" * len(head)]
    for r in result["rows"]:
        lines.append(f"{r['gross']:>6.1f} {r['sparse_frac']:>6.2f} | " + " ".join(f"{r[m]:>11.4f}" for m in METHODS))
    return "\n".join(lines)


def main(argv=None) -> int:
    from engine.bench import report  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m directions.bench_reenact", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="planted drivers per setting")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.seeds)
    report(format_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
