"""Find out, without running anything, whether a pickle-based file would run code when loaded.

A PyTorch ``.pt`` (zip archive with ``*/data.pkl``, or the legacy stream of pickles), a raw pickle, the pickle
inside an object-dtype ``.npy``: each names the Python callables its loader must look up and call (pickle's
GLOBAL / STACK_GLOBAL / INST / EXT opcodes all go through ``Unpickler.find_class``). A weights file needs only
tensor-rebuild helpers, storages, dtypes and a few containers; anything else -- ``os.system``,
``builtins.eval``, a class of someone's training code -- is code.

:func:`scan_file` / :func:`scan_bytes` walk the pickle with an unpickler whose ``find_class`` resolves every
name to an inert stand-in (:class:`_Inert`: accepts any call or state, builds nothing), recording each name
outside the allow-list. Nothing from the file is imported or called, so the scan is safe on any input, and it
does not depend on the wording of torch's error messages (which changes between versions): the signal is what
the unpickler itself was asked to resolve.

The result separates *code* (refuse, and say so) from *unsupported data* (numpy array reconstruction and a few
inert builtins that ``torch.load(weights_only=True)`` also refuses, but which run nothing). Tensors pickled with
plain ``pickle`` carry nested ``torch.save`` blobs (``torch.storage._load_from_bytes``): those are scanned too.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

MAX_NAMES = 5          # names kept per kind (enough for a message)
MAX_LEGACY_PICKLES = 5  # legacy torch files: magic, protocol, sys_info, object, storage keys -- then raw bytes
MAX_NESTING = 2         # torch.storage._load_from_bytes blobs scanned inside a scan
_NESTED_LOADER = "torch.storage._load_from_bytes"

# Plain data a weights file may hold, as `module.name` (union with torch's own weights-only allow-list).
_DATA_NAMES = frozenset({
    "collections.OrderedDict", "collections.Counter", "builtins.set", "builtins.bytearray", "builtins.complex",
    "_codecs.encode",  # protocol-2 pickles encode bytes through it
    "argparse.Namespace",  # rosinality train.py saves its args (engine.checkpoints allows exactly this class)
    "torch.Size", "torch.device", "torch.Tensor", "torch.nn.parameter.Parameter",
    "torch._tensor._rebuild_from_type_v2",
})
_TORCH_TYPE_MODULES = ("torch", "torch.cuda", "torch.cuda.sparse")  # legacy *Storage / *Tensor classes live here
# Inert but not accepted by a weights-only load: numpy arrays/scalars/dtypes and a few builtins.
_UNSUPPORTED_NAMES = frozenset({
    "torch.storage._load_from_bytes",  # a nested torch.save blob (plain pickle.dumps(tensor)): scanned in turn
    "builtins.frozenset", "builtins.slice", "builtins.range",
    "numpy.ndarray", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
})


@dataclass
class PickleScan:
    """What a pickle-based file asks its loader to resolve.

    code:        `module.name` callables outside the allow-lists (loading would import/call them), first few.
    unsupported: inert names a weights-only load still refuses (numpy arrays, ...), first few.
    readable:    False when a pickle could not be walked to its end (truncated / corrupt / not a pickle).
    error:       the first such problem, one line ("" when readable).
    """

    code: list = field(default_factory=list)
    unsupported: list = field(default_factory=list)
    readable: bool = True
    error: str = ""

    @property
    def has_code(self) -> bool:
        return bool(self.code)

    def _add(self, kind: list, name: str) -> None:
        if name not in kind and len(kind) < MAX_NAMES:
            kind.append(name)


def _torch_allowed() -> frozenset:
    """torch's own weights-only allow-list (private API: empty when this torch lacks it)."""
    try:
        from torch import _weights_only_unpickler as wou  # noqa: PLC0415
    except ImportError:
        return frozenset()
    getter = getattr(wou, "_get_allowed_globals", None)
    return frozenset(getter()) if callable(getter) else frozenset()


def _is_torch_type(module: str, name: str) -> bool:
    """torch dtypes / layouts / memory formats / qschemes and the legacy typed Storage/Tensor classes."""
    if module in _TORCH_TYPE_MODULES and (name.endswith("Storage") or name.endswith("Tensor")):
        return True
    if module != "torch":
        return False
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return False
    value = getattr(torch, name, None)
    return isinstance(value, (torch.dtype, torch.layout, torch.memory_format, torch.qscheme))


def classify(module: str, name: str, torch_allowed: frozenset = frozenset()) -> str:
    """'data' | 'unsupported' | 'code' for one global a pickle names."""
    full = f"{module}.{name}"
    if full in _DATA_NAMES or full in torch_allowed or _is_torch_type(module, name):
        return "data"
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return "data"
    if full in _UNSUPPORTED_NAMES or (module == "numpy.dtypes" and name.endswith("DType")):
        return "unsupported"
    return "code"


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol-2 pickles written by Python 3 spell builtins the Python 2 way (`__builtin__.set`)."""
    import _compat_pickle  # noqa: PLC0415

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _Inert:
    """Stand-in for every global during a scan: any call, state or item is accepted and ignored."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


