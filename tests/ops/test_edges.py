"""CTSS edge map and high-pass: hand-computed 5×5 cases, scipy reference on a photo, gradcheck, bad input."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from toonlab.ops import OpsInputError, ctss_edge_map, high_pass


def _impulse(row: int, col: int, rgb=(0.5, 0.5, 0.5)) -> torch.Tensor:
    x = torch.zeros(1, 3, 5, 5, dtype=torch.float64)
    for c, v in enumerate(rgb):
        x[0, c, row, col] = v
    return x


def test_edge_map_hand_computed_centre_and_corner():
    # Centre impulse, R=G=B=0.5 -> g = R+2G+B = 2 at (2,2). Cross-correlation responses:
    # at (2,2): F3 = F4 = 2·2 = 4 -> e = 8; at the 4 neighbours one gradient (±2) and one 2nd difference (−2): e = 4.
    centre = torch.zeros(5, 5, dtype=torch.float64)
    centre[2, 2] = 8
    centre[1, 2] = centre[3, 2] = centre[2, 1] = centre[2, 3] = 4
    # Corner impulse of g = 1 at (0,0): reflect padding mirrors row/col 1 to −1, so F1 = F2 = 0 there and
    # F3 = F4 = 2 -> e = 4; at (1,0) and (0,1): |−1| + |−1| = 2.
    corner = torch.zeros(5, 5, dtype=torch.float64)
    corner[0, 0] = 4
    corner[1, 0] = corner[0, 1] = 2
    x = torch.cat([_impulse(2, 2), _impulse(0, 0, (0.25, 0.25, 0.25))])
    per_batch = ctss_edge_map(x, normalize="batch")
    assert per_batch.shape == (2, 1, 5, 5)
    torch.testing.assert_close(per_batch[0, 0], centre / 8)
    torch.testing.assert_close(per_batch[1, 0], corner / 8)  # batch max is the centre image's 8
    per_image = ctss_edge_map(x, normalize="image")
    torch.testing.assert_close(per_image[1, 0], corner / 4)


def test_edge_map_weights_green_twice():
    # g = R + 2G + B: a green impulse gives twice the response of a red one of the same size.
    x = torch.cat([_impulse(2, 2, (0.5, 0, 0)), _impulse(2, 2, (0, 0.5, 0)), _impulse(2, 2, (0, 0, 0.5))])
    e = ctss_edge_map(x, normalize="batch")
    assert e[1].max().item() == pytest.approx(1.0)
    assert e[0].max().item() == pytest.approx(0.5)
    assert e[2].max().item() == pytest.approx(0.5)


def test_edge_map_matches_scipy_on_photo(astronaut):
    x = torch.from_numpy(astronaut[::4, ::4]).permute(2, 0, 1)[None].double() / 127.5 - 1
    g = (x[0, 0] + 2 * x[0, 1] + x[0, 2]).numpy()
    kernels = [
        [[0, -1, 0], [0, 0, 0], [0, 1, 0]],
        [[0, 0, 0], [-1, 0, 1], [0, 0, 0]],
        [[0, -1, 0], [0, 2, 0], [0, -1, 0]],
        [[0, 0, 0], [-1, 2, -1], [0, 0, 0]],
    ]
    # scipy's "mirror" mode is the reflect-101 padding of torch's "reflect".
    e = sum(np.abs(ndimage.correlate(g, np.array(k, float), mode="mirror")) for k in kernels)
    expected = (e - e.min()) / (e.max() - e.min())
    np.testing.assert_allclose(ctss_edge_map(x)[0, 0].numpy(), expected, atol=1e-12)


def test_edge_map_flat_image_is_zero_and_float32_works():
    assert ctss_edge_map(torch.full((2, 3, 8, 8), 0.3)).abs().max().item() == 0.0
    e = ctss_edge_map(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert e.dtype == torch.float32 and e.min().item() == 0.0 and e.max().item() == pytest.approx(1.0)


def test_edge_map_min_range_floors_round_off_only():
    flat = torch.full((1, 3, 8, 8), 0.25, dtype=torch.float64) + 1e-8 * torch.rand(1, 3, 8, 8, dtype=torch.float64)
    assert ctss_edge_map(flat).max().item() == pytest.approx(1.0)  # round-off stretched to [0, 1]
    assert ctss_edge_map(flat, min_range=1e-3).max().item() < 1e-4
    edge = torch.cat([_impulse(2, 2), _impulse(0, 0, (0.25, 0.25, 0.25))])  # range 8 >> 1e-3: unchanged
    torch.testing.assert_close(ctss_edge_map(edge, min_range=1e-3), ctss_edge_map(edge))


def test_edge_map_gradcheck():
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    # fast_mode checks a random projection of the Jacobian: the full one costs ~1 s per 100 inputs of conv2d here.
    assert torch.autograd.gradcheck(lambda t: ctss_edge_map(t, normalize="image"), (x,), fast_mode=True)


@pytest.mark.parametrize(
    ("x", "normalize", "message"),
    [
        (torch.rand(1, 1, 8, 8), "batch", "3 channels"),
        (torch.rand(3, 8, 8), "batch", "B,C,H,W"),
        (torch.rand(1, 3, 1, 8), "batch", "at least 2x2"),
        (torch.rand(1, 3, 8, 8), "global", "normalize"),
    ],
)
def test_edge_map_bad_input(x, normalize, message):
    with pytest.raises(OpsInputError, match=message):
        ctss_edge_map(x, normalize=normalize)


def test_high_pass_values():
    e = torch.tensor([0.0, 0.2, 0.4, 0.1, 1.0], dtype=torch.float64)
    # h(e) = 1 − 1/(1 + (e/d)^n), d = 0.2, n = 2: h(0) = 0, h(d) = 1/2, h(2d) = 4/5, h(d/2) = 1/5, h(5d) = 25/26.
    expected = torch.tensor([0.0, 0.5, 0.8, 0.2, 25 / 26], dtype=torch.float64)
    torch.testing.assert_close(high_pass(e), expected)
    torch.testing.assert_close(high_pass(e, d=0.4, n=1.0), e / (e + 0.4))
    x = torch.rand(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: high_pass(t + 0.01), (x,))


@pytest.mark.parametrize(("d", "n"), [(0.0, 2.0), (-0.2, 2.0), (0.2, 0.0)])
def test_high_pass_bad_parameters(d, n):
    with pytest.raises(OpsInputError, match="expected a number > 0"):
        high_pass(torch.rand(3), d=d, n=n)
