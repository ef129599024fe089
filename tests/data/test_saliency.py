"""MBD saliency: FastMBD against a brute-force exact minimum barrier distance, hand-computed cases, and the
object-over-background ranking on a synthetic photo."""

import cv2
import numpy as np
import pytest
from scipy import ndimage

from toonlab.data.saliency import MBDConfig, boundary_contrast, centre_bias, mbd_distance, mbd_saliency
from toonlab.errors import UsageError


def exact_mbd(img):
    """Exact MBD by brute force: for every value interval [l, u], the pixels 4-connected to the boundary through
    pixels with values inside it have a path of barrier ≤ u − l; take the smallest such u − l."""
    vals = np.unique(img)
    border = np.zeros(img.shape, bool)
    border[0] = border[-1] = border[:, 0] = border[:, -1] = True
    best = np.full(img.shape, np.inf)
    for i, lo in enumerate(vals):
        for hi in vals[i:]:
            inside = (img >= lo) & (img <= hi)
            labels, _ = ndimage.label(inside)
            ids = np.unique(labels[border & inside])
            reach = np.isin(labels, ids[ids > 0])
            best[reach] = np.minimum(best[reach], hi - lo)
    return best


def test_fastmbd_is_an_upper_bound_close_to_exact():
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(4):
        smooth = cv2.resize(rng.random((3, 3)), (9, 9), interpolation=cv2.INTER_CUBIC)
        img = np.round(smooth * 10 + rng.random((9, 9)) * 3).astype(np.float32)  # integer levels: exact in float32
        exact, fast = exact_mbd(img), mbd_distance(img, passes=3)
        assert (fast >= exact - 1e-6).all()  # the barrier of a real path can't beat the minimum
        diffs.append(np.abs(fast - exact).mean())
    assert np.mean(diffs) < 0.05 * 13, diffs  # within a few % of the value range on average


def test_trapped_core_hand_computed():
    # background 0, a ring of 8 around a core of 2: the core must cross the ring → barrier 8 − 0 = 8
    img = np.zeros((11, 11), np.float32)
    img[2:9, 2:9] = 8
    img[4:7, 4:7] = 2
    d = mbd_distance(img)
    expect = np.where(img == 0, 0.0, 8.0)
    np.testing.assert_array_equal(d, expect)
    # channels are independent: stacking two images gives the two maps
    both = mbd_distance(np.stack([img, 10 - img], -1))
    np.testing.assert_array_equal(both[..., 0], expect)
    np.testing.assert_array_equal(both[..., 1], expect)


def _object_on_texture(seed=0, h=120, w=150):
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.normal(100, 30, (h, w, 3)), (0, 0), 1.0)
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (w // 2 + 10, h // 2 - 5), h // 5, 1, -1)
    img = bg.copy()
    img[mask > 0] = np.array([235, 205, 70]) + rng.normal(0, 8, (int(mask.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask > 0


@pytest.mark.parametrize("cfg", [MBDConfig(), MBDConfig(boundary_contrast=False, smoothing=False,
                                                        centre_bias=False, contrast=False)])
def test_object_ranked_above_textured_background(cfg):
    img, mask = _object_on_texture()
    sal = mbd_saliency(img, cfg)
    assert sal.shape == mask.shape and sal.dtype == np.float32 and 0 <= sal.min() and sal.max() <= 1
    assert sal[mask].mean() > sal[~mask].mean() + 0.4, (sal[mask].mean(), sal[~mask].mean())


def test_post_processing_pieces():
    c = centre_bias(5, 7)
    assert c[2, 3] == pytest.approx(1.0) and c[0, 0] == pytest.approx(0.0) and c[4, 6] == pytest.approx(0.0)
    lab = np.full((20, 20, 3), 50.0)
    lab += np.random.default_rng(0).normal(0, 1, lab.shape)
    lab[8:12, 8:12] = [200, 120, 90]
    b = boundary_contrast(lab)
    assert b[8:12, 8:12].min() > 5 * b[:4].mean()  # far from every border's colour distribution


def test_bad_input():
    with pytest.raises(UsageError):
        mbd_saliency(np.zeros((8, 8), np.uint8))
    with pytest.raises(UsageError):
        mbd_distance(np.zeros((2, 2, 2, 2)))
