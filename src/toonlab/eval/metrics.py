"""SynthToon scores: outputs against the true cartoons of the same scenes (PSNR, SSIM, edge F1).

SynthToon's test split pairs every photo with the cartoon rendering of the same scene (``OUT/test/photos`` and
``OUT/test/cartoons``, same file names), so paired full-reference scores are possible there — unlike on real
unpaired data, where only FID / KID apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from toonlab.errors import UsageError

PAIRED_METRICS = ("psnr", "ssim", "edge_f1")


def _check_pair(a: np.ndarray, b: np.ndarray, name: str) -> None:
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"{name}: expected two HWC images of the same shape, got {a.shape} and {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of HWC float images in [0,1] (data range 1); identical images → inf."""
    _check_pair(a, b, "psnr")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _gaussian_window(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray, *, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean SSIM (Wang et al. 2004) of HWC float images in [0,1]: Gaussian window σ=1.5 truncated at 3.5σ
    (11 taps), C1=(0.01)², C2=(0.03)², population (not sample) covariances, averaged over the valid interior
    (the window-radius border is excluded) and over channels — skimage's ``structural_similarity`` with
    ``gaussian_weights=True, use_sample_covariance=False, data_range=1, channel_axis=-1``."""
    _check_pair(a, b, "ssim")
    radius = int(3.5 * sigma + 0.5)
    if min(a.shape[:2]) <= 2 * radius:
        raise ValueError(f"ssim: images of {a.shape[:2]} are smaller than the {2 * radius + 1}-pixel window")
    g = _gaussian_window(sigma, radius)
    kx, ky = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t):  # separable valid convolution over each channel: (C,1,H,W) → (C,1,H-2r,W-2r)
        return F.conv2d(F.conv2d(t, kx), ky)

    x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float64))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(b.transpose(2, 0, 1), dtype=np.float64))[:, None]
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = k1 ** 2, k2 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def canny_edges(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Boolean (H,W) edge map of an HWC [0,1] image: Canny(low, high) on its 8-bit gray version (the same fixed
    detector as CartoonGAN's edge smoothing)."""
    u8 = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    gray = cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY) if u8.shape[2] == 3 else u8[..., 0]
    return cv2.Canny(gray, low, high) > 0


def edge_f1(output: np.ndarray, truth: np.ndarray, *, tolerance: float = 2.0) -> float:
    """F1 of the output's Canny edges against the true cartoon's: an edge pixel counts as matched when an edge of
    the other map lies within ``tolerance`` pixels (Euclidean). precision = matched output edges / output edges,
    recall = matched true edges / true edges. Both maps empty → 1; one empty → 0."""
    _check_pair(output, truth, "edge_f1")
    eo, et = canny_edges(output), canny_edges(truth)
    no, nt = int(eo.sum()), int(et.sum())
    if no == 0 and nt == 0:
        return 1.0
    if no == 0 or nt == 0:
        return 0.0

    def distance_to(edges):  # distance of every pixel to the nearest edge pixel of ``edges``
        return cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)

    precision = float((distance_to(et)[eo] <= tolerance).mean())
    recall = float((distance_to(eo)[et] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "psnr": psnr, "ssim": ssim, "edge_f1": edge_f1,
}


@dataclass
class PairedScores:
    """Per-image and mean paired scores; ``failed`` lists (file, message) for unreadable or mismatched pairs."""

    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        names = {k for v in self.per_image.values() for k in v}
        return {k: float(np.mean([v[k] for v in self.per_image.values()])) for k in sorted(names)}


def _hwc(rgb: torch.Tensor) -> np.ndarray:
    return rgb.permute(1, 2, 0).numpy().astype(np.float64)


def score_folders(outputs: str | Path, truths: str | Path, metrics: tuple[str, ...] = PAIRED_METRICS) -> PairedScores:
    """Score every image of ``outputs`` against the image of ``truths`` with the same relative path (any
    extension). Outputs whose size differs from the truth are resized to it (bilinear, antialiased) first;
    unreadable files and outputs without a truth go to ``failed``; the rest are scored."""
    from toonlab.io import list_images, read_image

    unknown = [m for m in metrics if m not in METRIC_FUNCTIONS]
    if unknown:
        raise UsageError(f"unknown paired metric(s) {', '.join(unknown)} (valid: {', '.join(METRIC_FUNCTIONS)})")
    out_root, truth_root = Path(outputs), Path(truths)
    for p in (out_root, truth_root):
        if not p.is_dir():
            raise UsageError(f"image folder not found: {p}")
    truth_by_key = {f.relative_to(truth_root).with_suffix("").as_posix(): f for f in list_images([str(truth_root)])}
    res = PairedScores()
    for f in list_images([str(out_root)]):
        key = f.relative_to(out_root).with_suffix("").as_posix()
        if key not in truth_by_key:
            res.failed.append((str(f), f"no true cartoon named {key}.* in {truth_root}"))
            continue
        try:
            out, truth = read_image(f).rgb, read_image(truth_by_key[key]).rgb
        except Exception as e:  # ImageReadError and friends: report and keep going
            res.failed.append((str(f), str(e)))
            continue
        if out.shape != truth.shape:
            out = F.interpolate(out[None], size=truth.shape[-2:], mode="bilinear", antialias=True,
                                align_corners=False)[0].clamp(0, 1)
        o, t = _hwc(out), _hwc(truth)
        res.per_image[key] = {m: METRIC_FUNCTIONS[m](o, t) for m in metrics}
    return res
