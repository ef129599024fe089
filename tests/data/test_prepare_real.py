"""``prepare real`` on a fake Debian tree: which files are used, licences/authors, crops, dedupe, split, manifest."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.data.prepare import real
from toonlab.data.prepare.real import RealConfig, discover, licence_for, parse_dep5, prepare_real
from toonlab.data.prepare.split import split_position
from toonlab.errors import UsageError

LOMIRI_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lomiri-wallpapers

Files: *
Copyright: 2010-2016 Ubuntu community contributors
License: CC-BY-SA-3.0

Files: 16.04/Bridge_by_Sander_Klootwijk.jpg
Copyright: 2018. Sander Klootwijk
License: CC-BY-SA-4.0

Files: 16.04/seeding_by_Clements_Engelhardt.jpg
Copyright: Clemens Engelhardt, 2018
License: CC0-1.0
"""
MATE_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: nature/Dune.jpg
       nature/Storm.jpg
Copyright: 2007, Marco Cogoni <cogoni@example.com>
           2008, Hylke Bons <hylke@example.com>
License: GPL-2+
Comment: Copyright holders are found in AUTHORS file.

License: GPL-2+
 This package is free software; ...
"""
PLASMA_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2014 KDE Visual Design Group http://vdesign.kde.org/
License: GPL-2+
"""
SUPERTUX_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2003-2021 SuperTux Devel Team
           2004 Ricardo Cruz <rick2@example.com>
           2005 Philipp
           2006 Ondrej Hosek
License: GPL-3+

Files: data/images/engine/editor/camera.png
Copyright: Tango project
License: public-domain
"""


def _texture(h, w, seed):
    """A smooth random RGB texture in ~[40, 220]: passes the dark / flat rules, distinct per seed."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2)
    x = (x - x.mean()) / (x.std() + 1e-6) * 45 + 130
    return np.clip(x, 0, 255).astype(np.uint8)


