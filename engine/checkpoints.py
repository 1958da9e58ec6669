"""Checkpoint loading: one entry point per network, strict key/shape checks, one-line errors.

* `read_checkpoint(path)`      -- `torch.load(weights_only=True)` after a scan of the pickle
                                  (`engine.safe_pickle`): code → `UnsafeCheckpointError` ("contains code",
                                  nothing run); truncated/corrupt → a `CheckpointError` naming the file and fix.
* `load_state_strict(m, sd)`    -- missing / unexpected / mis-shaped keys reported together in one line,
                                  then `load_state_dict(strict=True)`.
* `load_generator(path_or_name)` -- rosinality `.pt` ({'g_ema', 'latent_avg', ...} or a bare state_dict) and
                                  NVIDIA `.pkl` (through `engine.nvidia_pkl`); the architecture
                                  (resolution, channel multiplier, mapping depth, w_dim) is read from the keys.
* `load_encoder(path_or_name)`   -- forwards to `engine.encoder_checkpoints.load_encoder`.
* `file_sha256(path)`          -- identifies the weights a direction was computed with.

Names that are not existing files resolve through `engine.weights.resolve` (the download manifest).
Torch is imported lazily: importing this module costs nothing.
"""
from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

_MAX_NAMED = 5  # how many keys of each kind an error message names
_DOWNLOAD = "python -m engine.weights download {name}"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: one line naming the problem and the fix."""


# ---------------------------------------------------------------------------------------------------------------------
# Files


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (`engine.weights.sha256_file`, read in 1 MiB chunks)."""
    from engine.weights import sha256_file  # noqa: PLC0415

    return sha256_file(path)


def source_sha256(module) -> str | None:
    """The sha256 of the weights file `module` was loaded from: the loader's `source_sha256` (generators hash at
    load), else `source_path` hashed now and kept on the module (encoders: hashed only when a file records it, not
    at every start). None for networks built in memory, or when the file can no longer be read."""
    known = getattr(module, "source_sha256", None)
    path = getattr(module, "source_path", None)
    if known or not path:
        return known
    try:
        module.source_sha256 = file_sha256(path)
    except OSError:
        return None
    return module.source_sha256


def resolve_path(path_or_name: str | Path) -> Path:
    """An existing file as is; anything else is looked up as a manifest name by `engine.weights.resolve`.

    Lets `engine.weights.MissingWeightsError` (whose message holds the download command) through.
    """
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file; pass the .pt/.pkl file inside it")
    from engine import weights  # noqa: PLC0415

    return Path(weights.resolve(str(path_or_name)))


def _download_command(path: Path) -> str:
    """`python -m engine.weights download NAME` with the manifest name when the file is a known download."""
    name = "NAME"
    try:
        from engine import weights  # noqa: PLC0415

        name = weights.name_for_path(path) or name
    except Exception:  # noqa: BLE001 -- a hint must never hide the real error
        pass
    return _DOWNLOAD.format(name=name)


def _redownload_hint(path: Path) -> str:
    """The fix for a damaged file: re-download it (the manifest name when known, else NAME)."""
    return f"re-download it with `{_download_command(path)}`"


def _safe_globals() -> list:
    """Plain-data classes real checkpoints carry besides tensors (rosinality train.py saves `args`)."""
    import argparse  # noqa: PLC0415

    return [argparse.Namespace]


