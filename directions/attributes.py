"""Attribute scorers: how much of each attribute an aligned face shows (the re-scoring of Fig. 6).

Every scorer has ``name``, ``attributes`` (names; where a scorer measures what a micromotion changes, the
attribute is named after that direction: smile, angry, aging, eyesClose, headsTurn), ``descriptions``
({attribute: what the number is}) and ``score(images) -> float64 [N, A]`` on FFHQ-aligned faces (a float tensor
[N, 3, H, W] RGB in [-1, 1], or a list of uint8 [H, W, 3] BGR crops). Attribute *change* is score(edit) −
score(original); the scales differ between scorers, so compare within a column.

* :class:`ClipScorer` — CLIP zero-shot: for each attribute a (positive, negative) prompt pair, score =
  softmax(logit_scale · [cos(img, pos), cos(img, neg)])[0] ∈ [0, 1]. Needs open_clip weights
  (`directions.clip_loader.load_clip`; `ClipWeightsMissing` when not cached).
* :class:`GeometryScorer` — dlib's 68 landmarks on the aligned crop (offline, always available): mouth width,
  eye aspect ratio, brow lowering, mouth opening, a yaw proxy. Geometry, not appearance: it cannot see age.
* :class:`FairFaceScorer` — the FairFace ResNet-34 (Kärkkäinen & Joo; manifest `fairface-res34`): expected age in
  years and P(female), on dlib's 224-px face chip (padding 0.25) as FairFace was trained.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from directions.embedders import DlibShapes, to_bgr_uint8

log = logging.getLogger(__name__)

#: (positive, negative) prompt pairs for the CLIP scorer, keyed by the direction each measures.
DEFAULT_CLIP_PROMPTS: dict[str, tuple[str, str]] = {
    "smile": ("a photo of a smiling face", "a photo of a face with a neutral expression"),
    "angry": ("a photo of an angry face", "a photo of a calm face"),
    "aging": ("a photo of an old person", "a photo of a young person"),
    "eyesClose": ("a photo of a face with closed eyes", "a photo of a face with open eyes"),
    "headsTurn": ("a photo of a face turned to the side", "a photo of a face looking straight at the camera"),
    "gender": ("a photo of a woman", "a photo of a man"),
}
SCORERS = ("clip", "geometry", "fairface")

# dlib 68-point indices (iBUG 300-W): jaw 0–16, brows 17–21 / 22–26, nose 27–35 (30 = tip), eyes 36–41 / 42–47,
# outer mouth 48–59 (corners 48, 54), inner mouth 60–67 (62 upper, 66 lower).
_EYE_L, _EYE_R = list(range(36, 42)), list(range(42, 48))
_BROWS = list(range(17, 27))
FAIRFACE_AGE_YEARS = (1.0, 6.0, 14.5, 24.5, 34.5, 44.5, 54.5, 64.5, 75.0)  # bin centres: 0-2 … 70+
FAIRFACE_MEAN = (0.485, 0.456, 0.406)
FAIRFACE_STD = (0.229, 0.224, 0.225)
FAIRFACE_OUTPUTS = 18       # 7 race + 2 gender (male, female) + 9 age bins
FAIRFACE_CHIP = 224


# ------------------------------------------------------------------------------------------------ CLIP


class ClipScorer:
    """CLIP zero-shot attribute probabilities."""

    name = "clip"

    def __init__(self,
                 clip,                               # directions.clip_loader.Clip (model, preprocess, tokenizer).
                 prompts: dict[str, tuple[str, str]] | None = None,  # {attribute: (positive, negative)}.
                 batch: int = 16,                    # Images per forward pass.
                 ):
        self.clip = clip
        self.prompts = dict(DEFAULT_CLIP_PROMPTS if prompts is None else prompts)
        if not self.prompts:
            raise ValueError("the CLIP scorer needs at least one (positive, negative) prompt pair")
        self.attributes = list(self.prompts)
        self.descriptions = {a: f"CLIP P({p!r} vs {n!r})" for a, (p, n) in self.prompts.items()}
        self.batch = int(batch)
        self._text = None

    def _text_features(self):
        import torch  # noqa: PLC0415

        if self._text is None:
            flat = [p for pair in self.prompts.values() for p in pair]
            with torch.no_grad():
                self._text = self.clip.encode_text(flat).float().reshape(len(self.prompts), 2, -1)
        return self._text

    def _logit_scale(self) -> float:
        scale = getattr(self.clip.model, "logit_scale", None)
        return float(scale.exp()) if scale is not None else 100.0

    def score(self, images) -> np.ndarray:
        import torch  # noqa: PLC0415

        x = _as_tensor(images)
        text = self._text_features()
        scale = self._logit_scale()
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch):
                img = self.clip.encode_image(x[start:start + self.batch].to(self.clip.device)).float()
                cos = torch.einsum("nd,apd->nap", img.cpu(), text.cpu())          # [n, A, 2]
                out.append(torch.softmax(scale * cos, dim=-1)[..., 0].double())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.attributes)))


# ------------------------------------------------------------------------------------------------ geometry


def geometry_features(points68: np.ndarray) -> dict[str, float]:
    """Expression/pose measures from dlib's 68 landmarks [68, 2] (pixels); lengths in inter-ocular distances."""
    p = np.asarray(points68, dtype=np.float64)
    eye_l, eye_r = p[_EYE_L].mean(0), p[_EYE_R].mean(0)
    iod = max(float(np.linalg.norm(eye_r - eye_l)), 1e-6)

    def ear(idx):
        e = p[idx]
        return (np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / (2 * max(np.linalg.norm(e[0] - e[3]), 1e-6))

    eye_line = (eye_l[1] + eye_r[1]) / 2
    jaw_mid = (p[0, 0] + p[16, 0]) / 2
    jaw_w = max(p[16, 0] - p[0, 0], 1e-6)
    return {
        "smile": float(np.linalg.norm(p[54] - p[48]) / iod),
        "eyesClose": float(-(ear(_EYE_L) + ear(_EYE_R)) / 2),
        "angry": float(-(eye_line - p[_BROWS, 1].mean()) / iod),
        "headsTurn": float((p[30, 0] - jaw_mid) / jaw_w),
        "mouthOpen": float(np.linalg.norm(p[66] - p[62]) / iod),
    }


class GeometryScorer:
    """Face geometry from dlib's 68-point shape predictor on aligned crops (fixed FFHQ box); offline."""

    name = "geometry"
    attributes = ["smile", "eyesClose", "angry", "headsTurn", "mouthOpen"]
    descriptions = {
        "smile": "mouth width (outer corners) / inter-ocular distance",
        "eyesClose": "minus the eye aspect ratio (higher = more closed)",
        "angry": "brow lowering: minus the brow-to-eye-line height / inter-ocular distance",
        "headsTurn": "yaw proxy: nose-tip offset from the jaw's midpoint / jaw width (signed)",
        "mouthOpen": "inner-lip gap / inter-ocular distance",
    }

    def __init__(self, model_dir: str | Path | None = None):  # Folder with dlib's .dat files (default: the wheel's).
        self.shapes = DlibShapes(points=68, model_dir=model_dir)

    def landmarks(self, images) -> list[np.ndarray]:
        """dlib 68 landmarks [68, 2] per aligned image (pixels of the possibly upsampled crop)."""
        rgbs, boxes = self.shapes.rgb_and_boxes(images, "aligned")
        return [self.shapes.points_of(self.shapes.shape(rgb, box)) for rgb, box in zip(rgbs, boxes)]

    def score(self, images) -> np.ndarray:
        feats = [geometry_features(p) for p in self.landmarks(images)]
        return np.array([[f[a] for a in self.attributes] for f in feats], dtype=np.float64).reshape(-1, len(self.attributes))


# ------------------------------------------------------------------------------------------------ FairFace


def build_fairface_network():
    """torchvision ResNet-34 with an 18-way head (FairFace's `res34_fair_align_multi_7` layout), random weights."""
    from torch import nn  # noqa: PLC0415

    from directions.clip_loader import ensure_torchvision_importable  # noqa: PLC0415

    ensure_torchvision_importable()
    import torchvision  # noqa: PLC0415

    net = torchvision.models.resnet34(weights=None)
    net.fc = nn.Linear(net.fc.in_features, FAIRFACE_OUTPUTS)
    return net


def load_fairface(path: str | Path):
    """FairFace ResNet-34 from its state_dict file (strict; a wrong file → ValueError naming the fix)."""
    import torch  # noqa: PLC0415

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (corrupt, truncated, not a torch file)
        raise ValueError(f"cannot read FairFace weights {path}: {type(err).__name__}; re-download with "
                         f"`python -m engine.weights download fairface-res34`") from None
    net = build_fairface_network()
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0][:160]
        raise ValueError(f"{path} is not FairFace's res34_fair_align_multi_7 state_dict ({first}); "
                         f"re-download with `python -m engine.weights download fairface-res34`") from None
    return net.eval().requires_grad_(False)


