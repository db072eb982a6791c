"""A U-Net decoder on any timm `features_only` encoder (fastai's DynamicUnet, simplified).

The encoder's `feature_info` says how many feature maps it returns and their widths, so the decoder
builds itself for resnets, efficientnets, convnexts and any other backbone that exposes feature
maps, without per-architecture code. Each block upsamples to the next skip's exact size (odd input
sizes work), concatenates it and mixes with two 3x3 convolutions; the output is upsampled to the
input resolution at the end.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UnetBlock(nn.Module):
    """Upsample to the skip's size, concatenate the (batch-normalised) skip, two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.skip_bn = nn.BatchNorm2d(skip_channels)
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv2(self.conv1(torch.cat([x, self.skip_bn(skip)], dim=1)))


class UnetDecoder(nn.Module):
    """Decoder over the encoder's feature list (shallow to deep) -> per-pixel class logits.

    Args:
        encoder_channels: widths of the encoder's feature maps, shallow first (`feature_info.channels()`).
        num_classes: output channels.
        width: decoder block width as a fraction of its skip's width. Half (the default) keeps the
            decoder cheaper than a resnet18 encoder, which matters on CPUs; fastai's is wider.
        min_channels: narrowest decoder block.
        final_channels: width of the full-resolution conv before the classifier.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int,
        width: float = 0.5,
        min_channels: int = 16,
        final_channels: int = 16,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in encoder_channels]
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least 2 encoder feature maps, got {channels}")
        deepest = channels[-1]
        self.center = conv_bn_relu(deepest, deepest)
        blocks = []
        in_ch = deepest
        for skip_ch in reversed(channels[:-1]):
            out_ch = max(min_channels, round(skip_ch * width))
            blocks.append(UnetBlock(in_ch, skip_ch, out_ch))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.final = conv_bn_relu(in_ch, final_channels)
        self.classifier = nn.Conv2d(final_channels, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int] | None = None) -> torch.Tensor:
        """`size`: the input's (H, W); the logits come out at that resolution."""
        x = self.center(features[-1])
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = block(x, skip)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
        return self.classifier(self.final(x))


class SoftArgmaxHead(nn.Module):
    """Points from heatmaps: a U-Net decoder over the stride >= 4 features, a spatial softmax per
    point and its expected (x, y) in [-1, 1] (pixel-centre convention, like the targets).

    Regressing coordinates from a pooled vector makes a network learn *where* through padding
    effects; a heatmap keeps the spatial layout, which trains far faster from scratch (DSNT).
    Output: [B, 2K] coordinates, already in the target's units.
    """

    def __init__(self, encoder_channels: Sequence[int], reductions: Sequence[int], num_points: int) -> None:
        super().__init__()
        self.start = next((i for i, r in enumerate(reductions) if r >= 4), 0)
        self.start = min(self.start, len(encoder_channels) - 2)
        self.decoder = UnetDecoder(list(encoder_channels)[self.start:], num_points)

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int] | None = None) -> torch.Tensor:
        logits = self.decoder(list(features)[self.start:]).float()
        b, k, h, w = logits.shape
        prob = logits.flatten(2).softmax(-1).view(b, k, h, w)
        xs = (2 * torch.arange(w, device=logits.device, dtype=logits.dtype) + 1) / w - 1
        ys = (2 * torch.arange(h, device=logits.device, dtype=logits.dtype) + 1) / h - 1
        x = (prob.sum(2) * xs).sum(-1)
        y = (prob.sum(3) * ys).sum(-1)
        return torch.stack([x, y], -1).flatten(1)