def _latin1_bytes(text=None, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as protocol-2 pickles use it (bytes written as latin-1 text); anything else is inert."""
    if isinstance(text, str) and str(encoding).lower().replace("_", "-") in ("latin1", "latin-1"):
        return text.encode("latin-1")
    return _Inert()


class _ScanUnpickler(pickle.Unpickler):
    """Records every name `find_class` is asked for; returns `_Inert` so nothing is imported or run."""

    def __init__(self, file: BinaryIO, scan: PickleScan, torch_allowed: frozenset, depth: int = 0):
        super().__init__(file)
        self._scan = scan
        self._torch_allowed = torch_allowed
        self._depth = depth

    def find_class(self, module: str, name: str):
        module, name = _python3_name(str(module), str(name))
        kind = classify(module, name, self._torch_allowed)
        if kind == "code":
            self._scan._add(self._scan.code, f"{module}.{name}")
        elif kind == "unsupported":
            self._scan._add(self._scan.unsupported, f"{module}.{name}")
        if f"{module}.{name}" == _NESTED_LOADER:
            return self._scan_nested
        if f"{module}.{name}" == "_codecs.encode":
            return _latin1_bytes
        return _Inert

    def _scan_nested(self, data=None, *args, **kwargs):
        """Stand-in for torch.storage._load_from_bytes: the blob it would load is scanned, not loaded."""
        if isinstance(data, (bytes, bytearray)) and self._depth < MAX_NESTING:
            inner = _scan_stream(io.BytesIO(bytes(data)), self._torch_allowed, self._depth + 1)
            for n in inner.code:
                self._scan._add(self._scan.code, n)
            for n in inner.unsupported:
                self._scan._add(self._scan.unsupported, n)
        elif isinstance(data, (bytes, bytearray)):
            self._scan._add(self._scan.code, f"{_NESTED_LOADER} (nested deeper than {MAX_NESTING})")
        return _Inert()

    def persistent_load(self, pid):
        return _Inert()


def _walk(file: BinaryIO, scan: PickleScan, torch_allowed: frozenset, count: int, depth: int = 0) -> None:
    """Walk up to `count` consecutive pickles; the first that does not parse ends the walk."""
    for i in range(count):
        try:
            _ScanUnpickler(file, scan, torch_allowed, depth).load()
        except EOFError:
            if i == 0:
                scan.readable, scan.error = False, "empty or truncated pickle"
            return
        except Exception as exc:  # noqa: BLE001 -- a hostile pickle can raise anything; record and stop
            if i == 0 or count == 1:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                scan.readable, scan.error = False, f"{type(exc).__name__}: {first}"[:160]
            return


def _scan_stream(fh: BinaryIO, allowed: frozenset, depth: int = 0) -> PickleScan:
    """A torch zip archive (every ``*.pkl`` member) or a raw / legacy-torch stream of pickles."""
    scan = PickleScan()
    if zipfile.is_zipfile(fh):
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as zf:
                members = [n for n in zf.namelist() if n.endswith(".pkl")]
                if not members:
                    scan.readable, scan.error = False, "zip archive without a data.pkl"
                for member in members:
                    with zf.open(member) as inner:
                        _walk(inner, scan, allowed, 1, depth)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
            scan.readable, scan.error = False, f"{type(exc).__name__}: {exc}"[:160]
        return scan
    fh.seek(0)
    _walk(fh, scan, allowed, MAX_LEGACY_PICKLES, depth)
    return scan


def scan_bytes(data: bytes) -> PickleScan:
    """Scan a torch archive / pickle stream held in memory (e.g. a storage nested in an NVIDIA pickle)."""
    return _scan_stream(io.BytesIO(bytes(data)), _torch_allowed())


def scan_file(path: Union[str, Path]) -> PickleScan:
    """Scan a torch zip archive (every ``*.pkl`` member) or a raw / legacy-torch pickle stream.

    Raises OSError when the file cannot be opened; every other problem is reported in the result.
    """
    with open(path, "rb") as fh:
        return _scan_stream(fh, _torch_allowed())


def scan_npy(path: Union[str, Path]) -> PickleScan | None:
    """The pickle inside an object-dtype ``.npy`` file, scanned; None when the array is plain numbers."""
    import numpy as np  # noqa: PLC0415

    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            _, _, dtype = np.lib.format.read_array_header_2_0(fh)
        if not dtype.hasobject:
            return None
        scan = PickleScan()
        _walk(fh, scan, _torch_allowed(), 1)
        return scan


__all__ = ["PickleScan", "classify", "scan_bytes", "scan_file", "scan_npy"]
