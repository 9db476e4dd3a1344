"""Building blocks of the U-Net (Ronneberger et al. 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sciatic.model.configs import NormKind


def norm_layer(kind: NormKind, channels: int, groups: int = 8) -> nn.Module:
    """The normalisation after each convolution (identity for ``none``)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class DoubleConv(nn.Module):
    """(3x3 convolution -> normalisation -> ReLU) twice; size-preserving."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, groups: int = 8) -> None:
        super().__init__()
        bias = norm == "none"  # a bias before a normalisation layer is redundant
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias),
            norm_layer(norm, out_channels, groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
            norm_layer(norm, out_channels, groups),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out


class Down(nn.Module):
    """2x2 max pooling, then a double convolution."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, groups: int = 8) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_channels, out_channels, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(self.pool(x))
        return out


class Up(nn.Module):
    """2x up-sampling, concatenation with the skip connection, double convolution.

    ``in_channels`` is the channel count of the deeper input; the skip carries
    half of it, and the up-sampling halves the deeper input first.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, bilinear: bool, groups: int = 8) -> None:
        super().__init__()
        half = in_channels // 2
        self.up: nn.Module
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, half, 1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, half, 2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels, norm, groups)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(deep)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if dy or dx:  # odd sizes: pad the up-sampled map to the skip's size
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        out: torch.Tensor = self.conv(torch.cat([skip, x], dim=1))
        return out


class OutConv(nn.Module):
    """1x1 convolution to the output logits."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out
