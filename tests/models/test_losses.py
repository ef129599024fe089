"""MODELS-A losses against values computed by hand on 2×2 examples."""

import pytest
import torch

from toonlab import losses

# (1,2,2,2): channel 0 = [[1,2],[3,4]], channel 1 = [[0,1],[0,1]]
X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])


def test_gram_by_hand():
    # F = [[1,2,3,4],[0,1,0,1]], F Fᵀ = [[30, 6], [6, 2]], divided by C·H·W = 8
    expected = torch.tensor([[[3.75, 0.75], [0.75, 0.25]]])
    assert torch.allclose(losses.gram(X), expected)


def test_gram_loss_by_hand():
    # mean |gram(X) − 0| = (3.75 + .75 + .75 + .25) / 4
    assert losses.gram_loss(X, torch.zeros_like(X)).item() == pytest.approx(1.375)
    assert losses.gram_loss(X, X).item() == 0.0


def test_mean_std_loss_by_hand():
    # means (2.5, .5) vs (0, 0) → (6.25 + .25)/2 = 3.25; stds (√1.25, .5) vs (0, 0) → (1.25 + .25)/2 = .75
    assert losses.mean_std_loss(X, torch.zeros_like(X), eps=0.0).item() == pytest.approx(4.0)
    # shifting by a constant changes only the mean term: (1 + 1)/2 = 1
    assert losses.mean_std_loss(X, X + 1.0, eps=0.0).item() == pytest.approx(1.0)


def test_content_loss_by_hand():
    assert losses.content_loss(X, torch.zeros_like(X)).item() == pytest.approx((1 + 2 + 3 + 4 + 0 + 1 + 0 + 1) / 8)


def test_yuv_color_loss_by_hand():
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # (1,0,0) in [0,1]
    black = -torch.ones(1, 3, 2, 2)
    # Y = .299 (L1); U = −.14714119, V = .61497538 (Huber δ=1: ½d² for |d| < 1)
    expected = 0.299 + 0.5 * 0.14714119 ** 2 + 0.5 * 0.61497538 ** 2
    assert losses.yuv_color_loss(red, black).item() == pytest.approx(expected, rel=1e-6)
    white = torch.ones(1, 3, 2, 2)  # U = V = 0 for grays: only the Y term (1.0) remains
    assert losses.yuv_color_loss(white, black).item() == pytest.approx(1.0, rel=1e-6)


def test_yuv_conversion_matches_papers_coefficients():
    rgb01 = torch.rand(2, 3, 4, 4)
    yuv = losses.rgb_to_yuv_signed(rgb01 * 2 - 1)
    r, g, b = rgb01.unbind(1)
    assert torch.allclose(yuv[:, 0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-6)
    assert torch.allclose(yuv[:, 1], -0.14714119 * r - 0.28886916 * g + 0.43601035 * b, atol=1e-6)
    assert torch.allclose(yuv[:, 2], 0.61497538 * r - 0.51496512 * g - 0.10001026 * b, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        losses.gram(torch.zeros(2, 2))
    with pytest.raises(ValueError):
        losses.mean_std_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError):
        losses.yuv_color_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
