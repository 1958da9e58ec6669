"""open_clip loading for text anchoring: model + differentiable tensor preprocessing + tokenizer.

`load_clip(model_name, pretrained, device)` builds a CLIP model through open_clip's own registry and
factory (`open_clip.create_model`), never downloads anything unless asked (`download=True`), and returns
a `Clip` bundle whose `preprocess` works on generator output ([N, 3, H, W] in [-1, 1], any H, W) and keeps
gradients (no PIL).

CPU-only torch and torchvision
------------------------------
open_clip imports torchvision at import time. The pinned torchvision wheel is a CUDA build: on a CPU-only
torch its compiled extension (`torchvision/_C.so`) cannot load, and then `import torchvision` dies in
`torchvision/_meta_registrations.py` with "operator torchvision::nms does not exist", because that module
registers fake (meta) kernels for `torchvision::nms` / `torchvision::qnms` unconditionally. Every other
op registration there is guarded by `torchvision.extension._has_ops()`. `ensure_torchvision_importable()`
therefore defines exactly those two op schemas with `torch.library`, backed by a pure-torch NMS, and only
when the compiled extension really cannot load. torchvision's Python parts (transforms, models) then work;
its C++ ops (roi_align, deform_conv, ...) stay unavailable and `torchvision.ops.nms` still raises
torchvision's own "Couldn't load custom C++ ops" — we only make the import possible.
"""
from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# CLIP's normalisation (OpenAI); open_clip models carry their own in `model.preprocess_cfg`.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_TORCHVISION_OPS_DEFINED = False   # set once the fallback schemas are registered in this process


class ClipWeightsMissing(FileNotFoundError):
    """CLIP weights for a pretrained tag are not cached locally (and downloading was not allowed)."""


# ------------------------------------------------------------------------------------------------
# torchvision on CPU-only torch


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression in pure torch (same contract as `torchvision.ops.nms`).

    boxes [N, 4] (x1, y1, x2, y2), scores [N]; returns int64 indices of the kept boxes, highest score
    first. A box is dropped when its IoU with an already kept box is > iou_threshold.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"nms wants boxes [N,4] and scores [N], got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    b = boxes.double()
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=torch.finfo(torch.float64).tiny)
    order = torch.argsort(scores.double(), descending=True, stable=True)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def _torchvision_extension_path() -> Path | None:
    """Path of torchvision's compiled `_C` extension without importing torchvision (None: not installed)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = Path(folder) / f"_C{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _schema_exists(name: str) -> bool:
    try:
        torch._C._get_schema(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def ensure_torchvision_importable() -> bool:
    """Make `import torchvision` work on a CPU-only torch whose torchvision extension cannot load.

    Does nothing when torchvision is already imported, not installed, or its compiled `_C` loads (then
    the real ops exist). Otherwise defines the two op schemas torchvision's import needs —
    `torchvision::nms` and `torchvision::qnms`, `(Tensor dets, Tensor scores, float iou_threshold) ->
    Tensor` — with a pure-torch NMS kernel (`nms_reference`). Idempotent.

    Returns True when the fallback schemas are (now) in place, False when they were not needed.
    """
    global _TORCHVISION_OPS_DEFINED
    if _TORCHVISION_OPS_DEFINED:
        return True
    if "torchvision" in sys.modules or _schema_exists("nms"):
        return False
    ext = _torchvision_extension_path()
    if ext is None:
        if importlib.util.find_spec("torchvision") is None:
            return False
    else:
        try:
            torch.ops.load_library(str(ext))
            return False  # the real extension loaded: real ops are registered
        except (OSError, RuntimeError) as e:
            log.debug("torchvision extension %s cannot load (%s); defining fallback op schemas", ext, e)

    def _nms_impl(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        return nms_reference(dets, scores, iou_threshold)

    def _qnms_impl(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        # torchvision passes the integer representation of quantized boxes/scores.
        return nms_reference(dets.double(), scores.double(), iou_threshold)

    schema = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    for name, impl in (("nms", _nms_impl), ("qnms", _qnms_impl)):
        if not _schema_exists(name):
            torch.library.define(f"torchvision::{name}", schema)
            torch.library.impl(f"torchvision::{name}", "CompositeExplicitAutograd")(impl)
    _TORCHVISION_OPS_DEFINED = True
    log.info("torchvision's compiled ops are unavailable (CPU-only torch); defined pure-torch torchvision::nms/qnms")
    return True


def import_open_clip():
    """Import open_clip (lazily, after the torchvision fallback when needed) and return the module."""
    ensure_torchvision_importable()
    import open_clip  # noqa: PLC0415 (heavy, deliberately lazy)

    return open_clip


# ------------------------------------------------------------------------------------------------
# weights resolution (no network)


def _openclip_cache_dirs() -> list[str]:
    """Where open_clip looks for cached weights: the Hugging Face hub cache and `~/.cache/clip`."""
    try:
        from huggingface_hub import constants as hf_constants  # noqa: PLC0415

        hf_cache = str(hf_constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001 (huggingface_hub missing: open_clip then uses only URLs)
        hf_cache = os.path.expanduser("~/.cache/huggingface/hub")
    return [hf_cache, os.path.expanduser("~/.cache/clip")]


def resolve_pretrained(model_name: str, tag: str, cache_dir: str | None = None) -> tuple[str, dict]:
    """Local file of open_clip's pretrained `tag` for `model_name`, looked up in the caches only.

    Returns (path, pretrained_cfg). Raises ClipWeightsMissing (naming the tag, the cache folders and the
    way to pass a local file) when the weights are not cached; never touches the network.
    """
    import_open_clip()
    from open_clip import pretrained as oc_pretrained  # noqa: PLC0415

    cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = oc_pretrained.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"'{tag}' is neither a file nor an open_clip pretrained tag of {model_name} "
            f"(tags: {', '.join(tags) or 'none'}); pass a tag or a local weights file path"
        )
    if cfg.get("file"):
        return cfg["file"], cfg
    hf_hub = cfg.get("hf_hub", "")
    if hf_hub:
        try:
            from huggingface_hub import hf_hub_download  # noqa: PLC0415

            repo_id, filename = os.path.split(hf_hub)
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            for name in names:
                try:
                    return hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=True), cfg
                except Exception:  # noqa: BLE001 (not cached: try the next name / the URL cache)
                    continue
        except ImportError:
            pass
    url = cfg.get("url", "")
    if url:
        local = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local), cfg
    where = [cache_dir] if cache_dir else _openclip_cache_dirs()
    wanted = " or ".join(x for x in (hf_hub and f"hub repo {hf_hub.rstrip('/')}", url and os.path.basename(url)) if x)
    raise ClipWeightsMissing(
        f"CLIP weights {model_name}/{tag} are not cached (looked in {' and '.join(where)} for {wanted}); "
        f"pass a local weights file instead "
        f"(--clip-pretrained /path/to/weights.safetensors|.bin|.pt), or allow the download (--clip-download)"
    )


# ------------------------------------------------------------------------------------------------
# preprocessing


def box_resample_matrix(src: int, dst: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[dst, src] matrix of exact area weights: output bin i averages the input span [i, i+1)·src/dst.

    For src a multiple of 32 and dst = 224 this equals StyleCLIP's CLIP loss resize — nearest ×7
    upsampling followed by avg-pool of kernel src/32 — without building the 7× image.
    """
    edges = torch.arange(dst + 1, dtype=torch.float64) * (src / dst)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = torch.arange(src, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(hi, pix + 1) - torch.maximum(lo, pix)).clamp(min=0)
    weights = overlap / overlap.sum(dim=1, keepdim=True)
    return weights.to(device=device, dtype=dtype)


