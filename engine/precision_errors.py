"""Half-precision error tables: the generator and the encoders in bf16 / fp16 against float32.

    python -m engine.precision_errors [--generator NAME|PATH] [--encoder NAME|PATH ...] [--resolution 256]
                                      [--precisions bf16,fp16] [--style-max 50] [--iters 1,5] [--image FILE]
                                      [--batch 2] [--device cpu] [--json FILE]
    (also `python -m engine.bench --errors ...`; tests/engine/half_error_table.py runs it on the fixture recipe)

Generator rows, per precision, for three sets of W+ codes (batch `--batch`, seed 1234 as in the fixtures):
* `ws`         -- torch.randn(N, num_ws, w_dim) (w std 1: the fixtures' protocol);
* `mapped`     -- G.mapping(z) repeated over the layers (a trained generator's own distribution);
* `styles<=S`  -- the `ws` codes scaled until the largest |style| of the styled convs is S (default 50: a trained
                  FFHQ generator's styles reach tens), the overflow stress case.
Encoder rows: the latents (`ws`, latent units) and the decoded image of each (half network + half decoder vs both
float32: what the live path sees), after each ReStyle iteration count of `--iters`.

Image errors are |half - fp32| in image units ([-1, 1]; max, mean, 99.9th percentile) and in grey levels of the
0..255 output (x 127.5), with the fp32 image's peak |value| (errors scale with it) and whether every value was
finite. Networks come through `engine.checkpoints` (names resolve through `engine.weights`).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from typing import Sequence

log = logging.getLogger(__name__)
GREY_PER_UNIT = 127.5  # [-1, 1] -> 0..255
HALF_PRECISIONS = ("bf16", "fp16")


def image_error(ref, out) -> dict:
    """Error of `out` against the float32 reference `ref` (same shape): max / mean / 99.9th-percentile |diff| in
    input units and in grey levels, the reference's peak |value|, whether `out` is all finite."""
    import torch  # noqa: PLC0415

    ref = ref.detach().float().cpu()
    out = out.detach().float().cpu()
    finite = bool(torch.isfinite(out).all())
    diff = (out - ref).abs().nan_to_num(nan=float("inf"))
    flat = diff.flatten()
    p999 = float(flat.kthvalue(max(1, int(round(0.999 * flat.numel())))).values)
    row = {"max": float(diff.max()), "mean": float(diff.mean()), "p99.9": p999, "peak": float(ref.abs().max()),
           "finite": finite}
    row.update({f"{k}_grey": row[k] * GREY_PER_UNIT for k in ("max", "mean", "p99.9")})
    return row


def conv_styles(G, ws):
    """[N, C] styles of every styled conv (not toRGB) of G for ws [N, num_ws, w_dim], in layer order."""
    layers = [(G.conv1, 0)] + [(conv, i + 1) for i, conv in enumerate(G.convs)]
    return [layer.conv.modulation(ws[:, row].to(G.latent_dtype)) for layer, row in layers]


def scale_for_style_max(G, ws, target: float, steps: int = 50) -> float:
    """k >= 1 such that the largest |style| of G's styled convs for `ws * k` is `target` (bisection; the style is
    affine in k). 1 when `ws` already reaches it."""
    import torch  # noqa: PLC0415

    def peak(k: float) -> float:
        with torch.no_grad():
            return max(float(s.abs().max()) for s in conv_styles(G, ws * k))

    if peak(1.0) >= target:
        return 1.0
    lo, hi = 1.0, 2.0
    while peak(hi) < target:
        lo, hi = hi, hi * 2
        if hi > 1e9:
            raise ValueError(f"styles never reach {target}: the modulation does not depend on ws")
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if peak(mid) < target else (lo, mid)
    return hi


