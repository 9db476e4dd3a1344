"""The 2D U-Net and the two-stage cascade built from it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sciatic.model.configs import ModelConfig, UNetConfig
from sciatic.model.unet_parts import DoubleConv, Down, OutConv, Up


class UNet(nn.Module):
    """2D U-Net returning logits of the input's height and width.

    Inputs of any size work: they are zero-padded to a multiple of
    ``2**depth`` and the output is cropped back.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c, norm, groups = config.width, config.norm, config.groups
        self.inc = DoubleConv(config.in_channels, c, norm, groups)
        self.downs = nn.ModuleList(Down(c * 2**i, c * 2 ** (i + 1), norm, groups) for i in range(config.depth))
        self.ups = nn.ModuleList(
            Up(c * 2 ** (i + 1), c * 2**i, norm, config.bilinear, groups) for i in reversed(range(config.depth))
        )
        self.outc = OutConv(c, config.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for the ReLU convolutions (as in Ronneberger 2015)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def multiple(self) -> int:
        return int(2**self.config.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = -height % m, -width % m
        if pad_h or pad_w:
            x = F.pad(x, [0, pad_w, 0, pad_h])
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        logits: torch.Tensor = self.outc(y)
        return logits[..., :height, :width]


class Cascade(nn.Module):
    """A coarse localiser and a fine segmenter, saved and loaded as one module."""

    def __init__(self, localizer: UNetConfig, segmenter: UNetConfig) -> None:
        super().__init__()
        self.localizer = UNet(localizer)
        self.segmenter = UNet(segmenter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Only for tracing tools; training and inference call the two stages."""
        out: torch.Tensor = self.segmenter(x)
        return out


def build_model(config: ModelConfig) -> nn.Module:
    """The untrained network(s) a configuration describes."""
    if config.mode == "cascade":
        assert config.localizer is not None  # checked by ModelConfig
        return Cascade(config.localizer, config.net)
    return UNet(config.net)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
