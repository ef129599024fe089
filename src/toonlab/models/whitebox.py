"""White-box cartoonization (Wang & Yu, CVPR 2020), a row of CTSS Table I, seed 000 Table 1 and seed 003 Table 2.

Three representations of an image, each with its own objective (paper §3; PAPERS.md "Baselines"):
- **surface** F_sf: self-guided filter, r = 5, ε = 0.2 on [-1, 1] (authors' ``train.py``: ``guided_filter(x, x,
  r=5, eps=2e-1)``), of the output and of the cartoon → discriminator D_s (LSGAN) — L_surface.
- **structure** F_st: superpixels of the output merged by selective search, adaptive colouring, contrast power
  (``ops.superpixel``; ``structure: paper`` as §3.1 describes it, ``structure: code`` the authors'
  ``selective_adacolor``) — L_structure = ‖VGG(G(p)) − VGG(F_st(G(p)))‖₁.
- **texture** F_rcs: random colour shift to one channel, the same draw for output and cartoon → D_t — L_texture.
- L_content = ‖VGG(G(p)) − VGG(p)‖₁ and L_tv. Total (paper §3.4):
  λ1·L_surface + λ2·L_texture + λ3·L_structure + λ4·L_content + λ5·L_tv with λ = 1, 10, 2·10³, 2·10³, 10⁴
  (paper, ``weights: paper``); the authors' ``train.py`` uses 0.1, 1, 200, 200, 10⁴ (``weights: code``).
  Normalisations as in the authors' code (the paper gives none, and its λ were set with these): VGG L1 terms are
  the mean absolute difference of conv4_4 features divided again by h·w·c; TV is
  (mean Δ_h² + mean Δ_w²) / (3·H·W).

Networks (authors' ``network.py``; TF-slim convs: TF "SAME" zero padding, bias, Xavier-uniform init, lReLU 0.2;
TF1's bilinear ×2 resize, so the layers match the authors' one to one):
- G (``unet_generator``, channel 32, 4 residual blocks): c7-32; c3s2-32, c3-64; c3s2-64, c3-128; 4 × res(128:
  c3, lReLU, c3, + x); c3-64; bilinear ×2 + skip, c3-64, c3-32; bilinear ×2 + skip, c3-32, c7-3; no norms, no
  output activation. The G output is then guided-filtered with the photo as guide, channel by channel, r = 1:
  ε = 10⁻² in training (``train.py``) and 5·10⁻³ at inference (``cartoonize.py``), and clipped to [-1, 1] at
  inference as the authors' test script does.
- D_s, D_t (``disc_sn``, channel 32, patch): [c3s2-32, c3-32, c3s2-64, c3-64, c3s2-128, c3-128] with spectral
  norm and lReLU 0.2, then a spectral-normed c1-1. D_s sees RGB, D_t one channel. LSGAN, D loss halved.

Recipe: init = content-only pre-training of G (paper: "pre-train the generator with only content loss";
the authors' ``pretrain.py`` uses pixel L1 instead — ``init_loss: l1``), lr 2e-4, Adam(0.5, 0.99), 50 000
iterations; then 100 000 adversarial iterations, G step then D step, batch 16, 256² (``configs/white_box.yaml``
gives these as ``train.phase_steps``; the epoch counts below are for our photo sets).

Choices and gaps (ours, stated): the paper's random colour shift (§3.1) F_rcs = (1 − α)(β1·R + β2·G + β3·B) + α·Y,
α = 0.8, β ~ U(−1, 1) is the default (``color_shift: paper``, written from the paper as we read it); the code's
(β_r, β_g, β_b) ~ U([.199, .399], [.487, .687], [.014, .214]) normalised by their sum is ``color_shift: code``.
Superpixels: Felzenszwalb with the authors' settings (scale 10 on [-1, 1]), merged by selective search to 200
regions, adaptively coloured, ^1.2 (``structure: paper``); ``structure: code`` reproduces the released
``selective_adacolor`` (σ compared on [-1, 1], so always the region mean; merging stops at 200 neighbour pairs;
^1.2 then divided by the max). ``superpixel: slic`` is the authors' released training default (``use_enhance``
off: SLIC 200, mean colours, no merging, no power), with connected regions.
Guided filters average over the in-image part of each window, as the TF code does (``guided_filter_tf``).
Equation references: we had the paper's text only through secondary sources here (its PDF is not in the authors'
mirror), so terms are cited by section, and the authors' code is the reference for every number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from toonlab import losses
from toonlab.config import ranged
from toonlab.models.base import Model, Phase, Step, perceptual_content_loss, register
from toonlab.nn.perceptual import Perceptual
from toonlab.ops.color import GRAY_WEIGHTS
from toonlab.ops.superpixel import structure_representation

# (λ_surface, λ_texture, λ_structure, λ_content, λ_tv)
WEIGHTS = {"paper": (1.0, 10.0, 2e3, 2e3, 1e4), "code": (0.1, 1.0, 200.0, 200.0, 1e4)}


class SameConv2d(nn.Conv2d):
    """TF-slim ``convolution2d``: TensorFlow "SAME" zero padding, bias, Xavier-uniform weights, zero bias.

    TF pads k − s in total, the extra pixel after (bottom/right): a 3×3 stride-2 conv pads (0, 1), not PyTorch's
    (1, 1), so windows sit where the authors' do (and their weights would map one to one). Assumes even H and W
    at stride 2 (true here: inputs are multiples of 4 and 8)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(cin, cout, k, stride, padding=0)
        total = k - stride
        self.tf_pad = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.tf_pad))


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> SameConv2d:
    return SameConv2d(cin, cout, k, stride)


