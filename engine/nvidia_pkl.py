"""Read NVIDIA StyleGAN2 network pickles (stylegan2-ada-pytorch / stylegan3 repos) without running their code.

NVIDIA's `torch_utils.persistence` pickles every network module as a call
`torch_utils.persistence._reconstruct_persistent_obj(meta)` where `meta = {'type': 'class', 'version': 6,
'module_src': <source code of the defining module>, 'class_name': ..., 'state': <the module's __dict__>}`;
the original loader `exec`s `module_src`. Here a restricted `pickle.Unpickler` resolves only a short allow-list of
globals (tensor/storage rebuild helpers, OrderedDict, numpy array/scalar reconstruction, `dnnlib.EasyDict` → a
plain dict subclass), and `_reconstruct_persistent_obj` is replaced by a stub that records the class name and the
state dict as a `PersistentObject` and never looks at `module_src`. Any other global (os.system, builtins.eval,
TensorFlow-era `dnnlib.tflib` classes, ...) stops the load with `CheckpointError` naming it.

Tensor storages inside such pickles are nested `torch.save` blobs (`torch.storage._load_from_bytes`); they are read
with `torch.load(weights_only=True)`.

`load_nvidia_generator(path)` converts `G_ema` (NVIDIA parameter names, `training/networks_stylegan2.py`) into the
rosinality `Generator` layout of `engine.stylegan2`:

    mapping.fc{i}.weight/bias                      -> style.{i+1}.weight/bias  (same lr-multiplier parametrisation)
    mapping.w_avg [w_dim]                          -> latent_avg
    synthesis.b4.const [C,4,4]                     -> input.input [1,C,4,4]
    synthesis.b{R}.conv{0,1}.weight [O,I,3,3]      -> convs.{j}.conv.weight [1,O,I,3,3] (no flip: NVIDIA's up-conv
                                                      runs conv_transpose2d on the unflipped weight, as rosinality)
    ...affine.weight/bias                          -> ...conv.modulation.weight/bias (both scale by 1/sqrt(w_dim))
    ...bias [O]                                    -> ...activate.bias (bias + lrelu(0.2) * sqrt(2) in both)
    ...noise_strength []                           -> ...noise.weight [1]
    ...noise_const [r,r]                           -> noises.noise_{k} [1,1,r,r]
    synthesis.b{R}.torgb.weight [3,C,1,1]          -> to_rgbs.{i}.conv.weight [1,3,C,1,1] (NVIDIA scales the styles
                                                      by 1/sqrt(C), rosinality the weight: same product)
    synthesis.b{R}.torgb.bias [3]                  -> to_rgbs.{i}.bias [1,3,1,1]
    resample_filter [4,4] (sum 1)                  -> *.blur.kernel / *.upsample.kernel = filter * up**2

The modulated-conv weights need no gain: demodulation divides out any constant factor (up to the 1e-8 epsilon).
Unsupported (clear error): StyleGAN3 synthesis, conditional generators (c_dim > 0), 'orig'/'resnet' synthesis
architectures, non-RGB outputs, mapping widths other than w_dim, channel layouts rosinality cannot express.
`conv_clamp` (clamping of activations beyond +-256, used by ADA-trained models) has no rosinality counterpart: it
is dropped with a warning.
"""
from __future__ import annotations

import io
import logging
import math
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


def _error(message: str) -> Exception:
    """`engine.checkpoints.CheckpointError(message)` (a ValueError)."""
    from engine.checkpoints import CheckpointError  # noqa: PLC0415 -- lazy: avoids an import cycle

    return CheckpointError(message)


# ---------------------------------------------------------------------------------------------- recorded objects


