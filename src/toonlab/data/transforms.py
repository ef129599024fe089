"""Training-time geometry: resize the shorter side, crop, flip — the same draw applied to an image and its side
inputs (a cartoon and its smoothed / guided / gray versions; a photo and its saliency map).

Images are float tensors (C,H,W); value ranges are kept. Randomness comes from an explicit
``numpy.random.Generator`` so that a sample depends only on its stream position (exact resume, any worker count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def resize_short(img: torch.Tensor, short: int) -> torch.Tensor:
    """(C,H,W) → (C,h,w) with min(h, w) = ``short`` and the aspect ratio kept (bilinear, antialiased)."""
    h, w = img.shape[-2:]
    if min(h, w) == short:
        return img
    scale = short / min(h, w)
    size = (max(short, round(h * scale)), max(short, round(w * scale)))
    return F.interpolate(img[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def resize_to(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(C,H,W) → (C,*hw) bilinear, antialiased (aligns a prepared side input with its image)."""
    if tuple(img.shape[-2:]) == tuple(hw):
        return img
    return F.interpolate(img[None], size=hw, mode="bilinear", antialias=True, align_corners=False)[0]


@dataclass(frozen=True)
class CropFlip:
    """One draw of the geometric augmentation: resize shorter side to ``short`` (0 = keep), crop ``size``² at
    (top, left) of the resized image, then flip horizontally if ``flip``."""

    short: int
    size: int
    top: int
    left: int
    flip: bool

    @staticmethod
    def draw(hw: tuple[int, int], size: int, resize: int | None, crop: str, flip: bool,
             rng: np.random.Generator) -> "CropFlip":
        """Sample the parameters for an image of size ``hw``; ``resize`` None → shorter side to ``size``,
        0 → native (upscaled only when smaller than ``size``)."""
        h, w = hw
        short = size if resize is None else resize
        if short == 0:
            short = min(h, w) if min(h, w) >= size else size
        if short < size:
            raise ValueError(f"data.resize ({short}) is smaller than data.size ({size})")
        scale = short / min(h, w)
        rh, rw = max(short, round(h * scale)), max(short, round(w * scale))
        if crop == "random":
            top = int(rng.integers(0, rh - size + 1))
            left = int(rng.integers(0, rw - size + 1))
        else:
            top, left = (rh - size) // 2, (rw - size) // 2
        do_flip = bool(flip and rng.random() < 0.5)
        return CropFlip(short, size, top, left, do_flip)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """(C,H,W) → (C,size,size)."""
        img = resize_short(img, self.short)
        img = img[..., self.top:self.top + self.size, self.left:self.left + self.size]
        if self.flip:
            img = img.flip(-1)
        return img.contiguous()


def center_square(img: torch.Tensor, size: int, multiple: int = 1) -> torch.Tensor:
    """Validation view: shorter side to ``size``, centre crop ``size``² (size rounded down to ``multiple``)."""
    size = max(multiple, size // multiple * multiple)
    img = resize_short(img, size)
    h, w = img.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size].contiguous()


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] → [-1, 1] (the models' range, base.py)."""
    return x * 2.0 - 1.0
