"""SynthToon: determinism, layout, and the two renderings' defining properties."""

import hashlib
import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.data.synth import label_map, make_synthtoon, random_scene, render_scene

LUMA = np.array([0.299, 0.587, 0.114])


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_layout_and_determinism(tmp_path):
    a = make_synthtoon(tmp_path / "a", n=6, size=32, seed=0, n_test=3)
    b = make_synthtoon(tmp_path / "b", n=6, size=32, seed=0, n_test=3)
    c = make_synthtoon(tmp_path / "c", n=6, size=32, seed=1, n_test=3)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db  # same seed → identical bytes
    assert set(da) == set(dc) and all(da[k] != dc[k] for k in da)  # other seed → every image differs
    for sub, count in (("train/photos", 6), ("train/cartoons", 6), ("test/photos", 3), ("test/cartoons", 3)):
        files = sorted((a / sub).glob("*.png"))
        assert len(files) == count
        img = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert [p.name for p in sorted((a / "test/photos").glob("*"))] == \
        [p.name for p in sorted((a / "test/cartoons").glob("*"))]
    man = json.loads((a / "manifest.json").read_text())
    assert (man["seed"], man["size"], man["n"], man["n_test"]) == (0, 32, 6, 3)
    # train photos and train cartoons come from different scenes; test pairs share theirs
    assert not set(man["scenes"]["train/photos"].values()) & set(man["scenes"]["train/cartoons"].values())
    assert man["scenes"]["test/photos"] == man["scenes"]["test/cartoons"]


def test_test_pairs_render_the_same_scene(tmp_path):
    root = make_synthtoon(tmp_path / "s", n=2, size=48, seed=3, n_test=2)
    man = json.loads((root / "manifest.json").read_text())
    name, scene_seed = sorted(man["scenes"]["test/photos"].items())[0]
    scene = random_scene(scene_seed, 48)
    for kind in ("photo", "cartoon"):
        disk = cv2.cvtColor(cv2.imread(str(root / f"test/{kind}s" / name)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(disk, render_scene(scene, kind))


def _borders(labels):
    """Pixels whose 3×3 neighbourhood holds another region (the drawn region borders)."""
    k = np.ones((3, 3), np.uint8)
    return cv2.dilate(labels, k) != cv2.erode(labels, k)


def test_cartoon_has_outlines_photo_has_texture_not_outlines():
    dark_c, dark_p, tex_c, tex_p = [], [], [], []
    for seed in range(8):
        scene = random_scene(seed, 128)
        labels = label_map(scene)
        border = _borders(labels)
        interior = cv2.erode((~border).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        cart = render_scene(scene, "cartoon").astype(np.float64) @ LUMA
        photo = render_scene(scene, "photo").astype(np.float64) @ LUMA
        # darkest pixel within 1 px of each border pixel (the 1-px-wide anti-aliased ink may sit on either side)
        k = np.ones((3, 3), np.uint8)
        dark_c.append((cv2.erode(cart.astype(np.float32), k)[border] < 60).mean())
        dark_p.append((cv2.erode(photo.astype(np.float32), k)[border] < 60).mean())
        # within-region variance: flat fills vs textured, noisy surfaces
        for lab in np.unique(labels[interior]):
            m = interior & (labels == lab)
            if m.sum() > 50:
                tex_c.append(cart[m].std())
                tex_p.append(photo[m].std())
    assert np.mean(dark_c) > 0.85, dark_c  # region borders are inked
    assert np.mean(dark_p) < 0.05, dark_p  # fills have luminance >= 90 · lighting: no ink in photos
    assert np.median(tex_c) < 1.0 and np.median(tex_p) > 4.0, (np.median(tex_c), np.median(tex_p))


def test_cli_synth_and_errors(tmp_path):
    r = CliRunner().invoke(app, ["prepare", "synth", str(tmp_path / "s"), "--n", "3", "--size", "24",
                                 "--n-test", "2"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "s/train/cartoons").glob("*.png"))) == 3
    # other settings into the same folder: refused with a one-line error, exit 1
    r = CliRunner().invoke(app, ["prepare", "synth", str(tmp_path / "s"), "--n", "3", "--size", "24",
                                 "--seed", "5"])
    assert r.exit_code == 1 and "other settings" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["prepare", "synth", str(tmp_path / "t"), "--size", "4"])
    assert r.exit_code == 2 and "size" in r.output
    with pytest.raises(Exception, match="unknown rendering kind"):
        render_scene(random_scene(0, 32), "sketch")


def test_resume_fills_missing_and_keeps_existing(tmp_path):
    root = make_synthtoon(tmp_path / "s", n=4, size=24, seed=0, n_test=2)
    before = _digest(root)
    (root / "train/photos/1.png").unlink()
    kept = root / "train/cartoons" / sorted(p.name for p in (root / "train/cartoons").iterdir())[0]
    mtime = kept.stat().st_mtime_ns
    make_synthtoon(root, n=4, size=24, seed=0, n_test=2)
    assert _digest(root) == before and kept.stat().st_mtime_ns == mtime