OFFICIAL_SOURCE = "get the file from its official source"


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle names code (a callable outside the weights allow-list); nothing was run.

    `path`: the file; `names`: the first few `module.name` it would have called.
    """

    def __init__(self, path: str | Path, names: list, fix: str):
        self.path = Path(path)
        self.names = list(names)
        super().__init__(
            f"{self.path} refused: the file contains code ({', '.join(self.names)}), which a weights file never "
            f"needs; nothing from the file was run -- {fix}"
        )


def refuse_code(path: str | Path):
    """Raise `UnsafeCheckpointError` when the pickle(s) in `path` name code (`engine.safe_pickle.scan_file`);
    else return the `PickleScan` (its `unsupported` names explain a later weights-only refusal).

    NVIDIA network pickles (`torch_utils.persistence`, `dnnlib`) are named as such: they are read by the
    restricted loader in `engine.nvidia_pkl` when given the `.pkl` suffix. Unreadable files pass (the loader
    reports them).
    """
    from engine.safe_pickle import scan_file  # noqa: PLC0415

    path = Path(path)
    scan = scan_file(path)
    if not scan.has_code:
        return scan
    if all(n.startswith(("torch_utils.", "dnnlib.")) for n in scan.code):
        raise CheckpointError(
            f"{path} is an NVIDIA network pickle, not a plain PyTorch checkpoint; give it the .pkl suffix to load it "
            f"with the restricted NVIDIA loader (which never runs its code)"
        )
    raise UnsafeCheckpointError(path, scan.code, f"{OFFICIAL_SOURCE} (`{_download_command(path)}`); if you saved "
                                                 f"it yourself, save only its state_dict")


def read_checkpoint(path: str | Path) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)`, mapping unreadable files to `CheckpointError`.

    Only tensors, containers, numbers, strings and `argparse.Namespace` are accepted: nothing in the file can
    run code. The pickle is scanned first (`engine.safe_pickle`): a file that names code is refused with
    `UnsafeCheckpointError` ("contains code"), one holding other non-weights objects (numpy arrays, ...) with
    a `CheckpointError` naming them, a damaged one with "truncated or corrupt" and the download command.
    Returns whatever the file holds (normally a dict).
    """
    import pickle  # noqa: PLC0415

    import torch  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}; pass the path of a checkpoint file (.pt or .pkl)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it looks truncated; {_redownload_hint(path)}")
    scan = refuse_code(path)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        unsupported = scan.unsupported
        if unsupported:
            raise CheckpointError(
                f"checkpoint {path} holds Python objects a weights load does not take ({', '.join(unsupported)}); "
                f"it is not a plain PyTorch weights file -- save tensors only, or {_redownload_hint(path)}"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} looks truncated or corrupt (not a readable PyTorch file: {_short(detail)}); "
            f"{_redownload_hint(path)}"
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError,
            AttributeError, TypeError, MemoryError, OverflowError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} looks truncated or corrupt ({type(exc).__name__}: {_short(first)}); "
            f"{_redownload_hint(path)}"
        ) from None


def _unpickler_detail(message: str) -> str:
    """The informative part of torch's weights_only error text (it is wrapped in a long generic preamble)."""
    marker = "WeightsUnpickler error:"
    if marker in message:
        tail = message.split(marker, 1)[1].strip()
        return tail.split("\n\n", 1)[0].strip() or tail
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    return lines[0] if lines else "unpickling failed"


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------------------
# Strict state_dict loading


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMED])
    more = f", ... +{len(keys) - _MAX_NAMED} more" if len(keys) > _MAX_NAMED else ""
    return shown + more