def tf_upsample2x(x: torch.Tensor) -> torch.Tensor:
    """TF1 ``resize_bilinear`` ×2 (align_corners=False, no half-pixel centres): output 2i = input i, output 2i+1 =
    mean of inputs i and i+1 (the last row/column repeated). (B,C,H,W) → (B,C,2H,2W)."""
    below = torch.cat([x[..., 1:, :], x[..., -1:, :]], dim=-2)
    x = torch.stack([x, (x + below) / 2], dim=-2).flatten(-3, -2)
    right = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
    return torch.stack([x, (x + right) / 2], dim=-1).flatten(-2)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)  # tf.nn.leaky_relu's default slope


class _Res(nn.Module):
    """Authors' ``resblock``: x + c3(lReLU(c3(x))), no norm."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(ch, ch, 3), _conv(ch, ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(_lrelu(self.conv1(x)))


class WhiteBoxGenerator(nn.Module):
    """Authors' ``unet_generator``: (B,3,H,W) [-1,1] → (B,3,H,W) unbounded (no output activation); H, W multiples
    of 4."""

    def __init__(self, ch: int = 32, n_blocks: int = 4):
        super().__init__()
        self.conv0 = _conv(3, ch, 7)
        self.down1 = nn.ModuleList([_conv(ch, ch, 3, 2), _conv(ch, ch * 2, 3)])
        self.down2 = nn.ModuleList([_conv(ch * 2, ch * 2, 3, 2), _conv(ch * 2, ch * 4, 3)])
        self.blocks = nn.Sequential(*[_Res(ch * 4) for _ in range(n_blocks)])
        self.mid = _conv(ch * 4, ch * 2, 3)
        self.up1 = nn.ModuleList([_conv(ch * 2, ch * 2, 3), _conv(ch * 2, ch, 3)])
        self.up2 = nn.ModuleList([_conv(ch, ch, 3), _conv(ch, 3, 7)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = _lrelu(self.conv0(x))
        x1 = _lrelu(self.down1[1](_lrelu(self.down1[0](x0))))
        x2 = _lrelu(self.down2[1](_lrelu(self.down2[0](x1))))
        x2 = _lrelu(self.mid(self.blocks(x2)))
        x3 = tf_upsample2x(x2)
        x3 = _lrelu(self.up1[1](_lrelu(self.up1[0](x3 + x1))))
        x4 = tf_upsample2x(x3)
        return self.up2[1](_lrelu(self.up2[0](x4 + x0)))


class WhiteBoxDiscriminator(nn.Sequential):
    """Authors' ``disc_sn`` (patch): (B,cin,H,W) → (B,1,H/8,W/8) raw LSGAN scores."""

    def __init__(self, cin: int = 3, ch: int = 32):
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        for i in range(3):
            width = ch * 2 ** i
            layers += [sn(_conv(cin, width, 3, 2)), nn.LeakyReLU(0.2), sn(_conv(width, width, 3)), nn.LeakyReLU(0.2)]
            cin = width
        layers.append(sn(_conv(cin, 1, 1)))
        super().__init__(*layers)


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Authors' ``tf_box_filter(x, r) / N``: mean over the part of the (2r+1)² window inside the image. (B,C,H,W)."""
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def guided_filter_tf(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """Authors' ``guided_filter(x, y, r, eps)``: channel c of ``src`` filtered with channel c of ``guide`` (He et
    al.'s gray form per channel), box means over the in-image window. (B,C,H,W) both → (B,C,H,W).

    Written with ``avg_pool2d`` rather than ``toonlab.ops.guided_filter`` because (1) that is the authors' border
    rule (ops mirror the border) and (2) pooling keeps H and W dynamic in ONNX / TorchScript exports."""
    mean_x, mean_y = box_mean(guide, r), box_mean(src, r)
    cov_xy = box_mean(guide * src, r) - mean_x * mean_y
    var_x = box_mean(guide * guide, r) - mean_x * mean_x
    a = cov_xy / (var_x + eps)
    b = mean_y - a * mean_x
    return box_mean(a, r) * guide + box_mean(b, r)


class WhiteBoxTranslator(nn.Module):
    """Inference: G, then the photo-guided filter (r = 1, ε = 5·10⁻³ unless ``filter_output`` is off), clipped
    to [-1, 1]. (B,3,H,W) [-1,1] → (B,3,H,W) [-1,1]. Holds only G's weights (keys ``G.*``)."""

    def __init__(self, G: nn.Module, filter_output: bool = True, r: int = 1, eps: float = 5e-3):
        super().__init__()
        self.G, self.filter_output, self.r, self.eps = G, filter_output, r, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.G(x)
        if self.filter_output:
            y = guided_filter_tf(x, y, self.r, self.eps)
        return y.clamp(-1.0, 1.0)


def color_shift(fake: torch.Tensor, cartoon: torch.Tensor, mode: Literal["paper", "code"] = "paper",
                alpha: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Random colour shift F_rcs, one draw (torch's global RNG) shared by both (B,3,H,W) inputs → two (B,1,H,W).

    ``paper`` (§3.1): (1 − α)(β1·R + β2·G + β3·B) + α·Y, β ~ U(−1, 1), Y = .299R + .587G + .114B.
    ``code``: (w_r·R + w_g·G + w_b·B) / (w_r + w_g + w_b), w ~ U(.199,.399), U(.487,.687), U(.014,.214)."""
    if mode == "paper":
        beta = torch.rand(3) * 2 - 1
        gray = torch.tensor(GRAY_WEIGHTS)
        w = (1 - alpha) * beta + alpha * gray
    elif mode == "code":
        w = torch.rand(3) * 0.2 + torch.tensor([0.199, 0.487, 0.014])
        w = w / w.sum()
    else:
        raise ValueError(f"color_shift: mode must be 'paper' or 'code', got {mode!r}")
    w = w.to(fake.device, fake.dtype).view(1, 3, 1, 1)
    return (fake * w).sum(1, keepdim=True), (cartoon * w).sum(1, keepdim=True)


def feature_l1(cfg, a: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Authors' VGG term: mean |VGG(a) − VGG(target)| on conv4_4, divided again by h·w·c of the features."""
    h, w = a.shape[-2] // 8, a.shape[-1] // 8  # conv4_4 sits after three 2×2 max-pools
    return perceptual_content_loss(cfg, a, target) / (h * w * 512)


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Authors' ``total_variation_loss``: (mean Δ_h² + mean Δ_w²) / (3·H·W) of (B,C,H,W) ``x``."""
    return losses.total_variation(x) / (3 * x.shape[-2] * x.shape[-1])


@register("white_box")
class WhiteBox(Model):
    """White-box cartoonization. Batch keys: ``photo``, ``cartoon`` (B,3,H,W) in [-1, 1]."""

    @dataclass
    class Config:
        ch: int = ranged(32, ge=1)         # G width (authors: 32)
        n_blocks: int = ranged(4, ge=0)    # G residual blocks (authors: 4)
        d_ch: int = ranged(32, ge=1)       # D_s / D_t width (authors: 32)
        weights: Literal["paper", "code"] = "paper"   # λ1..λ5 (module docstring)
        lambda_surface: float | None = None           # overrides of single weights (ablations); None = `weights`
        lambda_texture: float | None = None
        lambda_structure: float | None = None
        lambda_content: float | None = None
        lambda_tv: float | None = None
        color_shift: Literal["paper", "code"] = "paper"
        superpixel: Literal["felzenszwalb", "slic"] = "felzenszwalb"
        n_segments: int = ranged(200, ge=1)  # selective search's target / SLIC regions (authors: seg_num 200)
        structure: Literal["paper", "code"] = "paper"  # F_st as §3.1 describes it / the released selective_adacolor
        structure_mu: float = ranged(1.2, gt=0)  # F_st's contrast power μ (§3.1; the authors advise 1.0 for stability)
        colouring: Literal["adaptive", "mean"] = "adaptive"  # "mean": region means in either variant (ablation)
        surface_radius: int = ranged(5, ge=1)  # F_sf (authors: r 5, eps 0.2)
        surface_eps: float = ranged(0.2, gt=0)
        train_filter_eps: float = ranged(1e-2, gt=0)  # photo-guided filter of G's output, r = 1 (train.py)
        infer_filter_eps: float = ranged(5e-3, gt=0)  # … at inference (cartoonize.py)
        filter_output: bool = True         # False: the translator returns G's raw output (clipped)
        init_loss: Literal["content", "l1"] = "content"  # paper: content loss; authors' pretrain.py: pixel L1
        init_epochs: int = ranged(120, ge=0)  # ≈ 50 000 iterations × 16 / 6 656 photos (configs/whitebox.yaml: steps)
        adv_epochs: int = ranged(240, ge=0)  # ≈ 100 000 iterations × 16 / 6 656 photos
        lr_init: float = ranged(2e-4, gt=0)
        lr_g: float = ranged(2e-4, gt=0)
        lr_d: float = ranged(2e-4, gt=0)
        betas: tuple[float, float] = ranged((0.5, 0.99), ge=0, lt=1)  # authors' Adam(β1 0.5, β2 0.99)
        perceptual: Perceptual = "auto"  # VGG-term backbone (toonlab.nn.perceptual); authors: vgg19_caffe

    requires = ("photo", "cartoon")
    default_size = 256
    size_multiple = 4

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if cfg.ch < 1 or cfg.d_ch < 1 or cfg.n_blocks < 0:
            raise ValueError(f"{self.name}: ch/d_ch must be >= 1 and n_blocks >= 0")
        if cfg.weights not in WEIGHTS:
            raise ValueError(f"{self.name}: weights must be one of {sorted(WEIGHTS)}, got {cfg.weights!r}")
        self.networks["G"] = WhiteBoxGenerator(cfg.ch, cfg.n_blocks)
        self.networks["D_s"] = WhiteBoxDiscriminator(3, cfg.d_ch)   # surface
        self.networks["D_t"] = WhiteBoxDiscriminator(1, cfg.d_ch)   # texture
        overrides = (cfg.lambda_surface, cfg.lambda_texture, cfg.lambda_structure, cfg.lambda_content, cfg.lambda_tv)
        self.lambdas = tuple(o if o is not None else d for o, d in zip(overrides, WEIGHTS[cfg.weights]))

    def phases(self) -> tuple[Phase, ...]:
        c = self.cfg
        return (
            Phase("init", c.init_epochs, (Step("init", ("G",), c.lr_init, c.betas),)),
            # authors' loop: the G update, then the D update, each iteration
            Phase("adv", c.adv_epochs, (Step("G", ("G",), c.lr_g, c.betas),
                                        Step("D", ("D_s", "D_t"), c.lr_d, c.betas))),
        )

    def translator(self) -> nn.Module:
        # a fresh wrapper each call around whatever networks["G"] holds (the trainer swaps DDP wrappers in and out)
        return WhiteBoxTranslator(self.networks["G"], self.cfg.filter_output, 1, self.cfg.infer_filter_eps)

    def _output(self, photo: torch.Tensor) -> torch.Tensor:
        """Training output: G(p) filtered with p as guide (r = 1, ε = ``train_filter_eps``)."""
        return guided_filter_tf(photo, self.networks["G"](photo), 1, self.cfg.train_filter_eps)

    def _surface(self, x: torch.Tensor) -> torch.Tensor:
        return guided_filter_tf(x, x, self.cfg.surface_radius, self.cfg.surface_eps)

    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c, n = self.cfg, self.networks
        photo, cartoon = batch["photo"], batch["cartoon"]
        if step == "init":
            raw = n["G"](photo)  # pre-training sees G's own output (authors' pretrain.py: no guided filter)
            con = losses.l1(raw, photo) if c.init_loss == "l1" else perceptual_content_loss(c, raw, photo)
            return {"loss": con, "content": con}
        if step == "G":
            l_sf, l_tx, l_st, l_con, l_tv = self.lambdas
            out = self._output(photo)
            g_surface = losses.g_loss(n["D_s"](self._surface(out)), "lsgan")
            gray_fake, _ = color_shift(out, cartoon, c.color_shift)
            g_texture = losses.g_loss(n["D_t"](gray_fake), "lsgan")
            with torch.no_grad():
                sp = structure_representation(out, c.superpixel, c.n_segments, c.colouring, c.structure,
                                              c.structure_mu)
            structure = feature_l1(c, out, sp)
            content = feature_l1(c, out, photo)
            tv = tv_loss(out)
            total = l_sf * g_surface + l_tx * g_texture + l_st * structure + l_con * content + l_tv * tv
            return {"loss": total, "g_surface": g_surface, "g_texture": g_texture, "structure": structure,
                    "content": content, "tv": tv}
        if step == "D":
            with torch.no_grad():
                out = self._output(photo)
            gray_fake, gray_cartoon = color_shift(out, cartoon, c.color_shift)
            d_s, d_t = n["D_s"], n["D_t"]
            # authors' lsgan_loss: 0.5 · (E[(D(real) − 1)²] + E[D(fake)²])
            d_surface = 0.5 * (losses.d_loss_real(d_s(self._surface(cartoon)), "lsgan")
                               + losses.d_loss_fake(d_s(self._surface(out)), "lsgan"))
            d_texture = 0.5 * (losses.d_loss_real(d_t(gray_cartoon), "lsgan")
                               + losses.d_loss_fake(d_t(gray_fake), "lsgan"))
            return {"loss": d_surface + d_texture, "d_surface": d_surface, "d_texture": d_texture}
        raise ValueError(f"{self.name}: unknown step {step!r} (init, G, D)")
