"""CartoonGAN + (residual) saliency network + CBAM (PAPERS.md §3, seed 003, Zhang & Yu).

Symbols of seed 003 (its eq numbers):
- ``G``: CartoonGAN's generator (``toonlab.models.cartoongan.CartoonGANGenerator``, reused layer for layer) with
  CBAM (eqs 2–5) on the residual branch of each of its 8 residual blocks, before the addition (the CBAM paper's
  "CBAM in a ResBlock" placement; the seed's figure draws CBAM beside the residual trunk without more detail).
- ``S``: the saliency network (Fig. 7): k7n64 → k3s2n128 → k3s2n256 → ``sal_blocks`` blocks at 256 →
  up k3n128 → up k3n64 → k7n64, IN + ReLU; then a 1×1 conv to one channel and a sigmoid give the saliency map
  S(p) ∈ (0, 1) (our head: the figure stops at k7n64 and eq 10 compares S(p) with a map in [0, 1]).
  ``saliency: plain`` — the middle blocks are two plain convs each; ``ressal`` — the same convs with identity
  skips (residual blocks), the paper's "ResSal". Same parameter count, so the ablation isolates the skips.
- Fusion ("concatenated onto CartoonGAN"): S's last 64-channel features (k7n64) are concatenated with G's last
  64-channel features (after its second up-sampling block), and G's output conv c7-3 reads those 128 channels.
- Losses: LSGAN with edge-smoothed cartoons e (``smooth``) as a third set of fakes — eq 8
  L_adv(D) = E[(D(a) − 1)²] + E[D(G(p))²] + E[D(e)²], eq 7 L_adv(G) = E[(D(G(p)) − 1)²]; eq 9 content
  L_con = E‖VGG(G(p)) − VGG(p)‖₁ (conv4_4); eq 10 saliency L_s = E‖S(p) − z‖₁ against maps z (``saliency``,
  (B,1,H,W) in [0, 1], from MBD/RBD); eq 11 L = L_adv(G) + L_adv(D) + ω_con·L_con + ω_s·L_s.
- eq 12, our reading of the OCR: ω_s decays geometrically per epoch, ω_s(e) = ω_s · ω_sal^(e − e₀) with ω_s = 1
  and ω_sal = 0.96 (the values of the ablation text; ω_con = 0.25). The trainer calls ``set_epoch(e)``
  (0-based) at the start of every epoch. Where the decay starts (e₀) the seed does not say: our choice is
  ``saliency_decay_start: 0``, the first training epoch, because S is trained by L_s from the first init epoch
  on (the decay tracks how long S has learned); ``saliency_decay_start: 10`` (= ``init_epochs``) holds
  ω_s = 1.0 through the init phase and starts the decay with the adversarial phase.

Recipe: CartoonGAN's (seed 003 is built on it and gives no schedule): 10 content-only init epochs (with the
saliency loss, so S is pre-trained with G), lr 2e-4 for G and D, Adam(0.5, 0.999); 200 adversarial epochs as
toonlab's cartoongan baseline; 256² images.
Ablation rows (Tables 1–2): ``saliency: none, cbam: false`` = CartoonGAN's architecture with this recipe (LSGAN,
ω_con 0.25), not CartoonGAN itself (BCE, ω = 10: the ``cartoongan`` system); ``saliency: plain`` (+Sal);
``saliency: plain, cbam: true`` (+Sal+CBAM); ``saliency: ressal, cbam: true`` (+ResSal+CBAM, the default).
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
from toonlab.models.cartoongan import CartoonGANDiscriminator, CartoonGANGenerator
from toonlab.nn.blocks import ConvNormAct, ResBlock, TransposedUp, init_normal
from toonlab.nn.cbam import CBAM
from toonlab.nn.perceptual import Perceptual


class PlainBlock(ResBlock):
    """The middle block of the plain saliency network: a ResBlock without its identity skip (same layers and
    state-dict keys), so ``plain`` and ``ressal`` differ only by the skips; (B,C,H,W) → (B,C,H,W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SaliencyNet(nn.Module):
    """S: (B,3,H,W) [-1,1] → (features (B,ch,H,W), map (B,1,H,W) in (0, 1)); H, W multiples of 4."""

    def __init__(self, residual: bool = True, blocks: int = 4, ch: int = 64):
        super().__init__()
        c1, c2, c3 = ch, ch * 2, ch * 4
        middle = [ResBlock(c3, "in", "relu") if residual else PlainBlock(c3) for _ in range(blocks)]
        self.body = nn.Sequential(
            ConvNormAct(3, c1, 7, 1, "in", "relu"),           # k7n64
            ConvNormAct(c1, c2, 3, 2, "in", "relu"),          # k3n128 (down)
            ConvNormAct(c2, c3, 3, 2, "in", "relu"),          # k3n256 (down)
            *middle,                                          # residual blocks (ResSal) / plain blocks (Sal)
            TransposedUp(c3, c2, "in", "relu"),               # k3n128 (up)
            TransposedUp(c2, c1, "in", "relu"),               # k3n64 (up)
            ConvNormAct(c1, c1, 7, 1, "in", "relu"),          # k7n64
        )
        self.head = nn.Conv2d(c1, 1, 1)                       # → 1-channel map (our head), sigmoid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, torch.sigmoid(self.head(features))


class SalCBAMGenerator(CartoonGANGenerator):
    """CartoonGAN G + CBAM in every residual block + saliency features fused before the output conv.

    ``forward(x (B,3,H,W) [-1,1]) -> (B,3,H,W) [-1,1]``; ``forward_with_saliency(x)`` also returns S(p) (B,1,H,W)
    (or None without a saliency network). With ``cbam=False, saliency=None`` it is CartoonGAN's G exactly."""

    def __init__(self, n_res: int = 8, ch: int = 64, cbam: bool = True,
                 saliency: Literal["none", "plain", "ressal"] = "ressal", sal_blocks: int = 4,
                 cbam_reduction: int = 16):
        super().__init__(n_res, ch)
        self.cbam = nn.ModuleList(CBAM(ch * 4, cbam_reduction) for _ in range(n_res)) if cbam else None
        self.saliency = SaliencyNet(saliency == "ressal", sal_blocks, ch) if saliency != "none" else None
        if self.saliency is not None:  # the output conv reads [G features; S features]
            self.deconv03_1 = nn.Conv2d(ch * 2, 3, 7, padding=3, padding_mode="reflect")

    def forward_with_saliency(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = F.relu(self.in01_1(self.conv01_1(x)))
        y = F.relu(self.in02_1(self.conv02_2(self.conv02_1(y))))
        y = F.relu(self.in03_1(self.conv03_2(self.conv03_1(y))))
        for i in range(4, 4 + self.n_res):
            h = F.relu(getattr(self, f"in{i:02d}_1")(getattr(self, f"conv{i:02d}_1")(y)))
            r = getattr(self, f"in{i:02d}_2")(getattr(self, f"conv{i:02d}_2")(h))
            y = y + (self.cbam[i - 4](r) if self.cbam is not None else r)   # CBAM before the addition
        y = F.relu(getattr(self, f"in{4 + self.n_res:02d}_1")(self.deconv01_2(self.deconv01_1(y))))
        y = F.relu(getattr(self, f"in{5 + self.n_res:02d}_1")(self.deconv02_2(self.deconv02_1(y))))
        sal_map = None
        if self.saliency is not None:
            sal_features, sal_map = self.saliency(x)
            y = torch.cat([y, sal_features], dim=1)
        return torch.tanh(self.deconv03_1(y)), sal_map

    def forward(self, x: torch.Tensor, with_saliency: bool = False):
        # training calls G(x, with_saliency=True): through __call__, so that a DDP wrapper (toonlab.train) sees it
        out = self.forward_with_saliency(x)
        return out if with_saliency else out[0]


@register("salcbam")
class SalCBAM(Model):
    """Batch: ``photo``, ``cartoon``, ``smooth`` (edge-smoothed cartoon), ``saliency`` (B,1,H,W) [0,1] maps of the
    photos (unless ``saliency: none``). Call ``set_epoch(e)`` each epoch for the ω_s decay (eq 12)."""

    @dataclass
    class Config:
        saliency: Literal["none", "plain", "ressal"] = "ressal"   # Tables 1–2 rows
        cbam: bool = True
        n_res: int = ranged(8, ge=0)       # CartoonGAN's residual blocks
        ch: int = ranged(64, ge=1)         # base width of G and S (CartoonGAN / seed 003: 64)
        sal_blocks: int = ranged(4, ge=0)  # middle blocks of S (figure shows "residual blocks"; count is ours)
        cbam_reduction: int = ranged(16, ge=1)  # CBAM paper's r
        d_norm: Literal["bn", "in", "ln", "none"] = "bn"   # CartoonGAN's D
        adv_loss: Literal["lsgan", "bce", "hinge"] = "lsgan"   # eqs 7–8
        w_content: float = ranged(0.25, ge=0)  # ω_con
        w_saliency: float = ranged(1.0, ge=0)  # ω_s at epoch 0
        saliency_decay: float = ranged(0.96, ge=0)  # ω_sal: ω_s(e) = ω_s · ω_sal^(e − e₀) (eq 12)
        saliency_decay_start: int = ranged(0, ge=0)  # e₀; 0 = first epoch (our choice), init_epochs = adv phase
        init_epochs: int = ranged(10, ge=0)  # CartoonGAN's content-only initialisation
        adv_epochs: int = ranged(200, ge=0)
        lr_init: float = ranged(2e-4, gt=0)
        lr_g: float = ranged(2e-4, gt=0)
        lr_d: float = ranged(2e-4, gt=0)
        betas: tuple[float, float] = ranged((0.5, 0.999), ge=0, lt=1)
        perceptual: Perceptual = "auto"  # content-loss backbone (toonlab.nn.perceptual; papers: vgg19)

    default_size = 256
    size_multiple = 4

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.requires = ("photo", "cartoon", "smooth") + (("saliency",) if cfg.saliency != "none" else ())
        self.networks["G"] = SalCBAMGenerator(cfg.n_res, cfg.ch, cfg.cbam, cfg.saliency, cfg.sal_blocks,
                                              cfg.cbam_reduction)
        self.networks["D"] = init_normal(CartoonGANDiscriminator(cfg.d_norm))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the model the (0-based) epoch, for ω_s's decay (eq 12). Called by the trainer."""
        self.epoch = int(epoch)

    @property
    def saliency_weight(self) -> float:
        """ω_s(e) = ω_s · ω_sal^max(0, e − e₀) (eq 12); constant ω_s before epoch e₀."""
        c = self.cfg
        return c.w_saliency * c.saliency_decay ** max(0, self.epoch - c.saliency_decay_start)

    def phases(self) -> tuple[Phase, ...]:
        return init_then_adversarial(self.cfg)

    def translator(self) -> nn.Module:
        return self.networks["G"]


    def _generator_losses(self, photo: torch.Tensor, batch: Mapping[str, torch.Tensor], adversarial: bool):
        c, G = self.cfg, self.networks["G"]
        fake, sal_map = G(photo, with_saliency=True)
        con = perceptual_content_loss(self.cfg, fake, photo)
        out = {"content": con}
        total = c.w_content * con
        if adversarial:
            out["g_adv"] = losses.g_loss(self.networks["D"](fake), c.adv_loss)     # eq 7
            total = total + out["g_adv"]
        if sal_map is not None:
            out["saliency"] = losses.l1(sal_map, batch["saliency"])                 # eq 10
            total = total + self.saliency_weight * out["saliency"]
        return {"loss": total, **out}

    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        photo = batch["photo"]
        if step == "init":
            return self._generator_losses(photo, batch, adversarial=False)
        if step == "G":
            return self._generator_losses(photo, batch, adversarial=True)
        if step == "D":
            c, D = self.cfg, self.networks["D"]
            with torch.no_grad():
                fake = self.networks["G"](photo)
            real = losses.d_loss_real(D(batch["cartoon"]), c.adv_loss)   # eq 8: (D(a) − 1)²
            gen = losses.d_loss_fake(D(fake), c.adv_loss)                # D(G(p))²
            edge = losses.d_loss_fake(D(batch["smooth"]), c.adv_loss)    # D(e)²
            return {"loss": real + gen + edge, "d_real": real, "d_fake": gen, "d_edge": edge}
        raise ValueError(f"salcbam has no step {step!r} (init, D, G)")