class ClipPreprocess(torch.nn.Module):
    """Differentiable CLIP input transform for images [N, 3, H, W] in [-1, 1] (RGB).

    Area-resamples to `size` (exact box weights, see `box_resample_matrix`), maps to [0, 1] and normalises
    with CLIP's mean/std. Output [N, 3, size, size], same dtype/device as the input. `normalize=False`
    skips the last two steps and feeds [-1, 1] as StyleCLIP's CLIP loss does (to reproduce its anchors).
    """

    def __init__(
        self,
        size: int,                          # CLIP input side (model.visual.image_size).
        mean: tuple = OPENAI_CLIP_MEAN,     # Per-channel mean of [0, 1] images.
        std: tuple = OPENAI_CLIP_STD,       # Per-channel std.
        normalize: bool = True,             # False: resample only (StyleCLIP's unnormalised [-1, 1] input).
    ):
        super().__init__()
        self.size = int(size)
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"CLIP preprocess wants images [N,3,H,W], got {tuple(images.shape)}")
        _, _, h, w = images.shape
        x = images
        if (h, w) != (self.size, self.size):
            ry = box_resample_matrix(h, self.size, images.device, images.dtype)
            rx = box_resample_matrix(w, self.size, images.device, images.dtype)
            x = torch.einsum("ih,nchw,jw->ncij", ry, x, rx)
        if not self.normalize:
            return x
        x = (x + 1) * 0.5
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


@dataclasses.dataclass
class Clip:
    """A loaded CLIP: `model` (open_clip, eval, frozen), `preprocess` ([-1,1] images → CLIP input),
    `tokenizer` (list[str] → LongTensor [N, context_length]), plus where the weights came from."""

    model: torch.nn.Module
    preprocess: ClipPreprocess
    tokenizer: Callable
    model_name: str
    pretrained: str | None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised text features [len(prompts), embed_dim] (no grad)."""
        tokens = self.tokenizer(list(prompts)).to(self.device)
        with torch.no_grad():
            feats = self.model.encode_text(tokens)
        return F.normalize(feats.float(), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features [N, embed_dim] of images [N, 3, H, W] in [-1, 1] (keeps grad)."""
        x = self.preprocess(images.to(self.device))
        param_dtype = next(self.model.parameters()).dtype
        return F.normalize(self.model.encode_image(x.to(param_dtype)).float(), dim=-1)


