"""Toon2real — cartoon → photo (PAPERS.md §4, seeds 002 and 004): CycleGAN with LSGAN and spectral norm on D.

Symbols (seed 004 Tables 1–2, seed 002 eqs 1–3):
- ``G_r``: C → R and ``G_c``: R → C, Johnson et al. generators (Table 1): c7-64, c3s2-128, c3s2-256,
  ``n_blocks`` × residual(256, 3×3), two fractionally strided convs (128, 64), c7-3; IN + ReLU. Table 1 lists
  "InstanceNorm, ReLU" on the last layer too; like every public CycleGAN we end with tanh (images live in [-1, 1]).
- ``D_r`` (real photos vs G_r(c)) and ``D_c`` (cartoons vs G_c(r)): PatchGAN (Table 2): c4s2-64 lReLU,
  c4s2-128 IN lReLU, c4s2-256 IN lReLU, c4s2-512 IN lReLU, then the usual 1-channel c4s1 output conv; spectral
  norm on every conv (``spectral_norm``). ``d_layout = "table2"`` follows the table's strides (all four s2,
  receptive field 94×94); ``"patchgan70"`` is CycleGAN's 70×70 PatchGAN that the text names (the 512 layer at
  stride 1).
- Losses: LSGAN (eq 1) for both directions; forward cycle ‖G_c(G_r(c)) − c‖₁ (eq 2) and backward cycle
  ‖G_r(G_c(r)) − r‖₁ (eq 3), weighted by ``lambda_cyc`` — the seeds give no value, so CycleGAN's 10; optional
  identity loss (CycleGAN's λ_idt·λ_cyc·(‖G_r(r) − r‖₁ + ‖G_c(c) − c‖₁)), off by default (the seeds do not use it).
- D updates see generated images through 50-image history pools (CycleGAN's ImagePool), each D loss halved
  (CycleGAN's ``0.5 * (real + fake)``) so D learns at half G's pace.

Recipe: 128² images (seeds), lr 2e-4 and Adam(0.5, 0.999), batch 1 (CycleGAN's — the seeds give none),
200 epochs (the seeds' FID curves run to epoch 200; CycleGAN's linear decay over the second half is the trainer's
option). No init phase: cycle models train adversarially from the first step; each iteration runs ``G`` then
``D`` (CycleGAN's order: D sees the fakes that G's step just made).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
from torch import nn

from toonlab import losses
from toonlab.config import ranged
from toonlab.models.base import Phase, Step, TwoWayModel, register
from toonlab.nn.blocks import ConvNormAct, ResBlock, TransposedUp, apply_spectral_norm, init_normal, make_norm
from toonlab.nn.image_pool import ImagePool


class JohnsonGenerator(nn.Sequential):
    """Johnson et al. / CycleGAN ResNet generator: (B,3,H,W) [-1,1] → (B,3,H,W) [-1,1]; H, W multiples of 4.

    c7-ngf, c3s2-2ngf, c3s2-4ngf, ``n_blocks`` × ResBlock(4ngf), up ×2 to 2ngf and ngf (ConvTranspose), c7-3, tanh.
    Reflect padding and instance norm, as CycleGAN. Where CycleGAN puts a bias on each conv and no affine on its
    IN, toonlab's shared blocks do the reverse: net +C parameters per norm (resnet-9: 11,383,427 vs 11,378,179)."""

    def __init__(self, ngf: int = 64, n_blocks: int = 6):
        layers: list[nn.Module] = [
            ConvNormAct(3, ngf, 7, 1, "in", "relu"),
            ConvNormAct(ngf, ngf * 2, 3, 2, "in", "relu"),
            ConvNormAct(ngf * 2, ngf * 4, 3, 2, "in", "relu"),
        ]
        layers += [ResBlock(ngf * 4, "in", "relu") for _ in range(n_blocks)]
        layers += [
            TransposedUp(ngf * 4, ngf * 2, "in", "relu"),
            TransposedUp(ngf * 2, ngf, "in", "relu"),
            ConvNormAct(ngf, 3, 7, 1, "none", "tanh"),
        ]
        super().__init__(*layers)


