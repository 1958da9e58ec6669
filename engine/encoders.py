"""Image → W+ encoders: pSp, e4e, ReStyle-pSp, ReStyle-e4e, and the `Encoder` wrapper the product uses.

Networks (state_dict keys identical to the references' `encoder.*` entries, prefix removed):

* `GradualStyleEncoder`   pSp (pixel2style2pixel): IR-SE50 body + FPN (`latlayer1`, `latlayer2`); style heads 0-2
                          read the 1/16 map, 3-6 the 1/8 FPN map, 7+ the 1/4 FPN map.
* `Encoder4Editing`       e4e: same modules; head 0 gives w0 for every layer, heads 1.. add per-layer deltas.
* `BackboneEncoder`       ReStyle-pSp: IR-SE50 body on image ⊕ current reconstruction (6 channels); every head
                          reads the final 1/16 map.
* `ProgressiveBackboneEncoder`  ReStyle-e4e: the e4e w0 + deltas scheme on the ReStyle backbone.

Each network maps images [N, C, S, S] to offsets [N, num_ws, w_dim] (no latent_avg), float32 even when the network
runs in float16/bfloat16 (the style heads end in float32; half inputs run channels_last). `Encoder` adds
latent_avg (pSp/e4e, as the reference pSp wrapper does with `start_from_latent_avg`) or runs the ReStyle
iteration (latent_avg and the average image as the starting point, residual updates on the latent).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.irse import IRSE_UNITS, IRSE_WIDTHS, body_specs, make_body, make_input_layer, run_body, stage_ends
from engine.ops import HALF_DTYPES, apply_keeping_latent_avg_fp32
from engine.stylegan2 import EqualLinear

KINDS = ("psp", "e4e", "restyle_psp", "restyle_e4e")
COARSE_END = 3   # heads [0, 3) read the coarsest map (reference `coarse_ind`)
MIDDLE_END = 7   # heads [3, 7) read the middle FPN map, the rest the finest (reference `middle_ind`)


def num_ws_for_resolution(resolution: int) -> int:
    """Number of W+ entries of a rosinality StyleGAN2 generator of this output size (1024 → 18)."""
    log_size = int(math.log2(resolution))
    if 2 ** log_size != resolution or resolution < 4:
        raise ValueError(f"generator resolution must be a power of two >= 4, got {resolution}")
    return 2 * log_size - 2


class GradualStyleBlock(nn.Module):
    """Map a [N, in_c, spatial, spatial] feature map to one style vector [N, out_c] float32.

    log2(spatial) stride-2 3x3 convs, each followed by LeakyReLU(0.01), bring the map to 1x1; then EqualLinear.
    Keys `convs.{0,2,4,..}.weight/bias`, `linear.weight/bias`.
    """

    def __init__(
        self,
        in_c: int,              # Channels of the feature map read.
        out_c: int,             # Style width (w_dim).
        spatial: int,           # Side of the feature map read (a power of two).
    ):
        super().__init__()
        self.out_c = out_c
        self.spatial = spatial
        num_pools = max(1, int(math.log2(spatial)))
        layers: list[nn.Module] = [nn.Conv2d(in_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(num_pools - 1):
            layers += [nn.Conv2d(out_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[-2:] != (1, 1):
            raise ValueError(
                f"style head expects a {self.spatial}x{self.spatial} feature map (1x1 after its convs), got "
                f"{tuple(x.shape[-2:])} after them; the encoder input size does not match its construction"
            )
        return self.linear(x.flatten(1).float())  # the style itself in float32 (a latent), whatever the net dtype


class _IRSEEncoder(nn.Module):
    """Shared stem/body of the four encoders. Subclasses add `styles` (+ FPN lateral layers) and `forward`."""

    # engine.runtime.prepare keeps this network float32 under the CPU "auto" policy (bf16 for the generator): in
    # bf16 the ReStyle-pSp body amplifies rounding into a latent error beyond the bound (see runtime.Precision).
    cpu_auto_fp32 = True

    def __init__(
        self,
        in_channels: int = 3,                       # Input channels: 3 (image) or 6 (ReStyle: image ⊕ reconstruction).
        num_ws: int = 18,                           # Style vectors produced (= generator num_ws).
        w_dim: int = 512,                           # Width of each style vector (= generator w_dim).
        widths: Sequence[int] = IRSE_WIDTHS,        # Channels of the four body stages (IR-SE50: 64,128,256,512).
        units: Sequence[int] = IRSE_UNITS[50],      # Bottleneck units per stage (IR-SE50: 3,4,14,3).
        input_size: int = 256,                      # Side of the square input the style heads are built for.
        se_reduction: int = 16,                     # SE bottleneck ratio.
    ):
        super().__init__()
        if len(widths) != 4 or len(units) != 4:
            raise ValueError(f"the IR-SE body has 4 stages; got widths {tuple(widths)}, units {tuple(units)}")
        if input_size < 32 or (input_size & (input_size - 1)):
            raise ValueError(f"input_size must be a power of two >= 32, got {input_size}")
        if num_ws < 1 or w_dim < 1:
            raise ValueError(f"num_ws and w_dim must be positive, got {num_ws}, {w_dim}")
        self.in_channels = int(in_channels)
        self.num_ws = int(num_ws)
        self.w_dim = int(w_dim)
        self.widths = tuple(int(w) for w in widths)
        self.units = tuple(int(u) for u in units)
        self.input_size = int(input_size)
        self.input_layer = make_input_layer(self.in_channels, self.widths[0])
        self.body = make_body(body_specs(self.widths, self.units), se_reduction)
        # Body indices whose outputs feed the heads: end of stage 2 (1/4), stage 3 (1/8), stage 4 (1/16).
        self._c1_idx, self._c2_idx, self._c3_idx = stage_ends(self.units)[1:]
        self._c3_spatial = self.input_size // 16

    def _check_input(self, x: torch.Tensor) -> None:
        expect = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expect:
            raise ValueError(f"{type(self).__name__} expects input [N, {', '.join(map(str, expect))}], "
                             f"got {list(x.shape)}")

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """Check x [N, in_channels, S, S] and run the input layer. float16/bfloat16 inputs go channels_last
        first (the layout then propagates through the body): oneDNN's half convolutions are fast only there on
        CPU (float16 NCHW falls back to a reference kernel, 20-50x slower). float32 keeps its layout."""
        self._check_input(x)
        if x.dtype in HALF_DTYPES:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.input_layer(x)

    def _fpn_heads(self) -> nn.ModuleList:
        """pSp/e4e heads: coarse ones on the 1/16 map, middle on 1/8, fine on 1/4."""
        top = self.widths[3]
        heads = []
        for i in range(self.num_ws):
            spatial = self._c3_spatial * (1 if i < COARSE_END else 2 if i < MIDDLE_END else 4)
            heads.append(GradualStyleBlock(top, self.w_dim, spatial))
        return nn.ModuleList(heads)

    @staticmethod
    def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bilinear (align_corners=True) upsampling of x to y's size, plus y (reference `_upsample_add`)."""
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class _FPNEncoder(_IRSEEncoder):
    """IR-SE body + one map2style head per W+ row + the two lateral 1x1 convs of the feature pyramid (pSp, e4e)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.styles = self._fpn_heads()
        self.latlayer1 = nn.Conv2d(self.widths[2], self.widths[3], kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(self.widths[1], self.widths[3], kernel_size=1, stride=1, padding=0)


class GradualStyleEncoder(_FPNEncoder):
    """pSp encoder (FPN over IR-SE50). forward: [N, in_channels, S, S] → [N, num_ws, w_dim] (no latent_avg)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = run_body(self.body, self._stem(x), (self._c1_idx, self._c2_idx, self._c3_idx))
        out = [self.styles[j](c3) for j in range(min(COARSE_END, self.num_ws))]
        if self.num_ws > COARSE_END:
            p2 = self._upsample_add(c3, self.latlayer1(c2))
            out += [self.styles[j](p2) for j in range(COARSE_END, min(MIDDLE_END, self.num_ws))]
            if self.num_ws > MIDDLE_END:
                p1 = self._upsample_add(p2, self.latlayer2(c1))
                out += [self.styles[j](p1) for j in range(MIDDLE_END, self.num_ws)]
        return torch.stack(out, dim=1)