class EasyDict(dict):
    """Stand-in for `dnnlib.EasyDict`: a plain dict with attribute access (no code from the pickle)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class PersistentObject:
    """What the stub records for one NVIDIA persistent object: its class name and its `__dict__` state.

    The defining module's source code (`module_src`) is dropped unread; only its length is kept.
    """

    class_name: str
    state: dict
    version: int | None = None
    module_src_chars: int = 0

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    @property
    def children(self) -> dict:
        return dict(self.state.get("_modules") or {})

    def child(self, name: str) -> "PersistentObject | None":
        obj = self.children.get(name)
        return obj if isinstance(obj, PersistentObject) else None

    def tensors(self, prefix: str = "") -> dict:
        """state_dict-like {dotted name: tensor} over parameters, buffers and sub-modules."""
        out: dict = {}
        for group in ("_parameters", "_buffers"):
            for key, value in (self.state.get(group) or {}).items():
                if value is not None:
                    out[prefix + key] = value
        for key, sub in self.children.items():
            if isinstance(sub, PersistentObject):
                out.update(sub.tensors(f"{prefix}{key}."))
        return out

    def __repr__(self) -> str:  # keep reprs short: states hold large tensors
        return f"PersistentObject({self.class_name!r}, {len(self.state)} fields)"


class _Refused(Exception):
    """The pickle's structure is not that of a network pickle (a wrong argument, a non-storage, ...)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _CodeRefused(_Refused):
    """The pickle asked the unpickler for a callable outside the allow-list: the file contains code."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Stub for `torch_utils.persistence._reconstruct_persistent_obj`: record, never exec `module_src`."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise _Refused("torch_utils.persistence object with unexpected metadata (not a persistent class)")
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise _Refused(f"persistent object {meta['class_name']} whose state is a {type(state).__name__}, not a dict")
    src = meta.get("module_src")
    return PersistentObject(
        class_name=meta["class_name"], state=dict(state), version=meta.get("version"),
        module_src_chars=len(src) if isinstance(src, str) else 0,
    )


# ---------------------------------------------------------------------------------------------- allow-list


def _allowed_globals() -> dict[tuple[str, str], Callable]:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch._utils as tu  # noqa: PLC0415

    def load_storage(data):
        if not isinstance(data, (bytes, bytearray)):
            raise _Refused(f"torch.storage._load_from_bytes with a {type(data).__name__} argument")
        from engine.safe_pickle import scan_bytes  # noqa: PLC0415

        nested = scan_bytes(data)
        if nested.has_code:
            raise _CodeRefused(nested.code[0])
        obj = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
        if not isinstance(obj, (torch.TypedStorage, torch.UntypedStorage)):
            raise _Refused(f"torch.storage._load_from_bytes returning a {type(obj).__name__}, not a storage")
        return obj

    def check_storage(storage):
        if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
            raise _Refused(f"tensor rebuild from a {type(storage).__name__}, not a storage")

    def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        check_storage(storage)
        return tu._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())

    def rebuild_tensor(storage, offset, size, stride):
        check_storage(storage)
        return tu._rebuild_tensor(storage, offset, size, stride)

    def rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
        if not isinstance(data, torch.Tensor):
            raise _Refused(f"parameter rebuild from a {type(data).__name__}")
        return torch.nn.Parameter(data, requires_grad=False)

    def rebuild_from_type_v2(func, new_type, args, state):
        if func not in (rebuild_tensor_v2, rebuild_tensor, rebuild_parameter):
            raise _Refused("torch._tensor._rebuild_from_type_v2 with a non-tensor rebuild function")
        tensor = func(*args)
        if new_type is torch.nn.Parameter:
            return torch.nn.Parameter(tensor, requires_grad=False)
        if new_type is not torch.Tensor:
            raise _Refused(f"tensor subclass {getattr(new_type, '__name__', new_type)}")
        return tensor

    def np_reconstruct(cls, shape, dtype):
        if cls is not np.ndarray:
            raise _Refused(f"numpy array reconstruction of {getattr(cls, '__name__', cls)}")
        return np.ndarray.__new__(np.ndarray, shape, dtype)

    def np_scalar(dtype, data=None):
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _Refused("numpy scalar of object dtype")
        return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()

    def np_frombuffer(buf, dtype, shape, order):
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _Refused("numpy buffer of object dtype")
        return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order).copy()

    def np_dtype(obj, align=False, copy=False):
        dt = np.dtype(obj, align=align, copy=copy)
        if dt.hasobject:
            raise _Refused("numpy object dtype")
        return dt

    allowed = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("dnnlib", "EasyDict"): EasyDict,
        ("collections", "OrderedDict"): OrderedDict,
        ("torch.storage", "_load_from_bytes"): load_storage,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): rebuild_from_type_v2,
        ("torch", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("numpy", "dtype"): np_dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = np_reconstruct
        allowed[(mod, "scalar")] = np_scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = np_frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only allow-listed globals; anything else raises `_Refused`."""

    def __init__(self, file, allowed: dict[tuple[str, str], Callable]):
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        fn = self._allowed.get((module, name))
        if fn is not None:
            return fn
        if module == "torch":
            import torch  # noqa: PLC0415

            value = getattr(torch, name, None)
            if isinstance(value, torch.dtype):
                return value
        raise _CodeRefused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {str(pid)[:40]!r}")


