"""Frame/photo quality measures and the resize + crop to the training size."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from toonlab.errors import UsageError


@dataclass(frozen=True)
class QualityThresholds:
    """Drop rules, all on 0–255 gray (BT.601 luma). Our defaults (the papers only say "dark frames were removed"):
    mean luma < ``min_luma`` → dark; std < ``min_std`` → near-uniform (fades, title cards on flat colour);
    variance of the 3×3 Laplacian, measured at the output size, < ``min_sharpness`` → blurry (motion blur,
    cross-fades). A threshold ≤ 0 disables its rule."""

    min_luma: float = 30.0
    min_std: float = 12.0
    min_sharpness: float = 20.0


def quality(rgb: np.ndarray) -> dict[str, float]:
    """{'luma': mean, 'std': std, 'sharpness': Laplacian variance} of an HWC uint8 RGB image (gray, 0–255)."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(gray)
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    return {"luma": float(mean[0, 0]), "std": float(std[0, 0]), "sharpness": float(lap.var())}


def reject_reason(q: dict[str, float], t: QualityThresholds) -> str | None:
    """'dark' | 'uniform' | 'blurry' | None (keep), checked in that order."""
    if t.min_luma > 0 and q["luma"] < t.min_luma:
        return "dark"
    if t.min_std > 0 and q["std"] < t.min_std:
        return "uniform"
    if t.min_sharpness > 0 and q["sharpness"] < t.min_sharpness:
        return "blurry"
    return None


CROPS = ("center", "random", "none")


def resize_crop(rgb: np.ndarray, size: int, crop: str = "center", rng: np.random.Generator | None = None
                ) -> np.ndarray:
    """Scale so the short side is ``size`` (area filter when shrinking, bicubic when enlarging), then cut a
    ``size``×``size`` square: centred, at a random offset (``rng``), or ``crop="none"`` keeps the aspect ratio.
    ``size <= 0`` returns the image unchanged. HWC uint8 → HWC uint8."""
    if crop not in CROPS:
        raise UsageError(f"unknown crop {crop!r} (expected one of {', '.join(CROPS)})")
    if size <= 0:
        return rgb
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    if crop == "none":
        return rgb
    if crop == "random":
        rng = rng or np.random.default_rng()
        y, x = int(rng.integers(0, nh - size + 1)), int(rng.integers(0, nw - size + 1))
    else:
        y, x = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(rgb[y: y + size, x: x + size])
