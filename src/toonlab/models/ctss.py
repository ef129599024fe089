"""CTSS — cartoon-texture-saliency-sampler GAN (Gao, Zhang & Tian, ICML 2022; PAPERS.md §1, seed 001).

Photo → cartoon with two adversarial branches: an image-level discriminator D_img on whole images and a
patch-level discriminator D_patch on the K most edge-salient grayscale patches that the CTSS sampler picks from
each mini-batch of real cartoons C and of generated images S = G(P).

Symbols (paper → code): G → ``networks["G"]``; D_img → ``networks["D_img"]``; D_patch → ``networks["D_patch"]``;
CTSS (Fig. 2b, eqs 1–6) → :func:`ctss_sample`; eqs 7–17 → ``training_step``; λ_* → ``CTSSConfig.lambda_*``.
"""

from __future__ import annotations

import warnings
from collections import deque
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
    UpConv,
    apply_spectral_norm,
    init_normal,
)
from toonlab.nn.perceptual import Perceptual

# --------------------------------------------------------------------------------------------------------------
# CTSS sampler (paper §III-B, eqs 1–6; PAPERS.md §1 steps 1–7)
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def ctss_patch_scores(images: torch.Tensor, size: int, stride: int, gf_radius: int = 5, gf_eps: float = 0.2,
                      d: float = 0.2, n: float = 2.0, normalize: Literal["batch", "image"] = "image",
                      min_range: float = 1e-3) -> torch.Tensor:
    """Edge intensity t_i (eq 5) of every sliding window of a mini-batch: (N,3,H,W) [-1,1] → (M,) with
    M = N·(⌊(H−l)/s⌋+1)·(⌊(W−l)/s⌋+1), ordered image, window row, window column.

    c̃ = F_gf(c, c) (eq 1, self-guided filter r, eps) → e = min-max Σ_k |c̃ ⊗ F_k| (eq 2; ``normalize="image"``
    per image as the paper writes it, ``"batch"`` over the whole batch as the authors' code)
    → ẽ = 1 − 1/(1 + (e/d)^n) (eq 3) → t_i = Σ_{m,n} ẽ_i (eq 5). No gradients: the
    scores only choose patches. ``min_range`` floors the min-max range of e: the guided filter leaves ~1e-7
    round-off on flat images, which min-max would otherwise stretch to [0, 1] (fake edges, arbitrary choice);
    real edges give ranges of 0.05 (one 8-bit step) to ~30, so 1e-3 leaves them untouched."""
    with torch.autocast(images.device.type, enabled=False):  # fp32 even under AMP: fp16 box sums lose edges
        smooth = ops.self_guided_filter(images.detach().float(), gf_radius, gf_eps)
        edges = ops.high_pass(ops.ctss_edge_map(smooth, normalize, min_range=min_range), d, n)
        return ops.patch_scores(edges, size, stride)


def patches_to_gray(patches: torch.Tensor, mode: Literal["luma", "sum_minmax"] = "luma") -> torch.Tensor:
    """Step 7: (K,3,l,l) in [-1,1] → (K,1,l,l) in [-1,1]. Differentiable (gradients reach G through S_patch).

    ``"luma"`` (default): the paper's "converted to grayscale", by the standard luma .299R + .587G + .114B; the
    weights sum to 1, so [-1,1] stays [-1,1]. ``"sum_minmax"``: the authors' code — R+G+B, per-patch min-max to
    [0,1], then ×2−1 (a flat patch maps to −1)."""
    if mode == "luma":
        return ops.rgb_to_gray(patches)
    if mode != "sum_minmax":
        raise ValueError(f"unknown patch grayscale mode {mode!r} (luma | sum_minmax)")
    g = patches.sum(1, keepdim=True)
    lo = g.amin(dim=(2, 3), keepdim=True)
    hi = g.amax(dim=(2, 3), keepdim=True)
    return (g - lo) / (hi - lo).clamp_min(1e-6) * 2.0 - 1.0