def _refusal_hint(what: str) -> str:
    if what.startswith("dnnlib.tflib"):
        return ("this is a TensorFlow-era StyleGAN2 pickle; convert it once with NVlabs/stylegan2-ada-pytorch "
                "legacy.py (or use the rosinality .pt, `python -m engine.weights download stylegan2-ffhq`)")
    return "a network pickle may hold only tensors, numpy values and NVIDIA persistent objects"


def read_network_pickle(path: str | Path) -> Any:
    """Unpickle an NVIDIA network pickle with the restricted unpickler. Nothing from the file is executed.

    Returns the top-level object (usually {'G': .., 'D': .., 'G_ema': .., ...} with `PersistentObject` values).
    Raises `engine.checkpoints.UnsafeCheckpointError` (a CheckpointError: "contains code") when the pickle asks
    for a callable outside the allow-list, CheckpointError (one line) for other refusals and truncated / corrupt
    files.
    """
    path = Path(path)
    allowed = _allowed_globals()
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, allowed).load()
    except _CodeRefused as err:
        if err.what.startswith("dnnlib.tflib"):
            raise _error(f"{path.name}: refused to load: the pickle calls {err.what} ({_refusal_hint(err.what)}); "
                         f"nothing from the file was run") from None
        from engine.checkpoints import OFFICIAL_SOURCE, UnsafeCheckpointError  # noqa: PLC0415

        raise UnsafeCheckpointError(path, [err.what], f"{OFFICIAL_SOURCE} (a network pickle holds only tensors, "
                                                      f"numpy values and NVIDIA persistent objects)") from None
    except _Refused as err:
        raise _error(
            f"{path.name}: refused to load: {err.what} is not what a network pickle holds "
            f"({_refusal_hint(err.what)}); nothing from the file was run"
        ) from None
    except FileNotFoundError:
        raise _error(f"no such file: {path}") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            RuntimeError, MemoryError, OverflowError) as err:
        detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise _error(
            f"{path.name} is truncated or corrupt (not a readable network pickle: {detail}); re-download it"
        ) from None


# ---------------------------------------------------------------------------------------------- conversion


@dataclass
class _Ctx:
    what: str
    src: dict = field(default_factory=dict)  # NVIDIA name -> tensor
    out: dict = field(default_factory=dict)  # rosinality name -> tensor

    def get(self, name: str, shape: list[int] | None = None):
        import torch  # noqa: PLC0415

        if name not in self.src:
            raise _error(f"{self.what}: missing tensor '{name}' in the NVIDIA generator")
        t = self.src[name]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise _error(f"{self.what}: '{name}' is not a floating-point tensor")
        if shape is not None and list(t.shape) != list(shape):
            raise _error(f"{self.what}: '{name}' has shape {list(t.shape)}, expected {list(shape)}")
        return t.detach().to(torch.float32).contiguous().clone()


def _unsupported(what: str, reason: str) -> Exception:
    return _error(f"{what}: {reason}")


def _num(value: Any) -> float:
    return float(value) if value is not None else math.nan


def _check_generator_classes(G: PersistentObject, what: str) -> tuple[PersistentObject, PersistentObject]:
    if G.class_name != "Generator":
        raise _unsupported(what, f"G_ema is a {G.class_name}, not a StyleGAN2 Generator")
    mapping, synthesis = G.child("mapping"), G.child("synthesis")
    if synthesis is not None:
        kids = synthesis.children
        sg3 = any(re.match(r"L\d+_\d+_\d+$", k) for k in kids) or any(
            isinstance(v, PersistentObject) and v.class_name == "SynthesisInput" for v in kids.values()
        )
        if sg3:
            raise _unsupported(what, "StyleGAN3 generators are not supported; use a StyleGAN2 pkl "
                                     "(e.g. `python -m engine.weights download stylegan2-ffhq-pkl`)")
    if mapping is None or synthesis is None or mapping.class_name != "MappingNetwork" \
            or synthesis.class_name != "SynthesisNetwork":
        raise _unsupported(what, "G_ema lacks the StyleGAN2 mapping/synthesis networks "
                                 f"(found {sorted(G.children)}); only StyleGAN2 generators are supported")
    return mapping, synthesis


