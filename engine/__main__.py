"""Command line for the engine: render a W+ latent with a generator, invert a face image with an encoder.

    python -m engine render --generator stylegan2-ffhq --latent face.npy --out face.png [--truncation 0.7]
    python -m engine invert --encoder restyle-psp-ffhq --image crop.png --out face.npy [--iters 5] [--recon r.png]

`--generator` / `--encoder` take a file (rosinality .pt, NVIDIA .pkl, pSp/e4e/ReStyle .pt) or a weights name
(`python -m engine.weights list`). Exit status: 0 ok, 1 bad input (one line on stderr), 2 usage.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

log = logging.getLogger("engine")


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 1."""


# ---------------------------------------------------------------------------------------------- image / latent IO


def read_latent(path: str | Path):
    """W+ latent(s) from .npy or .npz (single array, or key 'w' / 'ws' / 'latent') as float32 numpy."""
    import numpy as np  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise UserError(f"latent file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"cannot read latent {path} ({str(err).splitlines()[0]}); save it with numpy.save") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = list(data.keys())
            key = next((k for k in ("w", "ws", "latent", "latents") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise UserError(f"{path} holds arrays {keys}; expected one array or a key 'w'")
            data = data[key]
    if not np.issubdtype(data.dtype, np.floating):
        raise UserError(f"latent {path} has dtype {data.dtype}; expected floating point")
    if not np.isfinite(data).all():
        raise UserError(f"latent {path} contains NaN or infinite values")
    return data.astype(np.float32)


def latent_to_ws(latent, num_ws: int, w_dim: int, name: str = "latent"):
    """numpy [w_dim] | [num_ws, w_dim] | [N, num_ws, w_dim] -> torch [N, num_ws, w_dim] float32.

    A single w is broadcast to every one of the num_ws entries. Anything else raises UserError (one line).
    """
    import torch  # noqa: PLC0415

    t = torch.as_tensor(latent, dtype=torch.float32)
    shape = list(t.shape)
    if t.ndim == 1 and shape == [w_dim]:
        t = t[None, None].expand(1, num_ws, w_dim)
    elif t.ndim == 2 and shape == [num_ws, w_dim]:
        t = t[None]
    elif t.ndim == 3 and shape[1:] == [num_ws, w_dim]:
        pass
    else:
        raise UserError(
            f"{name} has shape {shape}; this generator takes [{num_ws}, {w_dim}] (num_ws, w_dim), "
            f"[N, {num_ws}, {w_dim}] or a single w [{w_dim}]"
        )
    return t.contiguous()


def images_to_uint8(images):
    """[N, 3, H, W] in about [-1, 1] -> numpy uint8 [N, H, W, 3] RGB (clipped, rounded)."""
    import torch  # noqa: PLC0415

    x = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_image(rgb, path: Path) -> None:
    """numpy uint8 [H, W, 3] RGB -> image file (format from the suffix)."""
    from PIL import Image  # noqa: PLC0415

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
    except (ValueError, KeyError) as err:
        raise UserError(f"cannot write {path} ({err}); use a .png or .jpg file name") from None
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err})") from None


def load_image(path: str | Path, size: int):
    """Image file -> torch [1, 3, size, size] float32 RGB in [-1, 1] (PIL bicubic resize, no alignment)."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {path} ({err}); use a .png or .jpg face crop") from None
    w, h = im.size
    if abs(w - h) > 0.02 * max(w, h):
        log.warning("%s is %dx%d, not square: it is resized to %dx%d without cropping (stretched); "
                    "pass an aligned square face crop", path.name, w, h, size, size)
    if (w, h) != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    arr = np.asarray(im, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous() / 127.5 - 1.0


def _device(name: str):
    import torch  # noqa: PLC0415

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------- commands


def cmd_render(args) -> int:
    import torch  # noqa: PLC0415

    from engine.checkpoints import load_generator  # noqa: PLC0415

    device = _device(args.device)
    latent = read_latent(args.latent)
    G = load_generator(args.generator, device=device)
    ws = latent_to_ws(latent, G.num_ws, G.w_dim, name=f"latent {args.latent}").to(device)
    if args.truncation != 1.0:
        ws = G.truncate(ws, args.truncation)
    with torch.no_grad():
        images = G(ws)
    out = Path(args.out)
    rgb = images_to_uint8(images)
    paths = [out] if len(rgb) == 1 else [out.with_name(f"{out.stem}_{i:03d}{out.suffix}") for i in range(len(rgb))]
    for img, p in zip(rgb, paths):
        save_image(img, p)
    print(f"wrote {', '.join(map(str, paths))} ({G.resolution}x{G.resolution}, truncation {args.truncation})")
    return 0


def cmd_invert(args) -> int:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from engine.checkpoints import load_encoder  # noqa: PLC0415

    device = _device(args.device)
    if args.iters is not None and args.iters < 1:
        raise UserError(f"--iters must be >= 1, got {args.iters}")
    E = load_encoder(args.encoder, device=device)
    if args.iters not in (None, 1) and not E.kind.startswith("restyle"):
        raise UserError(f"--iters {args.iters} needs a ReStyle encoder; {args.encoder} is a single-pass "
                        f"{E.kind} encoder (drop --iters)")
    x = load_image(args.image, E.input_size).to(device)
    with torch.no_grad():
        ws = E(x, n_iters=args.iters)
    out = Path(args.out)
    if out.suffix != ".npy":
        raise UserError(f"--out {out}: the latent is written with numpy.save; use a .npy file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, ws.detach().float().cpu().numpy())
    msg = f"wrote {out} (W+ [1, {E.num_ws}, {E.w_dim}], {E.kind}, {args.iters or E.n_iters} iteration(s))"
    if args.recon:
        with torch.no_grad():
            recon = E.decode(ws)
        save_image(images_to_uint8(recon)[0], Path(args.recon))
        msg += f"; reconstruction {args.recon}"
    print(msg)
    return 0


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n\n")[0],
                                epilog="weights: `python -m engine.weights list|download|verify`; exit status 0 ok, "
                                       "1 bad input (one line on stderr), 2 usage")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("render", help="render a W+ latent (.npy) to an image",
                       description="Render W+ latents with a StyleGAN2 generator (fixed noise, deterministic).")
    r.add_argument("--generator", required=True, help="generator file (.pt/.pkl) or weights name, e.g. stylegan2-ffhq")
    r.add_argument("--latent", required=True,
                   help="latent .npy/.npz: [num_ws, w_dim], [1, num_ws, w_dim], [N, num_ws, w_dim] or one w [w_dim] "
                        "(broadcast to all num_ws entries)")
    r.add_argument("--out", required=True, help="output image (.png/.jpg); N>1 latents write OUT_000.png, ...")
    r.add_argument("--truncation", type=float, default=1.0, help="psi: move W+ toward latent_avg (default 1 = none)")
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")

    i = sub.add_parser(
        "invert", help="encode a face image into a W+ latent (.npy)",
        description="Encode an image with a pSp / e4e / ReStyle encoder. NO face alignment happens here: the image "
                    "is converted to RGB and resized (bicubic) to the encoder's input size (256) as is, so pass an "
                    "FFHQ-aligned square face crop. Alignment from a photo or camera frame lives in `stream` "
                    "(python -m stream).")
    i.add_argument("--encoder", required=True, help="encoder checkpoint or weights name, e.g. restyle-psp-ffhq, e4e-ffhq")
    i.add_argument("--image", required=True, help="aligned face crop (.png/.jpg)")
    i.add_argument("--out", required=True, help="output latent .npy, shape [1, num_ws, w_dim] float32")
    i.add_argument("--iters", type=int, default=None,
                   help="ReStyle iterations (default: the checkpoint's n_iters_per_batch); pSp/e4e take 1")
    i.add_argument("--recon", default=None, help="also write the decoder's reconstruction to this image file")
    i.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    from engine.checkpoints import CheckpointError  # noqa: PLC0415

    try:
        return cmd_render(args) if args.cmd == "render" else cmd_invert(args)
    except (UserError, CheckpointError, FileNotFoundError, ValueError) as err:
        text = str(err).strip().splitlines()
        print(f"error: {text[0] if text else type(err).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
