"""SingleGAN (Yu, Cai, Ying, Li & Li, ACCV 2018), the "base model" row of Toon2real's Table 3 (seed 004).

One generator G(x, d) translates an image into the domain named by a one-hot code d; one discriminator per domain
(D_c for cartoons, D_r for photos); cycle consistency G(G(x, d_target), d_source) ≈ x. Domains: 0 = cartoon (C),
1 = photo (R). Everything below follows the authors' released code (github.com/Xiaoming-Yu/SingleGAN,
``models/model.py``, ``models/single_gan.py``, ``scripts/train_base.sh``):

- **G** (``SingleGenerator``, ngf 64, 6 blocks): c7s1-64, c4s2-128, c4s2-256 (reflect padding), each followed by
  a conditional-bias instance norm (CBIN) and ReLU; 6 residual blocks (c3, CBIN, ReLU, c3, CBIN, + x); two
  ConvT4s2 up-sampling layers (256→128→64) with plain IN (no affine) + ReLU; c7s1-3 + tanh. No conv biases; every
  conv spectrally normalised (the authors added SN to this release: "SN can help stabilize the training").
- **CBIN** (``CBINorm2d``): (IN(x) + tanh(W·d + b)) · γ + β — the domain code shifts the normalised features.
- **D** per domain (``D_NET_Multi``): two scales — D_NET(64) on x and D_NET(32) on avg-pool(3, s2)(x); D_NET =
  three c4s2 convs (widths ndf, 2ndf, 4ndf, lReLU 0.2, reflect padding, SN) then a c4s1 conv to 1 channel.
- **Losses**: LSGAN summed over the two scales (``c_gan_mode: lsgan``); D loss = fake + real terms; G loss =
  adversarial + λ_cyc·‖G(G(x, d_t), d_s) − x‖₁ with λ_cyc = 10; identity loss off (λ_ide = 0, ``train_base.sh``).
- **Recipe**: Adam lr 1e-4, betas (0.5, 0.999), batch 1 per domain, 128² crops of 143² images, 100 epochs +
  100 of linear decay to zero (``niter`` / ``niter_decay``: the trainer's ``lr_decay: linear``); each iteration
  updates the D's, then G (``update_model``).

Init (authors' ``weights_init('xavier')``, applied to G and every D): Xavier-normal with gain √2 on the weight of
every Conv, ConvTranspose and Linear, zero on their biases. Under the hook-based spectral norm a module's ``weight``
is, until the first forward, a view of the same storage as the trained ``weight_orig``, so the authors' in-place
call initialises ``weight_orig`` itself, std √2·√(2/(fan_in + fan_out)) (PyTorch's default is 1/√(3·fan_in): on
the 256→256 3×3 residual convs 0.029 against 0.012); ``authors_init`` does the same explicitly. The CBIN scale γ
starts at 1 and β at 0 (``_BatchNorm.reset_parameters``). ``translate`` picks the exported direction (default
cartoon → photo, the seeds' task).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from toonlab import losses
from toonlab.config import ranged
from toonlab.models.base import Phase, Step, TwoWayModel, register

DOMAINS = ("cartoon", "photo")  # domain code index: 0 = C, 1 = R
# the authors' hook-based spectral norm (torch.nn.utils.spectral_norm), not the parametrization: it also traces
# to ONNX (the parametrization's power iteration uses aten::vdot, which the ONNX exporter lacks)
_sn = nn.utils.spectral_norm


def _conv(cin: int, cout: int, k: int, stride: int, pad: int, bias: bool = False) -> nn.Sequential:
    """Authors' ``Conv2dBlock`` core: reflection pad then a spectrally normalised conv."""
    return nn.Sequential(nn.ReflectionPad2d(pad), _sn(nn.Conv2d(cin, cout, k, stride, 0, bias=bias)))