def _blur_taps(filt, what: str) -> tuple[float, ...]:
    """[1,3,3,1]-style taps from NVIDIA's normalised 2-D (or 1-D) resample filter."""
    import torch  # noqa: PLC0415

    f = filt.detach().to(torch.float64)
    if f.ndim == 1:
        f = torch.outer(f, f)
    if f.ndim != 2 or f.shape[0] != f.shape[1] or f.shape[0] != 4:
        raise _unsupported(what, f"resample filter of shape {list(filt.shape)} is not supported (4 taps needed)")
    row = f.sum(1)
    if not torch.allclose(torch.outer(row, row) / row.sum(), f, atol=1e-6):
        raise _unsupported(what, "non-separable resample filter is not supported")
    taps = row / row.min()
    return tuple(round(float(t), 6) for t in taps)


def _channel_config(channels: dict[int, int], synthesis: PersistentObject, what: str) -> tuple[float, int]:
    """(channel_multiplier, channel_max) reproducing NVIDIA's min(channel_base // res, channel_max)."""
    from engine.stylegan2 import channels_at  # noqa: PLC0415
    init = synthesis.attr("_init_kwargs") or {}
    cmax = max(channels.values())
    candidates = []
    if isinstance(init, dict) and init.get("channel_base"):
        candidates.append(float(init["channel_base"]) / 16384)
    top = max(channels)
    candidates.append(channels[top] * top / 16384)
    for cm in candidates:
        cm = int(cm) if float(cm).is_integer() else cm
        if all(channels_at(r, cm, cmax) == c for r, c in channels.items()):
            return cm, cmax
    raise _unsupported(what, f"channel layout {channels} cannot be expressed in the rosinality layout "
                             f"(512 maps up to 32x32)")


def _convert_layer(ctx: _Ctx, nv: str, ros: str, layer: PersistentObject, in_ch: int, out_ch: int, w_dim: int,
                   res: int) -> Any:
    """One SynthesisLayer -> StyledConv; returns its noise map [1,1,res,res] (zeros when use_noise=False)."""
    import torch  # noqa: PLC0415

    if layer is None or layer.class_name != "SynthesisLayer":
        raise _error(f"{ctx.what}: missing synthesis layer '{nv}'")
    if layer.attr("activation", "lrelu") != "lrelu":
        raise _unsupported(ctx.what, f"'{nv}' uses activation {layer.attr('activation')!r}; only 'lrelu' is supported")
    ctx.out[f"{ros}.conv.weight"] = ctx.get(f"{nv}.weight", [out_ch, in_ch, 3, 3])[None]
    ctx.out[f"{ros}.conv.modulation.weight"] = ctx.get(f"{nv}.affine.weight", [in_ch, w_dim])
    ctx.out[f"{ros}.conv.modulation.bias"] = ctx.get(f"{nv}.affine.bias", [in_ch])
    ctx.out[f"{ros}.activate.bias"] = ctx.get(f"{nv}.bias", [out_ch])
    _check_affine(ctx, nv, layer, w_dim)
    if layer.attr("use_noise", True):
        ctx.out[f"{ros}.noise.weight"] = ctx.get(f"{nv}.noise_strength", []).reshape(1)
        return ctx.get(f"{nv}.noise_const", [res, res])[None, None]
    ctx.out[f"{ros}.noise.weight"] = torch.zeros(1)
    return torch.zeros(1, 1, res, res)


def _check_affine(ctx: _Ctx, nv: str, layer: PersistentObject, w_dim: int) -> None:
    affine = layer.child("affine")
    if affine is None:
        raise _error(f"{ctx.what}: missing '{nv}.affine'")
    gain, bias_gain = _num(affine.attr("weight_gain")), _num(affine.attr("bias_gain", 1))
    if not math.isnan(gain) and not math.isclose(gain, 1 / math.sqrt(w_dim), rel_tol=1e-5):
        raise _unsupported(ctx.what, f"'{nv}.affine' has weight gain {gain}, expected 1/sqrt(w_dim)")
    if not math.isnan(bias_gain) and bias_gain != 1:
        raise _unsupported(ctx.what, f"'{nv}.affine' has a learning-rate multiplier {bias_gain}; expected 1")