def generator_cases(G, batch: int, style_max: float, seed: int = 1234) -> dict:
    """{case name: ws [batch, num_ws, w_dim] float32} (see the module docstring)."""
    import torch  # noqa: PLC0415

    gen = torch.Generator().manual_seed(seed)
    ws = torch.randn(batch, G.num_ws, G.w_dim, generator=gen)
    z = torch.randn(batch, G.z_dim, generator=gen)
    with torch.no_grad():
        mapped = G.mapping(z.to(G.device)).float().cpu()[:, None].repeat(1, G.num_ws, 1)
    k = scale_for_style_max(G, ws.to(G.device), style_max)
    return {"ws": ws, "mapped": mapped, f"styles<={style_max:g}": ws * k}


def half_copy(module, precision: str, device):
    """A deep copy of `module` prepared for `precision` (engine.runtime.prepare)."""
    from engine.runtime import prepare  # noqa: PLC0415

    return prepare(copy.deepcopy(module), device, precision)


def generator_rows(G, cases: dict, precisions: Sequence[str], resolution: int, device) -> list[dict]:
    """One row per (precision, case): image error of G in that precision vs float32 at `resolution`."""
    import torch  # noqa: PLC0415

    rows = []
    with torch.no_grad():
        refs = {name: G(ws.to(device), out_resolution=resolution) for name, ws in cases.items()}
        for prec in precisions:
            Gh = half_copy(G, prec, device)
            for name, ws in cases.items():
                err = image_error(refs[name], Gh(ws.to(device), out_resolution=resolution))
                rows.append({"network": "generator", "case": name, "precision": prec, "resolution": resolution,
                             "batch": ws.shape[0], "what": "image", **err})
            del Gh
    return rows


def encoder_rows(E, image, precisions: Sequence[str], iters: Sequence[int], resolution: int, device,
                 label: str) -> list[dict]:
    """Rows per (precision, iteration count): latent error and decoded-image error vs float32 (end to end)."""
    import torch  # noqa: PLC0415

    counts = sorted(set(iters)) if E.is_restyle else [1]
    image = image.to(device)
    rows = []

    def run(net):
        _, its = net(image, n_iters=counts[-1] if E.is_restyle else None, return_iters=True)
        return {n: its[n - 1].ws for n in counts}

    with torch.no_grad():
        ref = run(E)
        ref_img = {n: E.decoder(ws, out_resolution=resolution) for n, ws in ref.items()}
        for prec in precisions:
            Eh = half_copy(E, prec, device)
            out = run(Eh)
            for n in counts:
                case = f"iters={n}" if E.is_restyle else "single pass"
                common = {"network": label, "case": case, "precision": prec, "batch": image.shape[0]}
                rows.append({**common, "resolution": None, "what": "ws", **image_error(ref[n], out[n])})
                img = Eh.decoder(out[n], out_resolution=resolution)
                rows.append({**common, "resolution": resolution, "what": "image", **image_error(ref_img[n], img)})
            del Eh
    return rows


def default_image(E, device):
    """The decoder's average image pooled to the encoder input, clamped to [-1, 1]: [1, 3, S, S] float32."""
    import torch  # noqa: PLC0415

    with torch.no_grad():
        return E.average_image().float().clamp(-1, 1).to(device)


