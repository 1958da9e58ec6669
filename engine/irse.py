"""IR-SE ResNet backbone (ArcFace "IR-SE50") used by the pSp / e4e / ReStyle encoders.

Module and parameter names follow the reference implementation (TreB1eN's InsightFace port as used in
pixel2style2pixel, encoder4editing and restyle-encoder), so a checkpoint's `encoder.input_layer.*` and
`encoder.body.N.*` keys load without renaming:

    input_layer = Sequential(Conv2d(in_channels, width0, 3, 1, 1, bias=False), BatchNorm2d, PReLU)
    body.N      = BottleneckIRSE(in, depth, stride) with
                  shortcut_layer: MaxPool2d(1, stride) when in == depth, else Sequential(Conv2d 1x1 stride, BN)
                  res_layer:      Sequential(BN(in), Conv3x3(in, depth), PReLU(depth), Conv3x3(depth, depth, stride),
                                             BN(depth), SEModule(depth))

Every stage starts with a stride-2 unit, so a [N, C, S, S] input leaves stage k (k = 1..4) at S / 2**k.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.ops import HALF_DTYPES

# IR-SE depths (units per stage) of the ArcFace backbones; pSp/e4e/ReStyle use 50.
IRSE_UNITS = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
IRSE_WIDTHS = (64, 128, 256, 512)


class UnitSpec(NamedTuple):
    """One bottleneck unit of the body: input channels, output channels, stride of its second conv."""

    in_channels: int
    depth: int
    stride: int


def body_specs(widths: Sequence[int] = IRSE_WIDTHS, units: Sequence[int] = IRSE_UNITS[50]) -> list[UnitSpec]:
    """Unit list of the body: stage k has `units[k]` units of width `widths[k]`, the first one strided by 2.

    The first stage takes `widths[0]` channels (the input layer's width), like the reference.
    """
    if len(widths) != len(units) or not widths:
        raise ValueError(f"widths {tuple(widths)} and units {tuple(units)} must have the same non-zero length")
    if any(int(u) < 1 for u in units) or any(int(w) < 1 for w in widths):
        raise ValueError(f"widths {tuple(widths)} and units {tuple(units)} must be positive")
    specs = []
    in_ch = int(widths[0])
    for depth, n in zip(widths, units):
        specs.append(UnitSpec(in_ch, int(depth), 2))
        specs.extend(UnitSpec(int(depth), int(depth), 1) for _ in range(int(n) - 1))
        in_ch = int(depth)
    return specs


def stage_ends(units: Sequence[int]) -> list[int]:
    """Body indices of the last unit of each stage (IR-SE50: [2, 6, 20, 23])."""
    ends, total = [], 0
    for n in units:
        total += int(n)
        ends.append(total - 1)
    return ends


class SEModule(nn.Module):
    """Squeeze-and-excitation gate: x * sigmoid(fc2(relu(fc1(mean_hw(x))))). Keys `fc1.weight`, `fc2.weight`."""

    def __init__(
        self,
        channels: int,          # Number of feature channels gated.
        reduction: int = 16,    # Bottleneck ratio of the two 1x1 convs (hidden = max(1, channels // reduction)).
    ):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in HALF_DTYPES:
            # the 1x1 convs on a 1x1 map as matrix products: same maths, without oneDNN's per-call setup of a
            # half-precision conv (which costs more than the product itself on CPU)
            pooled = x.mean(dim=(2, 3))                                                   # [N, C]
            hidden = torch.relu(F.linear(pooled, self.fc1.weight.flatten(1)))
            gate = torch.sigmoid(F.linear(hidden, self.fc2.weight.flatten(1)))
            return x * gate[:, :, None, None]
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """Pre-activation IR bottleneck with SE gate: res_layer(x) + shortcut_layer(x)."""

    def __init__(
        self,
        in_channels: int,       # Channels of the input feature map.
        depth: int,             # Channels of the output feature map.
        stride: int,            # Spatial stride (1 or 2), applied by the second 3x3 conv and the shortcut.
        se_reduction: int = 16, # SE bottleneck ratio.
    ):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, (1, 1), stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def make_input_layer(in_channels: int, width: int) -> nn.Sequential:
    """Stem: Conv3x3(in_channels → width, no bias), BatchNorm2d, PReLU. Keys `0.weight`, `1.*`, `2.weight`."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, (3, 3), 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.PReLU(width),
    )


def make_body(specs: Sequence[UnitSpec], se_reduction: int = 16) -> nn.Sequential:
    """The bottleneck units in order (state_dict keys `N.shortcut_layer.*`, `N.res_layer.*`)."""
    return nn.Sequential(*[BottleneckIRSE(s.in_channels, s.depth, s.stride, se_reduction) for s in specs])


def run_body(body: nn.Sequential, x: torch.Tensor, taps: Sequence[int]) -> list[torch.Tensor]:
    """Run `body` on x and return the feature maps after the units whose indices are in `taps` (in tap order)."""
    wanted = {int(t): i for i, t in enumerate(taps)}
    out: list[torch.Tensor | None] = [None] * len(taps)
    last = max(wanted)
    for i, unit in enumerate(body):
        x = unit(x)
        if i in wanted:
            out[wanted[i]] = x
        if i == last:
            break
    return out  # type: ignore[return-value]
