"""CTSS coarse edge map and high-pass (PAPERS.md §1, CTSS sampler steps 2–4)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from toonlab.ops._checks import OpsInputError, check_image, check_positive

# CTSS sampler step 2: the authors' four 3×3 kernels F1..F4 (vertical/horizontal gradient and second difference).
CTSS_KERNELS = torch.tensor(
    [
        [[0, -1, 0], [0, 0, 0], [0, 1, 0]],  # F1
        [[0, 0, 0], [-1, 0, 1], [0, 0, 0]],  # F2
        [[0, -1, 0], [0, 2, 0], [0, -1, 0]],  # F3
        [[0, 0, 0], [-1, 2, -1], [0, 0, 0]],  # F4
    ],
    dtype=torch.float64,
)


def ctss_edge_map(x: torch.Tensor, normalize: Literal["batch", "image"] = "batch", *,
                  min_range: float = 0.0) -> torch.Tensor:
    """Coarse edge map e of CTSS: x (B,3,H,W) in [-1,1] -> (B,1,H,W) in [0,1].

    g = R + 2G + B (authors' 1:2:1 weights across channels), e = Σ_i |F_i * g| with reflect padding 1, then
    min-max normalised over the whole batch (``"batch"``, authors' code) or per image (``"image"``).
    A constant input (max = min) gives all zeros. ``min_range`` floors the min-max denominator so that float
    round-off on (nearly) flat inputs (e.g. after a guided filter) is not stretched into fake edges.
    """
    check_image(x, "x", channels=(3,))
    if normalize not in ("batch", "image"):
        raise OpsInputError(f"normalize: expected 'batch' or 'image', got {normalize!r}")
    if min(x.shape[-2:]) < 2:
        raise OpsInputError(f"x: image must be at least 2x2 for reflect padding, got shape {tuple(x.shape)}")
    g = x[:, 0:1] + 2 * x[:, 1:2] + x[:, 2:3]
    kernels = CTSS_KERNELS.to(device=x.device, dtype=x.dtype).unsqueeze(1)  # (4,1,3,3)
    responses = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="reflect"), kernels)
    e = responses.abs().sum(1, keepdim=True)
    dims = (0, 1, 2, 3) if normalize == "batch" else (1, 2, 3)
    lo = e.amin(dim=dims, keepdim=True)
    hi = e.amax(dim=dims, keepdim=True)
    # Step 3: min-max to [0,1]; the floor on the range keeps flat images at 0 instead of 0/0.
    return (e - lo) / (hi - lo).clamp_min(max(float(min_range), torch.finfo(e.dtype).tiny))


def high_pass(e: torch.Tensor, d: float = 0.2, n: float = 2.0) -> torch.Tensor:
    """CTSS sampler step 4: h(e) = 1 − 1/(1 + (e/d)^n), e >= 0 (any shape) -> same shape in [0,1)."""
    if not isinstance(e, torch.Tensor) or not e.is_floating_point():
        raise OpsInputError(f"e: expected a floating-point tensor, got {type(e).__name__}")
    d = check_positive(d, "d")
    n = check_positive(n, "n")
    return 1.0 - 1.0 / (1.0 + (e / d).pow(n))
