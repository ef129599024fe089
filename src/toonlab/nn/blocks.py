"""Building blocks shared by every system: conv-norm-act, LayerNorm2d, residual and up/down blocks.

Norm names: ``"in"`` InstanceNorm2d (affine), ``"ln"`` LayerNorm2d (PAPERS.md ``LN``), ``"bn"`` BatchNorm2d,
``"none"``. Activation names: ``"relu"``, ``"lrelu"`` (slope 0.2), ``"tanh"``, ``"none"``.
Padding: ``"reflect"`` or ``"zeros"``; ``"same"`` padding k//2 is used for odd kernels.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

NormName = Literal["in", "ln", "bn", "none"]
ActName = Literal["relu", "lrelu", "tanh", "none"]
PadName = Literal["reflect", "zeros"]


class LayerNorm2d(nn.GroupNorm):
    """Per-sample layer norm over (C, H, W) with a per-channel affine: ``GroupNorm(1, C)`` (PAPERS.md ``LN``)."""

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(1, channels, eps=eps, affine=affine)


def make_norm(name: NormName, channels: int) -> nn.Module:
    if name == "in":
        return nn.InstanceNorm2d(channels, affine=True)
    if name == "ln":
        return LayerNorm2d(channels)
    if name == "bn":
        return nn.BatchNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}")


def make_act(name: ActName) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "tanh":
        return nn.Tanh()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


class ConvNormAct(nn.Sequential):
    """``conv(k, stride, groups) → norm → act``; (B,Cin,H,W) → (B,Cout,H/stride,W/stride).

    ``bias`` defaults to True only when there is no norm (a norm's shift makes a conv bias redundant)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, norm: NormName = "in",
                 act: ActName = "relu", pad: PadName = "reflect", groups: int = 1, bias: bool | None = None):
        if bias is None:
            bias = norm == "none"
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, padding_mode=pad, groups=groups, bias=bias)
        self.norm = make_norm(norm, cout)
        self.act = make_act(act)


class ResBlock(nn.Module):
    """Classic residual block (CartoonGAN / Johnson): ``x + norm(conv3(act(norm(conv3(x)))))``; (B,C,H,W)."""

    def __init__(self, channels: int, norm: NormName = "in", act: ActName = "relu", pad: PadName = "reflect"):
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, 3, 1, norm, act, pad),
            ConvNormAct(channels, channels, 3, 1, norm, "none", pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Upsample(nn.Module):
    """×``scale`` resize (``nearest`` or ``bilinear``, align_corners=False); (B,C,H,W) → (B,C,sH,sW)."""

    def __init__(self, scale: int = 2, mode: Literal["nearest", "bilinear"] = "nearest"):
        super().__init__()
        self.scale, self.mode = scale, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return nn.functional.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=False)


class UpConv(nn.Sequential):
    """Resize ×2 then conv-norm-act (CTSS ``Up(N)``: nearest ×2 → c3-N, LN, lReLU)."""

    def __init__(self, cin: int, cout: int, norm: NormName = "ln", act: ActName = "lrelu", pad: PadName = "reflect",
                 mode: Literal["nearest", "bilinear"] = "nearest"):
        super().__init__(Upsample(2, mode), ConvNormAct(cin, cout, 3, 1, norm, act, pad))


class TransposedUp(nn.Sequential):
    """Fractionally strided conv ×2 (Johnson / CycleGAN decoder): ConvTranspose(k3,s2,p1,op1) → norm → act."""

    def __init__(self, cin: int, cout: int, norm: NormName = "in", act: ActName = "relu"):
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 3, 2, padding=1, output_padding=1, bias=norm == "none"),
            make_norm(norm, cout),
            make_act(act),
        )


def init_normal(module: nn.Module, std: float = 0.02) -> nn.Module:
    """N(0, std) init of conv/linear weights, zero biases, norm affines at (1, 0); returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d, nn.BatchNorm2d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every Conv2d/Linear weight of ``module`` in spectral normalisation (Miyato et al.); returns it."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return module


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class PadConvNormLReLU(nn.Sequential):
    """AnimeGANv2 conv unit: explicit reflect pad → conv (no bias by default) → LN (``GroupNorm(1, C)``) → lReLU.

    Children ``0`` pad, ``1`` conv, ``2`` norm, ``3`` act — the key layout of bryandlee/animegan2-pytorch's
    ``ConvNormLReLU``, so its released weights load. ``pad`` is an int or (left, right, top, bottom); AnimeGANv2's
    stride-2 convs pad only right/bottom by 1: ``pad=(0, 1, 0, 1)``. (B,Cin,H,W) → (B,Cout,H',W')."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, pad: int | tuple[int, int, int, int] = 1,
                 groups: int = 1, bias: bool = False):
        super().__init__(
            nn.ReflectionPad2d(pad),
            nn.Conv2d(cin, cout, k, stride, padding=0, groups=groups, bias=bias),
            LayerNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
        )


class InvertedResBlock(nn.Module):
    """MobileNetV2-style block of AnimeGANv2: c1 expand (×``expansion``) → depthwise c3 (with bias) → c1 project
    → LN, plus the input when cin == cout. Child ``layers`` as in animegan2-pytorch. (B,Cin,H,W) → (B,Cout,H,W)."""

    def __init__(self, cin: int, cout: int, expansion: float = 2.0):
        super().__init__()
        mid = int(round(cin * expansion))
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(PadConvNormLReLU(cin, mid, k=1, pad=0))
        layers += [PadConvNormLReLU(mid, mid, groups=mid, bias=True),
                   nn.Conv2d(mid, cout, 1, bias=False),
                   LayerNorm2d(cout)]
        self.residual = cin == cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out
