"""UNIT (Liu, Breuel & Kautz, NeurIPS 2017), the shared-latent VAE-GAN row of Toon2real's tables (seeds 002/004).

Domains: C (cartoons) and R (photos), as in toon2real. Each domain has a VAE: an encoder E_c / E_r to the mean
μ of q(z|x) = N(μ, I) and a generator G_c / G_r from z; E_c and E_r **share their last layers**, G_c and G_r
**their first layers** (``S``: one residual block each side — the shared-latent assumption), so z is one space
for both domains. D_c, D_r are the two discriminators.

Losses (the paper's L_VAE, L_GAN and L_CC terms, weights as published: λ0 = 10, λ1 = λ3 = 0.1, λ2 = λ4 = 100):
- L_VAE: λ1·KL(q(z|x)‖N(0, I)) + λ2·‖G(z) − x‖₁ within each domain (a Laplacian p_G gives L1);
- L_GAN: λ0 · cross-entropy GAN on x_{c→r} = G_r(z_c) by D_r and x_{r→c} = G_c(z_r) by D_c;
- L_CC: λ3·KL of the re-encoded translation + λ4·‖G_c(z(x_{c→r})) − x_c‖₁ (and for R).
KL with unit variance is ½‖μ‖² per sample; we take the authors' normalisation, mean(μ²) over every element
(``_compute_kl`` in their trainer, with which the λ above were used); the sums over both domains below equal their
``kl_direct_link_w·(enc_loss + enc_loss)`` on the concatenated batch. z = μ + ε, ε ~ N(0, I), in training; z = μ
at inference (the authors' ``GaussianNoiseLayer``).
Which code the KL sees (``kl_on``): the paper's KL(q(z|x)‖N(0, I)) is a function of μ alone (``kl_on: mu``, the
default). The authors' NIPS-2017 code (``cocogan_trainer.py``, ``_compute_kl(shared)``) applies the same mean
square to the *noisy* shared code z = μ + ε that leaves their ``enc_shared`` (its last layer is the
``GaussianNoiseLayer``), for the direct and the cycle terms alike: ``kl_on: z``. In expectation that is
mean(μ²) + 1 with the same gradient 2μ/numel; per step its gradient carries the noise 2ε/numel.

Networks (authors' NIPS-2017 code, ``COCOResGen`` / ``COCODis`` with their ``exps/unit`` settings):
- E: c7s1-64 lReLU(0.01); c3s2-128 IN ReLU; c3s2-256 IN ReLU; 3 residual blocks (c3 IN ReLU c3 IN, + x);
  shared: 1 residual block → μ.
- G: shared: 1 residual block; 3 residual blocks; ConvT3s2-128 IN ReLU; ConvT3s2-64 IN ReLU; ConvT1-3; tanh.
- D: six c3s2 convs (64 … 2048) with lReLU(0.01), then c1-1 → raw scores (128² → 2×2); cross-entropy
  (``adv_loss: bce``; the later MUNIT-style re-release uses LSGAN, ``adv_loss: lsgan``).
  Zero padding, conv biases, IN without affine, N(0, 0.02) conv weights — all as in the authors' code.
Recipe (authors): Adam lr 1e-4, betas (0.5, 0.999), weight decay 1e-4 (added to each step's loss as
½·wd·‖θ‖², which gives Adam exactly the gradient its ``weight_decay`` would), batch 1, D step then G step;
500 000 iterations ≈ 100 epochs of Toon2real's ~5 000 images (``adv_epochs``). 128² images (Toon2real's tables).
``translate`` picks the exported direction (default cartoon → photo, the tables' task), as for toon2real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
from torch import nn

from toonlab import losses
from toonlab.config import ranged
from toonlab.models.base import Phase, Step, TwoWayModel, register


def _init(module: nn.Module) -> nn.Module:
    """Authors' ``gaussian_weights_init``: N(0, 0.02) conv weights (biases keep PyTorch's default)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
    return module


