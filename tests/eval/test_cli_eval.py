"""`toonlab evaluate` end to end on SynthToon-like folders, with a random-weight Inception file (offline)."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.eval.metrics import score_folders


@pytest.fixture()
def folders(tmp_path):
    """3 'outputs' and their 3 true cartoons (same names), plus an unrelated reference set."""
    rng = np.random.default_rng(0)
    out, truth = tmp_path / "out", tmp_path / "truth"
    for d in (out, truth):
        d.mkdir()
    for i in range(3):
        img = np.full((48, 48, 3), 230, np.uint8)
        cv2.circle(img, (24, 24), 10 + 3 * i, (int(rng.integers(0, 255)), 40, 90), -1)
        cv2.imwrite(str(truth / f"s{i}.png"), img)
        noisy = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(out / f"s{i}.png"), noisy)
    return out, truth


def test_evaluate_folders_with_fid_kid_and_paired_scores(folders, fid_torch_home, monkeypatch, tmp_path):
    out, truth = folders
    monkeypatch.setenv("TORCH_HOME", str(fid_torch_home))
    runner = CliRunner()
    js = tmp_path / "scores.json"
    cache = tmp_path / "cache"
    args = ["evaluate", "--outputs", str(out), "--reference", str(truth), "--cache-dir", str(cache)]
    r = runner.invoke(app, [*args, "--json", str(js)])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert set(res["scores"]) == {"fid", "kid", "kid_std", "psnr", "ssim", "edge_f1"}
    assert res["scores"]["fid"] > 0 and res["counts"] == {"outputs": 3, "reference": 3, "paired": 3}
    paired = score_folders(out, truth).mean()
    assert res["scores"]["ssim"] == pytest.approx(paired["ssim"]) and res["scores"]["psnr"] < 40
    assert any("3 images < 2048" in n for n in res["notes"])  # small-set warning
    assert "fid" in r.output and "ssim" in r.output
    assert len(list(cache.glob("*.npz"))) == 2

    # the reference against itself (read from the cache): FID ~ 0
    r = runner.invoke(app, ["evaluate", "--outputs", str(truth), "--reference", str(truth), "--cache-dir",
                            str(cache), "--metrics", "fid", "--json", str(js)])
    assert r.exit_code == 0, r.output
    assert abs(json.loads(js.read_text())["scores"]["fid"]) < 1e-3 * res["scores"]["fid"]


def test_evaluate_offline_without_weights(folders, tmp_path, monkeypatch):
    out, truth = folders
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("TOONLAB_OFFLINE", "1")
    runner = CliRunner()
    # the defaults (FID, KID and the paired scores): what needs no weights is scored, FID/KID get a note
    js = tmp_path / "offline.json"
    r = runner.invoke(app, ["evaluate", "--outputs", str(out), "--reference", str(truth), "--json", str(js)])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert set(res["scores"]) == {"psnr", "ssim", "edge_f1"}
    assert res["scores"]["ssim"] == pytest.approx(score_folders(out, truth).mean()["ssim"])
    note = [n for n in res["notes"] if n.startswith("FID/KID not computed")]
    assert len(note) == 1 and "pt_inception-2015-12-05-6726825d.pth" in note[0] and "Traceback" not in r.output
    # only FID asked for: nothing to score, one error line
    r = runner.invoke(app, ["evaluate", "--outputs", str(out), "--reference", str(truth), "--metrics", "fid,kid"])
    assert r.exit_code == 1
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: FID/KID can't be computed")
    assert "pt_inception-2015-12-05-6726825d.pth" in lines[0]
    # the SynthToon scores alone need no weights
    r = runner.invoke(app, ["evaluate", "--outputs", str(out), "--reference", str(truth), "--metrics",
                            "psnr,ssim,edge_f1"])
    assert r.exit_code == 0, r.output
    assert "edge_f1" in r.output
    r = runner.invoke(app, ["evaluate", "--outputs", str(out), "--reference", str(truth), "--metrics", "lpips"])
    assert r.exit_code == 2 and "unknown lpips" in r.output


def test_evaluate_translates_with_a_model(folders, tmp_path):
    photos, truth = folders
    runner = CliRunner()
    js, out = tmp_path / "s.json", tmp_path / "translated"
    r = runner.invoke(app, ["evaluate", "--model", "classic", "--photos", str(photos), "--cartoons", str(truth),
                            "--metrics", "ssim,edge_f1", "--out", str(out), "--json", str(js)])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert sorted(p.name for p in out.glob("*.png")) == ["s0.png", "s1.png", "s2.png"]
    assert res["scores"]["ssim"] == pytest.approx(score_folders(out, truth, ("ssim",)).mean()["ssim"])
    r = runner.invoke(app, ["evaluate", "--model", "classic", "--photos", str(photos)])
    assert r.exit_code == 2 and "--cartoons" in r.output