def authors_init(net: nn.Module) -> nn.Module:
    """Authors' ``weights_init('xavier')`` on every Conv / ConvTranspose / Linear of ``net``: Xavier-normal, gain √2,
    written into ``weight_orig`` where spectral norm holds the trained weight; biases zero. Returns ``net``."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(getattr(m, "weight_orig", m.weight), gain=math.sqrt(2))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


class CBIN(nn.Module):
    """Conditional-bias instance norm: (IN(x) + tanh(W·d + b)) · γ + β; x (B,C,H,W), d (B,n_domains) one-hot."""

    def __init__(self, channels: int, n_domains: int = 2, eps: float = 1e-5):
        super().__init__()
        self.con_bias = nn.Linear(n_domains, channels)  # initialised by authors_init with the rest of G
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        # a plain IN module (no affine, no state) so tiled inference can share image-wide statistics through it
        self.norm = nn.InstanceNorm2d(channels, eps=eps)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        shift = torch.tanh(self.con_bias(d))[:, :, None, None]
        return (self.norm(x) + shift) * self.weight[:, None, None] + self.bias[:, None, None]


class _CResBlock(nn.Module):
    def __init__(self, ch: int, n_domains: int):
        super().__init__()
        self.c1, self.n1 = _conv(ch, ch, 3, 1, 1), CBIN(ch, n_domains)
        self.c2, self.n2 = _conv(ch, ch, 3, 1, 1), CBIN(ch, n_domains)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return x + self.n2(self.c2(F.relu(self.n1(self.c1(x), d))), d)


class SingleGenerator(nn.Module):
    """G(x, d): (B,3,H,W) [-1,1] and (B,n_domains) one-hot → (B,3,H,W) [-1,1]; H, W multiples of 4."""

    def __init__(self, ngf: int = 64, n_blocks: int = 6, n_domains: int = 2):
        super().__init__()
        self.c1, self.n1 = _conv(3, ngf, 7, 1, 3), CBIN(ngf, n_domains)
        self.c2, self.n2 = _conv(ngf, ngf * 2, 4, 2, 1), CBIN(ngf * 2, n_domains)
        self.c3, self.n3 = _conv(ngf * 2, ngf * 4, 4, 2, 1), CBIN(ngf * 4, n_domains)
        self.blocks = nn.ModuleList([_CResBlock(ngf * 4, n_domains) for _ in range(n_blocks)])
        self.up = nn.Sequential(
            _sn(nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False)), nn.InstanceNorm2d(ngf * 2), nn.ReLU(),
            _sn(nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False)), nn.InstanceNorm2d(ngf), nn.ReLU(),
            _conv(ngf, 3, 7, 1, 3), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.n1(self.c1(x), d))
        x = F.relu(self.n2(self.c2(x), d))
        x = F.relu(self.n3(self.c3(x), d))
        for block in self.blocks:
            x = block(x, d)
        return self.up(x)


class _DNet(nn.Sequential):
    """Authors' ``D_NET`` (block_num 3): c4s2 ndf, 2ndf, 4ndf (lReLU 0.2), then c4s1-1 with bias; SN everywhere."""

    def __init__(self, ndf: int):
        layers: list[nn.Module] = []
        cin = 3
        for i in range(3):
            cout = min(ndf * 2 ** i, ndf * 8)
            layers += [_conv(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(_conv(cin, 1, 4, 1, 1, bias=True))
        super().__init__(*layers)


class MultiScaleD(nn.Module):
    """Authors' ``D_NET_Multi``: [D_NET(ndf)(x), D_NET(ndf/2)(avgpool3s2(x))] — a list of two raw score maps."""

    def __init__(self, ndf: int = 64):
        super().__init__()
        self.model_1, self.model_2 = _DNet(ndf), _DNet(max(1, ndf // 2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.model_1(x), self.model_2(F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))]


def domain_code(index: int, batch: int, like: torch.Tensor, n_domains: int = 2) -> torch.Tensor:
    """(batch, n_domains) one-hot rows for domain ``index``, on ``like``'s device and dtype."""
    code = torch.zeros(batch, n_domains, device=like.device, dtype=like.dtype)
    code[:, index] = 1
    return code


class SingleGANTranslator(nn.Module):
    """Inference G(x, d_target) for a fixed target domain. (B,3,H,W) [-1,1] → (B,3,H,W) [-1,1]; keys ``G.*``."""

    def __init__(self, G: nn.Module, target: int):
        super().__init__()
        self.G, self.target = G, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.G(x, domain_code(self.target, x.shape[0], x))


@register("singlegan")
class SingleGAN(TwoWayModel):
    """SingleGAN base model for two domains. Batch: ``photo`` (R) and ``cartoon`` (C), (B,3,H,W) in [-1, 1]."""

    @dataclass
    class Config:
        ngf: int = ranged(64, ge=1)        # authors' train_base.sh
        ndf: int = ranged(64, ge=2)
        n_blocks: int = ranged(6, ge=0)    # authors' e_blocks
        adv_loss: Literal["lsgan", "bce"] = "lsgan"   # authors' c_gan_mode default
        lambda_cyc: float = ranged(10.0, ge=0)
        lambda_identity: float = ranged(0.0, ge=0)  # authors' λ_ide (1 only for apple2orange)
        adv_epochs: int = ranged(200, ge=0)  # niter 100 + niter_decay 100
        lr_g: float = ranged(1e-4, gt=0)
        lr_d: float = ranged(1e-4, gt=0)
        betas: tuple[float, float] = ranged((0.5, 0.999), ge=0, lt=1)
        translate: Literal["cartoon2photo", "photo2cartoon"] = "cartoon2photo"

    requires = ("photo", "cartoon")
    default_size = 128
    size_multiple = 4

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.ngf < 1 or cfg.ndf < 2 or cfg.n_blocks < 0:
            raise ValueError(f"{self.name}: ngf must be >= 1, ndf >= 2 and n_blocks >= 0")
        self.networks["G"] = authors_init(SingleGenerator(cfg.ngf, cfg.n_blocks, len(DOMAINS)))
        self.networks["D_c"] = authors_init(MultiScaleD(cfg.ndf))
        self.networks["D_r"] = authors_init(MultiScaleD(cfg.ndf))

    def phases(self) -> tuple[Phase, ...]:
        c = self.cfg
        # authors' update_model: the discriminators first, then G
        return (Phase("adv", c.adv_epochs, (Step("D", ("D_c", "D_r"), c.lr_d, c.betas),
                                            Step("G", ("G",), c.lr_g, c.betas))),)

    def translator(self) -> nn.Module:
        return SingleGANTranslator(self.networks["G"], DOMAINS.index("photo" if self.cfg.translate == "cartoon2photo"
                                                                    else "cartoon"))

    def _translate(self, x_c: torch.Tensor, x_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(x_c, d_R), G(x_r, d_C))."""
        G = self.networks["G"]
        return G(x_c, domain_code(1, x_c.shape[0], x_c)), G(x_r, domain_code(0, x_r.shape[0], x_r))

    def _adv(self, scores: list[torch.Tensor], real: bool, generator: bool = False) -> torch.Tensor:
        kind = self.cfg.adv_loss
        if generator:
            return sum(losses.g_loss(s, kind) for s in scores)
        return sum(losses.d_loss_real(s, kind) if real else losses.d_loss_fake(s, kind) for s in scores)

    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, n = self.cfg, self.networks
        x_c, x_r = batch["cartoon"], batch["photo"]
        if step == "D":
            with torch.no_grad():
                fake_r, fake_c = self._translate(x_c, x_r)
            d_r = self._adv(n["D_r"](fake_r), False) + self._adv(n["D_r"](x_r), True)
            d_c = self._adv(n["D_c"](fake_c), False) + self._adv(n["D_c"](x_c), True)
            return {"loss": d_r + d_c, "d_r": d_r, "d_c": d_c}
        if step == "G":
            G = n["G"]
            fake_r, fake_c = self._translate(x_c, x_r)
            adv = self._adv(n["D_r"](fake_r), True, generator=True) + self._adv(n["D_c"](fake_c), True, generator=True)
            cyc_c = G(fake_r, domain_code(0, x_c.shape[0], x_c))   # C → R → C
            cyc_r = G(fake_c, domain_code(1, x_r.shape[0], x_r))   # R → C → R
            # authors: one mean over the concatenated batch of both domains (equal batch sizes: the average)
            cyc = 0.5 * (losses.l1(cyc_c, x_c) + losses.l1(cyc_r, x_r))
            total = adv + c.lambda_cyc * cyc
            out = {"g_adv": adv, "cycle": cyc}
            if c.lambda_identity > 0:
                idt = 0.5 * (losses.l1(G(x_c, domain_code(0, x_c.shape[0], x_c)), x_c)
                             + losses.l1(G(x_r, domain_code(1, x_r.shape[0], x_r)), x_r))
                total = total + c.lambda_identity * idt
                out["identity"] = idt
            return {"loss": total, **out}
        raise ValueError(f"{self.name}: unknown step {step!r} (D, G)")
