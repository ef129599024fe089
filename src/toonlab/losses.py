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