def check_state_dict(module, state_dict: Mapping[str, Any], what: str) -> None:
    """Raise one `CheckpointError` naming the missing, unexpected and mis-shaped keys (first few of each)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {list(state_dict[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    not_tensors = [k for k in expected if k in state_dict and not hasattr(state_dict[k], "shape")]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_named(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_named(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped key(s) (checkpoint vs model): {_named(misshaped)}")
    if not_tensors:
        problems.append(f"{len(not_tensors)} non-tensor value(s): {_named(not_tensors)}")
    if problems:
        raise CheckpointError(
            f"{what} checkpoint does not match the model: " + "; ".join(problems)
            + f"; use an unmodified {what} checkpoint of this architecture (or re-download it)"
        )


def load_state_strict(module, state_dict: Mapping[str, Any], what: str) -> None:
    """Check keys and shapes (`check_state_dict`), then `module.load_state_dict(state_dict, strict=True)`."""
    check_state_dict(module, state_dict, what)
    module.load_state_dict(dict(state_dict), strict=True)


# ---------------------------------------------------------------------------------------------------------------------
# Generator


_STYLE_KEY = re.compile(r"^style\.(\d+)\.weight$")
_RGB_KEY = re.compile(r"^to_rgbs\.(\d+)\.conv\.weight$")


def _looks_like_generator_sd(sd: Mapping[str, Any]) -> bool:
    return isinstance(sd, Mapping) and "input.input" in sd and "conv1.conv.weight" in sd


def _describe(ckpt: Any) -> str:
    """What a checkpoint that is not a StyleGAN2 generator looks like, for the error message."""
    if not isinstance(ckpt, Mapping):
        return f"a {type(ckpt).__name__}, not a dict"
    keys = list(ckpt.keys())
    sd = ckpt.get("state_dict")
    if isinstance(sd, Mapping) and any(str(k).startswith("encoder.") for k in sd):
        return ("a pSp/e4e/ReStyle encoder checkpoint ({'state_dict' with 'encoder.*' keys, 'opts', ...}; "
                "load it with engine.load_encoder / --encoder)")
    if any(str(k).startswith(("body.", "input_layer.", "output_layer.")) for k in keys):
        return "an IR-SE50 / ArcFace backbone state_dict"
    if "d" in ckpt and "g_ema" not in ckpt:
        return "a checkpoint without 'g_ema' (discriminator / training state only)"
    if any(str(k).startswith(("synthesis.", "mapping.")) for k in keys):
        return "an NVIDIA-layout state_dict (mapping.*/synthesis.*; load the original .pkl instead)"
    shown = ", ".join(repr(k) for k in keys[:6]) + (", ..." if len(keys) > 6 else "")
    return f"a dict with top-level keys {shown}"


def infer_generator_config(sd: Mapping[str, Any]) -> dict:
    """Generator constructor kwargs read from a rosinality-layout state_dict's keys and shapes.

    resolution = 2 ** (number of to_rgbs + 2); n_mapping = number of `style.i.weight`; z_dim / w_dim from the
    first / last mapping layer; channel_max = channels at 4x4 (`input.input`); channel_multiplier from the first
    resolution whose channel count falls below channel_max (channels[res] = min(channel_max,
    multiplier * 16384 / res) above 32x32). Raises `CheckpointError` if the layout is not a generator's.
    """
    if not _looks_like_generator_sd(sd):
        raise CheckpointError(f"not a StyleGAN2 generator state_dict (no 'input.input' / 'conv1.conv.weight' keys)")
    style_ids = sorted(int(m.group(1)) for k in sd if (m := _STYLE_KEY.match(str(k))))
    rgb_ids = sorted(int(m.group(1)) for k in sd if (m := _RGB_KEY.match(str(k))))
    if not style_ids:
        raise CheckpointError("StyleGAN2 generator state_dict has no mapping layers ('style.1.weight', ...)")
    n_mapping = len(style_ids)
    z_dim = int(sd[f"style.{style_ids[0]}.weight"].shape[1])
    w_dim = int(sd[f"style.{style_ids[-1]}.weight"].shape[0])
    resolution = 2 ** (len(rgb_ids) + 2)
    channel_max = int(sd["input.input"].shape[1])
    channel_multiplier = 2
    for i, idx in enumerate(rgb_ids):
        res = 2 ** (i + 3)
        ch = int(sd[f"to_rgbs.{idx}.conv.weight"].shape[2])
        if res > 32 and ch < channel_max:
            channel_multiplier = ch * res / 16384
            if channel_multiplier == int(channel_multiplier):
                channel_multiplier = int(channel_multiplier)
            break
    return dict(
        resolution=resolution,
        w_dim=w_dim,
        z_dim=z_dim,
        n_mapping=n_mapping,
        channel_multiplier=channel_multiplier,
        channel_max=channel_max,
    )


def _split_generator_checkpoint(ckpt: Any, path: Path) -> tuple[Mapping[str, Any], Any]:
    """(g_ema state_dict, latent_avg or None) from a rosinality checkpoint or a bare state_dict."""
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("g_ema"), Mapping):
        return ckpt["g_ema"], ckpt.get("latent_avg")
    if _looks_like_generator_sd(ckpt):
        return ckpt, None
    raise CheckpointError(
        f"{path} is {_describe(ckpt)}, not a StyleGAN2 generator; expected a rosinality .pt "
        f"({{'g_ema': state_dict, 'latent_avg': [w_dim]}}) or an NVIDIA stylegan2 .pkl"
    )


def _is_nvidia_pickle(path: Path) -> bool:
    """`.pkl` suffix, or a non-zip pickle whose first 64 KiB mention NVIDIA's persistence modules."""
    if path.suffix.lower() == ".pkl":
        return True
    if zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return head[:1] == b"\x80" and (b"torch_utils" in head or b"dnnlib" in head)