class Encoder4Editing(_FPNEncoder):
    """e4e encoder: ws[:, i] = w0 + delta_i (delta_0 = 0); w0 from head 0, deltas from the FPN maps.

    forward: [N, in_channels, S, S] → [N, num_ws, w_dim] (no latent_avg). Inference stage only (all deltas).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = run_body(self.body, self._stem(x), (self._c1_idx, self._c2_idx, self._c3_idx))
        w0 = self.styles[0](c3)
        rows = [w0]
        features = c3
        p2 = None
        for i in range(1, self.num_ws):
            if i == COARSE_END:
                p2 = features = self._upsample_add(c3, self.latlayer1(c2))
            elif i == MIDDLE_END:
                features = self._upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](features))
        return torch.stack(rows, dim=1)


class BackboneEncoder(_IRSEEncoder):
    """ReStyle-pSp encoder: every head reads the final 1/16 body map. Default input: 6 channels (image ⊕ recon).

    forward: [N, in_channels, S, S] → [N, num_ws, w_dim] (the residual added to the current latent).
    """

    def __init__(self, in_channels: int = 6, **kwargs):
        super().__init__(in_channels=in_channels, **kwargs)
        self.styles = nn.ModuleList(
            [GradualStyleBlock(self.widths[3], self.w_dim, self._c3_spatial) for _ in range(self.num_ws)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (c3,) = run_body(self.body, self._stem(x), (self._c3_idx,))
        return torch.stack([head(c3) for head in self.styles], dim=1)


class ProgressiveBackboneEncoder(BackboneEncoder):
    """ReStyle-e4e encoder: w0 from head 0 repeated over all layers, heads 1.. add deltas; all on the 1/16 map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (c3,) = run_body(self.body, self._stem(x), (self._c3_idx,))
        w0 = self.styles[0](c3)
        rows = [w0] + [w0 + self.styles[i](c3) for i in range(1, self.num_ws)]
        return torch.stack(rows, dim=1)


