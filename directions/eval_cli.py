"""`python -m directions eval` and `python -m directions identity`: options and runs (the entry point composes).

    python -m directions eval --direction smile aging --interfacegan smile=smile.pt --ganspace auto \\
        --faces 32 --alphas 0 1 3 5 --embedder dlib --scorer geometry clip --out eval/
    python -m directions eval --photos faces/ --encoder e4e-ffhq ...        # photos aligned + inverted
    python -m directions identity a.jpg b.jpg c.jpg [--embedder dlib|arcface] [--json sim.json]

Finding and aligning faces in photos needs `stream.face` (MediaPipe + FFHQ alignment): `directions/__main__.py`
passes those functions in (`find_faces`, `photo_latents`); this module never imports stream.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)

#: find_faces(paths, size) → one (uint8 [size, size, 3] BGR aligned crop, None) or (None, reason) per path.
FindFaces = Callable[[Sequence[str], int], list]
#: photo_latents(folder, encoder, device) → (ws [N, num_ws, w_dim] float32, labels).
PhotoLatents = Callable[[str, str, str], tuple]


def _split_pair(text: str, flag: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"{flag} wants NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    if not name or not value:
        raise ValueError(f"{flag} wants NAME=VALUE, got {text!r}")
    return name, value


# ------------------------------------------------------------------------------------------------ identity


def add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="photos (any size; each one's largest face is used)")
    parser.add_argument("--embedder", choices=("dlib", "arcface"), default="dlib",
                        help="identity embedder (dlib: offline, always available)")
    parser.add_argument("--arcface", metavar="PATH", default=None, help="model_ir_se50.pth (default: arcface-ir-se50)")
    parser.add_argument("--size", type=int, default=256, help="side of the aligned crops")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write {images, similarity, no_face}")
    parser.add_argument("--device", default="cpu", help="torch device for ArcFace")


def run_identity(args, find_faces: FindFaces) -> int:
    """Align every image, embed the faces, print (and optionally write) the pairwise cosine similarity matrix."""
    import numpy as np  # noqa: PLC0415

    from directions.embedders import cosine_similarity, make_embedder  # noqa: PLC0415

    embedder = make_embedder(args.embedder, weights=args.arcface, device=args.device)
    faces = find_faces(list(args.images), int(args.size))
    crops = [c for c, _ in faces if c is not None]
    have = [c is not None for c, _ in faces]
    sim = np.full((len(faces), len(faces)), np.nan)
    if crops:
        e = embedder.embed(crops)
        idx = np.flatnonzero(have)
        sim[np.ix_(idx, idx)] = cosine_similarity(e.vectors, e.vectors)
    names = list(args.images)
    no_face = {n: why for n, (c, why) in zip(names, faces) if c is None}
    doc = {"images": names, "embedder": embedder.name,
           "similarity": [[None if not np.isfinite(v) else round(float(v), 6) for v in row] for row in sim],
           "no_face": no_face,
           "note": "cosine similarity of L2-normalised embeddings (dlib: cos = 1 - d^2/2 for the Euclidean "
                   "distance d of the normalised 128-d descriptors)"}
    short = [Path(n).name[:14] for n in names]
    print(f"identity similarity ({embedder.name}, cosine):")
    print(" " * 16 + "".join(f"{s:>16}" for s in short))
    for s, row in zip(short, sim):
        print(f"{s:<16}" + "".join(f"{'-' if not np.isfinite(v) else f'{v:.4f}':>16}" for v in row))
    for n, why in no_face.items():
        print(f"no face: {n} ({why})")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"json: {path}")
    return 0


# ------------------------------------------------------------------------------------------------ eval


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument_group("what to evaluate")
    d.add_argument("--direction", nargs="+", default=None, metavar="NAME|FILE",
                   help="micromotion directions (names in --dir or files; default: every file in --dir)")
    d.add_argument("--dir", default=None, help="directions folder (default $MICROMOTION_HOME/directions)")
    d.add_argument("--interfacegan", nargs="+", default=[], metavar="NAME=FILE",
                   help="InterFaceGAN boundary files ([1, w_dim] or [num_ws, w_dim]; .npy or torch), e.g. "
                        "smile=editings/interfacegan_directions/smile.pt of encoder4editing")
    d.add_argument("--ganspace", nargs="+", default=[], metavar="NAME=SPEC",
                   help="GANSpace baselines: NAME=COMP[:START-END][:-] (component, W+ layer range, '-' flips), "
                        "NAME=EDIT or NAME=-EDIT (a published FFHQ edit, e.g. smile=smile), or 'auto' (the "
                        "published edits matching the micromotion directions)")
    d.add_argument("--ganspace-samples", type=int, default=100_000, help="sampled w for the GANSpace PCA")
    d.add_argument("--ganspace-components", type=int, default=80, help="principal components kept")
    d.add_argument("--ganspace-pca", metavar="FILE", default=None,
                   help="read the PCA from a {'mean','comp','std'} file instead of sampling")

    f = parser.add_argument_group("faces and edits")
    f.add_argument("--generator", default="stylegan2-ffhq", help="generator weights name or path")
    f.add_argument("--faces", type=int, default=16, help="random faces (w from the generator)")
    f.add_argument("--photos", metavar="DIR", default=None, help="evaluate on these photos instead (aligned, inverted)")
    f.add_argument("--encoder", default="e4e-ffhq", help="encoder for --photos (name or path)")
    f.add_argument("--seed", type=int, default=0, help="seed of the random faces and of the GANSpace samples")
    f.add_argument("--truncation", type=float, default=0.7, help="truncation psi of the random faces")
    f.add_argument("--alphas", type=float, nargs="+", default=[0.0, 1.0, 3.0, 5.0], help="strengths α")
    f.add_argument("--scale", choices=("raw", "unit"), default="raw",
                   help="raw: α times Δ as stored; unit: Δ scaled to unit W+ norm first (α = W+ distance)")
    f.add_argument("--matrix-alpha", type=float, default=None, help="α of the attribute matrix (default: largest |α|)")

    m = parser.add_argument_group("measures")
    m.add_argument("--embedder", nargs="+", choices=("dlib", "arcface"), default=["dlib"], help="identity embedders")
    m.add_argument("--arcface", metavar="PATH", default=None, help="model_ir_se50.pth (default: arcface-ir-se50)")
    m.add_argument("--scorer", nargs="*", choices=("geometry", "clip", "fairface"), default=["geometry"],
                   help="attribute scorers (clip needs CLIP weights, fairface the fairface-res34 download)")
    m.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name or config JSON")
    m.add_argument("--clip-pretrained", default="openai", help="open_clip tag (cached), weights file, or 'none'")
    m.add_argument("--fairface", metavar="PATH", default=None, help="FairFace weights (default: fairface-res34)")

    o = parser.add_argument_group("output")
    o.add_argument("--out", default="eval", help="output folder: eval.json, eval.txt, eval_matrix.png, eval_identity.png")
    o.add_argument("--device", default=None, help="cpu | cuda[:N] (default: cuda when available)")
    o.add_argument("--batch", type=int, default=8, help="images per generator call")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _micromotion_edits(args, G) -> list:
    """The micromotion directions to evaluate, loaded as every door loads a folder (`directions.files.load_folder`:
    those asked for must load; of a listed folder, one per name, stray or incompatible files skipped with a
    warning)."""
    from directions.evaluate import edits_from_directions  # noqa: PLC0415
    from directions.files import default_dir, load_folder  # noqa: PLC0415

    folder = Path(args.dir) if args.dir else default_dir()
    sha = getattr(G, "source_sha256", None)
    found = load_folder(folder, args.direction or None, num_ws=G.num_ws, w_dim=G.w_dim, generator_sha256=sha)
    if not found.directions and not args.direction and not (args.interfacegan or args.ganspace):
        raise FileNotFoundError(f"no directions in {folder}; get the paper's with `python -m directions "
                                f"install-official` or pass --direction FILE")
    return edits_from_directions("micromotion", found.directions, G.num_ws, G.w_dim, sha)


def _interfacegan_edits(args, G) -> list:
    from directions.evaluate import Edit  # noqa: PLC0415
    from directions.files import load  # noqa: PLC0415

    out = []
    for item in args.interfacegan:
        name, path = _split_pair(item, "--interfacegan")
        d = load(path)
        d.meta.pop("generator_sha256", None)  # InterFaceGAN files do not record a generator
        out.append(Edit("interfacegan", name, d.delta_for(G.num_ws, G.w_dim), dict(d.meta, source=str(path))))
    return out


def parse_ganspace_spec(spec: str):
    """'COMP[:START-END][:-]' → ("component", comp, (start, end) | None, sense) or 'EDIT'/'-EDIT' → ("edit", …)."""
    text = spec.strip()
    sense = 1.0
    if text.endswith(":-"):
        sense, text = -1.0, text[:-2]
    if text.startswith("-") and not text[1:2].isdigit():
        return ("edit", text[1:], None, -1.0)
    head, _, layers = text.partition(":")
    if not head.isdigit():
        if layers:
            raise ValueError(f"GANSpace spec {spec!r}: a named edit takes no layer range")
        return ("edit", head, None, sense)
    rng = None
    if layers:
        lo, sep, hi = layers.partition("-")
        if not sep or not lo.isdigit() or not hi.isdigit():
            raise ValueError(f"GANSpace spec {spec!r}: layers must be START-END (end exclusive), e.g. 4-6")
        rng = (int(lo), int(hi))
    return ("component", int(head), rng, sense)


def _ganspace_edits(args, G, micromotion_names: Sequence[str], progress: bool) -> list:
    from directions import ganspace  # noqa: PLC0415
    from directions.evaluate import Edit  # noqa: PLC0415

    if not args.ganspace:
        return []
    items = []
    for item in args.ganspace:
        if item == "auto":
            matched = [n for n in micromotion_names if n in ganspace.FOR_MICROMOTION]
            if not matched:
                log.warning("--ganspace auto: none of %s has a published GANSpace edit", list(micromotion_names))
            for n in matched:
                edit, sense = ganspace.FOR_MICROMOTION[n]
                items.append((n, ("edit", edit, None, sense)))
        else:
            name, spec = _split_pair(item, "--ganspace")
            items.append((name, parse_ganspace_spec(spec)))
    if args.ganspace_pca:
        pca = ganspace.GanSpace.load(args.ganspace_pca)
    else:
        pca = ganspace.fit(G, n_samples=args.ganspace_samples, k=args.ganspace_components, seed=args.seed,
                           progress=progress)
    out = []
    for name, (kind, what, layers, sense) in items:
        if kind == "edit":
            d = pca.named(what, G.num_ws, name=name, sense=sense)
        else:
            d = pca.direction(what, layers, G.num_ws, name=name, sense=sense)
        out.append(Edit("ganspace", name, d.delta_for(G.num_ws, G.w_dim), d.meta))
    return out


def _clip(args, device):
    from directions.clip_loader import load_clip  # noqa: PLC0415

    pretrained = None if str(args.clip_pretrained).lower() == "none" else args.clip_pretrained
    return load_clip(args.clip_model, pretrained, device=device)


def run_eval(args, photo_latents: Optional[PhotoLatents] = None) -> int:
    """Run the evaluation from parsed options; writes the outputs and prints the table."""
    import engine  # noqa: PLC0415
    from engine.runtime import resolve_device  # noqa: PLC0415

    from directions import evaluate  # noqa: PLC0415
    from directions.attributes import make_scorers  # noqa: PLC0415
    from directions.embedders import make_embedder  # noqa: PLC0415

    if args.faces < 1 or args.batch < 1:
        raise ValueError("--faces and --batch must be >= 1")
    from directions.alpha import check_alpha  # noqa: PLC0415 (the bound of every door)

    for alpha in [*args.alphas, *([args.matrix_alpha] if args.matrix_alpha is not None else [])]:
        check_alpha(alpha, "--alphas / --matrix-alpha")
    progress = not args.quiet
    device = str(resolve_device(args.device))
    G = engine.load_generator(args.generator, device=device)
    edits = _micromotion_edits(args, G)
    edits += _interfacegan_edits(args, G)
    edits += _ganspace_edits(args, G, [e.name for e in edits if e.method == "micromotion"], progress)
    if not edits:
        raise ValueError("nothing to evaluate: give --direction, --interfacegan or --ganspace")
    embedders = [make_embedder(n, weights=args.arcface, device=device) for n in dict.fromkeys(args.embedder)]
    names = list(dict.fromkeys(args.scorer or []))
    scorers = make_scorers(names, clip=_clip(args, device) if "clip" in names else None,
                           fairface_weights=args.fairface, device=device)
    if args.photos:
        if photo_latents is None:
            raise ValueError("--photos needs the face aligner: run it as `python -m directions eval`")
        ws, labels = photo_latents(args.photos, args.encoder, device)
        source = {"source": "photos", "photos": str(args.photos), "photo_files": list(labels),
                  "encoder": args.encoder}
    else:
        ws = evaluate.sample_latents(G, args.faces, seed=args.seed, truncation=args.truncation)
        source = {"source": "random", "truncation": args.truncation}
    config = {"seed": args.seed, "generator": str(args.generator),
              "generator_sha256": getattr(G, "source_sha256", None), **source,
              "edits": {e.key: {k: v for k, v in e.meta.items() if isinstance(v, (str, int, float, list))}
                        for e in edits}}
    doc = evaluate.evaluate(G, edits, args.alphas, ws, embedders, scorers, scale=args.scale,
                            matrix_alpha=args.matrix_alpha, batch=args.batch, progress=progress, config=config)
    paths = evaluate.write_outputs(doc, args.out)
    print(evaluate.format_table(doc))
    if "note" in doc["config"]:
        print(f"note: {doc['config']['note']}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
