"""`python -m directions build`: anchors (text or video) → low-rank decomposition → direction file.

    python -m directions build --name smile --text "a person with {} smile"
    python -m directions build --name blink --video clip.mp4 [--n-frames 7] [--encoder restyle-psp-ffhq]
    python -m directions build --name blink --frames-dir frames/

Text: `directions.text.anchor_text` from `--identities` random faces (seeds seed, seed+1, …), the anchors
of each being [w0, w_"no", …, w_"100%"] (the official list). Video: frames → `stream`'s FaceMesh
landmarker and FFHQ aligner (imported here, lazily: this entry point composes layers; the `directions`
library modules never import `stream`) → encoder → `directions.video.anchor_video`. Then
`directions.subspace.from_anchors(rank, method)` and `directions.files.save` with full metadata.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from directions.alpha import MAX_ALPHA, check_alpha

log = logging.getLogger(__name__)

TEXT_ALPHA_RANGE = (0.0, 8.0)    # official custom mode renders scale 8 (pregen directions: 5)
VIDEO_ALPHA_RANGE = (0.0, 2.0)   # α = 1 replays the clip's own amplitude


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `build` (the caller owns the parser and the sub-command dispatch)."""
    from directions.text import DEFAULT_DEGREES  # noqa: PLC0415 (light module, torch only)

    parser.add_argument("--name", required=True, help="direction name, e.g. smile")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", metavar="TEMPLATE", help='prompt template with {} or {degree}, e.g. "a person with {} smile"')
    src.add_argument("--video", metavar="FILE", help="a clip of one face performing the motion")
    src.add_argument("--frames-dir", metavar="DIR", help="a folder of frames (images, name order) instead of a clip")

    g = parser.add_argument_group("text anchoring")
    g.add_argument("--degrees", nargs="+", default=list(DEFAULT_DEGREES), help="degree words, weakest first")
    g.add_argument("--steps", type=int, default=40, help="Adam steps per prompt")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    g.add_argument("--l2-lambda", type=float, default=0.008, help="weight of ||w - w0||^2")
    g.add_argument("--id-lambda", type=float, default=0.005, help="weight of the ArcFace identity term")
    g.add_argument("--truncation", type=float, default=0.7, help="truncation psi of the random start faces")
    g.add_argument("--seed", type=int, default=0, help="seed of the first random face")
    g.add_argument("--identities", type=int, default=1, help="random faces to anchor (deltas are averaged)")
    g.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name or a model config JSON")
    g.add_argument("--clip-pretrained", default="openai",
                   help="open_clip pretrained tag (must be cached), a local weights file, or 'none' (random); "
                        "OpenAI weights as a file need the quick-GELU model name (ViT-B-32-quickgelu)")
    g.add_argument("--clip-download", action="store_true", help="let open_clip download the tag's weights")
    g.add_argument("--clip-no-normalize", action="store_true",
                   help="feed CLIP the raw [-1, 1] image like StyleCLIP does (default: CLIP mean/std)")
    g.add_argument("--arcface", metavar="PATH", default=None,
                   help="model_ir_se50.pth (default: the arcface-ir-se50 download, if present)")
    g.add_argument("--batch-size", type=int, default=0,
                   help="prompts optimised together (0: all in one batch; out of GPU memory halves it)")
    g.add_argument("--no-batch", action="store_true", help="one prompt at a time (= --batch-size 1)")

    v = parser.add_argument_group("video anchoring")
    v.add_argument("--encoder", default="restyle-psp-ffhq", help="encoder weights name or path")
    v.add_argument("--n-frames", type=int, default=7, help="frames spread over the clip (0: all)")
    v.add_argument("--max-frames", type=int, default=None, help="decode at most this many frames of the clip")

    d = parser.add_argument_group("decomposition and output")
    d.add_argument("--generator", default="stylegan2-ffhq", help="generator weights name or path")
    d.add_argument("--rank", type=int, default=4, help="rank of the per-layer subspace")
    d.add_argument("--method", choices=("rpca", "pca", "none"), default="rpca", help="decomposition")
    d.add_argument("--lmbda", type=float, default=None, help="RPCA sparsity weight (default 1/sqrt(max(K, w_dim)))")
    d.add_argument("--alpha-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help=f"suggested strength range, the UIs' slider hint, within ±{MAX_ALPHA:g} (default text "
                        f"{TEXT_ALPHA_RANGE}, video {VIDEO_ALPHA_RANGE})")
    d.add_argument("--out", metavar="FILE", default=None, help="output .safetensors (default: <directions dir>/NAME)")
    d.add_argument("--force", action="store_true", help="overwrite an existing output file")
    d.add_argument("--device", default=None, help="cpu | cuda[:N] (default: cuda when available)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


# ------------------------------------------------------------------------------------------------


def _arcface(path: str | None):
    """IdentityLoss from --arcface, else the arcface-ir-se50 download if present, else a skipped one."""
    from directions.identity import IdentityLoss  # noqa: PLC0415

    if path is None:
        try:
            from engine.weights import resolve  # noqa: PLC0415

            path = str(resolve("arcface-ir-se50"))
        except Exception as e:  # noqa: BLE001 (not downloaded / no manifest entry: the term is skipped)
            log.debug("arcface-ir-se50 not available: %s", e)
            path = None
    return IdentityLoss(path)


def _batch(args) -> bool | int:
    """anchor_text's `batch` from --batch-size / --no-batch."""
    if args.no_batch:
        return 1
    return True if not args.batch_size else int(args.batch_size)


def _text_anchors(args, G, device, bar):
    import torch  # noqa: PLC0415

    from directions.clip_loader import load_clip  # noqa: PLC0415
    from directions.text import anchor_text  # noqa: PLC0415

    clip = load_clip(args.clip_model, args.clip_pretrained, device=device, download=args.clip_download,
                     normalize=not args.clip_no_normalize)
    identity = _arcface(args.arcface) if args.id_lambda > 0 else None
    if identity is not None:
        identity.to(device)
    runs = []
    for i in range(args.identities):
        runs.append(anchor_text(
            G, clip, args.text, degrees=args.degrees, steps=args.steps, lr=args.lr, l2_lambda=args.l2_lambda,
            id_lambda=args.id_lambda, truncation=args.truncation, seed=args.seed + i, batch=_batch(args),
            identity=identity, progress=bar.update))
    anchors = torch.stack([r.with_start() for r in runs])  # [I, 1 + K, num_ws, w_dim]
    meta = dict(
        template=args.text, degrees=list(runs[0].degrees), prompts=runs[0].prompts,
        seeds=[r.seed for r in runs], steps=args.steps, lr=args.lr, l2_lambda=args.l2_lambda,
        id_lambda=args.id_lambda if runs[0].identity_used else 0.0, identity_used=runs[0].identity_used,
        truncation=args.truncation, clip_model=clip.model_name, clip_pretrained=clip.pretrained,
        clip_normalize=not args.clip_no_normalize,
        final_clip_loss=[float(r.clip_losses[-1].mean()) for r in runs],
        source="text",
    )
    return anchors, meta


def _video_anchors(args, G, device, align_source):
    import engine  # noqa: PLC0415
    from directions.video import select_frames  # noqa: PLC0415
    from engine.checkpoints import source_sha256  # noqa: PLC0415

    log.info("loading encoder %s", args.encoder)
    E = engine.load_encoder(args.encoder, device=device)
    if (E.num_ws, E.w_dim) != (G.num_ws, G.w_dim):
        raise ValueError(f"encoder {args.encoder} makes W+ [{E.num_ws}, {E.w_dim}] but generator {args.generator} "
                         f"takes [{G.num_ws}, {G.w_dim}]; pass an encoder trained for this generator")
    source = args.video or args.frames_dir
    crops, labels = align_source(source, size=256, is_folder=args.frames_dir is not None,
                                 max_frames=args.max_frames, progress=not args.quiet)
    n = None if args.n_frames in (None, 0) else args.n_frames
    if n is not None and n > len(crops):
        log.warning("asked for %d frames but only %d have a face; using all %d", n, len(crops), len(crops))
    idx = select_frames(len(crops), n)
    anchors = _invert(E, [crops[i] for i in idx], quiet=args.quiet)
    meta = dict(
        source="video" if args.video else "frames", clip=str(source), frames=[labels[i] for i in idx],
        frames_with_face=len(crops), encoder=str(args.encoder), encoder_kind=E.kind,
        encoder_sha256=source_sha256(E),
    )
    return anchors, meta


def _invert(E, crops, quiet: bool = False, chunk: int = 8):
    """`anchor_video` of the chosen crops (all of them, in order), a few at a time under a progress bar:
    [len(crops), num_ws, w_dim] float32."""
    import torch  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from directions.video import anchor_video  # noqa: PLC0415

    out = []
    with tqdm(total=len(crops), desc="invert", unit="frame", disable=quiet) as bar:
        for s in range(0, len(crops), chunk):
            out.append(anchor_video(crops[s:s + chunk], E, n=None, batch_size=chunk))
            bar.update(len(crops[s:s + chunk]))
    return torch.cat(out)


def _preflight(args, format_prompts) -> None:
    """Cheap checks of the user's input before any model loads (bad input fails in a second, not a minute)."""
    import os  # noqa: PLC0415

    if args.text is not None:
        format_prompts(args.text, args.degrees)
        if args.steps < 1 or args.identities < 1 or args.batch_size < 0:
            raise ValueError("--steps and --identities must be >= 1, --batch-size >= 0")
        if args.arcface is not None and not Path(args.arcface).is_file():
            raise FileNotFoundError(f"--arcface {args.arcface} does not exist; pass model_ir_se50.pth or leave "
                                    f"--arcface out (the identity term is then skipped with a warning)")
        pre = args.clip_pretrained
        if (pre and str(pre).lower() not in ("none", "random", "") and not os.path.isfile(pre)
                and not args.clip_download and not str(args.clip_model).endswith(".json")
                and ":" not in str(args.clip_model)):
            from directions.clip_loader import resolve_pretrained  # noqa: PLC0415

            resolve_pretrained(str(args.clip_model).replace("/", "-"), pre)  # raises ClipWeightsMissing
    elif args.video is not None and not Path(args.video).is_file():
        raise FileNotFoundError(f"video {args.video} does not exist; pass an existing clip (--video FILE)")
    elif args.frames_dir is not None and not Path(args.frames_dir).is_dir():
        raise FileNotFoundError(f"frames folder {args.frames_dir} does not exist; pass a folder of images")
    if args.n_frames is not None and args.n_frames < 0:
        raise ValueError(f"--n-frames must be >= 0 (0: all frames), got {args.n_frames}")
    for value in args.alpha_range or ():
        check_alpha(value, "--alpha-range")


def run(args: argparse.Namespace, align_source=None) -> int:
    """Build and save one direction; prints the output path. Returns the exit status.

    align_source: (path, size, is_folder, max_frames, progress) -> (crops uint8 [size, size, 3] BGR list,
    labels), the face aligner for --video / --frames-dir; the entry point (`python -m directions`) passes
    `stream.face.clip.aligned_crops_from_source` (directions itself never imports stream).
    """
    import torch  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    import engine  # noqa: PLC0415
    from directions import files  # noqa: PLC0415
    from directions.subspace import from_anchors  # noqa: PLC0415
    from directions.text import format_prompts  # noqa: PLC0415
    from engine.runtime import resolve_device  # noqa: PLC0415

    _preflight(args, format_prompts)
    out = Path(args.out) if args.out else files.default_dir() / f"{args.name}.safetensors"
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it or --out another file")

    device = resolve_device(args.device)
    t0 = time.perf_counter()
    log.info("loading generator %s on %s", args.generator, device)
    G = engine.load_generator(args.generator, device=device)
    if args.text is not None:
        b = _batch(args)
        per_run = args.steps * (1 if b is True else math.ceil(len(args.degrees) / b))
        with tqdm(total=per_run * args.identities, desc=f"anchor '{args.name}'", unit="step",
                  disable=args.quiet) as bar:
            anchors, meta = _text_anchors(args, G, device, bar)
    else:
        if align_source is None:
            raise ValueError("video anchoring needs a face aligner; run it as `python -m directions build --video`")
        anchors, meta = _video_anchors(args, G, device, align_source)

    K = anchors.shape[-3]
    delta = from_anchors(anchors, rank=args.rank, method=args.method,
                         **({"lmbda": args.lmbda} if args.lmbda is not None else {}))
    lmbda = None
    if args.method == "rpca":
        lmbda = args.lmbda if args.lmbda is not None else 1.0 / math.sqrt(max(K, G.w_dim))
    alpha = args.alpha_range or (TEXT_ALPHA_RANGE if args.text is not None else VIDEO_ALPHA_RANGE)
    meta = files.make_meta(
        method=args.method, rank=args.rank if args.method != "none" else None, lmbda=lmbda, anchors=int(K),
        generator=str(args.generator), generator_sha256=getattr(G, "source_sha256", None), alpha_range=alpha,
        identities=int(anchors.shape[0]) if anchors.dim() == 4 else 1, num_ws=G.num_ws, w_dim=G.w_dim,
        build_seconds=round(time.perf_counter() - t0, 2), **meta)
    direction = files.Direction(name=args.name, delta=delta, meta=meta)
    path = files.save(direction, out)
    norm = float(torch.linalg.vector_norm(direction.delta))
    print(f"{path}  ({args.name}: {direction.num_ws}x{direction.w_dim}, |delta| {norm:.4f}, {K} anchors, "
          f"{args.method} rank {args.rank})")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry (`python -m directions.build ...`) = `python -m directions build ...`."""
    from directions.__main__ import main as directions_main  # noqa: PLC0415

    return directions_main(["build", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