class FairFaceScorer:
    """FairFace age and gender on dlib face chips cut from the aligned crops."""

    name = "fairface"
    attributes = ["aging", "gender"]
    descriptions = {"aging": "FairFace expected age (years, from its 9 age bins)",
                    "gender": "FairFace P(female)"}

    def __init__(self,
                 weights: str | Path | None = "fairface-res34",  # Manifest name or path of the state_dict.
                 network=None,                       # A ready network instead of a file (tests).
                 device: str = "cpu",                # Torch device.
                 model_dir: str | Path | None = None,  # dlib models folder (default: the wheel's).
                 ):
        if network is None:
            from engine.weights import resolve  # noqa: PLC0415

            network = load_fairface(resolve(weights))  # MissingWeightsError names the download command
        self.net = network.eval().requires_grad_(False).to(device)
        self.shapes = DlibShapes(points=5, model_dir=model_dir)

    def chips(self, images) -> np.ndarray:
        """uint8 [N, 224, 224, 3] RGB dlib face chips (padding 0.25), as FairFace's predict.py cuts them."""
        rgbs, boxes = self.shapes.rgb_and_boxes(images, "aligned")
        return np.stack([self.shapes.dlib.get_face_chip(rgb, self.shapes.shape(rgb, box), size=FAIRFACE_CHIP,
                                                        padding=0.25) for rgb, box in zip(rgbs, boxes)]) \
            if rgbs else np.zeros((0, FAIRFACE_CHIP, FAIRFACE_CHIP, 3), np.uint8)

    def score(self, images) -> np.ndarray:
        import torch  # noqa: PLC0415

        chips = self.chips(images)
        p = next(self.net.parameters())
        x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(FAIRFACE_MEAN)[:, None, None]) / torch.tensor(FAIRFACE_STD)[:, None, None]
        with torch.no_grad():
            logits = self.net(x.to(p.device, p.dtype)).double().cpu() if len(x) else torch.zeros(0, FAIRFACE_OUTPUTS)
        gender = torch.softmax(logits[:, 7:9], dim=1)[:, 1]
        age = torch.softmax(logits[:, 9:18], dim=1) @ torch.tensor(FAIRFACE_AGE_YEARS, dtype=torch.float64)
        return torch.stack([age, gender], dim=1).numpy()