NETWORKS = {
    "psp": GradualStyleEncoder,
    "e4e": Encoder4Editing,
    "restyle_psp": BackboneEncoder,
    "restyle_e4e": ProgressiveBackboneEncoder,
}


# Networks each kind accepts (ReStyle-pSp also exists with the FPN encoder and 6 input channels).
ALLOWED_NETWORKS = {
    "psp": (GradualStyleEncoder,),
    "e4e": (Encoder4Editing,),
    "restyle_psp": (BackboneEncoder, GradualStyleEncoder),
    "restyle_e4e": (ProgressiveBackboneEncoder,),
}


def build_network(kind: str, **kwargs) -> _IRSEEncoder:
    """Build the bare network of `kind` ("psp", "e4e", "restyle_psp", "restyle_e4e"); kwargs as `_IRSEEncoder`.

    ReStyle kinds default to 6 input channels, the others to 3. `restyle_psp` with `fpn=True` builds the FPN
    (`GradualStyleEncoder`) variant.
    """
    if kind not in NETWORKS:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {', '.join(KINDS)}")
    restyle = kind.startswith("restyle")
    kwargs.setdefault("in_channels", 6 if restyle else 3)
    cls = GradualStyleEncoder if (kind == "restyle_psp" and kwargs.pop("fpn", False)) else NETWORKS[kind]
    kwargs.pop("fpn", None)
    return cls(**kwargs)


class Iteration(NamedTuple):
    """One encoder pass: the latent after it [N, num_ws, w_dim], and (ReStyle) its reconstruction [N, 3, S, S]."""

    ws: torch.Tensor
    recon: torch.Tensor | None


