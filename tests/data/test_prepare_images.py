"""prepare photos / smooth / guided / gray / saliency on small folders built here."""

import json

import cv2
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.data.prepare.filters import resize_crop
from toonlab.data.saliency import mbd_saliency
from toonlab.data.synth import random_scene, render_scene


def _save(path, rgb, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **kw)
    return path


def _read(path):
    return np.asarray(Image.open(path))


def _photo(seed, w=80, h=60):
    return cv2.resize(render_scene(random_scene(seed, 96), "photo"), (w, h), interpolation=cv2.INTER_AREA)


def _cli(*args):
    return CliRunner().invoke(app, ["prepare", *map(str, args)])


def test_photos_filters_dedupes_reports_and_resumes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    a, b, c = _photo(1), _photo(2, 70, 90), _photo(3)
    _save(src / "a.png", a)
    _save(src / "sub" / "b.png", b)
    _save(src / "c.png", c)
    _save(src / "dark.png", (a * 0.05).astype(np.uint8))
    noisy_a = np.clip(a.astype(int) + np.random.default_rng(0).integers(-4, 5, a.shape), 0, 255).astype(np.uint8)
    _save(src / "z_copy_of_a.jpg", noisy_a, quality=90)  # later in sorted order than a.png → the duplicate
    (src / "broken.png").write_bytes((src / "a.png").read_bytes()[:200])  # truncated
    r = _cli("photos", src, "-o", out, "--size", "32")
    assert r.exit_code == 1, r.output
    assert "broken.png" in r.output and "Traceback" not in r.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "c.png", "sub/b.png"]
    np.testing.assert_array_equal(_read(out / "a.png"), resize_crop(a, 32))
    man = json.loads((out / "manifest.json").read_text())
    status = {p["input"]: p["status"] for p in man["photos"]}
    assert status == {"a.png": "kept", "c.png": "kept", "sub/b.png": "kept", "dark.png": "dark",
                      "z_copy_of_a.jpg": "duplicate"}
    # rerun: decided inputs are skipped (outputs untouched), the broken file is reported again
    mtime = (out / "a.png").stat().st_mtime_ns
    r = _cli("photos", src, "-o", out, "--size", "32")
    assert r.exit_code == 1 and "5 already present" in r.output
    assert (out / "a.png").stat().st_mtime_ns == mtime


def test_photos_apply_exif_orientation(tmp_path):
    img = _photo(4, 60, 40)  # W 60 × H 40
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    _save(tmp_path / "in" / "rot.png", img, exif=exif)
    r = _cli("photos", tmp_path / "in", "-o", tmp_path / "out", "--size", "0", "--crop", "none",
             "--min-sharpness", "0")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(_read(tmp_path / "out" / "rot.png"), np.rot90(img, k=-1))


def _cartoons(root):
    for i in range(3):
        _save(root / ("x" if i else "") / f"c{i}.png", render_scene(random_scene(10 + i, 48), "cartoon"))
    return sorted(p for p in root.rglob("*.png"))


def test_smooth_matches_an_independent_opencv_pipeline(tmp_path):
    files = _cartoons(tmp_path / "c")
    r = _cli("smooth", tmp_path / "c", "-o", tmp_path / "s")
    assert r.exit_code == 0, r.output
    for f in files:
        rgb = _read(f)
        edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 100, 200)
        mask = cv2.dilate(edges, np.ones((5, 5), np.uint8)) > 0
        blurred = cv2.GaussianBlur(rgb.astype(np.float32), (5, 5), 0)
        expect = np.where(mask[..., None], np.round(blurred), rgb)
        got = _read(tmp_path / "s" / f.relative_to(tmp_path / "c"))
        assert mask.any() and np.abs(got.astype(int) - expect).max() <= 1
        assert (got[~mask] == rgb[~mask]).all()


def test_guided_matches_ximgproc_guided_filter(tmp_path):
    files = _cartoons(tmp_path / "c")
    r = _cli("guided", tmp_path / "c", "-o", tmp_path / "g", "-r", "3", "--eps", "0.1")
    assert r.exit_code == 0, r.output
    for f in files:
        x = _read(f).astype(np.float32) / 255 * 2 - 1
        expect = np.stack([cv2.ximgproc.guidedFilter(x[..., k], x[..., k], 3, 0.1) for k in range(3)], -1)
        expect = (expect + 1) / 2 * 255
        got = _read(tmp_path / "g" / f.relative_to(tmp_path / "c")).astype(np.float32)
        inner = (slice(7, -7), slice(7, -7))  # borders (2r deep): reflect-101 here, reflect in OpenCV
        assert np.abs(got[inner] - expect[inner]).max() <= 1.0


def test_gray_and_saliency_maps(tmp_path):
    files = _cartoons(tmp_path / "c")
    jpg = _save(tmp_path / "c" / "x" / "photo.jpg", _photo(7), quality=95)
    assert _cli("gray", tmp_path / "c", "-o", tmp_path / "gray").exit_code == 0
    for f in files:
        got = _read(tmp_path / "gray" / f.relative_to(tmp_path / "c"))
        assert got.shape[2] == 3 and (got == cv2.cvtColor(_read(f), cv2.COLOR_RGB2GRAY)[..., None]).all()
    r = _cli("saliency", tmp_path / "c", "-o", tmp_path / "sal")
    assert r.exit_code == 0, r.output
    maps = sorted(p.relative_to(tmp_path / "sal").as_posix() for p in (tmp_path / "sal").rglob("*.png"))
    assert maps == ["c0.png", "x/c1.png", "x/c2.png", "x/photo.png"]  # same relative names, always .png
    m = Image.open(tmp_path / "sal" / "x" / "photo.png")
    assert m.mode == "L" and m.size == (80, 60)
    expect = np.round(mbd_saliency(np.asarray(Image.open(jpg).convert("RGB"))) * 255)
    assert np.abs(np.asarray(m).astype(int) - expect).max() <= 1
    # existing outputs are skipped; --overwrite redoes them; a bad file fails alone
    (tmp_path / "c" / "bad.png").write_bytes(b"not an image")
    r = _cli("gray", tmp_path / "c", "-o", tmp_path / "gray")
    assert r.exit_code == 1 and "bad.png" in r.output and "0 written, 4 already present, 1 failed" in r.output
    r = _cli("gray", tmp_path / "c", "-o", tmp_path / "gray", "--overwrite")
    assert "4 written" in r.output