def _register_config_file(path: Path) -> str:
    """Register a model config JSON with open_clip's registry; returns its model name (the file stem)."""
    open_clip = import_open_clip()
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read CLIP model config {path}: {e}; pass a model name or a valid JSON config") from e
    if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise ValueError(f"CLIP model config {path} lacks vision_cfg/text_cfg; see open_clip/model_configs/*.json")
    open_clip.add_model_config(path)
    return path.stem


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a TorchScript zip (e.g. OpenAI's original ViT-B-32.pt): it has a `code/` folder."""
    import zipfile  # noqa: PLC0415

    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.startswith("code/") for n in zf.namelist())
    except OSError:
        return False


def load_clip(
    model_name: str = "ViT-B-32",       # open_clip model name (e.g. "ViT-B-32"), or a path to a model config JSON.
    pretrained: str | None = "openai",  # open_clip pretrained tag, a local weights file path, or None (random init).
    device: str | torch.device = "cpu",
    download: bool = False,             # Allow open_clip to download a tag's weights when they are not cached.
    cache_dir: str | None = None,       # open_clip/HF cache folder (None: their defaults).
    init_seed: int = 0,                 # Seed of the random initialisation (what pretrained=None keeps).
    normalize: bool = True,             # CLIP mean/std normalisation of images (False: StyleCLIP's raw [-1, 1]).
) -> Clip:
    """Build an open_clip model for text anchoring.

    `pretrained` is a tag (looked up in the local caches only, unless `download`), an existing file, or
    None (random weights; for wiring tests). Raises ClipWeightsMissing with the fix when a tag's weights
    are not cached, ValueError for an unknown model/tag.
    """
    open_clip = import_open_clip()
    if str(model_name).endswith(".json"):
        cfg_path = Path(model_name)
        if not cfg_path.is_file():
            raise FileNotFoundError(f"CLIP model config {cfg_path} does not exist; pass an existing JSON or a model name")
        model_name = _register_config_file(cfg_path)
    schema = str(model_name).split(":", 1)[0] if ":" in str(model_name) else None
    if schema == "hf-hub" and not download:
        raise ValueError(f"CLIP model '{model_name}' lives on the Hugging Face hub; allow the download "
                         f"(--clip-download) or use a local copy (local-dir:/path or a model config JSON)")
    if schema is None:
        model_name = str(model_name).replace("/", "-")  # "ViT-B/32" (OpenAI spelling) → "ViT-B-32"
        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown CLIP model '{model_name}'; choose one of open_clip.list_models() "
                             f"or pass a model config JSON")
    elif pretrained is not None and str(pretrained).lower() not in ("", "none", "random"):
        log.info("CLIP model %s brings its own weights; ignoring pretrained=%r", model_name, pretrained)
        pretrained = None

    kwargs: dict = {}
    weights: str | None = None
    if pretrained is not None and str(pretrained).lower() not in ("", "none", "random"):
        pretrained = str(pretrained)
        if os.path.isfile(pretrained):
            weights = pretrained
        elif download:
            weights = pretrained  # open_clip resolves (and downloads) the tag itself
        else:
            weights, tag_cfg = resolve_pretrained(model_name, pretrained, cache_dir=cache_dir)
            if tag_cfg.get("quick_gelu", False):
                kwargs["force_quick_gelu"] = True  # what open_clip does for the tag itself
            pp = {k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg}
            if pp:
                kwargs["force_preprocess_cfg"] = pp
    else:
        pretrained = None
    if weights is not None and os.path.isfile(weights) and is_torchscript_archive(weights):
        # torch.load refuses weights_only on TorchScript; with weights_only=False it hands the archive to
        # torch.jit.load (TorchScript, not a Python pickle) and open_clip takes its state_dict.
        kwargs["weights_only"] = False

    # Random init (pretrained None) is seeded, so builds with a random CLIP are reproducible too; the
    # caller's global RNG state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = open_clip.create_model(model_name, pretrained=weights, device=torch.device(device),
                                       cache_dir=cache_dir, pretrained_text=False, **kwargs)
    model.eval().requires_grad_(False)
    pp_cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    preprocess = ClipPreprocess(
        size=size,
        mean=tuple(pp_cfg.get("mean", OPENAI_CLIP_MEAN)),
        std=tuple(pp_cfg.get("std", OPENAI_CLIP_STD)),
        normalize=normalize,
    ).to(device)
    tokenizer = open_clip.get_tokenizer(model_name)
    log.info("CLIP %s (%s) on %s, input %d px", model_name, pretrained or "random weights", device, size)
    return Clip(model=model, preprocess=preprocess, tokenizer=tokenizer, model_name=model_name, pretrained=pretrained)
