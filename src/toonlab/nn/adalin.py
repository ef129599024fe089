"""Adaptive layer-instance normalisation (AdaLIN) and its learned-affine sibling ILN, exactly as U-GAT-IT
(Kim et al. 2020, ``networks.py``: ``adaILN`` / ``ILN``), used by the multi-style generator (PAPERS.md §2).

    IN(x)   = (x − μ_c(x)) / √(σ²_c(x) + ε)        statistics per sample and channel over (H, W)
    LN(x)   = (x − μ(x))   / √(σ²(x)   + ε)        statistics per sample over (C, H, W)
    out     = γ · (ρ·IN(x) + (1 − ρ)·LN(x)) + β

ρ is a per-channel parameter (1,C,1,1), kept in [0, 1] by ``clip_rho_()`` which ``Model.after_optimizer_step``
calls after every optimiser step (U-GAT-IT's ``RhoClipper``). As in U-GAT-IT the variances are the unbiased
estimates (``torch.var`` default) and ε = 1e-5. AdaLIN takes γ, β from outside (style-conditioned, (B,C));
ILN learns them as parameters.
"""

from __future__ import annotations

import torch
from torch import nn


def _layer_instance_mix(x: torch.Tensor, rho: torch.Tensor, eps: float) -> torch.Tensor:
    """ρ·IN(x) + (1−ρ)·LN(x) for x (B,C,H,W), ρ (1,C,1,1)."""
    in_mean, in_var = x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), keepdim=True)
    ln_mean, ln_var = x.mean(dim=(1, 2, 3), keepdim=True), x.var(dim=(1, 2, 3), keepdim=True)
    x_in = (x - in_mean) / torch.sqrt(in_var + eps)
    x_ln = (x - ln_mean) / torch.sqrt(ln_var + eps)
    return rho * x_in + (1.0 - rho) * x_ln


class AdaLIN(nn.Module):
    """U-GAT-IT ``adaILN``: ``forward(x (B,C,H,W), gamma (B,C), beta (B,C)) -> (B,C,H,W)``; ρ initialised 0.9."""

    def __init__(self, channels: int, eps: float = 1e-5, rho_init: float = 0.9):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), float(rho_init)))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or gamma.shape != (x.shape[0], x.shape[1]) or beta.shape != gamma.shape:
            raise ValueError(f"AdaLIN expects x (B,C,H,W) and gamma/beta (B,C); got {tuple(x.shape)}, "
                             f"{tuple(gamma.shape)}, {tuple(beta.shape)}")
        out = _layer_instance_mix(x, self.rho, self.eps)
        return out * gamma[:, :, None, None] + beta[:, :, None, None]

    @torch.no_grad()
    def clip_rho_(self) -> None:
        """Clamp ρ to [0, 1] in place (U-GAT-IT's RhoClipper, after each optimiser step)."""
        self.rho.clamp_(0.0, 1.0)


class ILN(nn.Module):
    """U-GAT-IT ``ILN``: learned γ (init 1), β (init 0) and ρ (init 0, as U-GAT-IT); (B,C,H,W) → (B,C,H,W)."""

    def __init__(self, channels: int, eps: float = 1e-5, rho_init: float = 0.0):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), float(rho_init)))
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"ILN expects (B,C,H,W), got {tuple(x.shape)}")
        return _layer_instance_mix(x, self.rho, self.eps) * self.gamma + self.beta

    @torch.no_grad()
    def clip_rho_(self) -> None:
        self.rho.clamp_(0.0, 1.0)
