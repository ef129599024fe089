"""CartoonGAN edge smoothing of cartoon images (PAPERS.md: common to CartoonGAN, multi-style, AnimeGAN)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from toonlab.ops._checks import check_image

CANNY_LOW, CANNY_HIGH = 100, 200
DILATE_SIZE = 5
GAUSSIAN_SIZE = 5  # sigma from the size (OpenCV's sigma=0 rule), as in the authors' code


def _edge_blur(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rgb (H,W,3) float32 in [0,1] -> (Gaussian-blurred rgb, (H,W,1) bool mask of the dilated Canny edges)."""
    gray = cv2.cvtColor(np.rint(rgb * 255.0).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, CANNY_LOW, CANNY_HIGH)
    mask = cv2.dilate(edges, np.ones((DILATE_SIZE, DILATE_SIZE), np.uint8)) > 0
    blurred = cv2.GaussianBlur(rgb, (GAUSSIAN_SIZE, GAUSSIAN_SIZE), 0)  # BORDER_REFLECT_101, like np.pad 'reflect'
    return blurred, mask[..., None]


def edge_smooth(x: torch.Tensor) -> torch.Tensor:
    """Canny(100, 200) on gray uint8 → dilate 5×5 → Gaussian 5×5 on the dilated edge pixels only.

    x (B,3,H,W) RGB in [0,1] -> (B,3,H,W), same dtype/device; pixels off the dilated edges are returned unchanged.
    Not differentiable (OpenCV inside); used to prepare the "smoothed cartoon" inputs of the adversarial loss.
    """
    check_image(x, "x", channels=(3,))
    images = x.detach().clamp(0.0, 1.0).permute(0, 2, 3, 1).to("cpu", torch.float32).numpy()
    blurred, mask = zip(*(_edge_blur(np.ascontiguousarray(img)) for img in images))
    blurred_t = torch.from_numpy(np.stack(blurred)).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
    mask_t = torch.from_numpy(np.stack(mask)).permute(0, 3, 1, 2).to(x.device)
    return torch.where(mask_t, blurred_t, x)
