"""Colour ops against cv2.cvtColor and PIL.ImageEnhance; round trips, gradcheck, bad input."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from toonlab.ops import (
    OpsInputError,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    match_luminance,
    rgb_to_gray,
    rgb_to_yuv,
    yuv_to_rgb,
)
from toonlab.ops.color import RGB_TO_YUV

# PAPERS.md's U and V rows are scaled colour differences: U = κ_U (B − Y), V = κ_V (R − Y), with
# κ_U = .43601035 / (1 − .114) ≈ 0.492111 and κ_V = .61497538 / (1 − .299) ≈ 0.877283. OpenCV's RGB2YUV uses the
# rounded 0.492 and 0.877 and adds 0.5 (float images), so OpenCV's U − 0.5 = (0.492 / κ_U) · our U, same for V.
KAPPA_U = 0.43601035 / (1 - 0.114)
KAPPA_V = 0.61497538 / (1 - 0.299)


@pytest.fixture(scope="module")
def photo_u8(astronaut) -> np.ndarray:
    return np.ascontiguousarray(astronaut[::4, ::4])  # (128,128,3) uint8


def _tensor(hwc_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(hwc_u8).permute(2, 0, 1)[None].float() / 255


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def test_yuv_rows_are_scaled_colour_differences():
    y_row = RGB_TO_YUV[0]
    torch.testing.assert_close(RGB_TO_YUV[1], KAPPA_U * (torch.tensor([0.0, 0, 1], dtype=torch.float64) - y_row))
    torch.testing.assert_close(RGB_TO_YUV[2], KAPPA_V * (torch.tensor([1.0, 0, 0], dtype=torch.float64) - y_row))


def test_rgb_to_yuv_matches_opencv(photo_u8):
    x = _tensor(photo_u8)
    ours = _hwc(rgb_to_yuv(x))
    ref = cv2.cvtColor(_hwc(x).copy(), cv2.COLOR_RGB2YUV)
    np.testing.assert_allclose(ours[..., 0], ref[..., 0], atol=1e-6)
    np.testing.assert_allclose(ours[..., 1] * 0.492 / KAPPA_U, ref[..., 1] - 0.5, atol=1e-6)
    np.testing.assert_allclose(ours[..., 2] * 0.877 / KAPPA_V, ref[..., 2] - 0.5, atol=1e-6)
    np.testing.assert_allclose(ours[..., 1:], ref[..., 1:] - 0.5, atol=3e-4)  # the rounding of κ only


def test_yuv_round_trip_and_opencv_inverse(photo_u8):
    x = _tensor(photo_u8).double()
    torch.testing.assert_close(yuv_to_rgb(rgb_to_yuv(x)), x)
    yuv = rgb_to_yuv(x).float()
    cv_yuv = np.stack([yuv[0, 0], yuv[0, 1] * 0.492 / KAPPA_U + 0.5, yuv[0, 2] * 0.877 / KAPPA_V + 0.5], -1)
    back = cv2.cvtColor(np.ascontiguousarray(cv_yuv.astype(np.float32)), cv2.COLOR_YUV2RGB)
    np.testing.assert_allclose(_hwc(yuv_to_rgb(yuv)), back, atol=5e-4)


def test_rgb_to_gray_matches_opencv(photo_u8):
    x = _tensor(photo_u8)
    gray = rgb_to_gray(x)
    assert gray.shape == (1, 1, 128, 128)
    ref = cv2.cvtColor(_hwc(x).copy(), cv2.COLOR_RGB2GRAY)
    np.testing.assert_allclose(gray[0, 0].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize(
    ("fn", "enhancer"),
    [
        (adjust_saturation, ImageEnhance.Color),
        (adjust_contrast, ImageEnhance.Contrast),
        (adjust_brightness, ImageEnhance.Brightness),
    ],
)
@pytest.mark.parametrize("factor", [0.0, 0.5, 1.4, 2.0])
def test_enhancements_match_pil(photo_u8, fn, enhancer, factor):
    ours = fn(_tensor(photo_u8), factor)
    assert ours.shape == (1, 3, 128, 128) and 0.0 <= ours.min() and ours.max() <= 1.0
    ref = np.asarray(enhancer(Image.fromarray(photo_u8)).enhance(factor), dtype=np.float64) / 255
    # PIL works in uint8 (gray / mean rounded, result truncated): allow two grey levels.
    np.testing.assert_allclose(_hwc(ours), ref, atol=2.01 / 255)


def test_factor_one_is_identity(photo_u8):
    x = _tensor(photo_u8)
    for fn in (adjust_saturation, adjust_contrast, adjust_brightness):
        torch.testing.assert_close(fn(x, 1.0), x)


def test_match_luminance_sets_mean_luma_and_keeps_chroma(photo_u8):
    x = _tensor(photo_u8).double() * 0.5 + 0.25  # mid-range: the shift does not clamp
    ref = torch.rand(2, 3, 40, 50, dtype=torch.float64) * 0.4 + 0.1
    out = match_luminance(torch.cat([x, x.flip(-1)]), ref)
    torch.testing.assert_close(rgb_to_gray(out).mean(dim=(1, 2, 3)), rgb_to_gray(ref).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(rgb_to_yuv(out)[:, 1:], rgb_to_yuv(torch.cat([x, x.flip(-1)]))[:, 1:])
    # One reference image broadcasts over the batch.
    single = match_luminance(torch.cat([x, x]), ref[:1])
    torch.testing.assert_close(single[0], single[1])


def test_color_gradcheck():
    x = (torch.rand(1, 3, 4, 5, dtype=torch.float64) * 0.5 + 0.25).requires_grad_()
    ref = torch.rand(1, 3, 3, 3, dtype=torch.float64) * 0.2 + 0.4
    for fn in (
        rgb_to_yuv,
        yuv_to_rgb,
        rgb_to_gray,
        lambda t: adjust_saturation(t, 1.4),
        lambda t: adjust_contrast(t, 0.8),
        lambda t: adjust_brightness(t, 1.1),
        lambda t: match_luminance(t, ref),
    ):
        assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rgb_to_yuv(torch.rand(1, 4, 8, 8)), "3 channels"),
        (lambda: yuv_to_rgb(torch.rand(3, 8, 8)), "B,C,H,W"),
        (lambda: rgb_to_gray(torch.rand(1, 1, 8, 8)), "3 channels"),
        (lambda: adjust_saturation(torch.rand(1, 3, 8, 8), -0.1), "factor: expected a number >= 0"),
        (lambda: adjust_contrast(torch.rand(1, 3, 8, 8), "2"), "factor"),
        (lambda: adjust_brightness(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 1.0), "floating"),
        (lambda: match_luminance(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)), "ref: batch 3"),
    ],
)
def test_color_bad_input(call, message):
    with pytest.raises(OpsInputError, match=message):
        call()
