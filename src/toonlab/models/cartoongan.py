"""CartoonGAN (Chen, Lai & Liu, CVPR 2018) — the baseline of PAPERS.md §3 (first lines) and of CTSS Table I.

G: c7-64, two down blocks, 8 residual blocks, two up blocks, c7-3, tanh (instance norm + ReLU).
D: c3-32, c3s2-64, c3-128, c3s2-128, c3-256, c3-256, c3-1 with lReLU 0.2 (norm after the stride-1 convs).
Losses: edge-promoting adversarial loss (real cartoons c vs fakes G(p) and edge-smoothed cartoons e; BCE in the
original) + ω·content loss (L1 on VGG19 conv4_4), ω = 10; 10 content-only initialisation epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from toonlab import losses
from toonlab.config import ranged
from toonlab.models.base import (
    Model,
    Phase,
    init_then_adversarial,
    perceptual_content_loss,
    register,
)
from toonlab.nn.blocks import ConvNormAct, NormName, init_normal
from toonlab.nn.perceptual import Perceptual


class ScaleShiftInstanceNorm(nn.Module):
    """Instance norm with per-channel ``scale`` and ``shift`` (the parameter names of the released CartoonGAN
    weights); biased variance, eps 1e-9 as there. (B,C,H,W) → (B,C,H,W)."""

    def __init__(self, channels: int, eps: float = 1e-9):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.scale, bias=self.shift, eps=self.eps)


class CartoonGANGenerator(nn.Module):
    """CartoonGAN G, (B,3,H,W) [-1,1] → (B,3,H,W) [-1,1], H and W multiples of 4.

    Layer-for-layer the network of the released PyTorch weights (Yijunmaverick/CartoonGAN-Test-Pytorch-Torch,
    ``network/Transformer.py``): same attribute names (``conv01_1``, ``in01_1``, ``conv02_1`` … ``deconv03_1``),
    so those state dicts load with identical keys. Padding as there: reflect for the 7×7 and residual convs,
    zeros for the strided/flat convs of the down and up blocks. Every conv has a bias (as released).
    ``bgr=True``: the network works in BGR (the released weights were trained so: their test script flips
    RGB → BGR before and back after); the flips happen inside ``forward`` so callers always pass/get RGB."""

    def __init__(self, n_res: int = 8, ch: int = 64, bgr: bool = False):
        super().__init__()
        self.n_res, self.bgr = n_res, bgr
        c1, c2, c3 = ch, ch * 2, ch * 4
        # flat c7-64, IN, ReLU
        self.conv01_1 = nn.Conv2d(3, c1, 7, padding=3, padding_mode="reflect")
        self.in01_1 = ScaleShiftInstanceNorm(c1)
        # down block 1: c3s2-128, c3-128, IN, ReLU
        self.conv02_1 = nn.Conv2d(c1, c2, 3, 2, 1)
        self.conv02_2 = nn.Conv2d(c2, c2, 3, 1, 1)
        self.in02_1 = ScaleShiftInstanceNorm(c2)
        # down block 2: c3s2-256, c3-256, IN, ReLU
        self.conv03_1 = nn.Conv2d(c2, c3, 3, 2, 1)
        self.conv03_2 = nn.Conv2d(c3, c3, 3, 1, 1)
        self.in03_1 = ScaleShiftInstanceNorm(c3)
        # residual blocks 04 … 11: (c3, IN, ReLU, c3, IN) + input
        for i in range(4, 4 + n_res):
            for j in (1, 2):
                setattr(self, f"conv{i:02d}_{j}", nn.Conv2d(c3, c3, 3, padding=1, padding_mode="reflect"))
                setattr(self, f"in{i:02d}_{j}", ScaleShiftInstanceNorm(c3))
        # up blocks: ConvTranspose s2, c3, IN, ReLU (names continue the released file's numbering: in12, in13)
        self.deconv01_1 = nn.ConvTranspose2d(c3, c2, 3, 2, 1, 1)
        self.deconv01_2 = nn.Conv2d(c2, c2, 3, 1, 1)
        setattr(self, f"in{4 + n_res:02d}_1", ScaleShiftInstanceNorm(c2))
        self.deconv02_1 = nn.ConvTranspose2d(c2, c1, 3, 2, 1, 1)
        self.deconv02_2 = nn.Conv2d(c1, c1, 3, 1, 1)
        setattr(self, f"in{5 + n_res:02d}_1", ScaleShiftInstanceNorm(c1))
        # output c7-3, tanh
        self.deconv03_1 = nn.Conv2d(c1, 3, 7, padding=3, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        y = F.relu(self.in01_1(self.conv01_1(x)))
        y = F.relu(self.in02_1(self.conv02_2(self.conv02_1(y))))
        y = F.relu(self.in03_1(self.conv03_2(self.conv03_1(y))))
        for i in range(4, 4 + self.n_res):
            h = F.relu(getattr(self, f"in{i:02d}_1")(getattr(self, f"conv{i:02d}_1")(y)))
            y = y + getattr(self, f"in{i:02d}_2")(getattr(self, f"conv{i:02d}_2")(h))
        y = F.relu(getattr(self, f"in{4 + self.n_res:02d}_1")(self.deconv01_2(self.deconv01_1(y))))
        y = F.relu(getattr(self, f"in{5 + self.n_res:02d}_1")(self.deconv02_2(self.deconv02_1(y))))
        y = torch.tanh(self.deconv03_1(y))
        return y.flip(1) if self.bgr else y


class CartoonGANDiscriminator(nn.Sequential):
    """CartoonGAN D, (B,3,H,W) → (B,1,H/4,W/4) raw scores: c3-32 lReLU, c3s2-64 lReLU, c3-128 N lReLU,
    c3s2-128 lReLU, c3-256 N lReLU, c3-256 N lReLU, c3-1 (N = ``norm``, batch norm in the paper)."""

    def __init__(self, norm: NormName = "bn", ch: int = 32):
        plain = dict(norm="none", act="lrelu", pad="zeros")
        normed = dict(norm=norm, act="lrelu", pad="zeros")
        super().__init__(
            ConvNormAct(3, ch, 3, 1, **plain),
            ConvNormAct(ch, ch * 2, 3, 2, **plain),
            ConvNormAct(ch * 2, ch * 4, 3, 1, **normed),
            ConvNormAct(ch * 4, ch * 4, 3, 2, **plain),
            ConvNormAct(ch * 4, ch * 8, 3, 1, **normed),
            ConvNormAct(ch * 8, ch * 8, 3, 1, **normed),
            nn.Conv2d(ch * 8, 1, 3, 1, 1),
        )


@dataclass
class CartoonGANConfig:
    n_res: int = ranged(8, ge=0)           # residual blocks in G
    channel_order: Literal["rgb", "bgr"] = "rgb"  # "bgr" for the released CartoonGAN weights (Hayao, Hosoda …)
    d_norm: Literal["bn", "in", "ln", "none"] = "bn"  # paper: batch norm in D
    adv_loss: Literal["bce", "lsgan", "hinge"] = "bce"  # original: cross-entropy
    omega: float = ranged(10.0, ge=0)      # ω, content-loss weight
    edge_promoting: bool = True            # edge-smoothed cartoons as extra fakes (False: plain GAN loss)
    init_epochs: int = ranged(10, ge=0)    # content-only initialisation (lr_init)
    adv_epochs: int = ranged(200, ge=0)    # our choice (PAPERS.md gives no number; the paper's plots run ~200)
    lr_init: float = ranged(2e-4, gt=0)
    lr_g: float = ranged(2e-4, gt=0)
    lr_d: float = ranged(2e-4, gt=0)
    betas: tuple[float, float] = ranged((0.5, 0.999), ge=0, lt=1)
    perceptual: Perceptual = "auto"  # content-loss backbone (toonlab.nn.perceptual; papers: vgg19)


@register("cartoongan")
class CartoonGAN(Model):
    """Edge-promoting CartoonGAN. Batch keys: ``photo``, ``cartoon``, ``smooth`` (edge-smoothed cartoon)."""

    Config = CartoonGANConfig
    requires = ("photo", "cartoon", "smooth")
    default_size = 256
    size_multiple = 4

    def __init__(self, cfg: CartoonGANConfig):
        super().__init__(cfg)
        if not cfg.edge_promoting:
            self.requires = ("photo", "cartoon")
        self.networks["G"] = CartoonGANGenerator(cfg.n_res, bgr=cfg.channel_order == "bgr")
        self.networks["D"] = init_normal(CartoonGANDiscriminator(cfg.d_norm))

    def phases(self) -> tuple[Phase, ...]:
        return init_then_adversarial(self.cfg)

    def translator(self) -> nn.Module:
        return self.networks["G"]

    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, G, D = self.cfg, self.networks["G"], self.networks["D"]
        photo = batch["photo"]
        if step == "init":
            con = perceptual_content_loss(self.cfg, G(photo), photo)
            return {"loss": con, "content": con}
        if step == "D":
            # L_adv(D) = log D(c) + log(1 − D(G(p))) + log(1 − D(e)), as losses to minimise
            with torch.no_grad():
                fake = G(photo)
            real = losses.d_loss_real(D(batch["cartoon"]), c.adv_loss)
            gen = losses.d_loss_fake(D(fake), c.adv_loss)
            out = {"d_real": real, "d_fake": gen}
            total = real + gen
            if c.edge_promoting:
                out["d_smooth"] = losses.d_loss_fake(D(batch["smooth"]), c.adv_loss)
                total = total + out["d_smooth"]
            return {"loss": total, **out}
        if step == "G":
            fake = G(photo)
            adv = losses.g_loss(D(fake), c.adv_loss)
            con = perceptual_content_loss(self.cfg, fake, photo)
            return {"loss": adv + c.omega * con, "g_adv": adv, "content": con}
        raise ValueError(f"cartoongan has no step {step!r} (init, D, G)")
