"""ArcFace IR-SE50 identity loss (StyleCLIP / pSp `id_loss`), for text anchoring.

The network is the InsightFace IR-SE50 backbone in the layout of `model_ir_se50.pth` (as loaded by pSp,
e4e, ReStyle and StyleCLIP): keys `input_layer.{0,1,2}.*`, `body.{0..23}.{shortcut_layer,res_layer}.*`
(the blocks of `engine.irse`), and the head `output_layer`:

    output_layer = Sequential(BatchNorm2d(512), Dropout, Flatten, Linear(512·7·7, 512), BatchNorm1d(512))
                   keys `output_layer.0.*`, `output_layer.3.{weight,bias}`, `output_layer.4.*`

and the features are L2-normalised. The loss crops the face region of a 256 px view ([35:223, 32:220]),
pools it to 112 px and returns 1 − cos(feat(y_hat), feat(y)) per image.

Missing weights are not an error: `IdentityLoss(None | missing path)` logs one warning saying the identity
term is skipped and then contributes nothing (`available` is False).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.irse import IRSE_UNITS, IRSE_WIDTHS, body_specs, make_body, make_input_layer

log = logging.getLogger(__name__)

FACE_CROP = (35, 223, 32, 220)   # rows y0:y1, cols x0:x1 of the 256 px view (StyleCLIP id_loss)
ARCFACE_SIZE = 112               # ArcFace input side


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class ArcFaceIRSE(nn.Module):
    """IR-SE ArcFace backbone: images [N, 3, 112, 112] in [-1, 1] → L2-normalised embeddings [N, embed_dim]."""

    def __init__(
        self,
        units: Sequence[int] = IRSE_UNITS[50],    # Bottleneck units per stage (IR-SE50: 3, 4, 14, 3).
        widths: Sequence[int] = IRSE_WIDTHS,      # Channels per stage (64, 128, 256, 512).
        embed_dim: int = 512,                     # Embedding size.
        input_size: int = ARCFACE_SIZE,           # Input side; the body reduces it 16×.
        drop_ratio: float = 0.6,                  # Dropout before the linear head (inactive in eval).
    ):
        super().__init__()
        self.input_size = int(input_size)
        self.embed_dim = int(embed_dim)
        feat = self.input_size // 16
        self.input_layer = make_input_layer(3, int(widths[0]))
        self.body = make_body(body_specs(widths, units))
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(int(widths[-1])),
            nn.Dropout(drop_ratio),
            Flatten(),
            nn.Linear(int(widths[-1]) * feat * feat, self.embed_dim),
            nn.BatchNorm1d(self.embed_dim, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"ArcFace wants [N,3,{self.input_size},{self.input_size}], got {tuple(x.shape)}")
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)


def face_view(images: torch.Tensor, size: int = ARCFACE_SIZE) -> torch.Tensor:
    """StyleCLIP's ArcFace input: view at 256 px (adaptive avg pool), crop the face box, pool to `size`.

    images [N, 3, H, W] in [-1, 1] → [N, 3, size, size] (differentiable).
    """
    x = images
    if x.shape[-2:] != (256, 256):
        x = F.adaptive_avg_pool2d(x, (256, 256))
    y0, y1, x0, x1 = FACE_CROP
    return F.adaptive_avg_pool2d(x[:, :, y0:y1, x0:x1], (size, size))


class IdentityLoss(nn.Module):
    """1 − cos(ArcFace(y_hat), ArcFace(y)) per image, y detached; or nothing when weights are missing.

    `IdentityLoss(weights_path)`: path of `model_ir_se50.pth` (a state_dict in the layout above). None or a
    missing file → one warning, `available = False`, and `forward` returns zeros.
    """

    def __init__(
        self,
        weights_path: str | Path | None,     # model_ir_se50.pth, or None.
        network: ArcFaceIRSE | None = None,  # A ready network instead of a file (tests, custom sizes).
    ):
        super().__init__()
        self.net: ArcFaceIRSE | None = None
        self.weights_path = None if weights_path is None else Path(weights_path)
        if network is not None:
            self.net = network
        elif self.weights_path is not None and self.weights_path.is_file():
            self.net = load_arcface(self.weights_path)
        else:
            where = "no ArcFace weights given" if self.weights_path is None else f"{self.weights_path} does not exist"
            log.warning(
                "identity loss skipped: %s; get them with `python -m engine.weights download arcface-ir-se50` "
                "or pass --arcface PATH to model_ir_se50.pth", where)
        if self.net is not None:
            self.net.eval().requires_grad_(False)

    @property
    def available(self) -> bool:
        return self.net is not None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings [N, embed_dim] of images [N, 3, H, W] in [-1, 1]."""
        assert self.net is not None
        p = next(self.net.parameters())
        return self.net(face_view(images.to(p.device, p.dtype), self.net.input_size))

    def _reference(self, y: torch.Tensor) -> torch.Tensor:
        """Features of the reference images, cached while the same tensor is passed again (one per anchoring)."""
        cached = getattr(self, "_ref_cache", None)
        if cached is not None and cached[0] is y and cached[1] == y._version:
            return cached[2]
        with torch.no_grad():
            ref = self.features(y)
        self._ref_cache = (y, y._version, ref)
        return ref

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image loss [N] (zeros when unavailable). y is the reference (detached), broadcast if N=1."""
        if self.net is None:
            return y_hat.new_zeros(y_hat.shape[0])
        ref = self._reference(y)
        feats = self.features(y_hat)
        return 1 - (feats * ref.expand_as(feats)).sum(dim=1)


def load_arcface(path: str | Path, device: str | torch.device = "cpu", **config) -> ArcFaceIRSE:
    """IR-SE50 ArcFace from `model_ir_se50.pth` (strict: names the missing/unexpected/mis-shaped keys).

    `config`: ArcFaceIRSE constructor arguments for other sizes (default: IR-SE50, 512-d, 112 px).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (corrupt, truncated, not a torch file)
        raise ValueError(f"cannot read ArcFace weights {path}: {type(e).__name__}: {e}; "
                         f"re-download with `python -m engine.weights download arcface-ir-se50`") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state_dict; expected model_ir_se50.pth (IR-SE50 ArcFace)")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    net = ArcFaceIRSE(**config)
    want = net.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    bad = sorted(k for k in set(want) & set(state) if tuple(want[k].shape) != tuple(state[k].shape))
    if missing or unexpected or bad:
        parts = [f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", bad)) if keys]
        raise ValueError(f"{path} is not an IR-SE50 ArcFace state_dict: {'; '.join(parts)}")
    net.load_state_dict(state)
    return net.eval().requires_grad_(False).to(device)
