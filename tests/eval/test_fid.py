"""Fréchet distance, KID and weighted FID against independent numpy/scipy computations; the stats cache."""

import os
import warnings

import cv2
import numpy as np
import pytest
import scipy.linalg
import torch

from toonlab.eval.fid import (FIDEvaluator, SmallSampleWarning, feature_stats, frechet_distance,
                              frechet_distance_features,
                              kernel_inception_distance, weighted_fid)


def _features(n, d, shift=0.0, seed=0):
    mix = np.random.default_rng(42).normal(size=(d, d)) / np.sqrt(d)  # one correlated distribution ...
    rng = np.random.default_rng(seed)  # ... sampled with different seeds
    return rng.normal(size=(n, d)) @ mix + shift


def _reference_fid(f1, f2):
    """pytorch-fid's formula, written independently: scipy sqrtm of Σ1Σ2 (with its eps·I retry)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_fid_of_a_set_with_itself_is_zero():
    f = _features(300, 32)
    mu, sigma = feature_stats(f)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


@pytest.mark.parametrize("n", [400, 20, 3])  # well-conditioned, and rank-deficient (N < D) covariances
def test_fid_matches_scipy_sqrtm(n):
    f1, f2 = _features(n, 32, seed=1), _features(n, 32, shift=0.3, seed=2)
    ours = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert ours == pytest.approx(_reference_fid(f1, f2), rel=1e-6, abs=1e-6)
    assert frechet_distance_features(f1, f2) == pytest.approx(ours, rel=1e-7)  # low-rank form (N < D) = stats form
    assert ours > 1


def _reference_mmd2(x, y):
    """Unbiased MMD² with k(a,b) = (a·b/d + 1)³, by explicit sums over pairs."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_explicit_mmd():
    x, y = _features(25, 8, seed=3), _features(25, 8, shift=0.5, seed=4)
    # one subset of the full set: the subset's order is irrelevant, so the value is the full-set MMD²
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=100)
    assert mean == pytest.approx(_reference_mmd2(x, y), rel=1e-9)
    assert std == pytest.approx(0, abs=1e-9)
    # subsets of 10: mean over subsets is near the full value, and the spread is reported
    m10, s10 = kernel_inception_distance(x, y, subsets=50, subset_size=10)
    assert s10 > 0 and abs(m10 - mean) < 3 * s10
    same, _ = kernel_inception_distance(_features(200, 8, seed=5), _features(200, 8, seed=6), subsets=5,
                                        subset_size=100)
    assert abs(same) < 0.1 * mean  # unbiased: ~0 for two samples of one distribution


def test_weighted_fid_formula():
    assert weighted_fid(100.0, 50.0) == pytest.approx(0.8 * 100 + 0.2 * 50)
    assert weighted_fid(10.0, 30.0, target_weight=0.5) == pytest.approx(20.0)


class _ColourStats(torch.nn.Module):
    """A tiny deterministic feature network (4×4 average colours, 48-d) so cache tests need no Inception."""

    calls = 0

    def forward(self, x):
        type(self).calls += len(x)
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def _write_images(folder, n, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:02d}.png"), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))


def test_stats_cache_reads_once_and_invalidates_on_change(tmp_path):
    ref = tmp_path / "ref"
    _write_images(ref, 5, seed=0)
    ev = FIDEvaluator(network=_ColourStats(), network_fingerprint="colour-v1", cache_dir=tmp_path / "cache")
    _ColourStats.calls = 0
    with pytest.warns(SmallSampleWarning, match="5 images"):
        first = ev.folder_stats(ref)
    assert not first.cached and first.count == 5 and _ColourStats.calls == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        again = ev.folder_stats(ref)
        assert again.cached and _ColourStats.calls == 5  # no image was read through the network
        np.testing.assert_array_equal(again.mu, first.mu)
        np.testing.assert_array_equal(again.sigma, first.sigma)

        # rewrite one file (new content and size, later mtime): the entry is stale
        cv2.imwrite(str(ref / "03.png"), np.zeros((24, 24, 3), np.uint8))
        st = os.stat(ref / "03.png")
        os.utime(ref / "03.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        changed = ev.folder_stats(ref)
        assert not changed.cached and _ColourStats.calls == 10
        assert not np.allclose(changed.mu, first.mu)

        # other weights → another entry; a new file → recomputed
        other = FIDEvaluator(network=_ColourStats(), network_fingerprint="colour-v2", cache_dir=tmp_path / "cache")
        assert not other.folder_stats(ref).cached
        _write_images(ref / "sub", 1, seed=9)
        assert ev.folder_stats(ref).count == 6

        # the evaluator's FID equals the formula on the folder statistics; a folder against itself is ~0
        other_set = tmp_path / "other"
        _write_images(other_set, 6, seed=1)
        a, b = ev.folder_stats(ref), ev.folder_stats(other_set)
        assert ev.fid(ref, other_set) == pytest.approx(frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
        assert abs(ev.fid(ref, ref)) < 1e-5 * np.trace(a.sigma)  # rank-deficient: round-off only
        assert ev.kid(ref, other_set, subsets=4)[0] == pytest.approx(
            kernel_inception_distance(a.features, b.features, subsets=4)[0])
