"""`python -m directions setup|build|show|list|apply|...` — make, inspect and use micromotion directions.

    python -m directions setup                  # everything the live effect needs: networks + the paper's directions
    python -m directions build --name smile --text "a person with {} smile"      # see directions/build.py
    python -m directions build --name blink --video clip.mp4
    python -m directions show smile [--png smile.png]      # per-layer energy: table + bar plot
    python -m directions list [--dir DIR]
    python -m directions install-official [NAME ...] [--dir DIR] [--base-url URL]   # the paper's 5 directions
    python -m directions apply --latent face.npy --direction smile --alpha 5 --frames 100 --out clip.mp4
    python -m directions reenact --driver clip.mp4 --target face.jpg --out out.mp4 [--rank 4 --layers 0:8 ...]
    python -m directions reenact --camera 0 --target face.jpg --out out.mp4 [--preview] [--seconds 30] [...]
    python -m directions eval --direction smile --ganspace auto --alphas 0 1 3 5 --out eval/   # see eval_cli.py
    python -m directions identity a.jpg b.jpg [--embedder dlib|arcface] [--json sim.json]

`apply` renders G(V + α·t·ΔV) for t from 0 to 1 over the frames (the paper's offline micromotion video) and
encodes it with PyAV (libx264, or mpeg4 where the FFmpeg build lacks it). The direction is checked against
the generator (num_ws, w_dim, recorded sha256) before anything is rendered; α has the bound of every door
(|α| <= directions.alpha.MAX_ALPHA).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from directions.alpha import MAX_ALPHA, check_alpha
from directions.setup import SETUP_COMMAND
from engine.__main__ import UserError as EngineUserError, images_to_uint8, read_latent

log = logging.getLogger("directions")

CODECS = ("libx264", "mpeg4")  # first one the installed FFmpeg can encode wins


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------ helpers


def _resolve_direction(name_or_path: str, folder: str | None):
    from directions.files import default_dir, find_direction, load  # noqa: PLC0415

    folders = [Path(folder)] if folder else [default_dir()]
    return load(find_direction(name_or_path, folders))


def _read_latent(path: str):
    """W+ latent from .npy / .npz (one array, or key 'w'/'ws'/'latent') → float32 numpy (engine's reader)."""
    try:
        return read_latent(path)
    except EngineUserError as err:
        raise UserError(str(err)) from None


def latent_to_ws(latent, num_ws: int, w_dim: int):
    """numpy [w_dim] | [num_ws, w_dim] | [1, num_ws, w_dim] → torch [1, num_ws, w_dim] float32."""
    import torch  # noqa: PLC0415

    t = torch.as_tensor(latent, dtype=torch.float32)
    if list(t.shape) == [w_dim]:
        return t[None, None].expand(1, num_ws, w_dim).contiguous()
    if list(t.shape) == [num_ws, w_dim]:
        return t[None].contiguous()
    if list(t.shape) == [1, num_ws, w_dim]:
        return t.contiguous()
    raise UserError(f"latent has shape {list(t.shape)}; this generator takes one W+ code [{num_ws}, {w_dim}] "
                    f"(num_ws, w_dim), [1, {num_ws}, {w_dim}] or a single w [{w_dim}]")


def render_clip(G, ws, delta, alpha: float, frames: int, batch: int = 8, progress: bool = True):
    """Yield uint8 RGB frames [R, R, 3] of G(V + α·t·ΔV), t = linspace(0, 1, frames).

    G: generator (num_ws, w_dim, forward(ws) → [N, 3, R, R]); ws [1, num_ws, w_dim]; delta [num_ws, w_dim].
    """
    import torch  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from directions.files import apply  # noqa: PLC0415

    if frames < 1 or batch < 1:
        raise UserError("--frames and --batch must be >= 1")
    param = next(G.parameters())
    ts = torch.linspace(0.0, 1.0, frames) if frames > 1 else torch.zeros(1)
    with torch.no_grad(), tqdm(total=frames, desc="render", unit="frame", disable=not progress) as bar:
        for start in range(0, frames, batch):
            t = ts[start:start + batch]
            codes = apply(ws, delta, alpha, t).to(device=param.device, dtype=param.dtype)
            for frame in images_to_uint8(G(codes)):
                yield frame
            bar.update(len(t))


def pick_codec() -> str:
    import av  # noqa: PLC0415

    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different types across versions
            continue
    raise UserError(f"this PyAV/FFmpeg build has none of the encoders {CODECS}; install the pinned `av` wheel")


def encode_video(frames, out: Path, fps: float, codec: str | None = None) -> tuple[int, str]:
    """Encode uint8 RGB frames [H, W, 3] to a video file; written to a temp name, then renamed.

    Returns (frames written, codec). An existing `out` is kept until the new file is complete.
    """
    import av  # noqa: PLC0415

    codec = codec or pick_codec()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix or '.mp4'}")
    n = 0
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = None
            for rgb in frames:
                if stream is None:
                    h, w = rgb.shape[:2]
                    stream = container.add_stream(codec, rate=round(fps) if float(fps).is_integer() else fps)
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": "18", "preset": "medium"}
                    else:
                        stream.bit_rate = max(2_000_000, w * h * 8)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                n += 1
            if stream is None:
                raise UserError("no frames to encode")
            for packet in stream.encode():
                container.mux(packet)
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n, codec