def _write(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if alpha is not None:
        bgr = np.dstack([bgr, alpha])
    assert cv2.imwrite(str(path), bgr)


def _doc(root: Path, pkg: str, text: str):
    p = root / "usr/share/doc" / pkg / "copyright"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


@pytest.fixture
def fake_root(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """A tree with the four packages: allow-listed and other files, a transparent layer, a flat image, a clash."""
    root = tmp_path / "root"
    img = {}
    bg = root / "usr/share/backgrounds"
    img["bridge"] = _texture(32, 80, 1)
    _write(bg / "Bridge_by_Sander_Klootwijk.jpg".replace(".jpg", ".png"), img["bridge"])  # not on the list: .png
    _write(bg / "Bridge_by_Sander_Klootwijk.jpg", img["bridge"])
    _write(bg / "seeding_by_Clements_Engelhardt.jpg", _texture(64, 64, 2))
    _write(bg / "umang_by_Abhishek_Mudgal.jpg", _texture(64, 64, 3))  # abstract: not on the allow-list
    _doc(root, "lomiri-wallpapers-16.04", LOMIRI_COPYRIGHT)
    _write(bg / "mate/nature/Dune.jpg", _texture(64, 96, 4))
    _doc(root, "mate-backgrounds", MATE_COPYRIGHT)
    wp = root / "usr/share/wallpapers/Path"
    _write(wp / "contents/images/640x480.jpg", _texture(48, 64, 5))
    _write(wp / "contents/images/1280x800.jpg", _texture(80, 128, 6))
    (wp / "metadata.json").write_text(json.dumps({"KPlugin": {"Authors": [{"Name": "Risto S"}],
                                                              "License": "LGPLv3", "Name": "Path"}}))
    _doc(root, "plasma-workspace-wallpapers", PLASMA_COPYRIGHT)
    st = root / "usr/share/games/supertux2/images/background"
    _write(st / "christmas/intro.jpg", _texture(64, 100, 7))
    _write(st / "halloween/intro.jpg", _texture(64, 100, 8))
    layer = np.full((64, 64), 255, np.uint8)
    layer[:32] = 0  # half transparent: a parallax layer
    _write(st / "forest/forest_para.png", _texture(64, 64, 9), alpha=layer)
    _write(st / "misc/grid.png", _texture(64, 64, 10))
    _write(st / "nightsky/flat.png", np.full((64, 64, 3), 120, np.uint8))  # every crop is "uniform"
    _doc(root, "supertux-data", SUPERTUX_COPYRIGHT)
    return root, img


def test_dep5_parsing_and_matching():
    stanzas = parse_dep5(MATE_COPYRIGHT)
    assert stanzas[1]["files"].split() == ["nature/Dune.jpg", "nature/Storm.jpg"]  # [0]: the header
    assert licence_for(stanzas, "usr/share/backgrounds/mate/nature/Storm.jpg") == \
        ("GPL-2+", "Marco Cogoni; Hylke Bons")
    assert licence_for(stanzas, "usr/share/backgrounds/mate/nature/Aqua.jpg") is None
    lomiri = parse_dep5(LOMIRI_COPYRIGHT)
    # the later, specific stanza wins over "Files: *"; 16.04/X.jpg is installed as backgrounds/X.jpg
    assert licence_for(lomiri, "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg") == \
        ("CC-BY-SA-4.0", "Sander Klootwijk")
    assert licence_for(lomiri, "usr/share/backgrounds/other.jpg") == \
        ("CC-BY-SA-3.0", "Ubuntu community contributors")
    assert licence_for(parse_dep5(SUPERTUX_COPYRIGHT), "usr/share/games/x/a.png") == \
        ("GPL-3+", "SuperTux Devel Team et al.")


def test_discover_uses_allow_lists_and_provenance(fake_root):
    root, _ = fake_root
    found = {s.source_file: s for s in discover(root, include_skimage=False)}
    assert sorted(found) == sorted([
        "/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg",
        "/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg",
        "/usr/share/backgrounds/mate/nature/Dune.jpg",
        "/usr/share/wallpapers/Path/contents/images/1280x800.jpg",  # the largest size only
        "/usr/share/games/supertux2/images/background/christmas/intro.jpg",
        "/usr/share/games/supertux2/images/background/halloween/intro.jpg",
        "/usr/share/games/supertux2/images/background/nightsky/flat.png",
    ])
    seeding = found["/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg"]
    assert (seeding.package, seeding.licence, seeding.author, seeding.domain) == \
        ("lomiri-wallpapers-16.04", "CC0-1.0", "Clemens Engelhardt", "photo")
    path = found["/usr/share/wallpapers/Path/contents/images/1280x800.jpg"]
    assert (path.licence, path.author, path.licence_source, path.label) == \
        ("LGPLv3", "Risto S", "/usr/share/wallpapers/Path/metadata.json", "Path")
    intro = found["/usr/share/games/supertux2/images/background/halloween/intro.jpg"]
    assert (intro.domain, intro.licence, intro.label) == ("cartoon", "GPL-3+", "halloween-intro")


def _read_png(p: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_prepare_real_crops_split_and_licences(fake_root, tmp_path):
    root, img = fake_root
    out = tmp_path / "real"
    cfg = RealConfig(size=32, crops=3, max_scale=1.0, test=0.5, seed=3)
    summary = prepare_real(out, cfg, root=root, include_skimage=False)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    with open(out / "LICENSES.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == real.LICENSE_COLUMNS
    assert sorted(r["file"] for r in rows) == files and summary.done == len(files)
    for r in rows:
        side, domain = r["file"].split("/")[:2]
        expected = "test" if split_position(f"{r['source_package']}:{r['source_file']}", 3) < 0.5 else "train"
        assert side == expected  # split by source image: every crop of a picture on one side
        assert domain == ("cartoons" if r["source_package"] == "supertux-data" else "photos")
        assert _read_png(out / r["file"]).shape == (32, 32, 3)
    by_src = {r["source_file"]: r for r in rows}
    assert by_src["/usr/share/backgrounds/mate/nature/Dune.jpg"]["author"] == "Marco Cogoni; Hylke Bons"
    assert by_src["/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg"]["licence"] == "CC-BY-SA-4.0"
    # short side = size: never resized, so each Bridge crop is the 32×80 picture cut at some column
    src = cv2.cvtColor(cv2.imread(str(root / "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg")),
                       cv2.COLOR_BGR2RGB).astype(int)
    bridge = [r for r in rows if "Bridge" in r["file"]]
    assert bridge
    for r in bridge:  # (≤ 3: two JPEG decoders may round differently; a shifted or scaled crop is off by ≫ 10)
        crop = _read_png(out / r["file"]).astype(int)
        assert min(np.abs(src[:, x: x + 32] - crop).max() for x in range(49)) <= 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) == len(files)
    per = {s["source"].rsplit("/", 1)[1]: s for s in manifest["sources"]}
    assert (per["flat.png"]["crops"], per["flat.png"]["dropped_quality"]) == (0, 3)
    # the 64² picture shrinks to 32² (max_scale 1): three equal crops, two dropped as duplicates
    seeding = per["seeding_by_Clements_Engelhardt.jpg"]
    assert (seeding["crops"], seeding["dropped_duplicate"]) == (1, 2)
    assert all(s["crops"] + s["dropped_quality"] + s["dropped_duplicate"] == 3 for s in per.values())
    assert len({s["split"] for s in manifest["sources"]}) == 2


def test_duplicates_dropped_and_runs_reproducible(fake_root, tmp_path):
    root, img = fake_root
    same = _texture(32, 32, 11)  # size² images with max_scale 1: the crop is the whole picture
    _write(root / "usr/share/backgrounds/mate/nature/Storm.jpg", same)
    _write(root / "usr/share/backgrounds/mate/nature/Dune.jpg", same)
    cfg = RealConfig(size=32, crops=1, max_scale=1.0, test=0.0, seed=0)
    prepare_real(tmp_path / "a", cfg, root=root, include_skimage=False)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mate = {s["source"].rsplit("/", 1)[1]: s for s in manifest["sources"] if "mate" in s["source"]}
    assert (mate["Dune.jpg"]["crops"], mate["Storm.jpg"]["crops"]) == (1, 0)  # sorted order: Dune kept
    assert mate["Storm.jpg"]["dropped_duplicate"] == 1
    # same seed → same bytes; another seed → other crops
    cfg = RealConfig(size=32, crops=2, seed=5)
    prepare_real(tmp_path / "b", cfg, root=root, include_skimage=False)
    prepare_real(tmp_path / "b", cfg, root=root, include_skimage=False, overwrite=True)
    prepare_real(tmp_path / "c", cfg, root=root, include_skimage=False)
    prepare_real(tmp_path / "d", RealConfig(size=32, crops=2, seed=6), root=root, include_skimage=False)
    name = "supertux-data--christmas-intro--00.png"
    b, c, d = (next((tmp_path / k).rglob(name)).read_bytes() for k in "bcd")
    assert b == c and b != d


def test_refusals_are_one_line(fake_root, tmp_path):
    root, _ = fake_root
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not empty"):
        prepare_real(tmp_path / "full", root=root)
    empty = tmp_path / "empty-root"
    empty.mkdir()
    with pytest.raises(UsageError, match="apt-get install .*supertux-data"):
        prepare_real(tmp_path / "o", root=empty)
    r = CliRunner().invoke(app, ["prepare", "real", str(tmp_path / "o"), "--root", str(empty)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "no cartoon sources installed" in r.output
    r = CliRunner().invoke(app, ["prepare", "real", str(tmp_path / "o"), "--size", "8", "--root", str(root)])
    assert r.exit_code == 2 and "size >= 16" in r.output


def test_cli_with_scikit_image_photos(fake_root, tmp_path):
    root, _ = fake_root
    r = CliRunner().invoke(app, ["prepare", "real", str(tmp_path / "o"), "--size", "32", "--crops", "1",
                                 "--root", str(root)])
    assert r.exit_code == 0, r.output
    with open(tmp_path / "o" / "LICENSES.csv", newline="") as f:
        sk = {r["source_file"]: r for r in csv.DictReader(f) if r["source_package"] == "scikit-image"}
    assert sk["skimage.data.chelsea()"]["licence"] == "CC0-1.0"
    assert sk["skimage.data.astronaut()"]["author"] == "NASA"


@pytest.mark.slow
def test_installed_debian_packages(tmp_path):
    """The real tree (CI installs the packages): every package contributes, every crop has a known licence."""
    sources = discover("/")
    packages = {s.package for s in sources}
    wanted = {"lomiri-wallpapers-16.04", "plasma-workspace-wallpapers", "mate-backgrounds", "supertux-data"}
    assert wanted <= packages, f"apt-get install {' '.join(sorted(wanted - packages))}"
    summary = prepare_real(tmp_path / "real", RealConfig(size=64, crops=1))
    with open(tmp_path / "real" / "LICENSES.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary.done >= 30 and not summary.failed
    assert all(r["licence"] not in ("", "unknown") and r["author"] for r in rows)
    assert {r["source_package"] for r in rows} == wanted | {"scikit-image"}