def load_image(path: str):
    """[N, 3, S, S] float32 in [-1, 1] from a .npz (key `image`), .npy or .pt tensor file."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    if path.endswith(".npz"):
        arr = np.load(path)["image"]
    elif path.endswith(".npy"):
        arr = np.load(path)
    else:
        arr = torch.load(path, weights_only=True)
    img = torch.as_tensor(np.asarray(arr)).float()
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"{path}: expected an image tensor [N, 3, S, S] in [-1, 1], got {list(img.shape)}")
    return img


def format_table(result: dict) -> str:
    """The rows as a fixed-width table (image units and grey levels)."""
    head = (f"{'network':<22} {'case':<14} {'prec':<5} {'res':>5} {'what':<6} {'max':>9} {'mean':>9} "
            f"{'p99.9':>9} {'max grey':>9} {'mean grey':>9} {'peak':>8} {'finite':<6}")
    lines = [f"# {result['benchmark']} -- {result['config']}; torch {result['torch']}, {result['device']}",
             "# |half - fp32|; image rows in image units ([-1,1]) and grey levels (x127.5); ws rows in latent units",
             head, "-" * len(head)]
    for r in result["rows"]:
        grey = (f"{r['max_grey']:>9.3f} {r['mean_grey']:>9.3f}" if r["what"] == "image" else f"{'':>9} {'':>9}")
        res = "" if r["resolution"] is None else str(r["resolution"])
        lines.append(f"{r['network']:<22} {r['case']:<14} {r['precision']:<5} {res:>5} {r['what']:<6} "
                     f"{r['max']:>9.4g} {r['mean']:>9.4g} {r['p99.9']:>9.4g} {grey} {r['peak']:>8.3g} "
                     f"{'yes' if r['finite'] else 'NO':<6}")
    return "\n".join(lines)


def run(generator: str | None = "stylegan2-ffhq", encoders: Sequence[str] = (), precisions=HALF_PRECISIONS,
        resolution: int = 256, style_max: float = 50.0, iters: Sequence[int] = (1,), image=None, batch: int = 2,
        device="cpu") -> dict:
    """Load the networks and measure every row (see the module docstring)."""
    import torch  # noqa: PLC0415

    from engine.checkpoints import load_encoder, load_generator  # noqa: PLC0415
    from engine.runtime import resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    rows, notes = [], []
    if generator:
        G = load_generator(generator, device=dev)
        cases = generator_cases(G, batch, style_max)
        with torch.no_grad():
            styles = [s.abs() for s in conv_styles(G, cases[f"styles<={style_max:g}"].to(dev))]
        notes.append(f"{generator}: styles case |s| max {max(float(s.max()) for s in styles):.3g}")
        rows += generator_rows(G, cases, precisions, resolution, dev)
        del G
    for name in encoders:
        E = load_encoder(name, device=dev)
        img = default_image(E, dev) if image is None else image
        rows += encoder_rows(E, img, precisions, iters, resolution, dev, label=f"encoder {E.kind}")
        del E
    return {"benchmark": "engine.precision_errors", "config": "; ".join(notes) or "encoders only",
            "torch": torch.__version__, "device": str(dev), "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    from engine.bench import report  # noqa: PLC0415
    from engine.checkpoints import CheckpointError  # noqa: PLC0415
    from engine.weights import MissingWeightsError  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m engine.precision_errors", description=__doc__.splitlines()[0],
                                allow_abbrev=False)
    p.add_argument("--generator", default="stylegan2-ffhq", help="generator name or path ('' to skip)")
    p.add_argument("--encoder", action="append", default=[], help="encoder name or path (repeatable)")
    p.add_argument("--precisions", default=",".join(HALF_PRECISIONS), help="comma-separated half precisions to compare with fp32 (default: all)")
    p.add_argument("--resolution", type=int, default=256, help="generator / decoder output size (out_resolution)")
    p.add_argument("--style-max", type=float, default=50.0, help="largest |style| of the stress case")
    p.add_argument("--iters", default="1", help="comma-separated ReStyle iteration counts to report")
    p.add_argument("--image", default=None, help=".npz (key image) / .npy / .pt [N,3,S,S] in [-1,1] for encoders "
                                                 "(default: the decoder's average image)")
    p.add_argument("--batch", type=int, default=2, help="W+ codes per generator case")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] (default cpu)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    precisions = [q.strip() for q in args.precisions.split(",") if q.strip()]
    if any(q not in HALF_PRECISIONS for q in precisions):
        print(f"error: --precisions takes {', '.join(HALF_PRECISIONS)}, got {args.precisions!r}", file=sys.stderr)
        return 2
    try:
        iters = [int(n) for n in args.iters.split(",") if n.strip()]
        image = load_image(args.image) if args.image else None
        result = run(args.generator or None, args.encoder, precisions, args.resolution, args.style_max, iters,
                     image, args.batch, args.device)
    except (MissingWeightsError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    report(format_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