# ------------------------------------------------------------------------------------------------ commands


def cmd_show(args) -> int:
    from directions.files import layer_energy  # noqa: PLC0415

    d = _resolve_direction(args.file, args.dir)
    energy = layer_energy(d)
    total = float(energy.pow(2).sum().sqrt())
    share = energy.pow(2) / max(float(energy.pow(2).sum()), 1e-30)
    m = d.meta
    print(f"direction {d.name!r}: {d.num_ws} layer(s) x {d.w_dim}, |delta| {total:.4f}"
          + ("  (one offset for every layer)" if d.broadcast else ""))
    for key in ("method", "rank", "lmbda", "anchors", "template", "generator", "generator_sha256",
                "alpha_range", "created", "source"):
        if key in m:
            print(f"  {key:17s}{m[key]}")
    print(f"{'layer':>5}  {'energy':>10}  {'share':>6}")
    peak = float(energy.max()) or 1.0
    for i, (e, s) in enumerate(zip(energy.tolist(), share.tolist())):
        print(f"{i:>5}  {e:>10.4f}  {100 * s:>5.1f}%  {'#' * int(round(30 * e / peak))}")
    if args.png:
        path = plot_energy(energy.tolist(), d.name, Path(args.png))
        print(f"plot: {path}")
    return 0


