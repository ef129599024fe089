"""Pure loss functions (no state). Inputs are tensors; outputs are scalar tensors (mean reductions).

Adversarial losses take discriminator outputs (any shape, raw scores — no sigmoid applied) and come in three
kinds: ``lsgan`` (least squares, Mao et al.; real → 1, fake → 0), ``bce`` (non-saturating cross-entropy with
logits), ``hinge``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

AdvKind = Literal["lsgan", "bce", "hinge"]


def d_loss_real(score: torch.Tensor, kind: AdvKind = "lsgan") -> torch.Tensor:
    """Discriminator term for samples it must call real: E[(D(x) − 1)²] for lsgan."""
    if kind == "lsgan":
        return torch.mean((score - 1.0) ** 2)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(score, torch.ones_like(score))
    if kind == "hinge":
        return torch.mean(F.relu(1.0 - score))
    raise ValueError(f"unknown adversarial loss {kind!r}")


def d_loss_fake(score: torch.Tensor, kind: AdvKind = "lsgan") -> torch.Tensor:
    """Discriminator term for samples it must call fake: E[D(x)²] for lsgan."""
    if kind == "lsgan":
        return torch.mean(score ** 2)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(score, torch.zeros_like(score))
    if kind == "hinge":
        return torch.mean(F.relu(1.0 + score))
    raise ValueError(f"unknown adversarial loss {kind!r}")


def g_loss(score: torch.Tensor, kind: AdvKind = "lsgan") -> torch.Tensor:
    """Generator term on D(G(x)): E[(D(G(x)) − 1)²] for lsgan, −E[D] for hinge."""
    if kind == "hinge":
        return -torch.mean(score)
    return d_loss_real(score, kind)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (content loss on features, cycle loss on images)."""
    return torch.mean(torch.abs(a - b))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of vertical and horizontal neighbours of (B,C,H,W) ``x`` (CTSS eq 15)."""
    if x.ndim != 4:
        raise ValueError(f"total_variation expects (B,C,H,W), got {tuple(x.shape)}")
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]) ** 2
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2
    return dh.mean() + dw.mean()


# --- style / content / colour losses (MODELS-A) ----------------------------------------------------------------

# RGB → YUV on [0, 1] (PAPERS.md §1, the coefficients of CTSS / AnimeGAN's tf.image.rgb_to_yuv).
_RGB_TO_YUV = torch.tensor([[0.299, 0.587, 0.114],
                            [-0.14714119, -0.28886916, 0.43601035],
                            [0.61497538, -0.51496512, -0.10001026]])


def content_loss(feat_fake: torch.Tensor, feat_real: torch.Tensor) -> torch.Tensor:
    """CTSS eq 7 / CartoonGAN content loss: mean |VGG_l(G(p)) − VGG_l(p)| on conv4_4 features (B,512,h,w)."""
    return l1(feat_fake, feat_real)


def gram(x: torch.Tensor) -> torch.Tensor:
    """Gram matrix of (B,C,H,W) features → (B,C,C), normalised by C·H·W (AnimeGAN's normalisation)."""
    if x.ndim != 4:
        raise ValueError(f"gram expects (B,C,H,W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def gram_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """AnimeGAN style loss: mean |gram(a) − gram(b)| of two (B,C,H,W) feature maps (CTSS Table IV ``L_gram``)."""
    return l1(gram(a), gram(b))


def mean_std_loss(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN's mean-variance style loss (Huang & Belongie; CTSS Table IV ``L_mean_std``) on (B,C,H,W) features:
    MSE of the per-channel means + MSE of the per-channel standard deviations (population std, √(var+eps))."""
    if a.ndim != 4 or a.shape[:2] != b.shape[:2]:
        raise ValueError(f"mean_std_loss expects two (B,C,H,W) with equal B,C; got {tuple(a.shape)}, {tuple(b.shape)}")

    def stats(x):
        flat = x.flatten(2)
        return flat.mean(2), (flat.var(2, unbiased=False) + eps).sqrt()

    (ma, sa), (mb, sb) = stats(a), stats(b)
    return F.mse_loss(ma, mb) + F.mse_loss(sa, sb)


def rgb_to_yuv_signed(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB in [-1, 1] → YUV of the [0, 1] image (Y in [0, 1], U ∈ ±0.436, V ∈ ±0.615)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W) RGB, got {tuple(x.shape)}")
    m = _RGB_TO_YUV.to(device=x.device, dtype=x.dtype)
    return torch.einsum("yc,bchw->byhw", m, (x + 1.0) * 0.5)


def yuv_color_loss(fake: torch.Tensor, real: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """CTSS eq 14 (AnimeGANv2 colour loss): L1 on Y + Huber (δ = 1, TensorFlow's default) on U and V, each a
    mean over pixels; inputs (B,3,H,W) RGB in [-1, 1]."""
    yf, yr = rgb_to_yuv_signed(fake), rgb_to_yuv_signed(real)
    return (l1(yf[:, 0], yr[:, 0]) + F.huber_loss(yf[:, 1], yr[:, 1], delta=delta)
            + F.huber_loss(yf[:, 2], yr[:, 2], delta=delta))