class PatchDiscriminator(nn.Sequential):
    """PatchGAN: (B,3,H,W) → (B,1,h,w) raw LSGAN scores. 4×4 convs with zero padding 1 (as pix2pix/CycleGAN).

    ``layout="table2"``: c4s2-ndf (no norm), c4s2-2ndf, c4s2-4ndf, c4s2-8ndf (IN, lReLU) → c4s1-1; 128² → 7².
    ``layout="patchgan70"``: the same with the 8ndf conv at stride 1 (70×70 receptive field); 128² → 14²."""

    def __init__(self, ndf: int = 64, layout: Literal["table2", "patchgan70"] = "table2"):
        last_stride = 2 if layout == "table2" else 1
        widths = (ndf, ndf * 2, ndf * 4, ndf * 8)
        strides = (2, 2, 2, last_stride)
        layers: list[nn.Module] = []
        cin = 3
        for i, (cout, s) in enumerate(zip(widths, strides)):
            norm = "none" if i == 0 else "in"  # Table 2: no norm on the first layer
            layers += [nn.Conv2d(cin, cout, 4, s, padding=1, bias=norm == "none"), make_norm(norm, cout),
                       nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 4, 1, padding=1))
        super().__init__(*layers)


@register("toon2real")
class Toon2Real(TwoWayModel):
    """Cartoon → photo CycleGAN with spectral-norm PatchGANs (seeds 002/004). Batch: ``photo`` (real, R) and
    ``cartoon`` (C), both (B,3,H,W) in [-1, 1]. ``translator()`` is G_r (cartoon → photo), or G_c with
    ``translate: photo2cartoon``."""

    @dataclass
    class Config:
        ngf: int = ranged(64, ge=1)        # generator base width (Table 1: 64)
        ndf: int = ranged(64, ge=1)        # discriminator base width (Table 2: 64)
        n_blocks: int = ranged(6, ge=0)    # residual blocks (Table 1: 6)
        d_layout: Literal["table2", "patchgan70"] = "table2"
        spectral_norm: bool = True         # on every D conv (the seeds' contribution)
        adv_loss: Literal["lsgan", "bce", "hinge"] = "lsgan"   # eq 1: least squares
        lambda_cyc: float = ranged(10.0, ge=0)  # eqs 2–3 weight; seeds silent → CycleGAN's 10
        lambda_identity: float = ranged(0.0, ge=0)  # CycleGAN's λ_idt (0.5 there); 0 = off (seeds do not use it)
        pool_size: int = ranged(50, ge=0)  # CycleGAN's history buffer
        adv_epochs: int = ranged(200, ge=0)  # seeds' training curves: 200 epochs
        lr_g: float = ranged(2e-4, gt=0)   # CycleGAN's (seeds silent)
        lr_d: float = ranged(2e-4, gt=0)
        betas: tuple[float, float] = ranged((0.5, 0.999), ge=0, lt=1)
        # which of the two generators translator() exports: G_r (cartoon → photo, the seeds' task) or G_c
        # (photo → cartoon, for CycleGAN rows in photo → cartoon tables); it travels with the export's config
        translate: Literal["cartoon2photo", "photo2cartoon"] = "cartoon2photo"

    requires = ("photo", "cartoon")
    default_size = 128
    size_multiple = 4

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.n_blocks < 0 or cfg.ngf < 1 or cfg.ndf < 1:
            raise ValueError(f"{self.name}: ngf/ndf must be >= 1 and n_blocks >= 0")
        for key in ("G_r", "G_c"):
            self.networks[key] = init_normal(JohnsonGenerator(cfg.ngf, cfg.n_blocks))
        for key in ("D_r", "D_c"):
            d = init_normal(PatchDiscriminator(cfg.ndf, cfg.d_layout))  # N(0, 0.02) as CycleGAN, then SN
            self.networks[key] = apply_spectral_norm(d) if cfg.spectral_norm else d
        self.pool_r = ImagePool(cfg.pool_size)  # fakes G_r(c) seen by D_r
        self.pool_c = ImagePool(cfg.pool_size)  # fakes G_c(r) seen by D_c
        self._fakes: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (batch cartoon, fake_r, fake_c)

    def extra_training_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The image pools' contents, for an exact resume (the trainer saves this beside the networks)."""
        return {"pool_r": self.pool_r.state_dict(), "pool_c": self.pool_c.state_dict()}

    def load_extra_training_state(self, state: Mapping[str, dict[str, torch.Tensor]]) -> None:
        self.pool_r.load_state_dict(state["pool_r"])
        self.pool_c.load_state_dict(state["pool_c"])

    def phases(self) -> tuple[Phase, ...]:
        c = self.cfg
        return (Phase("adv", c.adv_epochs, (Step("G", ("G_r", "G_c"), c.lr_g, c.betas),
                                            Step("D", ("D_r", "D_c"), c.lr_d, c.betas))),)

    def translator(self) -> nn.Module:
        return self.networks["G_r" if self.cfg.translate == "cartoon2photo" else "G_c"]

    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        real_c, real_r = batch["cartoon"], batch["photo"]
        if step == "G":
            return self._generator_step(real_c, real_r)
        if step == "D":
            return self._discriminator_step(real_c, real_r)
        raise ValueError(f"{self.name}: unknown step {step!r} (G, D)")

    def _generator_step(self, real_c: torch.Tensor, real_r: torch.Tensor) -> dict[str, torch.Tensor]:
        c, n = self.cfg, self.networks
        fake_r = n["G_r"](real_c)                      # G_r(c)
        fake_c = n["G_c"](real_r)                      # G_c(r)
        adv_r = losses.g_loss(n["D_r"](fake_r), c.adv_loss)   # eq 1 for G_r
        adv_c = losses.g_loss(n["D_c"](fake_c), c.adv_loss)   # eq 1 for G_c
        cyc_f = losses.l1(n["G_c"](fake_r), real_c)    # eq 2: forward consistency
        cyc_b = losses.l1(n["G_r"](fake_c), real_r)    # eq 3: backward consistency
        total = adv_r + adv_c + c.lambda_cyc * (cyc_f + cyc_b)
        out = {"adv_r": adv_r, "adv_c": adv_c, "cycle_forward": cyc_f, "cycle_backward": cyc_b}
        if c.lambda_identity > 0:
            idt = losses.l1(n["G_r"](real_r), real_r) + losses.l1(n["G_c"](real_c), real_c)
            total = total + c.lambda_identity * c.lambda_cyc * idt
            out["identity"] = idt
        # keep this iteration's fakes for the D step that follows (CycleGAN's order), tied to this batch
        self._fakes = (real_c, fake_r.detach(), fake_c.detach())
        out["loss"] = total
        return out

    def _discriminator_step(self, real_c: torch.Tensor, real_r: torch.Tensor) -> dict[str, torch.Tensor]:
        c, n = self.cfg, self.networks
        if self._fakes is not None and self._fakes[0] is real_c:
            _, fake_r, fake_c = self._fakes
        else:  # D step without the G step on this batch first: make the fakes now
            with torch.no_grad():
                fake_r, fake_c = n["G_r"](real_c), n["G_c"](real_r)
        self._fakes = None
        fake_r, fake_c = self.pool_r.query(fake_r), self.pool_c.query(fake_c)
        d_r = 0.5 * (losses.d_loss_real(n["D_r"](real_r), c.adv_loss) + losses.d_loss_fake(n["D_r"](fake_r), c.adv_loss))
        d_c = 0.5 * (losses.d_loss_real(n["D_c"](real_c), c.adv_loss) + losses.d_loss_fake(n["D_c"](fake_c), c.adv_loss))
        return {"loss": d_r + d_c, "d_r": d_r, "d_c": d_c}
