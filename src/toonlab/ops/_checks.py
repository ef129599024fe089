"""Shared input checks for the ops: one-line errors that name the argument."""

from __future__ import annotations

import torch

from toonlab.errors import ToonlabError


class OpsInputError(ToonlabError, ValueError):
    """An op got a tensor of the wrong rank, channel count, size or dtype, or a bad parameter."""


def check_image(x: object, name: str, channels: tuple[int, ...] | None = None) -> torch.Tensor:
    """Require a floating (B,C,H,W) tensor, optionally with C in ``channels``."""
    if not isinstance(x, torch.Tensor):
        raise OpsInputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise OpsInputError(f"{name}: expected a (B,C,H,W) tensor, got {x.ndim} dims with shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise OpsInputError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if channels is not None and x.shape[1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise OpsInputError(f"{name}: expected {allowed} channels, got shape {tuple(x.shape)}")
    return x


def check_radius(r: object, h: int, w: int) -> int:
    """Require an int radius 1 <= r < min(H, W) (reflect padding needs r rows/columns to mirror)."""
    if isinstance(r, bool) or not isinstance(r, int):
        raise OpsInputError(f"r: expected an int radius, got {r!r}")
    if r < 1:
        raise OpsInputError(f"r: radius must be >= 1, got {r}")
    if r >= h or r >= w:
        raise OpsInputError(f"r: radius {r} must be smaller than the image size {h}x{w}")
    return r


def check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise OpsInputError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)
