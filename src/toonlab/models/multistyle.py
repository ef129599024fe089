"""Multi-style adaptive-normalisation CartoonGAN (PAPERS.md §2, seed 000): one generator, several cartoon styles.

Symbols of seed 000:
- ``G(p, s)`` = DE(R-A(E(p), s)) (§2.2, Fig. 1). E: flat c7-64, two down-sampling blocks (c3s2 + c3, 128 then
  256), five residual blocks. R-A: ``ra_blocks`` residual blocks whose two norms are AdaLIN (U-GAT-IT), with γ, β
  from a learned style embedding through an MLP (U-GAT-IT's γ/β MLP, shared by every R-A block). DE: four
  residual blocks, two up-sampling blocks (ConvTranspose s2 + c3, 128 then 64), two flat convs of 32 and 16
  channels, a 7×7 conv to RGB, tanh. IN + ReLU elsewhere, as CartoonGAN. The paper does not give the number of
  R-A blocks: ``ra_blocks = 2`` is our choice.
- ``D`` (§2.3): patch-level — CartoonGAN's discriminator (flat conv, two strided blocks, a feature block, a 3×3
  conv to a map), lReLU 0.2 (reused from ``toonlab.models.cartoongan``).
- ``D_aux`` (§2.3): four down-sampling conv blocks, a flat conv to ``len(styles) + 1`` maps, averaged into logits;
  class ``len(styles)`` is s_e, the edge-processed (guided-filtered) cartoons.
- Losses: eq 2 adversarial — real cartoons c are real; G(p) and the edge-processed cartoons e (``guided``) are
  fakes (CartoonGAN's edge-promoting form; cross-entropy as eq 2 is written, ``adv_loss`` option);
  eq 3 style classification — −log D_aux(s|c) and −log D_aux(s_e|e) train D_aux, −log D_aux(s|G(p)) trains G;
  eq 4 content — L1 between VGG19 conv4_4 features of G(p) and p.
- Target style during training: the batch's ``style`` (B,), i.e. the style of the cartoon batch — G is asked for
  the style D and D_aux are shown in the same iteration, so the adversarial and classification signals agree.

Recipe, from PAPERS.md §2 "nearest public design" (MS-CartoonGAN) since seed 000 gives no numbers: content
weight 0.2, style-loss weight 0.5, lr 1e-5 for the adversarial phase, 20 content-only init epochs at 2e-4,
batch 4 (a data setting: configs/multistyle.yaml). Adam(0.5, 0.999) and 200 adversarial epochs are ours
(CartoonGAN's betas; the cartoongan baseline's epoch count).
Ablations (seed 000 §3.4): ``norm: none`` — Fig. 4 (a), "the lack of instance normalization": no normalisation
in the R-A blocks (h·γ + β, the style's γ, β kept so the style id still reaches G; without them the
"multi-style" model would emit one style); ``norm: in`` — AdaIN instead of AdaLIN (instance norm with the
style's γ, β: no LN mixing, no ρ), a second variant that isolates AdaLIN's layer-norm half;
``aux_classifier: false`` — Fig. 4 (b), no D_aux and no style loss.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from toonlab import losses
from toonlab.config import ranged
from toonlab.errors import UsageError
from toonlab.models.base import (
    Model,
    Phase,
    init_then_adversarial,
    perceptual_content_loss,
    register,
)
from toonlab.models.cartoongan import CartoonGANDiscriminator
from toonlab.nn.adalin import AdaLIN
from toonlab.nn.blocks import ConvNormAct, ResBlock, TransposedUp, init_normal
from toonlab.nn.perceptual import Perceptual


class StyleIN(nn.Module):
    """Ablation ``norm: in`` (AdaIN): instance norm (biased variance) with the style's γ, β; same call as AdaLIN."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, eps=self.eps) * gamma[:, :, None, None] + beta[:, :, None, None]


class StyleAffine(nn.Module):
    """Ablation ``norm: none`` (seed 000 Fig. 4a, no instance normalisation): x·γ + β, no statistics removed."""

    def __init__(self, channels: int):
        super().__init__()

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return x * gamma[:, :, None, None] + beta[:, :, None, None]


class RABlock(nn.Module):
    """R-A block (U-GAT-IT ``ResnetAdaILNBlock``): x + AdaLIN(conv3(ReLU(AdaLIN(conv3(x), γ, β))), γ, β)."""

    def __init__(self, channels: int, norm: Literal["adalin", "in", "none"] = "adalin"):
        super().__init__()
        make = {"adalin": AdaLIN, "in": StyleIN, "none": StyleAffine}[norm]
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm1 = make(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm2 = make(channels)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(h), gamma, beta)


