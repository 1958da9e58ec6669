"""Load pSp / e4e / ReStyle checkpoints into an `engine.encoders.Encoder`.

Format (pixel2style2pixel, encoder4editing and restyle-encoder coaches, `__get_save_dict`):

    {'state_dict': {'encoder.*': ..., 'decoder.*': ...},   # net.state_dict(); decoder = rosinality Generator
     'opts': dict,                                          # vars(argparse opts)
     'latent_avg': [18, 512] (or [512]),                    # present when trained with start_from_latent_avg
     ... optional training state}

All three reference repositories save `vars(opts)`, a plain dict, and load it with `ckpt['opts']` followed by
`argparse.Namespace(**opts)`: such files pass `torch.load(weights_only=True)` unchanged. A file re-saved with an
`argparse.Namespace` as `opts` also loads: `engine.checkpoints.read_checkpoint` allows exactly that one class.

The architecture comes from `opts['encoder_type']` (pSp and e4e, and ReStyle-pSp and ReStyle-e4e, have identical
key sets, so only opts can tell them apart) and is cross-checked against the tensors: input channels (3 = single
pass, 6 = ReStyle), body widths and units, number of style heads (num_ws), w_dim, head input size, and the
decoder's resolution. Supported `encoder_type`s: GradualStyleEncoder (pSp; ReStyle-pSp when input_nc = 6),
Encoder4Editing (e4e), BackboneEncoder (ReStyle-pSp), ProgressiveBackboneEncoder (ReStyle-e4e). ResNet-34
backbones (`ResNet*`) and the single-W variants (`BackboneEncoderUsingLastLayerIntoW*`, `SingleStyleCodeEncoder`)
are not supported and raise `CheckpointError`.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

from engine.checkpoints import (
    CheckpointError,
    build_generator,
    check_state_dict,
    infer_generator_config,
    read_checkpoint,
    resolve_path,
)

log = logging.getLogger(__name__)

# encoder_type → (kind for 3 input channels, kind for 6 input channels); None = that combination does not exist.
ENCODER_TYPES: dict[str, tuple[str | None, str | None]] = {
    "GradualStyleEncoder": ("psp", "restyle_psp"),
    "Encoder4Editing": ("e4e", None),
    "BackboneEncoder": (None, "restyle_psp"),
    "ProgressiveBackboneEncoder": (None, "restyle_e4e"),
}
UNSUPPORTED_TYPES = {
    "ResNetGradualStyleEncoder": "a ResNet-34 backbone",
    "ResNetBackboneEncoder": "a ResNet-34 backbone",
    "ResNetProgressiveBackboneEncoder": "a ResNet-34 backbone",
    "BackboneEncoderUsingLastLayerIntoW": "a single-W (learn_in_w) encoder",
    "BackboneEncoderUsingLastLayerIntoWPlus": "a single-code W+ encoder",
    "SingleStyleCodeEncoder": "a single-W (learn_in_w) encoder",
}
RESTYLE_DEFAULT_ITERS = 5  # restyle-encoder train/test options default for --n_iters_per_batch

_HEAD_KEY = re.compile(r"^styles\.(\d+)\.linear\.weight$")
_HEAD_CONV_KEY = re.compile(r"^styles\.0\.convs\.(\d+)\.weight$")
_BODY_KEY = re.compile(r"^body\.(\d+)\.res_layer\.1\.weight$")


def _describe(ckpt: Any) -> str:
    if not isinstance(ckpt, Mapping):
        return f"a {type(ckpt).__name__}, not a dict"
    if "g_ema" in ckpt or ("input.input" in ckpt and "conv1.conv.weight" in ckpt):
        return "a StyleGAN2 generator checkpoint"
    keys = list(ckpt.keys())
    shown = ", ".join(repr(k) for k in keys[:6]) + (", ..." if len(keys) > 6 else "")
    return f"a dict with top-level keys {shown or '(none)'}"


def split_state_dict(ckpt: Any, name: str) -> tuple[dict, dict]:
    """(encoder state_dict, decoder state_dict) with the `encoder.` / `decoder.` prefixes removed."""
    sd = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping) or not any(str(k).startswith("encoder.") for k in sd):
        what = _describe(ckpt)
        fix = ("load it with engine.load_generator / --generator instead"
               if "generator" in what else "pass a pSp / e4e / ReStyle checkpoint")
        raise CheckpointError(
            f"{name} is {what}, not a pSp/e4e/ReStyle encoder checkpoint "
            f"({{'state_dict' with 'encoder.*' and 'decoder.*' keys, 'opts', 'latent_avg'}}); {fix}"
        )
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    dec = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
    other = [k for k in sd if not k.startswith(("encoder.", "decoder."))]
    if other:
        shown = ", ".join(other[:5]) + (f", ... +{len(other) - 5} more" if len(other) > 5 else "")
        raise CheckpointError(
            f"{name}: state_dict has {len(other)} unexpected key(s) outside encoder./decoder.: {shown}; "
            f"use an unmodified pSp/e4e/ReStyle checkpoint"
        )
    if not dec:
        raise CheckpointError(
            f"{name}: state_dict has no 'decoder.*' keys (the StyleGAN2 generator the encoder was trained with); "
            f"use the full checkpoint as released"
        )
    return enc, dec


def read_opts(ckpt: Mapping, name: str) -> dict:
    """The checkpoint's `opts` as a dict (a dict, or an argparse.Namespace in re-saved files)."""
    opts = ckpt.get("opts")
    if opts is None:
        raise CheckpointError(
            f"{name} has no 'opts': without opts['encoder_type'] pSp cannot be told from e4e (same keys); "
            f"use the checkpoint as released"
        )
    if not isinstance(opts, Mapping):
        opts = getattr(opts, "__dict__", None)
        if not isinstance(opts, Mapping):
            raise CheckpointError(f"{name}: 'opts' is a {type(ckpt.get('opts')).__name__}, expected a dict")
    return dict(opts)


