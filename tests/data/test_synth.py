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


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_styles_layout_palettes_and_line_weights(tmp_path):
    """--styles: one cartoon folder per style (train and test); the styles of one test scene differ in hue,
    saturation and line weight; deterministic; the default layout is untouched."""
    from toonlab.data.synth import style_params

    a = make_synthtoon(tmp_path / "a", n=3, size=96, seed=0, n_test=4, styles=["hayao", "shinkai"])
    b = make_synthtoon(tmp_path / "b", n=3, size=96, seed=0, n_test=4, styles=["hayao", "shinkai"])
    assert _digest(a) == _digest(b)
    for sub, count in (("train/photos", 3), ("train/cartoons/hayao", 3), ("train/cartoons/shinkai", 3),
                       ("test/photos", 4), ("test/cartoons/hayao", 4), ("test/cartoons/shinkai", 4)):
        assert len(list((a / sub).glob("*.png"))) == count, sub
    assert not list((a / "train/cartoons").glob("*.png"))  # only the style folders
    man = json.loads((a / "manifest.json").read_text())
    assert man["styles"] == ["hayao", "shinkai"]
    scenes = man["scenes"]
    assert scenes["test/cartoons/hayao"] == scenes["test/cartoons/shinkai"] == scenes["test/photos"]
    assert not set(scenes["train/cartoons/hayao"].values()) & set(scenes["train/cartoons/shinkai"].values())

    hue_turns, sat_ratio, ink_ratio = [], [], []
    for name, scene_seed in sorted(scenes["test/photos"].items()):
        labels = label_map(random_scene(scene_seed, 96))
        interior = cv2.erode((~_borders(labels)).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        h0, h1 = (cv2.cvtColor(_rgb(a / f"test/cartoons/{s}" / name), cv2.COLOR_RGB2HSV).astype(int)
                  for s in ("hayao", "shinkai"))
        m = interior & (h0[..., 1] > 60)  # saturated fills: hue is defined
        hue_turns.append(np.median((h1[..., 0][m] - h0[..., 0][m]) % 180))
        sat_ratio.append(h1[..., 1][interior].mean() / h0[..., 1][interior].mean())
        ink = [(_rgb(a / f"test/cartoons/{s}" / name).astype(float) @ LUMA < 60).sum() for s in ("hayao", "shinkai")]
        ink_ratio.append(ink[1] / ink[0])
    assert abs(np.median(hue_turns) - style_params(1, 2)["hue"]) <= 3  # 90 OpenCV units = half the circle
    assert np.median(sat_ratio) < 0.6  # shinkai is pastel
    assert np.median(ink_ratio) > 1.6  # and drawn with double-weight lines
    # style 0 is the plain SynthToon cartoon of the scene
    name, scene_seed = sorted(scenes["test/photos"].items())[0]
    np.testing.assert_array_equal(_rgb(a / "test/cartoons/hayao" / name),
                                  render_scene(random_scene(scene_seed, 96), "cartoon"))


def test_styles_bad_names_and_changed_settings(tmp_path):
    from toonlab.data.synth import parse_styles
    from toonlab.errors import ToonlabError, UsageError

    assert parse_styles(" hayao , shinkai ") == ["hayao", "shinkai"] and parse_styles(None) == []
    for bad in ("a,,b", "a,A", "a/b", ".."):
        with pytest.raises(UsageError):
            parse_styles(bad)
    r = CliRunner().invoke(app, ["prepare", "synth", str(tmp_path / "s"), "--styles", "hayao,Hayao"])
    assert r.exit_code == 2 and "differ" in r.output
    make_synthtoon(tmp_path / "s", n=2, size=24, n_test=1, styles=["x", "y"])
    for styles in (None, ["x", "z"]):  # a rerun with other styles (or none) into the same folder is refused
        with pytest.raises(ToonlabError, match="other settings"):
            make_synthtoon(tmp_path / "s", n=2, size=24, n_test=1, styles=styles)


def test_multistyle_tiny_recipe_trains_on_styled_synth(tmp_path):
    """The README's multistyle example: `prepare synth --styles hayao,shinkai`, then the tiny recipe as written
    (only the data root and run dir moved into the temp folder)."""
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    root = tmp_path / "synthstyles"
    r = CliRunner().invoke(app, ["prepare", "synth", str(root), "--n", "4", "--size", "32", "--n-test", "2",
                                 "--styles", "hayao,shinkai"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(configs / "multistyle-tiny.yaml"), f"data.photos={root}/train/photos",
                                 f"data.cartoons={root}/train/cartoons", f"train.run_dir={run}",
                                 "train.progress=false"])
    assert r.exit_code == 0, (r.output, r.exception)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["phase"] for x in recs] == ["init", "adv"]
    assert (run / "checkpoints" / "latest.safetensors").is_file()


def test_saliency_maps_of_small_synth_photos_are_not_blank(tmp_path):
    """`prepare saliency` at 32 px (the tiny recipes' size): every MBD map has content, brighter on the scene's
    shapes than on sky and ground (before the smoothing scaled with the size, 15 of 16 maps were all zero)."""
    from toonlab.data.saliency import mbd_saliency

    for seed in range(8):
        scene = random_scene(seed, 32)
        sal = mbd_saliency(render_scene(scene, "photo"))
        labels = label_map(scene)
        assert sal.max() - sal.min() > 0.5, seed
        assert sal[labels >= 2].mean() > sal[labels < 2].mean() + 0.1, seed
    root = make_synthtoon(tmp_path / "s", n=4, size=32, n_test=1)
    flat = tmp_path / "photos"
    flat.mkdir()
    for p in (root / "train/photos").glob("*.png"):
        (flat / p.name).write_bytes(p.read_bytes())
    cv2.imwrite(str(flat / "blank.png"), np.full((32, 32, 3), 128, np.uint8))  # nothing can stand out
    r = CliRunner().invoke(app, ["prepare", "saliency", str(flat), "-o", str(tmp_path / "sal")])
    assert r.exit_code == 1 and "4 written" in r.output and "1 failed" in r.output
    assert "blank.png" in r.output and "constant" in r.output and not (tmp_path / "sal/blank.png").exists()
    for p in (tmp_path / "sal").glob("*.png"):
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert m.max() > m.min(), p.name