class ResBlockIN(nn.Module):
    """Authors' ``INSResBlock``: x + IN(c3(ReLU(IN(c3(x))))), zero padding, IN without affine. (B,C,H,W)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.InstanceNorm2d(ch), nn.ReLU(),
                                  nn.Conv2d(ch, ch, 3, 1, 1), nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UNITEncoder(nn.Sequential):
    """Domain-specific front of E: (B,3,H,W) [-1,1] → (B,4ch,H/4,W/4)."""

    def __init__(self, ch: int = 64, n_res: int = 3):
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 7, 1, 3), nn.LeakyReLU(0.01)]
        for i in range(2):
            layers += [nn.Conv2d(ch * 2 ** i, ch * 2 ** (i + 1), 3, 2, 1), nn.InstanceNorm2d(ch * 2 ** (i + 1)),
                       nn.ReLU()]
        layers += [ResBlockIN(ch * 4) for _ in range(n_res)]
        super().__init__(*layers)


class UNITDecoder(nn.Sequential):
    """Domain-specific back of G: (B,4ch,H/4,W/4) → (B,3,H,W) in [-1, 1]."""

    def __init__(self, ch: int = 64, n_res: int = 3):
        layers: list[nn.Module] = [ResBlockIN(ch * 4) for _ in range(n_res)]
        for i in (2, 1):
            layers += [nn.ConvTranspose2d(ch * 2 ** i, ch * 2 ** (i - 1), 3, 2, 1, output_padding=1),
                       nn.InstanceNorm2d(ch * 2 ** (i - 1)), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ch, 3, 1), nn.Tanh()]
        super().__init__(*layers)


class UNITShared(nn.Module):
    """The layers both domains share: ``enc`` (last of E, → μ) and ``dec`` (first of G, from z)."""

    def __init__(self, ch: int = 64, n_shared: int = 1):
        super().__init__()
        self.enc = nn.Sequential(*[ResBlockIN(ch * 4) for _ in range(n_shared)])
        self.dec = nn.Sequential(*[ResBlockIN(ch * 4) for _ in range(n_shared)])


class UNITDiscriminator(nn.Sequential):
    """Authors' ``COCODis`` for one domain: ``n_layers`` c3s2 convs with lReLU(0.01), widths ch·2^i, then c1-1.
    (B,3,H,W) → (B,1,H/2^n,W/2^n) raw scores."""

    def __init__(self, ch: int = 64, n_layers: int = 6):
        layers: list[nn.Module] = []
        cin = 3
        for i in range(n_layers):
            layers += [nn.Conv2d(cin, ch * 2 ** i, 3, 2, 1), nn.LeakyReLU(0.01)]
            cin = ch * 2 ** i
        layers.append(nn.Conv2d(cin, 1, 1))
        super().__init__(*layers)


class UNITTranslator(nn.Module):
    """Inference x → G_target(S.dec(S.enc(E_source(x)))) with z = μ. (B,3,H,W) [-1,1] → (B,3,H,W) [-1,1]."""

    def __init__(self, encoder: nn.Module, shared: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.shared, self.decoder = encoder, shared, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.shared.dec(self.shared.enc(self.encoder(x))))


def kl_unit_variance(mu: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, I) ‖ N(0, I)) up to the authors' normalisation: mean(μ²) over all elements (``_compute_kl``)."""
    return torch.mean(mu ** 2)