class Encoder(nn.Module):
    """E(images) → W+ latents, latent_avg included, for pSp / e4e / ReStyle-pSp / ReStyle-e4e.

    state_dict keys are `encoder.*` and `decoder.*`, exactly the layout of the reference checkpoints'
    `state_dict`; `latent_avg` is a non-persistent buffer (the checkpoints keep it beside the state_dict).
    """

    def __init__(
        self,
        net: _IRSEEncoder,                          # The bare network (`build_network`).
        kind: str,                                  # "psp" | "e4e" | "restyle_psp" | "restyle_e4e".
        latent_avg: torch.Tensor,                   # [num_ws, w_dim] or [w_dim]: start / centre of the latent.
        decoder: nn.Module | None = None,           # Generator G(ws [N,num_ws,w_dim]) → [N,3,R,R]; ReStyle needs it.
        n_iters: int | None = None,                 # Default ReStyle iterations (None → 1); ignored for pSp/e4e.
        start_from_latent_avg: bool = True,         # pSp/e4e: add latent_avg to the network output (opts flag).
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown encoder kind {kind!r}; expected one of {', '.join(KINDS)}")
        allowed = ALLOWED_NETWORKS[kind]
        if type(net) not in allowed:
            names = " or ".join(c.__name__ for c in allowed)
            raise ValueError(f"kind {kind!r} needs a {names} network, got {type(net).__name__}")
        want_in = 6 if kind.startswith("restyle") else 3
        if net.in_channels != want_in:
            raise ValueError(f"a {kind} network takes {want_in} input channels "
                             f"({'image + reconstruction' if want_in == 6 else 'RGB'}), this one {net.in_channels}")
        self.kind = kind
        self.encoder = net
        self.decoder = decoder
        self.num_ws = net.num_ws
        self.w_dim = net.w_dim
        self.input_size = net.input_size
        self.start_from_latent_avg = bool(start_from_latent_avg)
        restyle = kind.startswith("restyle")
        if restyle and decoder is None:
            raise ValueError(f"a {kind} encoder needs its decoder (the generator) to iterate; pass decoder=G")
        if decoder is not None:
            g_ws, g_dim = getattr(decoder, "num_ws", self.num_ws), getattr(decoder, "w_dim", self.w_dim)
            if (g_ws, g_dim) != (self.num_ws, self.w_dim):
                raise ValueError(f"decoder takes W+ [{g_ws}, {g_dim}] but the encoder makes [{self.num_ws}, "
                                 f"{self.w_dim}]; build the encoder with the generator's num_ws and w_dim")
        n_iters = 1 if n_iters is None else int(n_iters)
        if n_iters < 1:
            raise ValueError(f"n_iters must be >= 1, got {n_iters}")
        self.n_iters = n_iters if restyle else 1
        self.register_buffer("latent_avg", self._as_wplus(latent_avg), persistent=False)
        self._avg_image: torch.Tensor | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def is_restyle(self) -> bool:
        return self.kind.startswith("restyle")

    def _as_wplus(self, latent_avg: torch.Tensor) -> torch.Tensor:
        latent_avg = torch.as_tensor(latent_avg).detach().float()
        if tuple(latent_avg.shape) == (self.w_dim,):
            latent_avg = latent_avg.expand(self.num_ws, self.w_dim)
        if tuple(latent_avg.shape) != (self.num_ws, self.w_dim):
            raise ValueError(f"latent_avg must be [{self.num_ws}, {self.w_dim}] or [{self.w_dim}], "
                             f"got {list(latent_avg.shape)}")
        return latent_avg.clone()

    def _apply(self, fn, *args, **kwargs):
        """Casts and moves drop the cached average image; `latent_avg` moves but stays float32 under a half cast
        (latents are float32 whatever the network dtype)."""
        self._avg_image = None  # device/dtype change: recompute the cached average image
        return apply_keeping_latent_avg_fp32(self, super()._apply, fn, *args, **kwargs)

    def _param_dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def _check_images(self, images: torch.Tensor, what: str = "images") -> None:
        s = self.input_size
        if not torch.is_tensor(images) or images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            shape = list(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"{what} must be a float tensor [N, 3, {s}, {s}] in [-1, 1], got {shape}; "
                             f"align/resize the face crop to {s}x{s} first")
        if not images.is_floating_point():
            raise ValueError(f"{what} must be floating point in [-1, 1], got {images.dtype}; "
                             f"convert uint8 with x / 127.5 - 1")

    def _check_ws(self, ws: torch.Tensor, n: int) -> None:
        if not torch.is_tensor(ws) or tuple(ws.shape) != (n, self.num_ws, self.w_dim):
            shape = list(ws.shape) if torch.is_tensor(ws) else type(ws).__name__
            raise ValueError(f"ws must be [{n}, {self.num_ws}, {self.w_dim}] (one W+ latent per image), got {shape}")

    def _check_n_iters(self, n_iters: int | None) -> int:
        if n_iters is None:
            return self.n_iters
        if isinstance(n_iters, bool) or int(n_iters) != n_iters or n_iters < 1:
            raise ValueError(f"n_iters must be a positive integer, got {n_iters!r}")
        if not self.is_restyle and n_iters != 1:
            raise ValueError(f"n_iters={n_iters} needs a ReStyle encoder; this {self.kind} encoder is single-pass "
                             f"(use n_iters=None or 1)")
        return int(n_iters)

    def pool(self, img: torch.Tensor) -> torch.Tensor:
        """Decoder output [N,3,R,R] → [N,3,S,S] with S = input_size (reference `face_pool`, adaptive average)."""
        s = self.input_size
        if tuple(img.shape[-2:]) == (s, s):
            return img
        return F.adaptive_avg_pool2d(img, (s, s))

    def decode(self, ws: torch.Tensor) -> torch.Tensor:
        """Full-resolution decoder output [N, 3, R, R] for ws [N, num_ws, w_dim] (fixed noise)."""
        if self.decoder is None:
            raise ValueError(f"this {self.kind} encoder has no decoder; load it from a full checkpoint")
        return self.decoder(ws)

    # ------------------------------------------------------------------ API
    def average_image(self) -> torch.Tensor:
        """decoder(latent_avg) pooled to the input size: [1, 3, S, S] (reference `get_average_image`). Cached."""
        if self._avg_image is None:
            with torch.no_grad():
                self._avg_image = self.pool(self.decode(self.latent_avg[None])).detach()
        return self._avg_image

    def restyle_step(self, images: torch.Tensor, ws: torch.Tensor, recon: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """One ReStyle iteration from a given latent and its reconstruction.

        images [N,3,S,S] in [-1,1]; ws [N,num_ws,w_dim]; recon [N,3,S,S] = pool(decoder(ws)) (or the average
        image for a cold start). Returns (ws + encoder(images ⊕ recon), pool(decoder(new ws))).
        """
        if not self.is_restyle:
            raise ValueError(f"restyle_step needs a ReStyle encoder; this one is {self.kind} (single-pass)")
        self._check_images(images)
        self._check_images(recon, "recon")
        n = images.shape[0]
        if recon.shape[0] != n:
            raise ValueError(f"recon has {recon.shape[0]} images but images has {n}; pass one reconstruction each")
        self._check_ws(ws, n)
        ws_new = self._residual(images, ws, recon)
        return ws_new, self.pool(self.decode(ws_new))

    def step_latent(self, images: torch.Tensor, ws: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """The latent half of `restyle_step`: ws [N,num_ws,w_dim] + encoder(images ⊕ recon), no decoding.

        The live editor calls this once per frame and renders the decoder itself (batched with the edit), so it
        skips the shape checks of `restyle_step` (they would sync a CUDA graph capture). Same maths.
        """
        return self._residual(images, ws, recon)

    def _residual(self, images: torch.Tensor, ws: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        dtype = self._param_dtype()
        x = torch.cat([images.to(dtype), recon.to(dtype)], dim=1)
        return ws + self.encoder(x).to(ws.dtype)

    def forward(self, images: torch.Tensor, n_iters: int | None = None, return_iters: bool = False):
        """images [N, 3, S, S] float in [-1, 1] (S = input_size) → ws [N, num_ws, w_dim] float32, latent_avg included.

        ReStyle: start from (latent_avg, average image) and apply `restyle_step` n_iters times (default
        `self.n_iters`). With return_iters=True, returns (ws, [Iteration(ws_i, recon_i) for each iteration]);
        single-pass encoders give one Iteration with recon None.
        """
        self._check_images(images)
        n_iters = self._check_n_iters(n_iters)
        n = images.shape[0]
        if not self.is_restyle:
            codes = self.encoder(images.to(self._param_dtype())).float()
            ws = codes + self.latent_avg.float() if self.start_from_latent_avg else codes
            return (ws, [Iteration(ws, None)]) if return_iters else ws
        ws = self.latent_avg.float()[None].expand(n, -1, -1)  # latents stay float32 under a half policy
        recon = self.average_image().to(images.dtype).expand(n, -1, -1, -1)
        iters = []
        for i in range(n_iters):
            ws = self._residual(images, ws, recon)
            if return_iters or i + 1 < n_iters:  # the last reconstruction is not needed for ws
                recon = self.pool(self.decode(ws))
            iters.append(Iteration(ws, recon if return_iters else None))
        return (ws, iters) if return_iters else ws

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, num_ws={self.num_ws}, w_dim={self.w_dim}, input_size={self.input_size}, "
                f"n_iters={self.n_iters}")