class StyleMLP(nn.Module):
    """Style id (B,) int64 → (γ, β), each (B,C): a learned embedding through U-GAT-IT's γ/β MLP
    (two FC+ReLU layers, then one linear head each for γ and β)."""

    def __init__(self, n_styles: int, channels: int):
        super().__init__()
        self.embed = nn.Embedding(n_styles, channels)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                 nn.Linear(channels, channels), nn.ReLU(inplace=True))
        self.gamma = nn.Linear(channels, channels)
        self.beta = nn.Linear(channels, channels)

    def forward(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(self.embed(style))
        return self.gamma(h), self.beta(h)


class MultiStyleGenerator(nn.Module):
    """G(p, s): ``forward(x (B,3,H,W) [-1,1], style int | LongTensor (B,)) -> (B,3,H,W) [-1,1]``; H, W multiples
    of 4. ``style`` defaults to 0 (the first style name)."""

    def __init__(self, n_styles: int, ch: int = 64, ra_blocks: int = 2,
                 norm: Literal["adalin", "in", "none"] = "adalin"):
        super().__init__()
        self.n_styles = n_styles
        c1, c2, c3 = ch, ch * 2, ch * 4
        # E: flat conv, two down-sampling blocks, five residual blocks
        self.encoder = nn.Sequential(
            ConvNormAct(3, c1, 7, 1, "in", "relu"),
            ConvNormAct(c1, c2, 3, 2, "in", "relu"), ConvNormAct(c2, c2, 3, 1, "in", "relu"),
            ConvNormAct(c2, c3, 3, 2, "in", "relu"), ConvNormAct(c3, c3, 3, 1, "in", "relu"),
            *[ResBlock(c3, "in", "relu") for _ in range(5)],
        )
        # R-A: style-conditioned residual blocks
        self.style_mlp = StyleMLP(n_styles, c3)
        self.ra = nn.ModuleList(RABlock(c3, norm) for _ in range(ra_blocks))
        # DE: four residual blocks, two up-sampling blocks, flat convs of 32 and 16 channels, 7×7 to RGB
        self.decoder = nn.Sequential(
            *[ResBlock(c3, "in", "relu") for _ in range(4)],
            TransposedUp(c3, c2, "in", "relu"), ConvNormAct(c2, c2, 3, 1, "in", "relu"),
            TransposedUp(c2, c1, "in", "relu"), ConvNormAct(c1, c1, 3, 1, "in", "relu"),
            ConvNormAct(c1, 32, 3, 1, "in", "relu"),
            ConvNormAct(32, 16, 3, 1, "in", "relu"),
            ConvNormAct(16, 3, 7, 1, "none", "tanh"),
        )

    def style_ids(self, style: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        """Normalise ``style`` to a (B,) int64 tensor on ``device``; out-of-range ids raise UsageError."""
        if not isinstance(style, torch.Tensor):
            try:
                style = operator.index(style)  # int, numpy integer, … (not float or str)
            except TypeError:
                raise UsageError(f"style must be an integer id or a (B,) tensor, got {style!r}") from None
            if not 0 <= style < self.n_styles:
                raise UsageError(f"style {style} out of range (model has {self.n_styles} styles)")
            return torch.full((batch,), style, dtype=torch.long, device=device)
        if style.ndim == 0:
            style = style.expand(batch)
        if style.shape != (batch,):
            raise UsageError(f"style must be an int or a (B,) tensor with B={batch}, got {tuple(style.shape)}")
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            if int(style.min()) < 0 or int(style.max()) >= self.n_styles:
                raise UsageError(f"style ids must be in [0, {self.n_styles - 1}], got {style.tolist()}")
        return style.to(device=device, dtype=torch.long)

    def forward(self, x: torch.Tensor, style: int | torch.Tensor = 0) -> torch.Tensor:
        gamma, beta = self.style_mlp(self.style_ids(style, x.shape[0], x.device))
        h = self.encoder(x)
        for block in self.ra:
            h = block(h, gamma, beta)
        return self.decoder(h)


class AuxStyleClassifier(nn.Sequential):
    """D_aux: (B,3,H,W) → (B, n_classes) logits. Four c3s2 blocks (32, 64, 128, 256; IN after the first; lReLU
    0.2), a flat c3 conv to ``n_classes`` maps, global average (softmax is in the cross-entropy)."""

    def __init__(self, n_classes: int, ch: int = 32):
        widths = (ch, ch * 2, ch * 4, ch * 8)
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(widths):
            layers.append(ConvNormAct(cin, cout, 3, 2, "none" if i == 0 else "in", "lrelu", "zeros"))
            cin = cout
        layers += [nn.Conv2d(cin, n_classes, 3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(*layers)


@register("multistyle")
class MultiStyle(Model):
    """Batch: ``photo``, ``cartoon``, ``guided`` (edge-processed cartoon), ``style`` (B,) int64 (the cartoons')."""

    @dataclass
    class Config:
        styles: tuple[str, ...] = ("hayao", "shinkai")   # seed 000's two styles; ids follow this order
        ch: int = ranged(64, ge=1)         # generator base width
        ra_blocks: int = ranged(2, ge=0)   # R-A blocks between E and DE (paper silent; our choice)
        norm: Literal["adalin", "in", "none"] = "adalin"  # ablations: "none" (Fig. 4a, no IN), "in" (AdaIN)
        aux_classifier: bool = True        # ablation: false = no D_aux, no style loss (Fig. 4b)
        d_norm: Literal["bn", "in", "ln", "none"] = "bn"   # CartoonGAN's D uses batch norm
        adv_loss: Literal["bce", "lsgan", "hinge"] = "bce"  # eq 2 is written with logs (cross-entropy)
        w_content: float = ranged(0.2, ge=0)  # eq 4 weight (MS-CartoonGAN)
        w_style: float = ranged(0.5, ge=0)  # eq 3 weight (MS-CartoonGAN)
        init_epochs: int = ranged(20, ge=0)  # content-only initialisation (MS-CartoonGAN)
        adv_epochs: int = ranged(200, ge=0)
        lr_init: float = ranged(2e-4, gt=0)
        lr_g: float = ranged(1e-5, gt=0)
        lr_d: float = ranged(1e-5, gt=0)
        betas: tuple[float, float] = ranged((0.5, 0.999), ge=0, lt=1)
        perceptual: Perceptual = "auto"  # content-loss backbone (toonlab.nn.perceptual; papers: vgg19)

    default_size = 256
    size_multiple = 4
    requires = ("photo", "cartoon", "guided", "style")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if not cfg.styles or len(set(cfg.styles)) != len(cfg.styles):
            raise UsageError(f"multistyle: styles must be distinct names, got {list(cfg.styles)}")
        # G keeps PyTorch's default init (as toonlab's cartoongan G); D and D_aux get N(0, 0.02) (DCGAN-style)
        self.networks["G"] = MultiStyleGenerator(len(cfg.styles), cfg.ch, cfg.ra_blocks, cfg.norm)
        self.networks["D"] = init_normal(CartoonGANDiscriminator(cfg.d_norm))
        if cfg.aux_classifier:
            self.networks["D_aux"] = init_normal(AuxStyleClassifier(len(cfg.styles) + 1))

    @property
    def styles(self) -> tuple[str, ...]:
        return tuple(self.cfg.styles)

    @property
    def edge_class(self) -> int:
        """Label s_e of the edge-processed cartoons in D_aux (after the style ids)."""
        return len(self.cfg.styles)

    def phases(self) -> tuple[Phase, ...]:
        return init_then_adversarial(self.cfg, ("D", "D_aux") if self.cfg.aux_classifier else ("D",))

    def translator(self) -> nn.Module:
        return self.networks["G"]


    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, n = self.cfg, self.networks
        photo, style = batch["photo"], batch["style"]
        if step == "init":
            con = perceptual_content_loss(self.cfg, n["G"](photo, style), photo)
            return {"loss": con, "content": con}
        if step == "D":
            cartoon, guided = batch["cartoon"], batch["guided"]
            with torch.no_grad():
                fake = n["G"](photo, style)
            real = losses.d_loss_real(n["D"](cartoon), c.adv_loss)          # eq 2: log D(c)
            gen = losses.d_loss_fake(n["D"](fake), c.adv_loss)              # log(1 − D(G(p)))
            edge = losses.d_loss_fake(n["D"](guided), c.adv_loss)           # log(1 − D(e))
            out = {"d_real": real, "d_fake": gen, "d_edge": edge}
            total = real + gen + edge
            if c.aux_classifier:                                           # eq 3, D_aux's terms
                edge_label = torch.full_like(style, self.edge_class)
                cls = F.cross_entropy(n["D_aux"](cartoon), style) + F.cross_entropy(n["D_aux"](guided), edge_label)
                out["aux_cls"] = cls
                total = total + c.w_style * cls
            return {"loss": total, **out}
        if step == "G":
            fake = n["G"](photo, style)
            adv = losses.g_loss(n["D"](fake), c.adv_loss)
            con = perceptual_content_loss(self.cfg, fake, photo)
            out = {"g_adv": adv, "content": con}
            total = adv + c.w_content * con
            if c.aux_classifier:                                           # eq 3, G's term −log D_aux(s|G(p))
                sty = F.cross_entropy(n["D_aux"](fake), style)
                out["g_style"] = sty
                total = total + c.w_style * sty
            return {"loss": total, **out}
        raise ValueError(f"multistyle has no step {step!r} (init, D, G)")