def candidate_patches(n: int, size: int, patch: int, stride: int) -> int:
    """M = N·(⌊(H−l)/s⌋+1)² of square (N,3,size,size) mini-batches, with l clamped to the image as in
    :func:`ctss_sample`: the number of windows the sampler chooses K from."""
    patch = min(patch, size)
    return n * ((size - patch) // stride + 1) ** 2


def ctss_sample(images: torch.Tensor, k: int, size: int, stride: int, select: Literal["ctss", "all"] = "ctss",
                gray: Literal["luma", "sum_minmax"] = "luma", **score_kw) -> torch.Tensor:
    """The CTSS sampler: (N,3,H,W) [-1,1] → (K',1,l,l) grayscale patches in [-1,1], most edge-salient first.

    ``select="ctss"``: top-K over the whole mini-batch by eq 5 (eq 6); K' = min(K, M). ``"all"``: all M patches
    (the "W/O CTSS" ablation). The patch size ``l`` is clamped to min(l, H, W) so small images give one window
    per image instead of failing (only tiny test / preview images are smaller than l = 96). Patches are cut
    from the original images (eq 4: C ⊕ Ẽ), so gradients reach G through them. Only the K chosen windows are
    copied: whatever the stride, every tensor after the (M,) scores has K' rows (a fixed-size batch for D_patch)."""
    size = min(size, images.shape[-2], images.shape[-1])
    if select == "ctss":
        scores = ctss_patch_scores(images, size, stride, **score_kw)
        patches = _windows_at(images, size, stride, scores.topk(min(k, scores.shape[0])).indices)  # eqs 4, 6
    elif select == "all":
        patches = ops.sliding_patches(images, size, stride)  # (M,3,l,l), eq 4
    else:
        raise ValueError(f"unknown CTSS sampler {select!r} (ctss | all)")
    return patches_to_gray(patches, gray)


def _windows_at(images: torch.Tensor, size: int, stride: int, index: torch.Tensor) -> torch.Tensor:
    """The windows ``index`` (K,) of :func:`ops.sliding_patches`' order (image, window row, window column) cut
    straight from (N,C,H,W) images → (K,C,l,l), without materialising the other M − K windows."""
    h, w = images.shape[-2:]
    nw = (w - size) // stride + 1
    per_image = ((h - size) // stride + 1) * nw
    b, r = index // per_image, index % per_image
    windows = images.unfold(2, size, stride).unfold(3, size, stride)  # (N,C,nh,nw,l,l), a view
    return windows[b, :, r // nw, r % nw]


# --------------------------------------------------------------------------------------------------------------
# Networks (paper Fig. 10)
# --------------------------------------------------------------------------------------------------------------


class CTSSResBlock(nn.Module):
    """Fig. 10 ResBlock(256): c1-128 LN lReLU → depthwise c3-128 LN lReLU → c1-256 LN → + input; (B,C,H,W)."""

    def __init__(self, channels: int = 256, mid: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, mid, 1, 1, "ln", "lrelu"),
            ConvNormAct(mid, mid, 3, 1, "ln", "lrelu", groups=mid),
            ConvNormAct(mid, channels, 1, 1, "ln", "none"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CTSSGenerator(nn.Sequential):
    """G of paper Fig. 10: (B,3,H,W) [-1,1] → (B,3,H,W) [-1,1], H, W multiples of 4. Every conv LN + lReLU
    (reflect padding) except the c1-3 output (tanh, no bias as in the authors' code). ~1.5 M parameters."""

    def __init__(self):
        def cna(cin, cout, k=3, s=1):
            return ConvNormAct(cin, cout, k, s, "ln", "lrelu")

        super().__init__(
            cna(3, 32, 7), cna(32, 64, 3, 2), cna(64, 64), cna(64, 128, 3, 2), cna(128, 256),
            *[CTSSResBlock(256, 128) for _ in range(4)],
            cna(256, 128), UpConv(128, 128), cna(128, 128), UpConv(128, 64), cna(64, 64), cna(64, 64),
            cna(64, 32, 7),
            nn.Conv2d(32, 3, 1, bias=False), nn.Tanh(),
        )


class CTSSUNetGenerator(nn.Module):
    """``generator: unet`` — the authors' code variant (PAPERS.md §1): the AnimeGANv2 generator (LN, lReLU,
    reflect padding, no conv bias, stride-2 convs padded right/bottom by 1, inverted-residual blocks with
    expansion 2, bilinear ×2 upsampling) with two U-Net concatenations. The wiring of the skips is our reading
    (the authors' file is not available here): the 1/2-scale encoder output (64 ch) joins the first decoder
    stage, the full-scale first conv (32 ch) joins the second. (B,3,H,W) [-1,1] → same; H, W multiples of 4."""

    def __init__(self):
        super().__init__()
        half_pad = (0, 1, 0, 1)
        self.stem = PadConvNormLReLU(3, 32, 7, pad=3)
        self.down1 = nn.Sequential(PadConvNormLReLU(32, 64, 3, 2, half_pad), PadConvNormLReLU(64, 64))
        self.down2 = nn.Sequential(PadConvNormLReLU(64, 128, 3, 2, half_pad), PadConvNormLReLU(128, 128))
        self.middle = nn.Sequential(
            PadConvNormLReLU(128, 128), InvertedResBlock(128, 256, 2),
            *[InvertedResBlock(256, 256, 2) for _ in range(3)], PadConvNormLReLU(256, 128),
        )
        self.up1 = nn.Sequential(PadConvNormLReLU(128 + 64, 128), PadConvNormLReLU(128, 128))
        self.up2 = nn.Sequential(PadConvNormLReLU(128 + 32, 64), PadConvNormLReLU(64, 64),
                                 PadConvNormLReLU(64, 32, 7, pad=3))
        self.out = nn.Conv2d(32, 3, 1, bias=False)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)
        s1 = self.down1(s0)
        y = self.middle(self.down2(s1))
        y = self.up1(torch.cat([self._up(y, s1), s1], 1))
        y = self.up2(torch.cat([self._up(y, s0), s0], 1))
        return torch.tanh(self.out(y))


def _discriminator(widths: tuple[int, ...], cin: int, spectral: bool, std: float) -> nn.Sequential:
    """c3-w0 → c3s2-w1 → c3s2-w2 → c3s2-w3 (each LN, lReLU) → c3-1: ×8 down-sampling, raw score map.
    No conv bias, reflect padding, N(0, std) init, spectral norm on every conv if asked (authors' code)."""
    layers: list[nn.Module] = [ConvNormAct(cin, widths[0], 3, 1, "ln", "lrelu")]
    for a, b in zip(widths, widths[1:]):
        layers.append(ConvNormAct(a, b, 3, 2, "ln", "lrelu"))
    layers.append(nn.Conv2d(widths[-1], 1, 3, 1, 1, padding_mode="reflect", bias=False))
    net = init_normal(nn.Sequential(*layers), std)
    return apply_spectral_norm(net) if spectral else net


def image_discriminator(spectral: bool = True, std: float = 0.02) -> nn.Sequential:
    """D_img (Fig. 10): (B,3,256,256) → (B,1,32,32)."""
    return _discriminator((32, 64, 128, 256), 3, spectral, std)


def patch_discriminator(spectral: bool = True, std: float = 0.02) -> nn.Sequential:
    """D_patch (Fig. 10): (K,1,96,96) gray in [-1,1] → (K,1,12,12)."""
    return _discriminator((16, 32, 64, 128), 1, spectral, std)


# --------------------------------------------------------------------------------------------------------------
# The system
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CTSSConfig:
    generator: Literal["paper", "unet"] = "paper"      # paper Fig. 10 | authors' AnimeGANv2-style U-Net
    # CTSS sampler (§III-B)
    sampler: Literal["ctss", "all"] = "ctss"           # "all" = W/O CTSS ablation (Table III)
    K: int = ranged(32, ge=1)                          # top-K patches per mini-batch (Table II: 16/32/64/128)
    patch_size: int = ranged(96, ge=1)                 # l (clamped to min(l, H, W))
    stride_policy: Literal["random", "fixed"] = "random"  # paper: s ~ U(48, 72) once per iteration; authors: fixed
    stride_range: tuple[int, int] = ranged((48, 72), ge=1)  # inclusive bounds of the paper's uniform draw
    stride_fixed: tuple[int, int] = ranged((48, 72), ge=1)  # authors' fixed strides: (real cartoons, generated)
    gf_radius: int = ranged(5, ge=1)                   # eq 1 guided filter r
    gf_eps: float = ranged(0.2, gt=0)                  # eq 1 guided filter eps (on [-1,1] images)
    edge_normalize: Literal["batch", "image"] = "image"  # eq 2 min-max per image (paper); "batch" = authors' code
    patch_gray: Literal["luma", "sum_minmax"] = "luma"   # step 7: standard luma (paper: "converted to grayscale");
    #                                                      "sum_minmax" = authors' R+G+B + per-patch min-max
    edge_min_range: float = ranged(1e-3, gt=0)         # floor of the eq 2 min-max range (flat-image round-off)
    hp_d: float = 0.2                                  # eq 3 threshold d
    hp_n: float = ranged(2.0, gt=0)                    # eq 3 sharpness n
    # branches and extra losses (Tables III, IV)
    image_branch: bool = True                          # D_img, eqs 8–10
    patch_branch: bool = True                          # D_patch, eqs 11–13
    edge_promoting: bool = False                       # Table IV L^ep_adv_global: edge-smoothed cartoons as fakes
    extra_losses: tuple[Literal["gram", "mean_std"], ...] = ()  # Table IV L_gram / L_mean_std (perceptual)
    # discriminators (authors' code: spectral norm, N(0, 0.02) init)
    spectral_norm: bool = True
    init_std: float = ranged(0.02, ge=0)
    # loss weights (eqs 16–17; authors' "Dragon Ball" setting: lambda_con 2.5, lambda_tv 1.5)
    adv_loss: Literal["lsgan", "bce", "hinge"] = "lsgan"
    lambda_global: float = ranged(300.0, ge=0)
    lambda_local: float = ranged(300.0, ge=0)
    lambda_con: float = ranged(1.5, ge=0)
    lambda_col: float = ranged(15.0, ge=0)
    lambda_tv: float = ranged(1.0, ge=0)
    lambda_gram: float = ranged(2.5, ge=0)             # our choice: AnimeGAN's style weight (Table IV gives none)
    lambda_mean_std: float = ranged(2.5, ge=0)         # our choice, same scale as lambda_gram
    # schedule (§IV-C): 10 content-only epochs at 2e-4, then 70 adversarial epochs at 2e-5 (authors' D: 1e-5)
    init_epochs: int = ranged(10, ge=0)
    adv_epochs: int = ranged(70, ge=0)
    lr_init: float = ranged(2e-4, gt=0)
    lr_g: float = ranged(2e-5, gt=0)
    lr_d: float = ranged(2e-5, gt=0)
    betas: tuple[float, float] = ranged((0.5, 0.999), ge=0, lt=1)
    # inference post-processing applied by toonlab.infer (natural saturation +40 %)
    saturation_boost: float = ranged(1.4, ge=0)
    perceptual: Perceptual = "auto"  # backbone of L_con / L_gram / L_mean_std (toonlab.nn.perceptual; paper: vgg19)


@register("ctss")
class CTSS(Model):
    """CTSS GAN. Batch keys: ``photo``, ``cartoon`` (+ ``smooth`` when ``edge_promoting``)."""

    Config = CTSSConfig
    requires = ("photo", "cartoon")
    default_size = 256
    size_multiple = 4

    def __init__(self, cfg: CTSSConfig):
        super().__init__(cfg)
        if not (cfg.image_branch or cfg.patch_branch):
            raise ValueError("ctss: image_branch and patch_branch cannot both be false")
        if cfg.K < 1 or cfg.patch_size < 1 or min(cfg.stride_range + cfg.stride_fixed) < 1:
            raise ValueError("ctss: K, patch_size and strides must be >= 1")
        if cfg.edge_promoting:
            if not cfg.image_branch:
                raise ValueError("ctss: edge_promoting acts on the image branch; it needs image_branch: true")
            self.requires = ("photo", "cartoon", "smooth")
        self.networks["G"] = CTSSGenerator() if cfg.generator == "paper" else CTSSUNetGenerator()
        self._pending_strides: deque[int] = deque(maxlen=64)  # D-step draws awaiting their G step (_strides)
        self._warned_k = False
        if cfg.image_branch:
            self.networks["D_img"] = image_discriminator(cfg.spectral_norm, cfg.init_std)
        if cfg.patch_branch:
            self.networks["D_patch"] = patch_discriminator(cfg.spectral_norm, cfg.init_std)

    def phases(self) -> tuple[Phase, ...]:
        return init_then_adversarial(self.cfg, tuple(n for n in ("D_img", "D_patch") if n in self.networks))

    def translator(self) -> nn.Module:
        return self.networks["G"]

    # --- pieces -------------------------------------------------------------------------------------------------
    def _strides(self, step: str) -> tuple[int, int]:
        """(stride for real cartoons, stride for generated images) for this iteration.

        ``"random"``: s ~ U(lo, hi) drawn once per iteration and shared by C and S and by the D and G steps: the
        D step draws (from the global torch RNG, which training states save, so resume stays exact) and queues it;
        the G step of the same micro-batch takes it from the queue (FIFO, so gradient accumulation's D micro-steps
        pair with its G micro-steps in order). A G step without a D step before it (D-less tests) draws its own."""
        c = self.cfg
        if c.stride_policy == "fixed":
            return c.stride_fixed
        if step == "G" and self._pending_strides:
            s = self._pending_strides.popleft()
        else:
            lo, hi = c.stride_range
            s = int(torch.randint(lo, hi + 1, ()).item())
            if step == "D":
                self._pending_strides.append(s)
        return s, s

    def sample_patches(self, images: torch.Tensor, stride: int) -> torch.Tensor:
        """The CTSS sampler with this config: (N,3,H,W) [-1,1] → (K',1,l,l) [-1,1]. Warns once when K ≥ M
        (e.g. Table II's K = 128 at 256² with batch 8 and s ≥ 48, M ≤ 128): top-K then keeps every patch, which is
        the "W/O CTSS" ablation, not a sampler setting."""
        c = self.cfg
        if c.sampler == "ctss" and not self._warned_k:
            n, _, h, w = images.shape
            l = min(c.patch_size, h, w)
            m = n * ((h - l) // stride + 1) * ((w - l) // stride + 1)
            if c.K >= m:
                self._warned_k = True
                warnings.warn(f"ctss: K = {c.K} >= M = {m} candidate patches (batch {n}, {h}x{w}, l = {l}, "
                              f"s = {stride}): the sampler keeps every patch, as the W/O CTSS ablation does",
                              stacklevel=2)
        return ctss_sample(images, c.K, c.patch_size, stride, c.sampler, c.patch_gray, gf_radius=c.gf_radius,
                           gf_eps=c.gf_eps, d=c.hp_d, n=c.hp_n, normalize=c.edge_normalize, min_range=c.edge_min_range)

    def _vgg(self, device):
        return perceptual_net(self.cfg, device)  # honours model.perceptual_scale

    # --- the losses ---------------------------------------------------------------------------------------------
    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        G = self.networks["G"]
        photo = batch["photo"]
        if step == "init":  # §IV-C: pre-train G on L_con alone
            vgg = self._vgg(photo.device)
            with torch.no_grad():
                target = vgg(photo)
            con = losses.content_loss(vgg(G(photo)), target)  # eq 7
            return {"loss": con, "content": con}
        if step == "D":
            return self._d_step(batch, photo)
        if step == "G":
            return self._g_step(batch, photo)
        raise ValueError(f"ctss has no step {step!r} (init, D, G)")

    def _d_step(self, batch, photo):
        c, G = self.cfg, self.networks["G"]
        cartoon = batch["cartoon"]
        with torch.no_grad():
            fake = G(photo)
        out: dict[str, torch.Tensor] = {}
        total = photo.new_zeros(())
        if c.image_branch:  # eq 9: E[(D_img(c) − 1)²] + E[D_img(G(p))²]
            D = self.networks["D_img"]
            glob = losses.d_loss_real(D(cartoon), c.adv_loss) + losses.d_loss_fake(D(fake), c.adv_loss)
            if c.edge_promoting:  # CartoonGAN's edge-promoting term: smoothed cartoons are fakes too
                glob = glob + losses.d_loss_fake(D(batch["smooth"]), c.adv_loss)
            out["d_global"] = glob
            total = total + c.lambda_global * glob
        if c.patch_branch:  # eq 12 on the top-K patches C_patch, S_patch
            D = self.networks["D_patch"]
            s_real, s_fake = self._strides("D")
            local = (losses.d_loss_real(D(self.sample_patches(cartoon, s_real)), c.adv_loss)
                     + losses.d_loss_fake(D(self.sample_patches(fake, s_fake)), c.adv_loss))
            out["d_local"] = local
            total = total + c.lambda_local * local
        return {"loss": total, **out}  # eq 17

    def _g_step(self, batch, photo):
        c, G = self.cfg, self.networks["G"]
        fake = G(photo)
        vgg = self._vgg(photo.device)
        with torch.no_grad():
            target = vgg(photo)
        feat_fake = vgg(fake)
        out = {
            "content": losses.content_loss(feat_fake, target),  # eq 7
            "color": losses.yuv_color_loss(fake, photo),          # eq 14
            "tv": losses.total_variation(fake),                    # eq 15
        }
        total = c.lambda_con * out["content"] + c.lambda_col * out["color"] + c.lambda_tv * out["tv"]
        if c.image_branch:  # eq 10
            out["g_global"] = losses.g_loss(self.networks["D_img"](fake), c.adv_loss)
            total = total + c.lambda_global * out["g_global"]
        if c.patch_branch:  # eq 13, through the generated patches S_patch
            _, s_fake = self._strides("G")
            out["g_local"] = losses.g_loss(self.networks["D_patch"](self.sample_patches(fake, s_fake)), c.adv_loss)
            total = total + c.lambda_local * out["g_local"]
        if c.extra_losses:
            cartoon = batch["cartoon"]
            with torch.no_grad():
                if "gram" in c.extra_losses:  # AnimeGAN: Gram of grayscale cartoons (3-channel gray)
                    gray_feat = vgg(ops.rgb_to_gray(cartoon).expand(-1, 3, -1, -1))
                if "mean_std" in c.extra_losses:
                    cartoon_feat = vgg(cartoon)
            if "gram" in c.extra_losses:
                out["gram"] = losses.gram_loss(feat_fake, gray_feat)
                total = total + c.lambda_gram * out["gram"]
            if "mean_std" in c.extra_losses:
                out["mean_std"] = losses.mean_std_loss(feat_fake, cartoon_feat)
                total = total + c.lambda_mean_std * out["mean_std"]
        return {"loss": total, **out}  # eq 16