@register("unit")
class UNIT(TwoWayModel):
    """Shared-latent VAE-GAN. Batch: ``photo`` (R) and ``cartoon`` (C), (B,3,H,W) in [-1, 1]."""

    @dataclass
    class Config:
        ch: int = ranged(64, ge=1)         # base width (authors: 64)
        n_res: int = ranged(3, ge=0)       # domain-specific residual blocks in E and in G (authors: 3)
        n_shared: int = ranged(1, ge=1)    # shared residual blocks on each side of z (authors: 1)
        d_ch: int = ranged(64, ge=1)
        d_layers: int = ranged(6, ge=1)    # authors' COCODis n_layer
        adv_loss: Literal["bce", "lsgan"] = "bce"
        lambda_gan: float = ranged(10.0, ge=0)  # λ0
        lambda_kl: float = ranged(0.1, ge=0)  # λ1
        lambda_recon: float = ranged(100.0, ge=0)  # λ2
        lambda_kl_cycle: float = ranged(0.1, ge=0)  # λ3
        lambda_cycle: float = ranged(100.0, ge=0)  # λ4
        kl_on: Literal["mu", "z"] = "mu"  # paper: KL of q(z|x) (a function of μ); authors' code: on the noisy z
        weight_decay: float = ranged(1e-4, ge=0)  # authors' Adam weight decay (as an L2 term; module docstring)
        adv_epochs: int = ranged(100, ge=0)
        lr_g: float = ranged(1e-4, gt=0)
        lr_d: float = ranged(1e-4, gt=0)
        betas: tuple[float, float] = ranged((0.5, 0.999), ge=0, lt=1)
        translate: Literal["cartoon2photo", "photo2cartoon"] = "cartoon2photo"

    requires = ("photo", "cartoon")
    default_size = 128
    size_multiple = 4

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.ch < 1 or cfg.d_ch < 1 or cfg.n_res < 0 or cfg.n_shared < 1 or cfg.d_layers < 1:
            raise ValueError(f"{self.name}: ch/d_ch/d_layers/n_shared must be >= 1 and n_res >= 0")
        n = self.networks
        n["E_c"], n["E_r"] = (_init(UNITEncoder(cfg.ch, cfg.n_res)) for _ in range(2))
        n["S"] = _init(UNITShared(cfg.ch, cfg.n_shared))
        n["G_c"], n["G_r"] = (_init(UNITDecoder(cfg.ch, cfg.n_res)) for _ in range(2))
        n["D_c"], n["D_r"] = (_init(UNITDiscriminator(cfg.d_ch, cfg.d_layers)) for _ in range(2))

    GENERATORS = ("E_c", "E_r", "S", "G_c", "G_r")

    def phases(self) -> tuple[Phase, ...]:
        c = self.cfg
        # authors' loop: dis_update, then gen_update
        return (Phase("adv", c.adv_epochs, (Step("D", ("D_c", "D_r"), c.lr_d, c.betas),
                                            Step("G", self.GENERATORS, c.lr_g, c.betas))),)

    def translator(self) -> nn.Module:
        n = self.networks
        if self.cfg.translate == "cartoon2photo":
            return UNITTranslator(n["E_c"], n["S"], n["G_r"])
        return UNITTranslator(n["E_r"], n["S"], n["G_c"])

    # --- pieces -------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """μ = S.enc(E_domain(x)), (B,4ch,H/4,W/4)."""
        return self.networks["S"].enc(self.networks[f"E_{domain}"](x))

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        return self.networks[f"G_{domain}"](self.networks["S"].dec(z))

    def _sample(self, mu: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) if self.training else mu

    def _weight_decay(self, names: tuple[str, ...]) -> torch.Tensor:
        """½·wd·‖θ‖² over the step's networks: its gradient wd·θ is what Adam(weight_decay=wd) adds."""
        return 0.5 * self.cfg.weight_decay * sum(p.pow(2).sum() for k in names for p in self.networks[k].parameters())

    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if step == "G":
            return self._generator_step(batch["cartoon"], batch["photo"])
        if step == "D":
            return self._discriminator_step(batch["cartoon"], batch["photo"])
        raise ValueError(f"{self.name}: unknown step {step!r} (D, G)")

    def _generator_step(self, x_c: torch.Tensor, x_r: torch.Tensor) -> dict[str, torch.Tensor]:
        c, n = self.cfg, self.networks
        mu_c, mu_r = self.encode(x_c, "c"), self.encode(x_r, "r")
        z_c, z_r = self._sample(mu_c), self._sample(mu_r)
        x_cc, x_rr = self.decode(z_c, "c"), self.decode(z_r, "r")      # within-domain reconstructions
        x_cr, x_rc = self.decode(z_c, "r"), self.decode(z_r, "c")      # translations C→R, R→C
        mu_cr, mu_rc = self.encode(x_cr, "r"), self.encode(x_rc, "c")  # re-encoded translations
        z_cr, z_rc = self._sample(mu_cr), self._sample(mu_rc)
        x_crc, x_rcr = self.decode(z_cr, "c"), self.decode(z_rc, "r")  # C→R→C, R→C→R
        gan = losses.g_loss(n["D_r"](x_cr), c.adv_loss) + losses.g_loss(n["D_c"](x_rc), c.adv_loss)  # L_GAN
        # the KL's argument: μ (paper) or the noisy z the decoders saw (authors' code), module docstring
        kc, kr, kcr, krc = (mu_c, mu_r, mu_cr, mu_rc) if c.kl_on == "mu" else (z_c, z_r, z_cr, z_rc)
        kl = kl_unit_variance(kc) + kl_unit_variance(kr)                                           # L_VAE
        recon = losses.l1(x_cc, x_c) + losses.l1(x_rr, x_r)                                        # L_VAE
        kl_cyc = kl_unit_variance(kcr) + kl_unit_variance(krc)                                     # L_CC
        cyc = losses.l1(x_crc, x_c) + losses.l1(x_rcr, x_r)                                        # L_CC
        wd = self._weight_decay(self.GENERATORS)
        total = (c.lambda_gan * gan + c.lambda_kl * kl + c.lambda_recon * recon + c.lambda_kl_cycle * kl_cyc
                 + c.lambda_cycle * cyc + wd)
        return {"loss": total, "g_adv": gan, "kl": kl, "recon": recon, "kl_cycle": kl_cyc, "cycle": cyc,
                "weight_decay": wd}

    def _discriminator_step(self, x_c: torch.Tensor, x_r: torch.Tensor) -> dict[str, torch.Tensor]:
        c, n = self.cfg, self.networks
        with torch.no_grad():
            x_cr = self.decode(self._sample(self.encode(x_c, "c")), "r")
            x_rc = self.decode(self._sample(self.encode(x_r, "r")), "c")
        d_r = losses.d_loss_real(n["D_r"](x_r), c.adv_loss) + losses.d_loss_fake(n["D_r"](x_cr), c.adv_loss)
        d_c = losses.d_loss_real(n["D_c"](x_c), c.adv_loss) + losses.d_loss_fake(n["D_c"](x_rc), c.adv_loss)
        wd = self._weight_decay(("D_c", "D_r"))
        return {"loss": c.lambda_gan * (d_r + d_c) + wd, "d_r": d_r, "d_c": d_c, "weight_decay": wd}