def plot_energy(energy, name: str, path: Path) -> Path:
    """Bar plot of per-layer L2 energy → PNG (matplotlib, Agg backend)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(energy) + 1.5), 3.0), dpi=100)
    try:
        ax.bar(range(len(energy)), energy, color="#4a7bb7")
        ax.set_xlabel("W+ layer")
        ax.set_ylabel("‖ΔV‖₂ per layer")
        ax.set_title(f"{name}: per-layer energy")
        ax.set_xticks(range(len(energy)))
        ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def cmd_list(args) -> int:
    from directions.files import default_dir, load_folder  # noqa: PLC0415

    folder = Path(args.dir) if args.dir else default_dir()
    found = load_folder(folder)
    if not found.directions and not found.skipped:
        where = f" --dir {folder}" if args.dir else ""
        print(f"no directions in {folder}; install the paper's five with `python -m directions install-official"
              f"{where}` (`{SETUP_COMMAND}` also fetches the networks), or make one with "
              f"`python -m directions build --name NAME --text TEMPLATE`")
        return 0
    print(f"{folder}:")
    print(f"{'name':<16} {'layers':>6} {'w_dim':>5} {'|delta|':>9}  {'method':<9} {'alpha':<13} file")
    for d in found.directions:
        rng = d.alpha_range
        rng_s = f"{rng[0]:g}..{rng[1]:g}" if rng else "-"
        print(f"{d.name:<16} {d.num_ws:>6} {d.w_dim:>5} {float(d.delta.norm()):>9.4f}  "
              f"{str(d.meta.get('method', '-')):<9} {rng_s:<13} {found.paths[d.name].name}")
    for s in found.skipped:
        label = "unreadable" if s.kind == "unreadable" else f"skipped ({s.kind})"
        print(f"{s.path.stem:<16} {label}: {s.reason}")
    return 0


def cmd_apply(args) -> int:
    import engine  # noqa: PLC0415 (entry point composes layers)
    from engine.runtime import resolve_device  # noqa: PLC0415

    if args.frames < 1 or args.batch < 1 or args.fps <= 0:
        raise UserError("--frames, --batch and --fps must be positive")
    check_alpha(args.alpha, "--alpha")  # the bound of every door; before anything is loaded
    direction = _resolve_direction(args.direction, args.dir)  # fail before loading any model
    latent = _read_latent(args.latent)
    G = engine.load_generator(args.generator, device=resolve_device(args.device))
    delta = direction.delta_for(G.num_ws, G.w_dim, getattr(G, "source_sha256", None))
    ws = latent_to_ws(latent, G.num_ws, G.w_dim)
    out = Path(args.out)
    frames = render_clip(G, ws, delta, args.alpha, args.frames, batch=args.batch, progress=not args.quiet)
    n, codec = encode_video(frames, out, args.fps, codec=args.codec)
    print(f"{out}  ({n} frames, {G.resolution}x{G.resolution}, {args.fps:g} fps, {codec}; "
          f"{direction.name} alpha {args.alpha:g}, t 0..1)")
    return 0


def cmd_build(args) -> int:
    build = _build_module()
    align_source = None
    if getattr(args, "video", None) is not None or getattr(args, "frames_dir", None) is not None:
        from stream.face.clip import aligned_crops_from_source as align_source  # noqa: PLC0415 (entry point)
    return build.run(args, align_source=align_source)


def cmd_setup(args) -> int:
    from directions import setup  # noqa: PLC0415

    return setup.run(args)


def cmd_install_official(args) -> int:
    from directions import official  # noqa: PLC0415

    return official.run(args)


def cmd_reenact(args) -> int:
    """Driver clip or camera + target photo → video of the target moving like the driver (directions.reenact;
    stream.reenact_job for the clip, stream.reenact_live on the live path for the camera)."""
    from directions.reenact import ReenactOptions, parse_layers  # noqa: PLC0415

    options = ReenactOptions(rank=args.rank, layers=parse_layers(args.layers), beta=args.beta,
                             reference=args.reference, smoothing=args.smoothing, method=args.method,
                             lmbda=args.lmbda)
    inputs = (("--target", args.target),) if args.camera is not None else (("--driver", args.driver),
                                                                           ("--target", args.target))
    for what, path in inputs:
        if not Path(path).is_file():
            raise UserError(f"{what} {path} does not exist; pass an existing file")
    if args.batch < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise UserError("--batch and --max-frames must be >= 1")
    if args.camera is not None:
        return _reenact_camera(args, options)
    if args.preview or args.seconds is not None:
        raise UserError("--preview and --seconds are for --camera; a clip is rendered whole (use --max-frames)")
    from stream import reenact_job  # noqa: PLC0415 (entry point composes layers)

    precision = args.precision or "fp32"
    E, G, device = reenact_job.load_networks(args.encoder, args.generator, args.device, precision)
    report = reenact_job.run_job(args.driver, args.target, Path(args.out), E, G, options,
                                 paste_mode=args.paste_mode, batch=args.batch, max_frames=args.max_frames,
                                 progress=not args.quiet, extra_meta=_network_meta(args, E, G, device, precision))
    m = report.metadata
    print(f"{report.out}  ({report.frames} frames, {report.fps:g} fps, audio {'kept' if report.audio else 'none'}; "
          f"{m['subspace']['method']} rank {m['subspace']['rank']}, layers {m['layers'][0]}:{m['layers'][1]}, "
          f"beta {options.beta:g}, reference frame {m['reference_frame']}, smoothing {options.smoothing:g}; "
          f"held {report.held})")
    print(f"metadata: {report.sidecar} (also in the video's comment tag)")
    return 0


def _network_meta(args, E, G, device, precision: str) -> dict:
    """Names and sha256 of the networks (saved with every reenactment output)."""
    from engine.checkpoints import source_sha256  # noqa: PLC0415

    return {"encoder": str(args.encoder), "encoder_kind": getattr(E, "kind", None),
            "encoder_sha256": source_sha256(E),
            "generator": str(args.generator) if args.generator else f"{args.encoder} (its decoder)",
            "generator_sha256": source_sha256(G), "device": str(device), "precision": precision}


def _reenact_camera(args, options) -> int:
    """`--camera N`: the webcam drives the target on the live path (calibration, then the editor's rate) → --out."""
    from stream import reenact_camera, reenact_job  # noqa: PLC0415 (entry point composes layers)
    from stream.editor import Editor  # noqa: PLC0415
    from stream.effect import Effect  # noqa: PLC0415
    from stream.options import EffectConfig  # noqa: PLC0415
    from stream.reenact_calibration import check_live_options, check_paste_mode  # noqa: PLC0415
    from stream.sources import WebcamSource, read_image  # noqa: PLC0415

    check_paste_mode(args.paste_mode)
    check_live_options(options, args.calibration, None)
    if args.seconds is not None and not args.seconds > 0:
        raise UserError("--seconds must be > 0")
    if not args.calibration_seconds >= 0:
        raise UserError("--calibration-seconds must be >= 0")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UserError(f"output folder {out.parent} does not exist; create it or pass another --out")
    try:
        photo = read_image(args.target)   # header checked before decoding, as every door's uploads
    except (OSError, ValueError) as exc:
        raise UserError(f"--target: {exc}") from None
    try:
        source = WebcamSource(args.camera)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    with source:
        precision = args.precision or "auto"
        E, G, device = reenact_job.load_networks(args.encoder, args.generator, args.device, precision)
        config = EffectConfig(encoder=str(args.encoder), generator=args.generator, device=str(device),
                              precision=precision, mode="live")
        effect = Effect(config, editor=Editor(G, E, [], config), batching=True)  # no directions: nothing to edit
        try:
            session = effect.new_reenact_session(photo, options, paste_mode=args.paste_mode,
                                                 calibration=args.calibration, calibration_s=args.calibration_seconds)
            try:
                report = reenact_camera.run_camera_job(
                    source, session, out, preview=args.preview, overlay=args.overlay, max_frames=args.max_frames,
                    seconds=args.seconds, progress=not args.quiet,
                    extra_meta={"driver": f"camera {args.camera}", "target": str(args.target),
                                **_network_meta(args, E, G, device, effect.info.precision)})
            finally:
                session.close()
        finally:
            effect.close()
    m = report.metadata
    fit = (f"{m['subspace']['method']} rank {m['subspace']['rank']}, layers {m['layers'][0]}:{m['layers'][1]}, "
           f"reference latent {m['reference_frame']}" if "subspace" in m else "not calibrated (too few frames)")
    print(f"{report.out}  ({report.frames} frames of {report.frames_in}, {report.fps:g} fps; {fit}; "
          f"beta {options.beta:g}, smoothing {options.smoothing:g}; held {report.held})")
    print(f"metadata: {report.sidecar} (also in the video's comment tag)")
    return 0


# ------------------------------------------------------------------------------------------------ eval / identity
# (this entry point composes stream's face finder and aligner with the directions layer's measures)


def _find_faces(paths, size: int):
    """One (uint8 [size, size, 3] BGR FFHQ-aligned crop of the largest face, None) or (None, reason) per image."""
    import cv2  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from stream.face.align import align_largest_face  # noqa: PLC0415 (entry point composes layers)
    from stream.face.landmarks import FaceMeshLandmarker  # noqa: PLC0415

    out = []
    with FaceMeshLandmarker(max_faces=4, video_mode=False) as landmarker:
        for path in tqdm(paths, desc="align", unit="image", disable=len(paths) < 8):
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                out.append((None, "not a readable image"))
                continue
            try:
                out.append((align_largest_face(frame, size, landmarker).crop, None))
            except ValueError:                      # no face found
                out.append((None, "no face found"))
    return out


def _photo_latents(folder: str, encoder: str, device: str):
    """W+ codes [N, num_ws, w_dim] of the faces in a folder of photos (aligned by stream.face, inverted by E)."""
    import engine  # noqa: PLC0415
    from directions.video import anchor_video  # noqa: PLC0415
    from stream.face.clip import aligned_crops_from_source  # noqa: PLC0415 (entry point composes layers)

    E = engine.load_encoder(encoder, device=device)
    crops, labels = aligned_crops_from_source(folder, size=E.input_size, is_folder=True)
    return anchor_video(crops, E, n=None, batch_size=8), labels


def cmd_identity(args) -> int:
    from directions import eval_cli  # noqa: PLC0415

    return eval_cli.run_identity(args, find_faces=_find_faces)


def cmd_eval(args) -> int:
    from directions import eval_cli  # noqa: PLC0415

    return eval_cli.run_eval(args, photo_latents=_photo_latents)


def _add_eval_parsers(sub) -> None:
    from directions import eval_cli  # noqa: PLC0415 (standard library only at import)

    p = sub.add_parser("eval", help="identity and attribute change per direction and α, with baselines",
                       description="identity change (1 - cos of face embeddings) and attribute change of every "
                                   "direction at every α, with InterFaceGAN and GANSpace baselines: table, JSON, "
                                   "Fig. 6-style matrix and identity-vs-α plot (directions/eval_cli.py)")
    eval_cli.add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("identity", help="pairwise identity similarity of the faces in some photos",
                       description="align each photo's largest face and print the pairwise cosine similarity "
                                   "of their identity embeddings")
    eval_cli.add_identity_arguments(p)
    p.set_defaults(func=cmd_identity)


def _build_module():
    try:
        import directions.build as build  # noqa: PLC0415
    except ImportError as err:
        raise UserError(f"`build` is unavailable: directions.build cannot be imported ({err}); "
                        f"check the install (requirements.txt)") from None
    return build


# ------------------------------------------------------------------------------------------------ parser


def make_parser(argv=None) -> argparse.ArgumentParser:
    """The CLI parser. `build`'s options come from directions.build, imported only when `build` is asked for."""
    parser = argparse.ArgumentParser(prog="python -m directions", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("setup", help="fetch everything the live effect needs: the default networks and the "
                                     "paper's five directions (skips what is installed)",
                       description="download the default networks (engine.weights DEFAULT_NAMES, ~2.3 GB, "
                                   "resumable) and install the paper's five official directions; what is "
                                   "installed is skipped; each failure says its cause and fix "
                                   "(directions/setup.py). Exit 0 ready, 1 something failed or is missing.")
    from directions import setup  # noqa: PLC0415 (standard library only at import)

    setup.add_arguments(p)
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("build", help="anchors (text or video) → RPCA → direction file",
                       description="anchors (text or video) → RPCA → direction file (directions/build.py)")
    if argv is not None and "build" in argv[:2]:
        _build_module().add_arguments(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("install-official", help="download the paper's five official directions into the directions dir",
                       description="download the paper's official directions (smile, angry, aging, eyesClose, "
                                   "headsTurn), check their sha256 and write them as direction files "
                                   "(directions/official.py)")
    from directions import official  # noqa: PLC0415 (standard library only at import)

    official.add_arguments(p)
    p.set_defaults(func=cmd_install_official)

    p = sub.add_parser("show", help="per-layer energy of a direction (table, optional PNG)")
    p.add_argument("file", help="direction file or name (looked up in --dir)")
    p.add_argument("--png", metavar="OUT", help="also write a bar plot PNG")
    p.add_argument("--dir", help="folder to look names up in (default $MICROMOTION_HOME/directions)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("list", help="directions in a folder")
    p.add_argument("--dir", help="folder (default $MICROMOTION_HOME/directions)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("apply", help="render the micromotion video G(V + α·t·ΔV), t in [0, 1]")
    p.add_argument("--latent", required=True, help="W+ code .npy/.npz: [num_ws, w_dim], [1, num_ws, w_dim] or [w_dim]")
    p.add_argument("--direction", required=True, help="direction file or name (looked up in --dir)")
    p.add_argument("--alpha", type=float, default=5.0,
                   help=f"strength α, |α| <= {MAX_ALPHA:g} (default 5: the official scale; the file's suggested "
                        f"range: `python -m directions list`)")
    p.add_argument("--frames", type=int, default=100, help="number of frames, t = 0 … 1 (default 100)")
    p.add_argument("--out", required=True, help="output video, e.g. clip.mp4")
    p.add_argument("--generator", default="stylegan2-ffhq",
                   help="generator weights name or path (default stylegan2-ffhq)")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    p.add_argument("--batch", type=int, default=8, help="frames rendered per generator call (default 8)")
    p.add_argument("--codec", choices=CODECS, default=None, help="video encoder (default: first available)")
    p.add_argument("--device", default=None, help="cpu | cuda[:N] (default: cuda when available)")
    p.add_argument("--dir", help="folder to look direction names up in (default $MICROMOTION_HOME/directions)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("reenact", help="drive the face of a photo with a clip's motion (the paper's talking head)",
                       description="driver clip → W+ per frame → motion subspace (robust PCA) → "
                                   "V_target + beta·P(w_t − w_ref) → video of the target photo with the "
                                   "driver's audio; options saved in the video's comment tag and OUT.json")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--driver", metavar="CLIP", help="video whose face motion drives the target")
    src.add_argument("--camera", type=int, metavar="N",
                     help="webcam index: its face drives the target live (calibration first: start neutral, then "
                          "move); stops on Ctrl-C, --max-frames or --seconds")
    p.add_argument("--target", required=True, metavar="IMAGE", help="photo of the face to animate")
    p.add_argument("--out", required=True, metavar="FILE", help="output video (.mp4)")
    p.add_argument("--rank", type=int, default=4, help="motion subspace dimension per W+ layer (default 4)")
    p.add_argument("--layers", default=None, metavar="A:B",
                   help="W+ layers that move, A to B-1 (default all), e.g. 0:8")
    p.add_argument("--beta", type=float, default=1.0, help="strength of the transferred motion (default 1)")
    p.add_argument("--reference", type=int, default=None, metavar="N",
                   help="driver frame of the neutral pose (default: the first frame with a face)")
    p.add_argument("--smoothing", type=float, default=0.0, metavar="SIGMA",
                   help="temporal Gaussian sigma in frames, both sides (default 0: off)")
    p.add_argument("--method", choices=("rpca", "pca", "none"), default="rpca",
                   help="motion projection: robust PCA (default), plain PCA, none (raw offsets)")
    p.add_argument("--lmbda", type=float, default=None, help="RPCA sparsity weight (default 1/sqrt(max(T, w_dim)))")
    p.add_argument("--paste-mode", choices=("residual", "replace", "none"), default="residual",
                   help="residual: photo + G(w_t) - G(V) (default); replace: G(w_t) pasted; none: the aligned "
                        "generated face only (clips only)")
    p.add_argument("--calibration", type=int, default=40, metavar="N",
                   help="--camera: driver latents the motion is learned from (default 40; the first is the "
                        "neutral reference unless --reference says otherwise)")
    p.add_argument("--calibration-seconds", type=float, default=4.0, metavar="S",
                   help="--camera: spread the calibration latents over at least S seconds (default 4)")
    p.add_argument("--seconds", type=float, default=None, help="--camera: stop after this many seconds")
    p.add_argument("--preview", action="store_true", help="--camera: also show the output in a window (q quits)")
    p.add_argument("--overlay", action="store_true", help="--camera: draw the status line on the output")
    p.add_argument("--encoder", default="restyle-psp-ffhq", help="encoder weights name or path")
    p.add_argument("--generator", default=None, help="generator name or path (default: the encoder's decoder)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "fp16", "bf16"),
                   help="network precision (default: fp32 for a clip, offline quality; auto for --camera, fp16 on "
                        "CUDA; fp16/bf16 only on CUDA)")
    p.add_argument("--batch", type=int, default=8, help="frames per network call")
    p.add_argument("--max-frames", type=int, default=None,
                   help="use at most this many driver frames (--camera: camera frames)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reenact)
    _add_eval_parsers(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = make_parser(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as err:
        # DirectionError, engine's CheckpointError (ValueError) and MissingWeightsError (FileNotFoundError)
        # carry one-line messages naming the cause and the fix.
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
