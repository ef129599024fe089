"""benchmarks/bench_learning.py's statistics: KID from kernel matrices, bootstrap intervals over seeds × images."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_learning import bootstrap_ci, kid_full  # noqa: E402

from toonlab.eval.fid import kernel_inception_distance  # noqa: E402


def _kernels(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    return k(x, x), k(y, y), k(x, y)


def test_kid_from_kernels_is_toonlabs_kid_and_ignores_repeats():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 16)), rng.normal(0.3, size=(40, 16))
    full = kid_full(*_kernels(x, y), np.arange(40))
    assert full == pytest.approx(kernel_inception_distance(x, y, subset_size=40, subsets=3)[0], rel=1e-12)
    # a draw with repeats equals the unbiased estimate on the drawn sets with the self-pairs left out
    idx = np.array([0, 0, 1, 2, 2, 2, 5])
    a, b = x[idx], y[idx]
    kxx, kyy, kxy = _kernels(a, b)
    keep = idx[:, None] != idx[None, :]
    assert kid_full(*_kernels(x, y), idx) == pytest.approx(kxx[keep].mean() + kyy[keep].mean() - 2 * kxy.mean())


def test_bootstrap_interval_over_seeds_and_images():
    rng = np.random.default_rng(1)
    flat = [{"psnr": np.full(50, 12.0)} for _ in range(3)]
    assert bootstrap_ci(flat, None, None, 200) == {"psnr": [12.0, 12.0]}
    # seeds that disagree widen the interval beyond the images' own spread
    noisy = [{"psnr": 12.0 + s + rng.normal(0, 0.5, 200)} for s in (-1.0, 0.0, 1.0)]
    lo, hi = bootstrap_ci(noisy, None, None, 500)["psnr"]
    one = bootstrap_ci(noisy[1:2], None, None, 500)["psnr"]
    assert lo < 12.0 < hi and hi - lo > 1.0 and one[1] - one[0] < 0.3
    # FID / KID intervals from features contain the full-set statistic
    x, t = rng.normal(size=(60, 8)), rng.normal(0.5, size=(60, 8))
    ci = bootstrap_ci([{"psnr": np.zeros(60)}], [x], t, 100)
    kid = kid_full(*_kernels(x, t), np.arange(60))
    assert ci["kid"][0] < kid < ci["kid"][1] and ci["fid"][0] < ci["fid"][1]
