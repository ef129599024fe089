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


# ---- RBD --------------------------------------------------------------------------------------------------------


def direct_rbd(lab, labels, s_clr=10.0, s_bnd=1.0, s_spa=0.25, mu=0.1):
    """RBD written out from the paper's definitions with plain loops: Floyd–Warshall geodesics, the sums of
    Area / Len_bnd / wCtr pair by pair, and the saliency as the minimiser of the explicit cost (BFGS)."""
    from scipy.optimize import minimize

    h, w = labels.shape
    n = labels.max() + 1
    colour, centre, boundary = np.zeros((n, 3)), np.zeros((n, 2)), np.zeros(n, bool)
    for k in range(n):
        ys, xs = np.nonzero(labels == k)
        colour[k] = lab[ys, xs].mean(0)
        centre[k] = ys.mean() / (h - 1), xs.mean() / (w - 1)
        boundary[k] = ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1
    adjacent = set()
    for y in range(h):
        for x in range(w):
            for yy, xx in ((y + 1, x), (y, x + 1)):
                if yy < h and xx < w and labels[y, x] != labels[yy, xx]:
                    adjacent.add(tuple(sorted((labels[y, x], labels[yy, xx]))))
    dist = lambda a, b: float(np.sqrt(((colour[a] - colour[b]) ** 2).sum()))  # noqa: E731
    geo = np.full((n, n), np.inf)
    np.fill_diagonal(geo, 0)
    for a, b in adjacent:
        geo[a, b] = geo[b, a] = dist(a, b)
    for k in range(n):
        for a in range(n):
            for b in range(n):
                geo[a, b] = min(geo[a, b], geo[a, k] + geo[k, b])
    bndcon, wbg = np.zeros(n), np.zeros(n)
    for p in range(n):
        area = sum(np.exp(-geo[p, q] ** 2 / (2 * s_clr ** 2)) for q in range(n))
        length = sum(np.exp(-geo[p, q] ** 2 / (2 * s_clr ** 2)) for q in range(n) if boundary[q])
        bndcon[p] = length / np.sqrt(area)
        wbg[p] = 1 - np.exp(-bndcon[p] ** 2 / (2 * s_bnd ** 2))
    wctr = np.array([sum(dist(p, q) * np.exp(-((centre[p] - centre[q]) ** 2).sum() / (2 * s_spa ** 2)) * wbg[q]
                         for q in range(n)) for p in range(n)])
    wfg = (wctr - wctr.min()) / (wctr.max() - wctr.min())
    pairs = [(a, b, np.exp(-dist(a, b) ** 2 / (2 * s_clr ** 2)) + mu) for a, b in adjacent]

    def cost(s):
        return (wbg * s ** 2).sum() + (wfg * (s - 1) ** 2).sum() + sum(wij * (s[a] - s[b]) ** 2 for a, b, wij in pairs)

    s = minimize(cost, np.full(n, 0.5), method="BFGS", options={"gtol": 1e-10}).x
    return bndcon, wctr, (s - s.min()) / (s.max() - s.min())


def _block_image(seed=0, grid=7, cell=5):
    """A grid of flat blocks (labels known): textured background colours, a 2×2 bright object in the middle."""
    rng = np.random.default_rng(seed)
    colours = np.clip(rng.normal([110, 120, 100], 18, (grid, grid, 3)), 0, 255)
    colours[3:5, 2:4] = [240, 200, 60]
    img = np.kron(colours, np.ones((cell, cell, 1))).round().astype(np.uint8)
    labels = np.kron(np.arange(grid * grid).reshape(grid, grid), np.ones((cell, cell), int))
    obj = np.zeros((grid, grid), bool)
    obj[3:5, 2:4] = True
    return img, labels, np.kron(obj, np.ones((cell, cell), bool))


def test_rbd_matches_a_direct_implementation_on_block_images():
    from toonlab.data.saliency import RBDConfig, rbd_superpixel_saliency, superpixel_graph

    for seed in (0, 1):
        img, labels, _ = _block_image(seed)
        lab = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2LAB).astype(np.float64)
        fast = rbd_superpixel_saliency(superpixel_graph(lab, labels), RBDConfig())
        bndcon, wctr, sal = direct_rbd(lab, labels)
        np.testing.assert_allclose(fast["bndcon"], bndcon, rtol=1e-6)
        np.testing.assert_allclose(fast["wctr"], wctr, rtol=1e-6)
        np.testing.assert_allclose(fast["saliency"], sal, atol=1e-4)


def test_rbd_ranks_the_object_above_the_background():
    from toonlab.data.saliency import rbd_saliency

    img, labels, mask = _block_image(2)
    sal = rbd_saliency(img, labels=labels)
    assert sal.shape == mask.shape and sal.dtype == np.float32
    assert sal[mask].min() > sal[~mask].max()  # background blocks are all boundary-connected
    img, mask = _object_on_texture()  # the full pipeline, with SLIC superpixels
    sal = rbd_saliency(img)
    assert 0 <= sal.min() and sal.max() <= 1
    assert sal[mask].mean() > sal[~mask].mean() + 0.4, (sal[mask].mean(), sal[~mask].mean())
    with pytest.raises(UsageError):
        rbd_saliency(np.zeros((8, 8), np.uint8))


def test_prepare_saliency_cli_rbd(tmp_path):
    from typer.testing import CliRunner

    from toonlab.cli import app

    img, mask = _object_on_texture()
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), img[..., ::-1])
    res = CliRunner().invoke(app, ["prepare", "saliency", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                   "--method", "rbd", "--workers", "0"])
    assert res.exit_code == 0, res.output
    sal = cv2.imread(str(tmp_path / "out" / "a.png"), cv2.IMREAD_GRAYSCALE)
    assert sal.shape == mask.shape and sal[mask].mean() > sal[~mask].mean() + 100
    res = CliRunner().invoke(app, ["prepare", "saliency", str(tmp_path / "in"), "-o", str(tmp_path / "o2"),
                                   "--method", "xyz"])
    assert res.exit_code == 2 and "unknown saliency method" in res.output
