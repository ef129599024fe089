"""Sliding patches, their count, edge scores and top-K (CTSS sampler steps 5–6)."""

import pytest
import torch

from toonlab.ops import (
    OpsInputError,
    ctss_edge_map,
    high_pass,
    num_patches,
    patch_scores,
    sliding_patches,
    topk_patches,
)


@pytest.mark.parametrize(
    ("h", "w", "size", "stride", "expected"),
    [
        (256, 256, 96, 48, 16),  # (⌊160/48⌋+1)² = 4²
        (256, 256, 96, 72, 9),  # (⌊160/72⌋+1)² = 3²
        (256, 300, 96, 72, 9),  # (2+1)·(⌊204/72⌋+1) = 3·3
        (96, 96, 96, 48, 1),
        (100, 97, 96, 1, 10),  # 5·2
    ],
)
def test_num_patches_formula_and_count(h, w, size, stride, expected):
    assert num_patches(h, w, size, stride) == expected
    patches = sliding_patches(torch.zeros(2, 3, h, w), size, stride)
    assert patches.shape == (2 * expected, 3, size, size)


def test_sliding_patches_content_and_order():
    x = torch.arange(2 * 2 * 7 * 9, dtype=torch.float64).reshape(2, 2, 7, 9)
    size, stride = 3, 2
    expected = [
        x[b, :, i : i + size, j : j + size]
        for b in range(2)
        for i in range(0, 7 - size + 1, stride)
        for j in range(0, 9 - size + 1, stride)
    ]
    torch.testing.assert_close(sliding_patches(x, size, stride), torch.stack(expected))
    scores = patch_scores(x[:, :1], size, stride)
    torch.testing.assert_close(scores, torch.stack([p[:1].sum() for p in expected]))


def test_topk_finds_the_window_with_the_strongest_edges():
    # A flat image with a textured square inside window (row 1, col 2) of a 32/16 grid, faint noise elsewhere.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 80, 96, generator=gen) * 0.02
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    x[1, :, 16 + 8 : 16 + 24, 32 + 8 : 32 + 24] = checker.float()
    edges = high_pass(ctss_edge_map(x * 2 - 1))
    size, stride = 32, 16
    per_image = num_patches(80, 96, size, stride)
    nw = (96 - size) // stride + 1
    target = per_image + 1 * nw + 2  # image 1, window row 1, window column 2
    scores = patch_scores(edges, size, stride)
    patches = sliding_patches(x, size, stride)
    top = topk_patches(patches, scores, 3)
    assert top.shape == (3, 3, size, size)
    torch.testing.assert_close(top[0], patches[target])
    assert scores.argmax().item() == target
    # The kept edge patches come highest score first, and their sums are those scores.
    kept_sums = topk_patches(sliding_patches(edges, size, stride), scores, 3).sum(dim=(1, 2, 3))
    assert kept_sums[0] >= kept_sums[1] >= kept_sums[2]
    torch.testing.assert_close(kept_sums, torch.sort(scores, descending=True).values[:3])


def test_patches_gradcheck():
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sliding_patches(t, 3, 2), (x,))
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3], dtype=torch.float64)
    p = torch.rand(4, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: topk_patches(t, scores, 2), (p,))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: num_patches(64, 64, 96, 48), "larger than the image"),
        (lambda: num_patches(256, 256, 96, 0), "stride: expected an int >= 1"),
        (lambda: sliding_patches(torch.rand(3, 64, 64), 32, 16), "B,C,H,W"),
        (lambda: sliding_patches(torch.rand(1, 3, 64, 64), 32.0, 16), "size: expected an int"),
        (lambda: topk_patches(torch.rand(5, 1, 4, 4), torch.rand(4), 2), r"scores: expected shape \(5,\)"),
        (lambda: topk_patches(torch.rand(5, 1, 4, 4), torch.rand(5), 6), r"k: expected an int in \[1, 5\]"),
        (lambda: topk_patches(torch.rand(5, 1, 4, 4), torch.rand(5), 0), "k: expected"),
    ],
)
def test_patches_bad_input(call, message):
    with pytest.raises(OpsInputError, match=message):
        call()
