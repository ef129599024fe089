"""SynthToon paired scores: PSNR / SSIM against scikit-image, edge F1 properties, folder pairing."""

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from toonlab.errors import UsageError
from toonlab.eval.metrics import edge_f1, psnr, score_folders, ssim


@pytest.fixture()
def pair(astronaut):
    a = astronaut[100:196, 150:278].astype(np.float64) / 255
    b = np.clip(a + np.random.default_rng(0).normal(0, 0.08, a.shape), 0, 1)
    return a, b


def test_psnr_and_ssim_match_skimage(pair):
    a, b = pair
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), rel=1e-9)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1, channel_axis=-1)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0) and psnr(a, a) == float("inf")


def _drawing(shift=0):
    img = np.ones((64, 64, 3))
    cv2.rectangle(img, (12 + shift, 12), (50 + shift, 40), (0.1, 0.2, 0.9), -1)
    cv2.circle(img, (30 + shift, 48), 8, (0.9, 0.1, 0.1), -1)
    return img


def test_edge_f1_tolerance_and_limits():
    a = _drawing()
    assert edge_f1(a, a) == 1.0
    assert edge_f1(_drawing(shift=1), a, tolerance=2) == 1.0  # within tolerance
    assert edge_f1(_drawing(shift=1), a, tolerance=0) < 0.6  # exact matching only
    assert edge_f1(_drawing(shift=6), a, tolerance=2) < 0.5
    blank = np.ones_like(a)
    assert edge_f1(blank, a) == 0.0 and edge_f1(blank, blank) == 1.0


def test_score_folders_pairs_by_name_and_reports_bad_files(tmp_path):
    out, truth = tmp_path / "out", tmp_path / "truth"
    out.mkdir(), truth.mkdir()
    for name, shift in (("a", 0), ("b", 3)):
        cv2.imwrite(str(truth / f"{name}.png"), (_drawing() * 255).astype(np.uint8))
        cv2.imwrite(str(out / f"{name}.png"), (_drawing(shift) * 255).astype(np.uint8))
    cv2.imwrite(str(out / "orphan.png"), np.zeros((8, 8, 3), np.uint8))
    (out / "broken.png").write_bytes(b"garbage")
    (truth / "broken.png").write_bytes(b"garbage")
    res = score_folders(out, truth)
    assert sorted(res.per_image) == ["a", "b"]
    assert res.per_image["a"] == {"psnr": float("inf"), "ssim": pytest.approx(1.0), "edge_f1": 1.0}
    assert res.per_image["b"]["ssim"] < 1
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in res.failed) == ["broken.png", "orphan.png"]
    with pytest.raises(UsageError, match="unknown paired metric"):
        score_folders(out, truth, metrics=("lpips",))