def _convert_torgb(ctx: _Ctx, nv: str, ros: str, layer: PersistentObject, in_ch: int, w_dim: int) -> None:
    if layer is None or layer.class_name != "ToRGBLayer":
        raise _error(f"{ctx.what}: missing '{nv}' (ToRGB layer)")
    ctx.out[f"{ros}.conv.weight"] = ctx.get(f"{nv}.weight", [3, in_ch, 1, 1])[None]
    ctx.out[f"{ros}.conv.modulation.weight"] = ctx.get(f"{nv}.affine.weight", [in_ch, w_dim])
    ctx.out[f"{ros}.conv.modulation.bias"] = ctx.get(f"{nv}.affine.bias", [in_ch])
    ctx.out[f"{ros}.bias"] = ctx.get(f"{nv}.bias", [3]).reshape(1, 3, 1, 1)
    _check_affine(ctx, nv, layer, w_dim)


def convert_generator(G: PersistentObject, what: str = "NVIDIA generator") -> tuple[dict, dict, Any]:
    """NVIDIA `G_ema` (recorded persistent object) -> (config kwargs, rosinality state_dict, latent_avg or None).

    config kwargs are those of `engine.stylegan2.Generator`: resolution, w_dim, z_dim, n_mapping,
    channel_multiplier, channel_max, lr_mlp, blur_kernel. latent_avg: `mapping.w_avg` [w_dim] float32.
    Raises CheckpointError naming the missing / mis-shaped tensor or the unsupported feature.
    """
    import torch  # noqa: PLC0415

    mapping, synthesis = _check_generator_classes(G, what)
    z_dim, c_dim, w_dim = (int(G.attr(k, -1)) for k in ("z_dim", "c_dim", "w_dim"))
    R, img_ch = int(G.attr("img_resolution", -1)), int(G.attr("img_channels", -1))
    if min(z_dim, w_dim, R) <= 0:
        raise _unsupported(what, "G_ema lacks z_dim / w_dim / img_resolution attributes")
    if c_dim != 0:
        raise _unsupported(what, f"conditional generators (c_dim={c_dim}) are not supported")
    if img_ch != 3:
        raise _unsupported(what, f"img_channels={img_ch}; only RGB generators are supported")
    log2 = int(round(math.log2(R)))
    if 2 ** log2 != R or R < 8:
        raise _unsupported(what, f"img_resolution={R} is not a power of two >= 8")

    ctx = _Ctx(what, src=G.tensors())
    # -- mapping
    n_mapping = int(mapping.attr("num_layers", 0)) or len([k for k in mapping.children if re.match(r"fc\d+$", k)])
    lr_mlp = None
    for i in range(n_mapping):
        fc = mapping.child(f"fc{i}")
        if fc is None:
            raise _error(f"{what}: missing mapping layer 'mapping.fc{i}'")
        if fc.attr("activation", "lrelu") != "lrelu":
            raise _unsupported(what, f"mapping.fc{i} uses activation {fc.attr('activation')!r}; only 'lrelu'")
        in_f = z_dim if i == 0 else w_dim
        ctx.out[f"style.{i + 1}.weight"] = ctx.get(f"mapping.fc{i}.weight", [w_dim, in_f])
        ctx.out[f"style.{i + 1}.bias"] = ctx.get(f"mapping.fc{i}.bias", [w_dim])
        lr = _num(fc.attr("bias_gain", 1.0))
        if lr_mlp is not None and not math.isclose(lr, lr_mlp, rel_tol=1e-6):
            raise _unsupported(what, "mapping layers with different learning-rate multipliers are not supported")
        lr_mlp = lr
    latent_avg = ctx.get("mapping.w_avg", [w_dim]) if "mapping.w_avg" in ctx.src else None

    # -- synthesis
    resolutions = [2 ** i for i in range(2, log2 + 1)]
    blocks = {}
    for res in resolutions:
        block = synthesis.child(f"b{res}")
        if block is None or block.class_name != "SynthesisBlock":
            raise _error(f"{what}: missing synthesis block 'synthesis.b{res}'")
        arch = block.attr("architecture", "skip")
        if arch != "skip":
            raise _unsupported(what, f"synthesis architecture {arch!r} is not supported (rosinality layout is 'skip')")
        blocks[res] = block
    channels = {}
    for res in resolutions:
        w = ctx.src.get(f"synthesis.b{res}.conv1.weight")
        if w is None:
            raise _error(f"{what}: missing tensor 'synthesis.b{res}.conv1.weight' in the NVIDIA generator")
        channels[res] = int(w.shape[0])
    channel_multiplier, channel_max = _channel_config(channels, synthesis, what)
    if any(blocks[r].child(n) is not None and blocks[r].child(n).attr("conv_clamp") is not None
           for r in resolutions for n in ("conv0", "conv1", "torgb")):
        log.warning("%s: conv_clamp is set (ADA-trained model); rosinality's layout has no clamp, so outputs "
                    "differ where an activation exceeds the clamp", what)

    filt = ctx.src.get(f"synthesis.b{resolutions[1]}.resample_filter")
    if filt is None:
        raise _error(f"{what}: missing tensor 'synthesis.b{resolutions[1]}.resample_filter'")
    taps = _blur_taps(filt, what)
    k = torch.outer(torch.tensor(taps), torch.tensor(taps)).to(torch.float32)
    up_kernel = k / k.sum() * 4  # rosinality make_kernel(taps) * upsample_factor**2

    c4 = channels[4]
    ctx.out["input.input"] = ctx.get("synthesis.b4.const", [c4, 4, 4])[None]
    noises = [_convert_layer(ctx, "synthesis.b4.conv1", "conv1", blocks[4].child("conv1"), c4, c4, w_dim, 4)]
    _convert_torgb(ctx, "synthesis.b4.torgb", "to_rgb1", blocks[4].child("torgb"), c4, w_dim)
    for i, res in enumerate(resolutions[1:]):
        cin, cout, b = channels[res // 2], channels[res], blocks[res]
        nv = f"synthesis.b{res}"
        noises.append(_convert_layer(ctx, f"{nv}.conv0", f"convs.{2 * i}", b.child("conv0"), cin, cout, w_dim, res))
        noises.append(_convert_layer(ctx, f"{nv}.conv1", f"convs.{2 * i + 1}", b.child("conv1"), cout, cout, w_dim, res))
        _convert_torgb(ctx, f"{nv}.torgb", f"to_rgbs.{i}", b.child("torgb"), cout, w_dim)
        ctx.out[f"convs.{2 * i}.conv.blur.kernel"] = up_kernel.clone()
        ctx.out[f"to_rgbs.{i}.upsample.kernel"] = up_kernel.clone()
    for j, noise in enumerate(noises):
        ctx.out[f"noises.noise_{j}"] = noise

    config = dict(
        resolution=R, w_dim=w_dim, z_dim=z_dim, n_mapping=n_mapping, channel_multiplier=channel_multiplier,
        channel_max=channel_max, lr_mlp=lr_mlp if lr_mlp is not None else 0.01, blur_kernel=taps,
    )
    return config, ctx.out, latent_avg


def load_nvidia_generator(path: str | Path, key: str = "G_ema") -> tuple[dict, dict, Any]:
    """Read an NVIDIA network pickle safely and convert its `key` generator (default the EMA one).

    Returns (config kwargs for `engine.stylegan2.Generator`, rosinality-layout state_dict, latent_avg [w_dim] or
    None). Raises CheckpointError (one line) for refused globals, corrupt files and unsupported architectures.
    """
    path = Path(path)
    top = read_network_pickle(path)
    if isinstance(top, dict):
        G = top.get(key)
        if G is None:
            found = ", ".join(sorted(map(str, top))) or "nothing"
            raise _error(f"{path.name}: no '{key}' network in the pickle (found {found}); not a StyleGAN2 "
                         f"network pickle")
    else:
        G = top
    if not isinstance(G, PersistentObject):
        raise _error(f"{path.name}: '{key}' is a {type(G).__name__}, not an NVIDIA network object")
    return convert_generator(G, what=f"NVIDIA generator {path.name}")


__all__ = [
    "EasyDict",
    "PersistentObject",
    "RestrictedUnpickler",
    "convert_generator",
    "load_nvidia_generator",
    "read_network_pickle",
]
