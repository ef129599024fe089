"""AnimeGANv2 (Chen, Liu & Chen) — baseline of CTSS Table I (PAPERS.md "Baselines").

G: the AnimeGANv2 generator, layer-for-layer as bryandlee/animegan2-pytorch ``model.py`` (blocks ``block_a`` …
``block_e``, ``out_layer``) so its released ``.pt`` state dicts load with identical keys.
D: AnimeGANv2's discriminator (spectral norm on every conv, no bias, lReLU 0.2, LN after the stride-1 convs).
Losses: LSGAN with grayscale cartoons (``gray``) and edge-smoothed grayscale cartoons as extra fakes,
content (VGG conv4_4 L1), Gram style loss against grayscale cartoons, YUV colour loss, total variation;
weights adv 300, con 1.5, sty 2.5, col 15, tv 1 (Hayao); lr init 2e-4, G 2e-5, D 4e-5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from toonlab import losses, ops
from toonlab.config import ranged
from toonlab.models.base import Model, Phase, init_then_adversarial, perceptual_net, register
from toonlab.nn.blocks import (
    ConvNormAct,
    InvertedResBlock,
    PadConvNormLReLU,
    apply_spectral_norm,
    init_normal,
)
from toonlab.nn.perceptual import Perceptual


class AnimeGANv2Generator(nn.Module):
    """(B,3,H,W) [-1,1] → (B,3,H,W) [-1,1]. Encoder to 1/4 scale, 4 inverted-residual blocks (expansion 2),
    bilinear (align_corners=True, to the exact encoder sizes, as released) upsampling, 1×1 conv + tanh."""

    def __init__(self):
        super().__init__()
        half = (0, 1, 0, 1)  # stride-2 convs pad right/bottom only
        self.block_a = nn.Sequential(PadConvNormLReLU(3, 32, 7, pad=3), PadConvNormLReLU(32, 64, 3, 2, half),
                                     PadConvNormLReLU(64, 64))
        self.block_b = nn.Sequential(PadConvNormLReLU(64, 128, 3, 2, half), PadConvNormLReLU(128, 128))
        self.block_c = nn.Sequential(
            PadConvNormLReLU(128, 128), InvertedResBlock(128, 256, 2),
            *[InvertedResBlock(256, 256, 2) for _ in range(3)], PadConvNormLReLU(256, 128),
        )
        self.block_d = nn.Sequential(PadConvNormLReLU(128, 128), PadConvNormLReLU(128, 128))
        self.block_e = nn.Sequential(PadConvNormLReLU(128, 64), PadConvNormLReLU(64, 64),
                                     PadConvNormLReLU(64, 32, 7, pad=3))
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, 1, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.block_a(x)
        y = self.block_c(self.block_b(a))
        y = self.block_d(F.interpolate(y, size=a.shape[-2:], mode="bilinear", align_corners=True))
        y = self.block_e(F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True))
        return self.out_layer(y)


class AnimeGANv2Discriminator(nn.Sequential):
    """(B,3,H,W) → (B,1,H/4,W/4): c3-32 lReLU; (c3s2-64 lReLU, c3-128 LN lReLU); (c3s2-128 lReLU, c3-256 LN
    lReLU); c3-256 LN lReLU; c3-1. No bias, reflect padding, N(0, 0.02) init, spectral norm (option)."""

    def __init__(self, ch: int = 32, spectral: bool = True, std: float = 0.02):
        def c(cin, cout, s=1, norm="none"):
            return ConvNormAct(cin, cout, 3, s, norm, "lrelu", bias=False)

        super().__init__(
            c(3, ch),
            c(ch, ch * 2, 2), c(ch * 2, ch * 4, 1, "ln"),
            c(ch * 4, ch * 4, 2), c(ch * 4, ch * 8, 1, "ln"),
            c(ch * 8, ch * 8, 1, "ln"),
            nn.Conv2d(ch * 8, 1, 3, 1, 1, padding_mode="reflect", bias=False),
        )
        init_normal(self, std)
        if spectral:
            apply_spectral_norm(self)


@dataclass
class AnimeGANConfig:
    spectral_norm: bool = True
    adv_loss: Literal["lsgan", "bce", "hinge"] = "lsgan"
    lambda_adv: float = ranged(300.0, ge=0)  # g_adv_weight = d_adv_weight
    lambda_con: float = ranged(1.5, ge=0)
    lambda_sty: float = ranged(2.5, ge=0)  # Gram loss vs grayscale cartoons
    lambda_col: float = ranged(15.0, ge=0)
    lambda_tv: float = ranged(1.0, ge=0)
    # D-term weights (real, generated, gray, smoothed gray): AnimeGANv2's Hayao setting in its training code
    # (PAPERS.md is silent); (1, 1, 1, 1) is the plain form.
    d_weights: tuple[float, float, float, float] = ranged((1.2, 1.2, 1.2, 0.8), ge=0)
    init_epochs: int = ranged(10, ge=0)
    adv_epochs: int = ranged(91, ge=0)  # AnimeGANv2 trains 101 epochs in all, the first 10 content-only
    lr_init: float = ranged(2e-4, gt=0)
    lr_g: float = ranged(2e-5, gt=0)
    lr_d: float = ranged(4e-5, gt=0)
    betas: tuple[float, float] = ranged((0.5, 0.999), ge=0, lt=1)
    perceptual: Perceptual = "auto"  # content / Gram backbone (toonlab.nn.perceptual); AnimeGANv2: vgg19_caffe


def _gray3(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) → its luma replicated on 3 channels (same range; the weights sum to 1)."""
    return ops.rgb_to_gray(x).expand(-1, 3, -1, -1)