def _shape(sd: Mapping, key: str, name: str) -> tuple[int, ...]:
    if key not in sd or not hasattr(sd[key], "shape"):
        raise CheckpointError(f"{name}: encoder state_dict lacks 'encoder.{key}'; the file is not an IR-SE encoder "
                              f"checkpoint of a supported layout")
    return tuple(int(s) for s in sd[key].shape)


def infer_encoder_config(enc_sd: Mapping, opts: Mapping, name: str = "checkpoint") -> tuple[str, dict]:
    """(kind, network kwargs) from opts['encoder_type'] and the encoder tensors' shapes.

    Raises `CheckpointError` for unsupported encoder types and for opts that contradict the tensors.
    """
    etype = opts.get("encoder_type")
    if etype in UNSUPPORTED_TYPES:
        raise CheckpointError(
            f"{name}: encoder_type {etype!r} ({UNSUPPORTED_TYPES[etype]}) is not supported; use an IR-SE50 "
            f"checkpoint (pSp GradualStyleEncoder, e4e Encoder4Editing, ReStyle BackboneEncoder / "
            f"ProgressiveBackboneEncoder), e.g. the restyle-psp-ffhq or e4e-ffhq download"
        )
    if etype not in ENCODER_TYPES:
        raise CheckpointError(
            f"{name}: unknown opts['encoder_type'] {etype!r}; supported: {', '.join(ENCODER_TYPES)}"
        )
    stem = _shape(enc_sd, "input_layer.0.weight", name)
    in_nc = stem[1]
    if "input_nc" in opts and opts["input_nc"] is not None and int(opts["input_nc"]) != in_nc:
        raise CheckpointError(f"{name}: opts['input_nc'] = {opts['input_nc']} but the first conv takes {in_nc} "
                              f"channels; the checkpoint is inconsistent")
    if in_nc not in (3, 6) or ENCODER_TYPES[etype][in_nc // 3 - 1] is None:
        raise CheckpointError(f"{name}: {etype} with {in_nc} input channels is not a pSp/e4e/ReStyle layout "
                              f"(3 = single pass, 6 = ReStyle)")
    kind = ENCODER_TYPES[etype][in_nc // 3 - 1]

    # Body: a unit with a 1x1 conv shortcut (or the first unit) opens a stage.
    units_idx = sorted(int(m.group(1)) for k in enc_sd if (m := _BODY_KEY.match(str(k))))
    if not units_idx or units_idx != list(range(len(units_idx))):
        raise CheckpointError(f"{name}: encoder body units are missing or not numbered 0..N-1")
    widths, units = [], []
    for i in units_idx:
        depth = _shape(enc_sd, f"body.{i}.res_layer.1.weight", name)[0]
        if i == 0 or f"body.{i}.shortcut_layer.0.weight" in enc_sd:
            widths.append(depth)
            units.append(0)
        units[-1] += 1
    if len(widths) != 4:
        raise CheckpointError(f"{name}: encoder body has {len(widths)} stages, expected the 4 of an IR-SE backbone")
    hidden = _shape(enc_sd, f"body.{units_idx[-1]}.res_layer.5.fc1.weight", name)[0]
    se_reduction = max(1, widths[-1] // hidden)

    heads = sorted(int(m.group(1)) for k in enc_sd if (m := _HEAD_KEY.match(str(k))))
    if not heads or heads != list(range(len(heads))):
        raise CheckpointError(f"{name}: style heads 'encoder.styles.N' are missing or not numbered 0..N-1")
    num_ws = len(heads)
    w_dim = _shape(enc_sd, "styles.0.linear.weight", name)[0]
    n_convs = len([k for k in enc_sd if _HEAD_CONV_KEY.match(str(k))])
    input_size = 16 * 2 ** n_convs
    return kind, dict(in_channels=in_nc, num_ws=num_ws, w_dim=w_dim, widths=tuple(widths), units=tuple(units),
                      input_size=input_size, se_reduction=se_reduction)


def _check_sizes(kind: str, cfg: dict, gen_cfg: dict, opts: Mapping, name: str) -> None:
    from engine.encoders import num_ws_for_resolution  # noqa: PLC0415

    res = int(gen_cfg["resolution"])
    if num_ws_for_resolution(res) != cfg["num_ws"] or int(gen_cfg["w_dim"]) != cfg["w_dim"]:
        raise CheckpointError(
            f"{name}: the encoder makes W+ [{cfg['num_ws']}, {cfg['w_dim']}] but its decoder ({res}x{res}) takes "
            f"[{num_ws_for_resolution(res)}, {gen_cfg['w_dim']}]; the checkpoint is inconsistent"
        )
    for key in ("output_size", "stylegan_size"):
        if opts.get(key) is not None and int(opts[key]) != res:
            raise CheckpointError(f"{name}: opts['{key}'] = {opts[key]} but the decoder tensors are {res}x{res}; "
                                  f"the checkpoint is inconsistent")


def _latent_avg(ckpt: Mapping, cfg: dict, name: str):
    import torch  # noqa: PLC0415

    latent_avg = ckpt.get("latent_avg")
    if latent_avg is None:
        return None
    if not torch.is_tensor(latent_avg):
        raise CheckpointError(f"{name}: 'latent_avg' is a {type(latent_avg).__name__}, expected a tensor")
    shape = tuple(latent_avg.shape)
    if shape not in ((cfg["num_ws"], cfg["w_dim"]), (cfg["w_dim"],), (1, cfg["w_dim"])):
        raise CheckpointError(f"{name}: latent_avg has shape {list(shape)}, expected [{cfg['num_ws']}, "
                              f"{cfg['w_dim']}] or [{cfg['w_dim']}]")
    latent_avg = latent_avg.float().reshape(-1, cfg["w_dim"])
    return latent_avg.expand(cfg["num_ws"], -1).clone() if latent_avg.shape[0] == 1 else latent_avg


def encoder_from_checkpoint(ckpt: Any, name: str = "checkpoint"):
    """Build an `Encoder` (on CPU, eval mode) from an already read checkpoint dict."""
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    from engine.encoders import Encoder, build_network  # noqa: PLC0415

    enc_sd, dec_sd = split_state_dict(ckpt, name)
    opts = read_opts(ckpt, name)
    kind, cfg = infer_encoder_config(enc_sd, opts, name)
    try:
        gen_cfg = infer_generator_config(dec_sd)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{name}: the 'decoder.*' entries are {exc}; use the full checkpoint as released"
        ) from None
    _check_sizes(kind, cfg, gen_cfg, opts, name)
    latent_avg = _latent_avg(ckpt, cfg, name)

    # Built on the meta device (no random init of ~200M parameters); the whole state_dict (encoder.* and decoder.*)
    # is checked at once, so one error names every missing / unexpected / mis-shaped key with its full name.
    from engine.stylegan2 import Generator  # noqa: PLC0415

    with torch.device("meta"):
        net = build_network(kind, fpn=opts.get("encoder_type") == "GradualStyleEncoder", **cfg)
        try:
            shell = nn.ModuleDict({"encoder": net, "decoder": Generator(**gen_cfg)})
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{name}: unsupported decoder configuration {gen_cfg} ({exc})") from None
    check_state_dict(shell, ckpt["state_dict"], f"{kind} encoder ({name})")
    enc_sd = {k: v.float() if v.is_floating_point() else v for k, v in enc_sd.items()}
    net.load_state_dict(enc_sd, strict=True, assign=True)
    # The decoder's own latent_avg ([w_dim]) serves truncation only; in released files every latent_avg row is the
    # generator's average, so row 0 is it.
    decoder = build_generator(gen_cfg, dec_sd, None if latent_avg is None else latent_avg[0],
                              what=f"{kind} decoder {name}")
    if latent_avg is None:
        log.warning("%s has no latent_avg: using the decoder's mapped-z average (as the reference pSp does)", name)
        latent_avg = decoder.latent_avg.detach().float()
    restyle = kind.startswith("restyle")
    n_iters = int(opts.get("n_iters_per_batch") or RESTYLE_DEFAULT_ITERS) if restyle else 1
    start = bool(opts.get("start_from_latent_avg", True))
    if not restyle and not start:
        log.info("%s was trained without start_from_latent_avg: E(x) returns the network output as is", name)
    E = Encoder(net, kind=kind, latent_avg=latent_avg, decoder=decoder, n_iters=n_iters,
                start_from_latent_avg=start)
    E.opts = opts
    with torch.no_grad():
        E.eval().requires_grad_(False)
    return E


def load_encoder(path_or_name: str | Path, device="cpu"):
    """Load a pSp / e4e / ReStyle checkpoint: `E(images [N,3,256,256] in [-1,1]) -> ws [N, num_ws, w_dim]`.

    `path_or_name`: a file, or a manifest name resolved by `engine.weights` (e.g. "e4e-ffhq",
    "restyle-psp-ffhq"). Returns the `Encoder` in eval mode on `device`, with `decoder` (the generator it was
    trained with), `latent_avg`, `n_iters` (opts['n_iters_per_batch'] for ReStyle), `opts` and `source_path` (its
    sha256: `engine.checkpoints.source_sha256(E)`, hashed on first ask). Raises `CheckpointError` (one line) for
    unreadable files, other architectures and missing / unexpected / mis-shaped keys.
    """
    path = resolve_path(path_or_name)
    ckpt = read_checkpoint(path)
    E = encoder_from_checkpoint(ckpt, path.name)
    del ckpt
    E.source_path = str(path)
    log.info("loaded %s encoder %s: num_ws %d, w_dim %d, n_iters %d", E.kind, path, E.num_ws, E.w_dim, E.n_iters)
    return E.to(device)


__all__ = ["encoder_from_checkpoint", "infer_encoder_config", "load_encoder", "read_opts", "split_state_dict"]
