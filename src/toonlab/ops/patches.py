"""Sliding-window patches and top-K selection (CTSS sampler steps 5–6, PAPERS.md §1)."""

from __future__ import annotations

import torch

from toonlab.ops._checks import OpsInputError, check_image


def _check_window(size: object, stride: object, h: int, w: int) -> tuple[int, int]:
    for name, v in (("size", size), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise OpsInputError(f"{name}: expected an int >= 1, got {v!r}")
    if size > h or size > w:
        raise OpsInputError(f"size: patch size {size} is larger than the image {h}x{w}")
    return size, stride


def num_patches(h: int, w: int, size: int, stride: int) -> int:
    """Windows per image: (⌊(H−l)/s⌋+1)·(⌊(W−l)/s⌋+1) for patch size l and stride s."""
    _check_window(size, stride, h, w)
    return ((h - size) // stride + 1) * ((w - size) // stride + 1)


def sliding_patches(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """All size×size windows at the given stride, from the top-left corner.

    x (B,C,H,W) -> (B·nh·nw, C, size, size), ordered by image, then window row, then window column.
    """
    check_image(x, "x")
    b, c, h, w = x.shape
    _check_window(size, stride, h, w)
    windows = x.unfold(2, size, stride).unfold(3, size, stride)  # (B,C,nh,nw,size,size)
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, size, size)


def patch_scores(edges: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """CTSS step 6 score of each window: the sum of its edge values. edges (B,1,H,W) -> (B·nh·nw,)."""
    return sliding_patches(edges, size, stride).sum(dim=(1, 2, 3))


def topk_patches(patches: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k patches with the highest scores, highest first. patches (N,C,l,l), scores (N,) -> (k,C,l,l)."""
    check_image(patches, "patches")
    if not isinstance(scores, torch.Tensor) or scores.shape != (patches.shape[0],):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise OpsInputError(f"scores: expected shape ({patches.shape[0]},) to match patches, got {shape}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= patches.shape[0]:
        raise OpsInputError(f"k: expected an int in [1, {patches.shape[0]}], got {k!r}")
    return patches[scores.topk(k).indices]