@register("animegan")
class AnimeGAN(Model):
    """AnimeGANv2. Batch keys: ``photo``, ``cartoon``, ``gray`` (grayscale cartoon, 3 channels), ``smooth``
    (edge-smoothed cartoon; turned grayscale here, as AnimeGANv2 loads it)."""

    Config = AnimeGANConfig
    requires = ("photo", "cartoon", "gray", "smooth")
    default_size = 256
    size_multiple = 4

    def __init__(self, cfg: AnimeGANConfig):
        super().__init__(cfg)
        self.networks["G"] = AnimeGANv2Generator()
        self.networks["D"] = AnimeGANv2Discriminator(spectral=cfg.spectral_norm)

    def phases(self) -> tuple[Phase, ...]:
        return init_then_adversarial(self.cfg)

    def translator(self) -> nn.Module:
        return self.networks["G"]

    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, G, D = self.cfg, self.networks["G"], self.networks["D"]
        photo = batch["photo"]
        vgg = perceptual_net(c, photo.device)  # at the configured feature scale (model.perceptual_scale)
        if step == "init":
            with torch.no_grad():
                target = vgg(photo)
            con = losses.content_loss(vgg(G(photo)), target)
            return {"loss": c.lambda_con * con, "content": con}
        if step == "D":
            with torch.no_grad():
                fake = G(photo)
            w_real, w_fake, w_gray, w_smooth = c.d_weights
            out = {
                "d_real": losses.d_loss_real(D(batch["cartoon"]), c.adv_loss),
                "d_fake": losses.d_loss_fake(D(fake), c.adv_loss),
                "d_gray": losses.d_loss_fake(D(batch["gray"]), c.adv_loss),          # grayscale adversarial term
                "d_smooth": losses.d_loss_fake(D(_gray3(batch["smooth"])), c.adv_loss),  # edge-smoothed, gray
            }
            total = (w_real * out["d_real"] + w_fake * out["d_fake"] + w_gray * out["d_gray"]
                     + w_smooth * out["d_smooth"])
            return {"loss": c.lambda_adv * total, **out}
        if step == "G":
            fake = G(photo)
            feat_fake = vgg(fake)
            with torch.no_grad():
                feat_photo, feat_gray = vgg(photo), vgg(batch["gray"])
            out = {
                "g_adv": losses.g_loss(D(fake), c.adv_loss),
                "content": losses.content_loss(feat_fake, feat_photo),
                "style": losses.gram_loss(feat_fake, feat_gray),
                "color": losses.yuv_color_loss(fake, photo),
                "tv": losses.total_variation(fake),
            }
            total = (c.lambda_adv * out["g_adv"] + c.lambda_con * out["content"] + c.lambda_sty * out["style"]
                     + c.lambda_col * out["color"] + c.lambda_tv * out["tv"])
            return {"loss": total, **out}
        raise ValueError(f"animegan has no step {step!r} (init, D, G)")