# ------------------------------------------------------------------------------------------------ helpers


def _as_tensor(images):
    """[N, 3, H, W] float RGB in [-1, 1] from a tensor of that form or a list of uint8 BGR crops."""
    import torch  # noqa: PLC0415

    from directions.video import crops_to_tensor  # noqa: PLC0415

    if hasattr(images, "detach"):
        return images.detach().float().clamp(-1, 1)
    crops = to_bgr_uint8(images)
    return crops_to_tensor(crops, max(c.shape[0] for c in crops)) if crops else torch.zeros(0, 3, 32, 32)


def make_scorers(names: Sequence[str], clip=None, fairface_weights=None, device: str = "cpu",
                 prompts: dict[str, tuple[str, str]] | None = None) -> list:
    """Scorers by name ("clip" needs `clip`, a loaded directions.clip_loader.Clip)."""
    out = []
    for name in names:
        if name == "clip":
            if clip is None:
                raise ValueError("the clip scorer needs CLIP weights: pass --clip-pretrained openai "
                                 "(cached by open_clip) or a local weights file")
            out.append(ClipScorer(clip, prompts=prompts))
        elif name == "geometry":
            out.append(GeometryScorer())
        elif name == "fairface":
            out.append(FairFaceScorer(weights=fairface_weights or "fairface-res34", device=device))
        else:
            raise ValueError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    return out
