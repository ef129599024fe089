"""CartoonGAN edge smoothing against a direct OpenCV pipeline (Canny → dilate → GaussianBlur → masked copy)."""

import cv2
import numpy as np
import pytest
import torch

from toonlab.ops import OpsInputError, edge_smooth


def _opencv_pipeline(rgb_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' recipe written directly: returns (smoothed uint8 image, dilated edge mask)."""
    edges = cv2.Canny(cv2.cvtColor(rgb_u8, cv2.COLOR_RGB2GRAY), 100, 200)
    mask = cv2.dilate(edges, np.ones((5, 5), np.uint8)) > 0
    out = rgb_u8.copy()
    out[mask] = cv2.GaussianBlur(rgb_u8, (5, 5), 0)[mask]
    return out, mask


@pytest.fixture(scope="module")
def cartoonish(astronaut) -> np.ndarray:
    """Two 128×128 uint8 crops, posterised so they have flat areas and hard edges like cartoons."""
    crops = [astronaut[::4, ::4], astronaut[200:328, 150:278]]
    return np.stack([(c // 64) * 64 + 32 for c in crops]).astype(np.uint8)


def test_edge_smooth_matches_opencv_pipeline(cartoonish):
    x = torch.from_numpy(cartoonish).permute(0, 3, 1, 2).float() / 255
    out = edge_smooth(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for b in range(2):
        expected, mask = _opencv_pipeline(cartoonish[b])
        assert 0.02 < mask.mean() < 0.9  # the test is not vacuous: there are edges and flat areas
        ours = out[b].permute(1, 2, 0).numpy()
        # Away from edges: bit-identical to the input.
        np.testing.assert_array_equal(ours[~mask], x[b].permute(1, 2, 0).numpy()[~mask])
        # On edges: the blur, up to OpenCV's uint8 rounding.
        np.testing.assert_allclose(ours[mask] * 255, expected[mask], atol=0.51)
        assert np.abs(ours[mask] - x[b].permute(1, 2, 0).numpy()[mask]).max() > 0.05  # it really blurred


def test_edge_smooth_batch_equals_single_images_and_keeps_dtype(cartoonish):
    x = torch.from_numpy(cartoonish).permute(0, 3, 1, 2).double() / 255
    batch = edge_smooth(x)
    assert batch.dtype == torch.float64
    torch.testing.assert_close(batch[1:], edge_smooth(x[1:]))
    flat = torch.full((1, 3, 32, 32), 0.4)
    torch.testing.assert_close(edge_smooth(flat), flat)


@pytest.mark.parametrize(
    "x", [torch.rand(1, 1, 16, 16), torch.rand(3, 16, 16), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)]
)
def test_edge_smooth_bad_input(x):
    with pytest.raises(OpsInputError):
        edge_smooth(x)
