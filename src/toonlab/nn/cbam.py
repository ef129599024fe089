"""CBAM — convolutional block attention module (Woo et al. 2018), as used in the saliency CartoonGAN
(PAPERS.md §3, seed 003 eqs 2–5):

    M_c(F) = σ(MLP(AvgPool(F)) + MLP(MaxPool(F)))          channel attention, (B,C,1,1), shared MLP C→C/r→C
    M_s(F) = σ(f^{7×7}([AvgPool_c(F); MaxPool_c(F)]))        spatial attention, (B,1,H,W), pools over channels
    F' = M_c(F) ⊗ F ;  F'' = M_s(F') ⊗ F'                     eqs 2–3
"""

from __future__ import annotations

import torch
from torch import nn

from toonlab.nn.blocks import ConvNormAct, NormName


class ChannelAttention(nn.Module):
    """M_c (eq 4): (B,C,H,W) → (B,C,1,1) weights in (0, 1). The MLP is two 1×1 convs with ReLU between."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialAttention(nn.Module):
    """M_s (eq 5): (B,C,H,W) → (B,1,H,W) weights in (0, 1); a k×k conv (zero padding k//2) over [mean_c; max_c]."""

    def __init__(self, kernel: int = 7):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"CBAM spatial kernel must be odd, got {kernel}")
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention (eqs 2–3); (B,C,H,W) → (B,C,H,W)."""

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel(x) * x
        return self.spatial(x) * x


class CBAMResBlock(nn.Module):
    """Residual block with CBAM on the residual branch before the addition (CBAM paper, Fig. 3 "CBAM integrated
    with a ResBlock"): ``x + CBAM(norm(conv3(act(norm(conv3(x))))))``; (B,C,H,W) → (B,C,H,W)."""

    def __init__(self, channels: int, norm: NormName = "in", reduction: int = 16, kernel: int = 7):
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, 3, 1, norm, "relu"),
            ConvNormAct(channels, channels, 3, 1, norm, "none"),
        )
        self.cbam = CBAM(channels, reduction, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cbam(self.body(x))
