"""Install the paper's official micromotion directions as direction files.

    python -m directions install-official                  # all five: smile angry aging eyesClose headsTurn
    python -m directions install-official smile headsTurn --dir DIR
    python -m directions install-official --base-url http://mirror/pregen_latents     # fetches BASE/<name>/d_latent

(`python -m directions setup` runs this and fetches the default networks too: the one command the doors show.)

The official repository (wuqiuche/micromotion-styleGAN, pinned commit in :mod:`engine.weights`) ships five
precomputed W+ directions as ``pregen_latents/<name>/d_latent`` (``torch.save`` of a [1, 18, 512] float32
tensor). Each file is downloaded through :func:`engine.weights.download` (resumable, sha256 checked against the
manifest; kept in ``$MICROMOTION_HOME/weights``), read with :func:`directions.files.load`, and written as
``<dir>/<name>.safetensors`` (default dir :func:`directions.files.default_dir`), which is where the live effect
and ``python -m directions list`` find directions by name.

Strength: the official ``main.py`` renders ``latents_begin + i/100 * d_latent * scale`` for i = 0 … 99 with
``--scale`` (int) defaulting to 5, for every category including headsTurn (no per-direction rescaling, although
headsTurn is stored with ‖ΔV‖ ≈ 88 against 1–2.4 for the others); the repository's Replicate ``predict.py`` offers
``scale`` from 1 to 10 (default 5). The files therefore record ``alpha_range`` [0, 10] and ``alpha_default`` 5.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

log = logging.getLogger(__name__)

#: Official names, as the repository and its `main.py --category` spell them.
OFFICIAL_NAMES: tuple[str, ...] = ("smile", "angry", "aging", "eyesClose", "headsTurn")
GENERATOR = "stylegan2-ffhq config-f"
NUM_WS = 18      # W+ layers of the FFHQ 1024 config-f generator the directions were made for
W_DIM = 512      # its w_dim
ALPHA_RANGE = (0.0, 10.0)   # predict.py: scale 1..10; 0 = no edit
ALPHA_DEFAULT = 5.0         # main.py / predict.py default --scale
USAGE = ("official main.py: latents_begin + i/100 * d_latent * scale, i = 0..99, scale default 5 "
         "(predict.py: 1..10); the same scale for every category")


@dataclass
class Installed:
    """One official direction after `install`. status: "installed" | "updated" | "unchanged"."""

    name: str
    path: Path
    status: str
    sha256: str
    source: str


def weights_name(name: str) -> str:
    """Manifest name in :mod:`engine.weights` of an official direction ("smile" -> "micromotion-smile")."""
    return f"micromotion-{name}"


def canonical_name(name: str) -> str:
    """The official spelling of `name` (case-insensitive, "eyes_close" accepted); unknown -> ValueError."""
    key = name.replace("_", "").replace("-", "").lower()
    for official in OFFICIAL_NAMES:
        if official.lower() == key:
            return official
    raise ValueError(f"unknown official direction {name!r}; choose from {', '.join(OFFICIAL_NAMES)}")


def source_url(name: str, base_url: Optional[str] = None) -> str:
    """Where `name` is fetched from: ``BASE/<name>/d_latent`` with a base URL, else the pinned official URL."""
    from engine import weights  # noqa: PLC0415

    if base_url:
        return f"{base_url.rstrip('/')}/{name}/d_latent"
    return weights.entry(weights_name(name)).url


def _meta(name: str, url: str, sha256: str, delta) -> dict:
    from directions import files  # noqa: PLC0415
    from engine import weights  # noqa: PLC0415

    e = weights.entry(weights_name(name))
    extra = {}
    if name == "headsTurn":
        extra["note"] = ("stored upstream with |delta| about 88 (the other official directions: 1 to 2.4); the "
                         "official code applies the same scale to it")
    return files.make_meta(
        method="official",
        generator=GENERATOR,
        alpha_range=ALPHA_RANGE,
        source=url,
        official_url=e.url,
        alpha_default=ALPHA_DEFAULT,
        official_name=name,
        source_sha256=sha256,
        source_path=f"pregen_latents/{name}/d_latent",
        repository=f"https://github.com/{weights.MICROMOTION_REPO}",
        commit=weights.MICROMOTION_COMMIT,
        license=e.license,
        usage=USAGE,
        delta_norm=round(float(delta.norm()), 4),
        num_ws=int(delta.shape[0]),
        w_dim=int(delta.shape[1]),
        **extra,
    )


def _fetch(name: str, base_url: Optional[str], progress: bool,
           weights_base_url: Optional[str] = None) -> tuple[Path, str, str]:
    """Download (or reuse) the official file of `name` → (cached path, url, sha256), hash checked.

    base_url: a pregen_latents mirror (BASE/<name>/d_latent); weights_base_url: a weights mirror (BASE/<weights
    file name>, as `engine.weights --base-url`). Raises engine.weights.HashMismatchError / DownloadError (nothing is
    kept on a bad hash).
    """
    from engine import weights  # noqa: PLC0415

    wname = weights_name(name)
    expected = weights.entry(wname).sha256
    url = source_url(name, base_url)
    fetch = dict(url=url if base_url else None, base_url=weights_base_url, progress=progress)
    res = weights.download(wname, **fetch)
    if res.status == "present" and weights.sha256_file(res.path) != expected:
        log.warning("cached %s does not have the pinned sha256; downloading it again", res.path)
        res = weights.download(wname, force=True, **fetch)
    return res.path, url, expected


def user_files(names: Optional[Iterable[str]] = None, folder: Union[str, Path, None] = None) -> dict[str, Path]:
    """{official name: file} of the files in `folder` that have an official direction's file name but are not
    official directions (the user's own builds); `install` refuses to overwrite them without `force`."""
    from directions import files  # noqa: PLC0415

    folder = Path(folder).expanduser() if folder is not None else files.default_dir()
    wanted = dict.fromkeys(canonical_name(n) for n in (names or OFFICIAL_NAMES))
    paths = {name: folder / f"{name}.safetensors" for name in wanted}
    return {name: p for name, p in paths.items() if p.exists() and not _is_official(p)}


def _is_official(path: Path) -> bool:
    from directions import files  # noqa: PLC0415

    try:
        return files.load(path).meta.get("method") == "official"
    except (files.DirectionError, OSError):
        return False


def install(
    names: Optional[Iterable[str]] = None,
    folder: Union[str, Path, None] = None,
    base_url: Optional[str] = None,
    progress: bool = True,
    force: bool = False,
    weights_base_url: Optional[str] = None,
) -> list[Installed]:
    """Download, check and write the official directions; see :func:`install_official` (this one also says what
    happened to each file). weights_base_url: a weights mirror holding ``BASE/<weights file name>`` (what
    ``python -m directions setup --base-url`` and ``$MICROMOTION_WEIGHTS_BASE_URL`` give)."""
    import torch  # noqa: PLC0415

    from directions import files  # noqa: PLC0415

    wanted = list(dict.fromkeys(canonical_name(n) for n in (names or OFFICIAL_NAMES)))
    folder = Path(folder).expanduser() if folder is not None else files.default_dir()
    targets = {name: folder / f"{name}.safetensors" for name in wanted}

    # A file of the same name that is not an official direction (the user's own build) is never overwritten
    # silently: refuse before downloading or writing anything.
    foreign = [] if force else [str(p) for p in user_files(wanted, folder).values()]
    if foreign:
        raise FileExistsError(
            f"{', '.join(foreign)} already exist and are not official micromotion directions; move them, install "
            f"into another folder with --dir, or overwrite them with --force")

    # Fetch and check every file first, so a bad download writes nothing at all.
    loaded = {}
    for name in wanted:
        path, url, sha256 = _fetch(name, base_url, progress, weights_base_url)
        d = files.load(path)
        if d.num_ws != NUM_WS or d.w_dim != W_DIM:
            raise files.DirectionError(
                f"{path}: official direction {name!r} is {d.num_ws}×{d.w_dim}, expected {NUM_WS}×{W_DIM}; "
                f"delete it and run the install again")
        loaded[name] = (d.delta, url, sha256)

    out = []
    for name in wanted:
        delta, url, sha256 = loaded[name]
        target = targets[name]
        status = "installed"
        if target.exists():
            try:
                have = files.load(target)
            except (files.DirectionError, OSError):
                have = None
            if (have is not None and have.meta.get("method") == "official"
                    and have.meta.get("source_sha256") == sha256 and have.name == name
                    and have.delta.shape == delta.shape and torch.equal(have.delta, delta)):
                log.info("official direction %r already installed at %s", name, target)
                out.append(Installed(name, target, "unchanged", sha256, url))
                continue
            status = "updated"
        files.save(files.Direction(name, delta, _meta(name, url, sha256, delta)), target)
        out.append(Installed(name, target, status, sha256, url))
    return out


def install_official(
    names: Optional[Iterable[str]] = None,
    folder: Union[str, Path, None] = None,
    base_url: Optional[str] = None,
    progress: bool = True,
) -> list[Path]:
    """Install the official micromotion directions; returns the direction files, in the order of `names`.

    names:    official names (default all five: smile, angry, aging, eyesClose, headsTurn; case-insensitive).
    folder:   destination (default :func:`directions.files.default_dir`, ``$MICROMOTION_HOME/directions``).
    base_url: mirror of ``pregen_latents`` (fetches ``BASE/<name>/d_latent``); default the pinned raw GitHub URLs
              (or ``$MICROMOTION_WEIGHTS_BASE_URL/<weights file name>``, as for every weights file).
    Each ``<folder>/<name>.safetensors`` holds delta [18, 512] float32 and metadata (method "official", source URL
    and sha256, generator, alpha_range [0, 10], alpha_default 5). Already installed and identical → left alone.
    Errors: ValueError (unknown name), FileExistsError (a non-official file of that name is in the way),
    engine.weights.HashMismatchError / DownloadError (nothing is written).
    """
    return [r.path for r in install(names, folder, base_url, progress)]


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `install-official` (the caller owns the parser and the sub-command dispatch)."""
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"official directions to install (default all: {' '.join(OFFICIAL_NAMES)})")
    parser.add_argument("--dir", default=None,
                        help="destination folder (default $MICROMOTION_HOME/directions)")
    parser.add_argument("--base-url", default=None,
                        help="mirror of pregen_latents: fetch BASE/<name>/d_latent instead of the pinned GitHub URL")
    parser.add_argument("--force", action="store_true",
                        help="overwrite files of the same name that are not official directions")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """`python -m directions install-official`: prints one line per direction; 0 ok, 1 download/hash failure."""
    from engine.weights import WeightsError  # noqa: PLC0415

    try:
        results = install(args.names, args.dir, args.base_url, progress=not args.no_progress, force=args.force)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for r in results:
        what = {"installed": "installed", "updated": "updated", "unchanged": "already installed"}[r.status]
        print(f"{r.name}: {what} at {r.path} (sha256 {r.sha256[:12]}…, alpha {ALPHA_RANGE[0]:g}..{ALPHA_RANGE[1]:g}, "
              f"default {ALPHA_DEFAULT:g})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Stand-alone entry (`python -m directions.official ...`) = `python -m directions install-official ...`."""
    from directions.__main__ import main as directions_main  # noqa: PLC0415

    return directions_main(["install-official", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
