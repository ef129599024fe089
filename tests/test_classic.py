"""The classic (learning-free) cartoonizer: size/range/alpha kept, flat regions, dark lines at strong edges,
hand-computed values, and its pieces against independent computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toonlab.errors import UsageError
from toonlab.infer.classic import (ClassicConfig, _quantize_luma, _smoothing_coefficients, _upsample_rows,
                                   cartoonize_classic)
from toonlab.ops import self_guided_filter


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    a = data.astronaut()[:256, 128:384]  # face + suit: skin, hair, fabric texture
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def test_keeps_size_dtype_range_and_input(photo):
    before = photo.clone()
    out = cartoonize_classic(photo)
    assert out.shape == photo.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(photo, before)  # input untouched
    odd = photo[:, :, :101, :77]
    assert cartoonize_classic(odd).shape == odd.shape
    assert cartoonize_classic(photo[0]).shape == photo[0].shape  # (3,H,W) in, (3,H,W) out
    assert cartoonize_classic(photo.double()).dtype == torch.float64


def test_alpha_channel_passes_through(photo):
    alpha = torch.linspace(0, 1, photo.shape[-1]).expand(1, 1, *photo.shape[-2:])
    out = cartoonize_classic(torch.cat([photo, alpha], 1))
    assert out.shape == (1, 4, *photo.shape[-2:])
    assert torch.equal(out[:, 3:], alpha)
    assert torch.allclose(out[:, :3], cartoonize_classic(photo))


def test_flat_regions(photo):
    """Few distinct colours and many flat neighbourhoods compared with the photo."""
    src, out = _u8(photo), _u8(cartoonize_classic(photo))

    def distinct(a):
        return len(np.unique(a.reshape(-1, 3), axis=0))

    def flat_fraction(a):  # horizontal neighbours within 1 level summed over channels
        return (np.abs(np.diff(a.astype(int), axis=1)).sum(-1) <= 1).mean()

    assert distinct(out) < 0.6 * distinct(src)
    assert flat_fraction(out) > 5 * flat_fraction(src) and flat_fraction(out) > 0.4


def test_dark_lines_at_strong_edges():
    """A bright square on a dark-ish background: ink on the dark side of the edge, none far from it."""
    x = torch.full((1, 3, 96, 96), 0.35)
    x[..., 32:64, 32:64] = 0.85
    out = cartoonize_classic(x, levels=4)[0, 1]
    plain = cartoonize_classic(x, levels=4, line_strength=0.0)[0, 1]
    far_dark, far_bright = out[10, 10], out[48, 48]
    next_to_edge = out[48, 29:32].min()  # just outside the square's left edge (dark side)
    assert next_to_edge < 0.4 * far_dark
    assert out[29:32, 48].min() < 0.4 * far_dark  # top edge too
    assert plain[48, 30] == pytest.approx(plain[10, 10].item(), abs=0.02)  # no line when lines are off
    assert far_bright > far_dark + 0.3
    # away from the edge, the flat regions are untouched by lines
    assert out[10, 10] == pytest.approx(plain[10, 10].item(), abs=1e-6)


def test_constant_image_hand_computed():
    """A constant colour: smoothing keeps it, luminance snaps to its band, chroma is scaled by saturation."""
    c = torch.tensor([0.6, 0.3, 0.2])
    x = c.view(1, 3, 1, 1).expand(1, 3, 40, 50).contiguous()
    cfg = ClassicConfig(levels=8, sharpness=40.0, saturation=1.5)
    out = cartoonize_classic(x, cfg)
    y = 0.299 * 0.6 + 0.587 * 0.3 + 0.114 * 0.2  # 0.3827
    t = y * 8  # band 3, f = 0.0616 - 0.5... position inside the band
    f = t - np.floor(t) - 0.5
    g = 0.5 * (np.tanh(40 * (f - 0.5)) + np.tanh(40 * (f + 0.5)))
    yq = (np.floor(t) + 0.5 + g) / 8
    expected = yq + 1.5 * (c.numpy() - y)
    np.testing.assert_allclose(out[0, :, 20, 25].numpy(), expected, atol=1e-5)
    assert out.std(dim=(2, 3)).max() < 1e-5


def test_quantization_is_monotone_continuous_and_banded():
    y = torch.linspace(0, 1, 20001).view(1, 1, 1, -1)
    q = _quantize_luma(y.clone(), 8, 40.0).flatten()
    assert torch.all(q[1:] >= q[:-1] - 1e-6)  # monotone
    assert (q[1:] - q[:-1]).abs().max() < 0.02  # no jumps (soft steps)
    centres = (torch.arange(8) + 0.5) / 8
    near = (q[:, None] - centres[None]).abs().min(1).values
    assert (near < 0.01).float().mean() > 0.8  # most values sit on one of the 8 band centres


def test_one_round_equals_the_ops_self_guided_filter(photo):
    a, b, first = _smoothing_coefficients(photo, 3, 0.01, 1)
    ref = self_guided_filter(photo, 3, 0.01)
    torch.testing.assert_close(a * photo + b, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(first, ref, atol=1e-5, rtol=0)
    # two rounds compose into one affine map: A·x + B == filter(filter(x))
    a2, b2, _ = _smoothing_coefficients(photo, 3, 0.01, 2)
    torch.testing.assert_close(a2 * photo + b2, self_guided_filter(ref, 3, 0.01), atol=1e-5, rtol=0)


def test_strip_upsampling_equals_full_interpolate():
    low = torch.rand(2, 7, 37, 53)
    full = F.interpolate(low, size=(160, 211), mode="bilinear", align_corners=False)
    strips = torch.cat([_upsample_rows(low, i, min(160, i + 23), (160, 211)) for i in range(0, 160, 23)], 2)
    torch.testing.assert_close(strips, full, atol=1e-5, rtol=0)


def test_large_image_uses_working_resolution_and_keeps_edges():
    """Above work_size the fast path runs; a sharp step edge stays sharp (coefficients applied at full size)."""
    x = torch.full((1, 3, 300, 400), 0.2)
    x[..., :, 200:] = 0.8
    out = cartoonize_classic(x, work_size=100, line_strength=0.0)
    assert out.shape == x.shape
    row = out[0, 1, 150]
    assert (row[195] - row[205]).abs() > 0.5  # the step is still a step ...
    assert (row[:190] - row[0]).abs().max() < 0.02 and (row[210:] - row[399]).abs().max() < 0.02  # ... with flat sides


def test_bad_knobs_and_inputs():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(UsageError, match="levels"):
        cartoonize_classic(x, levels=1)
    with pytest.raises(UsageError, match="unknown knob 'colour'"):
        cartoonize_classic(x, colour=3)
    with pytest.raises(UsageError, match=r"\(B,3,H,W\)"):
        cartoonize_classic(torch.rand(1, 2, 16, 16))
    with pytest.raises(UsageError, match=r"\(B,3,H,W\)"):
        cartoonize_classic(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    assert cartoonize_classic(torch.rand(1, 3, 2, 2)).shape == (1, 3, 2, 2)  # tiny images work too


def test_same_result_on_any_thread_count_and_thread_setting_restored():
    x = torch.rand(1, 3, 260, 180)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = cartoonize_classic(x, work_size=64)  # fast path: strips on worker threads
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one = cartoonize_classic(x, work_size=64)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(one, two)
