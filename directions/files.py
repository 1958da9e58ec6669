"""Direction files: one W+ micromotion direction ΔV with its provenance, and how to apply it.

Native format: safetensors holding one tensor ``delta`` [num_ws, w_dim] float32 and, in the (str → str)
safetensors metadata, one entry ``micromotion`` = a JSON object (name, method, template, degrees, anchors,
rank, lmbda, generator_sha256, generator, alpha_range, created, source, …; see :data:`META_KEYS`).

:func:`load` also imports, by content (not by file name):

* the official micromotion ``pregen_latents/<name>/d_latent`` files: ``torch.save`` of a [1, 18, 512] tensor
  (saved on cuda, some with requires_grad) — read with ``torch.load(weights_only=True, map_location="cpu")``;
* InterFaceGAN boundaries: [1, 512] / [512] (one offset for every W+ layer) or [1, num_ws, w_dim], as
  ``.npy`` or as a torch tensor file.

A single-layer direction keeps ``delta`` [1, w_dim]; it broadcasts over the layers in :func:`apply` and
:meth:`Direction.delta_for` expands it to [num_ws, w_dim].

The paper's edit is V0 + α·t·ΔV for t ∈ [0, 1] (official ``main.py``: ``latents_begin + i/100 * d_latent * scale``).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = "micromotion"
SUFFIXES = (".safetensors", ".pt", ".pth", ".npy")
OFFICIAL_NAME = "d_latent"  # the official files carry no suffix
META_KEYS = (
    "name", "method", "template", "degrees", "anchors", "rank", "lmbda", "generator_sha256", "generator",
    "alpha_range", "created", "source", "format_version",
)


class DirectionError(ValueError):
    """A direction file that cannot be read, or a direction that does not fit the generator (one-line message)."""


class UnsafeDirectionError(DirectionError):
    """A direction file whose pickle names code (``engine.safe_pickle``); nothing from it was run.

    ``path``: the file; ``names``: the first few ``module.name`` it would have called.
    """

    def __init__(self, path, names: list):
        self.path = Path(path)
        self.names = list(names)
        super().__init__(
            f"{self.path} refused: the file contains code ({', '.join(self.names)}), which a direction never needs; "
            f"nothing from the file was run — get the file from its official source "
            f"(`python -m directions install-official`) or rebuild it with `python -m directions build`")


@dataclass
class Direction:
    """A W+ direction.

    name:  short name ("smile").
    delta: [num_ws, w_dim] float32 CPU tensor (or [1, w_dim]: the same offset on every layer).
    meta:  JSON-serialisable provenance (see META_KEYS); ``meta["layers"] == "all"`` marks a single-layer delta.
    """

    name: str
    delta: "torch.Tensor"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        import torch

        delta = torch.as_tensor(self.delta).detach().to("cpu", torch.float32)
        if delta.ndim == 3 and delta.shape[0] == 1:
            delta = delta[0]
        if delta.ndim != 2 or delta.shape[0] < 1 or delta.shape[1] < 1:
            raise DirectionError(
                f"direction {self.name!r}: delta must be [num_ws, w_dim] (or [1, w_dim]), got {list(delta.shape)}")
        if not torch.isfinite(delta).all():
            raise DirectionError(f"direction {self.name!r}: delta contains NaN or Inf")
        self.delta = delta.contiguous()
        self.meta = _clean_meta(dict(self.meta), self.name)

    @property
    def num_ws(self) -> int:
        return int(self.delta.shape[0])

    @property
    def w_dim(self) -> int:
        return int(self.delta.shape[1])

    @property
    def broadcast(self) -> bool:
        """True when one [w_dim] offset is applied to every layer."""
        return self.num_ws == 1

    def _made_for(self) -> str:
        gen = self.meta.get("generator")
        sha = self.meta.get("generator_sha256")
        parts = [p for p in (gen, f"sha256 {sha[:12]}…" if sha else None) if p]
        return " (" + ", ".join(parts) + ")" if parts else ""

    def check_compatible(self, num_ws: int, w_dim: int, generator_sha256: Optional[str] = None) -> None:
        """Raise DirectionError (one line) when this direction does not fit a generator with num_ws × w_dim
        layers, or was recorded for a different generator file (sha256 mismatch; only checked when both known)."""
        if self.w_dim != w_dim or (not self.broadcast and self.num_ws != num_ws):
            raise DirectionError(
                f"direction {self.name!r} is {self.num_ws}×{self.w_dim} (num_ws×w_dim) but the generator is "
                f"{num_ws}×{w_dim}; it was made for another generator{self._made_for()} — "
                f"rebuild it with `python -m directions build` for this generator")
        recorded = self.meta.get("generator_sha256")
        if recorded and generator_sha256 and recorded.lower() != generator_sha256.lower():
            raise DirectionError(
                f"direction {self.name!r} was made for generator{self._made_for()} but this generator has "
                f"sha256 {generator_sha256[:12]}…; rebuild the direction with this generator or load the one "
                f"it was made for")

    def delta_for(self, num_ws: int, w_dim: int, generator_sha256: Optional[str] = None) -> "torch.Tensor":
        """Checked delta [num_ws, w_dim] float32 for a generator (single-layer directions are expanded)."""
        self.check_compatible(num_ws, w_dim, generator_sha256)
        return self.delta.expand(num_ws, w_dim).contiguous() if self.broadcast else self.delta

    @property
    def alpha_range(self) -> Optional[tuple[float, float]]:
        """(lo, hi) suggested for α from the metadata, or None (absent or malformed)."""
        return _alpha_range(self.meta.get("alpha_range"))


def _number(value) -> Optional[float]:
    """A finite real number (bools and strings are not numbers here), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _alpha_range(value) -> Optional[tuple[float, float]]:
    """(lo, hi) when ``value`` is two finite numbers with lo < hi, else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    lo, hi = _number(value[0]), _number(value[1])
    return (lo, hi) if lo is not None and hi is not None and lo < hi else None


def _clean_meta(meta: dict, name: str) -> dict:
    """Metadata with malformed UI hints dropped (one warning each): ``alpha_range`` must be [lo, hi] with
    finite lo < hi, ``alpha_default`` a finite number. The direction itself stays usable."""
    if "alpha_range" in meta and _alpha_range(meta["alpha_range"]) is None:
        log.warning("direction %r: ignoring malformed alpha_range %r (need [lo, hi], two numbers, lo < hi)",
                    name, meta["alpha_range"])
        meta["alpha_range_ignored"] = repr(meta.pop("alpha_range"))[:80]
    if "alpha_default" in meta and _number(meta["alpha_default"]) is None:
        log.warning("direction %r: ignoring malformed alpha_default %r (need a number)", name, meta["alpha_default"])
        meta["alpha_default_ignored"] = repr(meta.pop("alpha_default"))[:80]
    return meta


# ------------------------------------------------------------------------------------------------ helpers


def layer_energy(delta) -> "torch.Tensor":
    """L2 norm of every layer of a direction: delta [num_ws, w_dim] (or a Direction) → [num_ws] float32."""
    import torch

    d = delta.delta if isinstance(delta, Direction) else torch.as_tensor(delta)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"layer_energy: delta must be [num_ws, w_dim], got {list(d.shape)}")
    return d.float().norm(dim=1)


def apply(ws, direction, alpha: float, t=1.0) -> "torch.Tensor":
    """The paper's edit V0 + α·t·ΔV.

    ws:        [N, num_ws, w_dim] (or [num_ws, w_dim]) W+ codes.
    direction: Direction or tensor [num_ws, w_dim] / [1, w_dim] (a single layer broadcasts to all).
    alpha:     strength α (the official default scale is 5).
    t:         float, or a 1-D tensor/sequence [T] of times; with N == 1 the result is [T, num_ws, w_dim]
               (one code per frame), otherwise T must equal N.
    Returns ws' in ws's dtype and device.
    """
    import torch

    ws = torch.as_tensor(ws)
    squeeze = ws.ndim == 2
    if squeeze:
        ws = ws[None]
    if ws.ndim != 3:
        raise ValueError(f"apply: ws must be [N, num_ws, w_dim] or [num_ws, w_dim], got {list(ws.shape)}")
    delta = direction.delta if isinstance(direction, Direction) else torch.as_tensor(direction)
    if delta.ndim == 3 and delta.shape[0] == 1:
        delta = delta[0]
    if delta.ndim != 2 or delta.shape[1] != ws.shape[2] or delta.shape[0] not in (1, ws.shape[1]):
        raise ValueError(
            f"apply: direction {list(delta.shape)} does not fit ws {list(ws.shape)} "
            f"(need [num_ws, w_dim] = [{ws.shape[1]}, {ws.shape[2]}] or [1, {ws.shape[2]}])")
    delta = delta.to(device=ws.device, dtype=ws.dtype)
    t = torch.as_tensor(t, dtype=ws.dtype, device=ws.device)
    if t.ndim == 0:
        out = ws + (float(alpha) * t) * delta
    elif t.ndim == 1:
        if ws.shape[0] not in (1, t.shape[0]):
            raise ValueError(f"apply: {t.shape[0]} times for {ws.shape[0]} codes; give one t per code or one code")
        out = ws + (float(alpha) * t)[:, None, None] * delta
    else:
        raise ValueError(f"apply: t must be a number or 1-D, got shape {list(t.shape)}")
    return out[0] if squeeze and out.shape[0] == 1 else out


def default_dir() -> Path:
    """Where directions live: ``$MICROMOTION_HOME/directions`` (default ``~/.cache/micromotion/directions``)."""
    home = os.environ.get("MICROMOTION_HOME") or os.path.join("~", ".cache", "micromotion")
    return Path(home).expanduser() / "directions"


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------------------------ save


def save(direction: Direction, path: Union[str, Path]) -> Path:
    """Write a direction as safetensors (tensor ``delta`` + JSON metadata); atomic (temp file + rename).

    Returns the path written. ``meta["name"]``, ``format_version`` and (if missing) ``created`` are filled in.
    """
    from safetensors.torch import save_file

    if not isinstance(direction, Direction):
        raise TypeError(f"save: expected a Direction, got {type(direction).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    meta = dict(direction.meta)
    meta["name"] = direction.name
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("created", _now_iso())
    try:
        text = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DirectionError(f"save: direction metadata is not plain JSON ({exc}); keep it to str/number/list/dict")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({"delta": direction.delta.contiguous()}, str(tmp), metadata={METADATA_KEY: text})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("saved direction %r %s to %s", direction.name, list(direction.delta.shape), path)
    return path


# ------------------------------------------------------------------------------------------------ load


def _sniff(path: Path) -> str:
    """'safetensors' | 'torch' | 'npy' | 'unknown' from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"  # zip (torch >= 1.6) or legacy pickle
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _default_name(path: Path) -> str:
    if path.name == OFFICIAL_NAME:  # pregen_latents/<name>/d_latent
        return path.parent.name or OFFICIAL_NAME
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _load_safetensors(path: Path) -> Direction:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        keys = list(fh.keys())
        metadata = fh.metadata() or {}
        if "delta" not in keys:
            raise DirectionError(f"{path}: safetensors file has no 'delta' tensor (has {keys}); not a direction file")
        delta = fh.get_tensor("delta")
    meta = {}
    if METADATA_KEY in metadata:
        try:
            meta = json.loads(metadata[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise DirectionError(f"{path}: direction metadata is not valid JSON ({exc}); re-save the direction")
        if not isinstance(meta, dict):
            raise DirectionError(f"{path}: direction metadata is not a JSON object; re-save the direction")
    name = str(meta.get("name") or _default_name(path))
    return Direction(name, delta, meta)


def _pick_tensor(obj, path: Path):
    import numpy as np
    import torch

    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj
    if isinstance(obj, dict):
        for key in ("delta", "d_latent", "direction", "boundary"):
            if key in obj:
                return obj[key]
        tensors = [v for v in obj.values() if isinstance(v, (torch.Tensor, np.ndarray))]
        if len(tensors) == 1:
            return tensors[0]
        raise DirectionError(f"{path}: dict with keys {sorted(map(str, obj))[:8]} holds no single direction tensor")
    if isinstance(obj, (list, tuple)) and len(obj) == 1:
        return _pick_tensor(obj[0], path)
    raise DirectionError(f"{path}: holds a {type(obj).__name__}, not a direction tensor")


def _imported(path: Path, array, kind: str) -> Direction:
    import numpy as np
    import torch

    delta = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array.detach())
    shape = list(delta.shape)
    if not delta.is_floating_point():
        raise DirectionError(f"{path}: {kind} tensor has dtype {delta.dtype}, expected floating point")
    if delta.ndim == 1:
        delta = delta[None]
    elif delta.ndim == 3 and delta.shape[0] == 1:
        delta = delta[0]
    if delta.ndim != 2:
        raise DirectionError(
            f"{path}: {kind} tensor has shape {shape}; expected [1, num_ws, w_dim], [num_ws, w_dim] or [1, w_dim]")
    single = delta.shape[0] == 1
    source_kind = "interfacegan" if single else "micromotion"
    meta = {
        "method": "imported",
        "source": f"{source_kind} {kind} {path.name} {shape}",
        "alpha_range": [-3.0, 3.0] if single else [0.0, 5.0],
    }
    if single:
        meta["layers"] = "all"
    return Direction(_default_name(path), delta, meta)


def load(path: Union[str, Path]) -> Direction:
    """Read a direction: native safetensors, official micromotion ``d_latent``, or an InterFaceGAN boundary.

    Raises FileNotFoundError for a missing path, :class:`UnsafeDirectionError` (a DirectionError) for a pickle
    that names code (found by scanning it; nothing is run), and DirectionError (one line) for anything else
    unreadable. Malformed metadata hints (``alpha_range``, ``alpha_default``) are dropped with a warning.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / OFFICIAL_NAME).is_file():
        path = path / OFFICIAL_NAME
    if not path.is_file():
        raise FileNotFoundError(f"direction file not found: {path}; `python -m directions list` shows the known ones")
    kind = _sniff(path)
    if kind in ("torch", "npy"):
        _refuse_code(path, kind)
    try:
        if kind == "safetensors":
            return _load_safetensors(path)
        if kind == "npy":
            import numpy as np

            return _imported(path, np.load(path, allow_pickle=False), "numpy")
        if kind == "torch":
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            return _imported(path, _pick_tensor(obj, path), "torch")
    except DirectionError:
        raise
    except Exception as exc:  # corrupt / truncated content: one line, no traceback for the user
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DirectionError(f"{path}: cannot read this {kind} direction file ({msg[:160]}); "
                             f"the file is corrupt or not a direction — re-create or re-download it") from None
    raise DirectionError(
        f"{path}: not a direction file (expected safetensors, a torch tensor file or .npy); "
        f"create one with `python -m directions build`")


def _refuse_code(path: Path, kind: str) -> None:
    """Scan the pickle of a torch / object-dtype numpy file before loading it (``engine.safe_pickle``).

    Code → :class:`UnsafeDirectionError`; inert objects a direction cannot hold (numpy arrays inside a .pt,
    object arrays) → DirectionError naming them. Plain files pass; damaged ones are left to the loader.
    """
    from engine import safe_pickle

    try:
        scan = safe_pickle.scan_npy(path) if kind == "npy" else safe_pickle.scan_file(path)
    except (OSError, ValueError) as exc:  # unreadable .npy header: the loader says it is corrupt
        log.debug("pickle scan of %s failed: %s", path, exc)
        return
    if scan is None:
        return
    if scan.has_code:
        raise UnsafeDirectionError(path, scan.code)
    if kind == "npy":
        raise DirectionError(f"{path}: holds Python objects (an object array), not numbers; save the direction "
                             f"as a float array (np.save of a float32 array) or a safetensors file")
    if scan.unsupported:
        raise DirectionError(f"{path}: holds objects a direction file does not take "
                             f"({', '.join(scan.unsupported)}); save a torch tensor or a .npy float array")


# ------------------------------------------------------------------------------------------------ find


def list_directions(folder: Union[str, Path, None] = None) -> list[Path]:
    """Direction-like files in a folder (default :func:`default_dir`), sorted; a missing folder gives [].

    Matches ``*.safetensors``, ``*.pt``, ``*.pth``, ``*.npy`` and official ``<name>/d_latent``.
    """
    folder = Path(folder).expanduser() if folder is not None else default_dir()
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES]
    found += [p / OFFICIAL_NAME for p in folder.iterdir() if p.is_dir() and (p / OFFICIAL_NAME).is_file()]
    return sorted(found, key=lambda p: (_default_name(p), str(p)))


def find_direction(name_or_path: Union[str, Path], folders: Optional[Iterable[Union[str, Path]]] = None) -> Path:
    """Resolve a direction name ("smile") or path. Searches ``folders`` (default [default_dir()]).

    Raises FileNotFoundError naming the folders searched and the names available.
    """
    p = Path(name_or_path).expanduser()
    if p.is_file() or (p.is_dir() and (p / OFFICIAL_NAME).is_file()):
        return p
    folders = [Path(f).expanduser() for f in (folders if folders is not None else [default_dir()])]
    name = str(name_or_path)
    for folder in folders:
        for cand in [folder / (name + s) for s in SUFFIXES] + [folder / name, folder / name / OFFICIAL_NAME]:
            if cand.is_file():
                return cand
    available = sorted({_default_name(x) for f in folders for x in list_directions(f)})
    raise FileNotFoundError(
        f"direction {name!r}{did_you_mean(name, available)} not found in "
        f"{', '.join(map(str, folders)) or '(no folders)'}; available: {', '.join(available) or 'none'} — install "
        f"the paper's with `python -m directions install-official` or build one with "
        f"`python -m directions build --name {name} ...`")


def did_you_mean(name: str, available: Iterable[str]) -> str:
    """' (did you mean 'smile'?)' for the closest available name, '' when nothing is close."""
    import difflib  # noqa: PLC0415

    close = difflib.get_close_matches(str(name), list(available), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class Skipped:
    """A direction file :func:`load_folder` did not load.

    path:   the file.
    kind:   "unreadable" (not a direction / damaged / contains code), "incompatible" (made for another
            generator) or "duplicate" (another file already gives a direction of that name).
    reason: one line for the user: why, and what to do.
    """

    path: Path
    kind: str
    reason: str


@dataclass
class FolderLoad:
    """What :func:`load_folder` found: the usable directions (one per name) and the files it skipped."""

    folder: Path
    directions: list = field(default_factory=list)  # [Direction]
    skipped: list = field(default_factory=list)     # [Skipped]
    paths: dict = field(default_factory=dict)       # name -> Path of the file each direction came from

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.directions]


def _preference(direction: Direction, path: Path) -> tuple:
    """Sort key among files giving the same direction name; the smallest is kept.

    1. the file named after the direction (``smile.safetensors`` or ``smile/d_latent`` for "smile") before a
       copy such as ``smile (1).safetensors``; 2. the native safetensors before imported .pt/.npy files;
    3. the file name, alphabetically (stable: never the modification time).
    """
    return (_default_name(path) != direction.name, path.suffix != ".safetensors", str(path))


def load_folder(
    folder: Union[str, Path, None] = None,
    names: Optional[Sequence[Union[str, Path]]] = None,
    *,
    num_ws: Optional[int] = None,
    w_dim: Optional[int] = None,
    generator_sha256: Optional[str] = None,
) -> FolderLoad:
    """Load the directions of a folder (default :func:`default_dir`) for a generator, skipping what does not fit.

    folder:           where to look (a missing folder holds nothing).
    names:            directions asked for by name (resolved in ``folder``) or path; None = every file listed by
                      :func:`list_directions`.
    num_ws, w_dim:    the generator's layout; when given, each direction is checked with
                      :meth:`Direction.check_compatible` (with ``generator_sha256`` when both sides know it).

    Files found by listing that cannot be used are skipped — each with a warning naming it and a
    :class:`Skipped` entry saying why — so one stray or copied file never takes every direction away.
    Several files giving the same direction name keep one (:func:`_preference`: the file named after the
    direction, then safetensors, then alphabetical) and skip the others as "duplicate".
    Directions asked for in ``names`` must load: FileNotFoundError / DirectionError as :func:`load` and
    :meth:`Direction.check_compatible` raise them, and two of them with the same name is a DirectionError.
    """
    folder = Path(folder).expanduser() if folder is not None else default_dir()
    result = FolderLoad(folder=folder)
    if names is not None:
        for item in names:
            path = find_direction(item, [folder])
            d = load(path)
            if num_ws is not None and w_dim is not None:
                d.check_compatible(num_ws, w_dim, generator_sha256)
            if d.name in result.paths:
                raise DirectionError(
                    f"two of the directions asked for are named {d.name!r} ({result.paths[d.name]} and {path}); "
                    f"ask for one of them, or give one file another name in its metadata")
            result.directions.append(d)
            result.paths[d.name] = path
        return result

    loaded: list[tuple[Direction, Path]] = []
    for path in list_directions(folder):
        try:
            d = load(path)
        except (DirectionError, OSError) as exc:
            _skip(result, path, "unreadable", str(exc))
            continue
        if num_ws is not None and w_dim is not None:
            try:
                d.check_compatible(num_ws, w_dim, generator_sha256)
            except DirectionError as exc:
                _skip(result, path, "incompatible", str(exc))
                continue
        loaded.append((d, path))
    kept: dict[str, tuple[Direction, Path]] = {}
    for d, path in sorted(loaded, key=lambda dp: _preference(*dp)):
        if d.name in kept:
            _skip(result, path, "duplicate",
                  f"{path}: another file already gives the direction {d.name!r} ({kept[d.name][1].name}); "
                  f"remove this copy, or give it another name in its metadata to use both")
            continue
        kept[d.name] = (d, path)
    for d, path in loaded:  # listing order (by name)
        if kept.get(d.name, (None, None))[1] == path:
            result.directions.append(d)
            result.paths[d.name] = path
    return result


def _skip(result: FolderLoad, path: Path, kind: str, reason: str) -> None:
    log.warning("skipping direction file %s (%s): %s", path, kind, reason)
    result.skipped.append(Skipped(path=path, kind=kind, reason=reason))


def make_meta(
    method: str,
    rank: Optional[int] = None,
    lmbda: Optional[float] = None,
    anchors: Optional[int] = None,
    template: Optional[str] = None,
    degrees: Optional[Sequence[str]] = None,
    generator: Optional[str] = None,
    generator_sha256: Optional[str] = None,
    alpha_range: Sequence[float] = (0.0, 5.0),
    source: Optional[str] = None,
    **extra,
) -> dict:
    """Metadata dict for :func:`save` with the standard keys (None values are dropped)."""
    meta = dict(
        method=method, rank=rank, lmbda=lmbda, anchors=anchors, template=template,
        degrees=list(degrees) if degrees is not None else None, generator=generator,
        generator_sha256=generator_sha256, alpha_range=[float(a) for a in alpha_range], source=source,
        created=_now_iso(), **extra,
    )
    return {k: v for k, v in meta.items() if v is not None}
