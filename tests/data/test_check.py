"""prepare check (finds corrupt files, duplicates, wrong sizes; exit 1) and prepare split (deterministic,
stable when files are added)."""

import shutil

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.data.prepare.check import check_dataset
from toonlab.data.prepare.split import split_dataset, split_names
from toonlab.data.synth import random_scene, render_scene


def _cli(*args):
    return CliRunner().invoke(app, ["prepare", *map(str, args)])


def _folder(root, n=4, size=40):
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(render_scene(random_scene(i, size), "photo")).save(root / f"{i}.png")
    return root


def test_check_passes_on_a_clean_folder_and_synthtoon(tmp_path):
    r = _cli("check", _folder(tmp_path / "clean"), "--size", "40")
    assert r.exit_code == 0, r.output
    assert "4" in r.output and "PNG" in r.output
    assert _cli("synth", tmp_path / "st", "--n", "8", "--size", "32").exit_code == 0
    rep = check_dataset(tmp_path / "st", size=32, progress=False)
    # test/photos/X and test/cartoons/X are renderings of one scene, in sibling folders: not duplicates
    assert rep.ok and rep.images == 8 + 8 + 8 + 8 and rep.other_files == 1


def test_check_finds_corrupt_duplicates_and_wrong_sizes(tmp_path):
    root = _folder(tmp_path / "d")
    shutil.copy(root / "0.png", root / "copy_of_0.png")
    near = np.asarray(Image.open(root / "1.png")).astype(int) + 3
    Image.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(root / "1_brighter.jpg", quality=95)
    (root / "truncated.png").write_bytes((root / "2.png").read_bytes()[:150])
    Image.fromarray(render_scene(random_scene(9, 48), "photo")).save(root / "big.png")
    rep = check_dataset(root, size=40, progress=False)
    assert not rep.ok
    assert [c[0] for c in rep.corrupt] == ["truncated.png"]
    assert rep.exact_duplicates == [["0.png", "copy_of_0.png"]]
    assert rep.near_duplicates == [["1.png", "1_brighter.jpg"]]
    assert rep.wrong_size == [("big.png", "48×48")]
    assert rep.formats["PNG"] == 6 and rep.formats["JPEG"] == 1 and rep.images == 8
    r = _cli("check", root, "--size", "40")
    assert r.exit_code == 1
    assert "truncated.png" in r.output and "copy_of_0.png" in r.output and "Traceback" not in r.output
    assert _cli("check", tmp_path / "missing").exit_code == 2


def test_split_is_deterministic_stable_and_materialised(tmp_path):
    names = [f"img_{i:04d}.png" for i in range(400)]
    train, test = split_names(names, 0.1, seed=0)
    assert (train, test) == split_names(list(reversed(names)), 0.1, seed=0)
    assert sorted(train + test) == names and 20 <= len(test) <= 60  # ~10 % (binomial, 400 draws)
    assert split_names(names, 0.1, seed=1)[1] != test
    # adding files never moves an existing one
    train2, test2 = split_names(names + [f"new_{i}.png" for i in range(100)], 0.1, seed=0)
    assert set(test) <= set(test2) and set(train) <= set(train2)
    root = _folder(tmp_path / "data", n=12, size=24)
    s = split_dataset(root, tmp_path / "split", test=0.3, seed=0, mode="link")
    tr = (tmp_path / "split" / "train.txt").read_text().split()
    te = (tmp_path / "split" / "test.txt").read_text().split()
    assert (tr, te) == split_names([f"{i}.png" for i in range(12)], 0.3, seed=0)
    assert sorted(p.name for p in (tmp_path / "split" / "test").iterdir()) == sorted(te)
    assert (tmp_path / "split" / "train" / tr[0]).read_bytes() == (root / tr[0]).read_bytes()
    assert s.done == 12 and s.extra == {"train": len(tr), "test": len(te)}
    r = _cli("split", root, "--test", "0.3")  # lists only, written beside the data
    assert r.exit_code == 0 and (root / "test.txt").read_text().split() == te
    assert _cli("split", root, "--test", "1.5").exit_code == 2