def build_generator(config: Mapping[str, Any], state_dict: Mapping[str, Any], latent_avg, what: str = "StyleGAN2 generator"):
    """Construct a `Generator(**config)`, load `state_dict` strictly and set `latent_avg` ([w_dim])."""
    import torch  # noqa: PLC0415

    from engine.stylegan2 import Generator  # noqa: PLC0415

    try:
        G = Generator(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{what}: unsupported generator configuration {dict(config)} ({exc})") from None
    load_state_strict(G, state_dict, what)
    if latent_avg is None:
        log.warning("%s: checkpoint has no latent_avg; estimating it as the mean of 4096 mapped z (seed 0)", what)
        latent_avg = G.estimate_latent_avg(4096, seed=0)
    latent_avg = torch.as_tensor(latent_avg)
    if latent_avg.numel() != G.w_dim or latent_avg.dim() > 2:
        raise CheckpointError(
            f"{what}: latent_avg has shape {list(latent_avg.shape)}, expected [{G.w_dim}] (w_dim); "
            f"the checkpoint is not a generator checkpoint of this layout"
        )
    with torch.no_grad():
        G.latent_avg.copy_(latent_avg.reshape(G.w_dim).to(G.latent_avg.dtype))
    return G


def load_generator(path_or_name: str | Path, device="cpu"):
    """Load a StyleGAN2 generator: `G(ws [N, num_ws, w_dim]) -> images [N, 3, R, R]`, in eval mode on `device`.

    Accepts a path or a manifest name (`engine.weights`). Formats: rosinality `.pt`
    ({'g_ema': state_dict, 'latent_avg': [w_dim], ...}) or a bare g_ema state_dict; NVIDIA stylegan2-ada /
    stylegan3-repo `.pkl` StyleGAN2 generators (restricted unpickler, `engine.nvidia_pkl`). The configuration
    is inferred from the keys and shapes. Sets `G.source_path` and `G.source_sha256`.
    Raises `CheckpointError` (one line) for unreadable files and other architectures.
    """
    path = resolve_path(path_or_name)
    if _is_nvidia_pickle(path):
        from engine import nvidia_pkl  # noqa: PLC0415

        config, state_dict, latent_avg = nvidia_pkl.load_nvidia_generator(path)
        merged = infer_generator_config(state_dict)
        merged.update({k: v for k, v in dict(config).items() if k in merged or k in ("lr_mlp", "blur_kernel")})
        G = build_generator(merged, state_dict, latent_avg, what=f"StyleGAN2 generator {path.name}")
    else:
        ckpt = read_checkpoint(path)
        state_dict, latent_avg = _split_generator_checkpoint(ckpt, path)
        config = infer_generator_config(state_dict)
        G = build_generator(config, state_dict, latent_avg, what=f"StyleGAN2 generator {path.name}")
    G.source_path = str(path)
    G.source_sha256 = file_sha256(path)
    log.info(
        "loaded generator %s: resolution %d, num_ws %d, w_dim %d", path, G.resolution, G.num_ws, G.w_dim
    )
    return G.eval().requires_grad_(False).to(device)


# ---------------------------------------------------------------------------------------------------------------------
# Encoder (implemented in engine.encoder_checkpoints)


def load_encoder(*args, **kwargs):
    """Load a pSp / e4e / ReStyle encoder; see `engine.encoder_checkpoints.load_encoder`."""
    from engine.encoder_checkpoints import load_encoder as _load_encoder  # noqa: PLC0415

    return _load_encoder(*args, **kwargs)


__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "build_generator",
    "check_state_dict",
    "file_sha256",
    "infer_generator_config",
    "load_encoder",
    "load_generator",
    "load_state_strict",
    "read_checkpoint",
    "refuse_code",
    "resolve_path",
]
