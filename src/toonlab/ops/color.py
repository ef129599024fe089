"""Colour ops on RGB in [0,1]: YUV (PAPERS.md §1, CTSS eq. 14), gray, and CTSS inference post-processing.

All take (B,3,H,W) tensors, any floating dtype/device, and are differentiable (clamping passes zero gradient
outside [0,1]).
"""

from __future__ import annotations

import torch

from toonlab.ops._checks import OpsInputError, check_image

# CTSS eq. 14 (PAPERS.md §1), rows Y, U, V applied to (R, G, B) on [0,1].
RGB_TO_YUV = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.14714119, -0.28886916, 0.43601035],
        [0.61497538, -0.51496512, -0.10001026],
    ],
    dtype=torch.float64,
)
YUV_TO_RGB = torch.linalg.inv(RGB_TO_YUV)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _mix(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(device=x.device, dtype=x.dtype), x)


def rgb_to_yuv(x: torch.Tensor) -> torch.Tensor:
    """RGB (B,3,H,W) in [0,1] -> YUV (B,3,H,W): Y in [0,1], U in ±0.436, V in ±0.615 (no offset, no clamp)."""
    check_image(x, "x", channels=(3,))
    return _mix(x, RGB_TO_YUV)


def yuv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`rgb_to_yuv`: YUV (B,3,H,W) -> RGB (B,3,H,W) (no clamp)."""
    check_image(x, "x", channels=(3,))
    return _mix(x, YUV_TO_RGB)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma .299R + .587G + .114B: (B,3,H,W) -> (B,1,H,W), same range as x."""
    check_image(x, "x", channels=(3,))
    r, g, b = GRAY_WEIGHTS
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def _check_factor(factor: object, name: str = "factor") -> float:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
        raise OpsInputError(f"{name}: expected a number >= 0, got {factor!r}")
    return float(factor)


def _blend(x: torch.Tensor, base: torch.Tensor, factor: float) -> torch.Tensor:
    """base + factor·(x − base), clamped to [0,1] (factor 1 = identity, 0 = base)."""
    return (base + factor * (x - base)).clamp(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the gray image (as PIL ``ImageEnhance.Color``): 1 keeps x, 1.4 = CTSS's +40 % saturation."""
    check_image(x, "x", channels=(3,))
    return _blend(x, rgb_to_gray(x), _check_factor(factor))


def adjust_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with each image's mean gray level (as PIL ``ImageEnhance.Contrast``): 1 keeps x."""
    check_image(x, "x", channels=(3,))
    return _blend(x, rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True), _check_factor(factor))


def adjust_brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with black (as PIL ``ImageEnhance.Brightness``): x·factor, clamped to [0,1]."""
    check_image(x, "x", channels=(3,))
    return (x * _check_factor(factor)).clamp(0.0, 1.0)


def match_luminance(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Shift each image's luma Y so its mean equals ref's, keeping U and V; clamped to [0,1].

    x (B,3,H,W), ref (B,3,H',W') or (1,3,H',W'). Our choice (authors' code matches mean luminance; the exact
    form is not given): an additive shift in Y, which in RGB adds the same amount to every channel (the Y row of
    RGB_TO_YUV sums to 1 and the U, V rows to 0), so chroma is unchanged.
    """
    check_image(x, "x", channels=(3,))
    check_image(ref, "ref", channels=(3,))
    if ref.shape[0] not in (1, x.shape[0]):
        raise OpsInputError(f"ref: batch {ref.shape[0]} must be 1 or match x's {x.shape[0]}")
    shift = rgb_to_gray(ref).mean(dim=(1, 2, 3), keepdim=True) - rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return (x + shift).clamp(0.0, 1.0)
