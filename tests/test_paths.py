"""Outputs stay inside -o and never replace an input: `..` in globs, symlinks and hard links into the output folder,
symlink loops named on the command line (toonlab.paths, through `toonlab cartoonize`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.paths import InputIds, contained_relative, symlink_loop, unsafe_output


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """tmp/photos/{a.png, sub/b.png} (24×24 noise), cwd = tmp."""
    rng = np.random.default_rng(0)
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for name in ("photos/a.png", "photos/sub/b.png"):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cartoonize(*args: str):
    return CliRunner().invoke(app, ["cartoonize", *args, "--no-progress"])


def test_contained_relative_hand_examples():
    P = Path
    assert contained_relative(P("photos/sub/../../photos/a.jpg"), P("sub/../../photos/a.jpg")) == P("a.jpg")
    assert contained_relative(P("photos/x/../y/b.jpg"), P("x/../y/b.jpg")) == P("y/b.jpg")
    assert contained_relative(P("photos/x/../../other/c.jpg"), P("x/../../other/c.jpg")) == P("c.jpg")
    assert contained_relative(P("photos/x/d.jpg"), P("x/d.jpg")) == P("x/d.jpg")  # ordinary layouts unchanged
    assert contained_relative(P("../up/e.jpg"), P("e.jpg")) == P("e.jpg")
    assert contained_relative(P("/abs/x/../../f.jpg"), P("x/../../f.jpg")) == P("f.jpg")


def test_glob_with_dotdot_never_writes_outside_out(tree):
    """The issue's case: the glob's match climbs out of its root and back to the input; with --overwrite the old
    code wrote the cartoon over the photo."""
    before = _files(tree / "photos")
    for pattern in ("photos/*/../../photos/a.png", str(tree / "photos/*/../../photos/a.png")):
        r = _cartoonize(pattern, "-o", "out", "--overwrite")
        assert r.exit_code == 0, r.output
        assert "1 done" in r.output
    assert _files(tree / "photos") == before  # inputs untouched
    assert sorted(p.name for p in tree.iterdir()) == ["out", "photos"]
    assert [str(p.relative_to(tree / "out")) for p in (tree / "out").rglob("*") if p.is_file()] == ["a.png"]


def test_an_output_is_never_one_of_the_inputs(tree):
    """A hard link or a symlink in -o naming an input: that file fails, the input keeps its bytes."""
    (tree / "out" / "sub").mkdir(parents=True)
    os.link(tree / "photos/a.png", tree / "out/a.png")
    (tree / "out/sub/b.png").symlink_to(tree / "photos/sub/b.png")
    before = _files(tree / "photos")
    r = _cartoonize("photos", "-o", "out", "--overwrite")
    assert r.exit_code == 1, r.output
    assert "0 done, 0 skipped, 2 failed" in r.output
    assert r.output.count("is one of the inputs") == 2 and "Traceback" not in r.output
    assert _files(tree / "photos") == before
    # a video whose output name in -o is a hard link to the video itself
    (tree / "clip.mp4").write_bytes(b"not really a video")
    os.link(tree / "clip.mp4", tree / "out/clip.mp4")
    r = _cartoonize("clip.mp4", "-o", "out", "--overwrite")
    assert r.exit_code == 1 and "clip.mp4 is one of the inputs" in r.output, r.output
    assert (tree / "clip.mp4").read_bytes() == b"not really a video"


def test_symlinked_folder_inside_out_cannot_carry_outputs_elsewhere(tree):
    elsewhere = tree / "elsewhere"
    elsewhere.mkdir()
    (tree / "out").mkdir()
    (tree / "out/sub").symlink_to(elsewhere, target_is_directory=True)
    r = _cartoonize("photos", "-o", "out")
    assert r.exit_code == 1 and "1 done, 0 skipped, 1 failed" in r.output, r.output
    assert "would be written outside the output folder out" in r.output
    assert list(elsewhere.iterdir()) == [] and (tree / "out/a.png").is_file()


def test_symlink_loop_fails_alone(tree):
    (tree / "loop.png").symlink_to("loop.png")
    (tree / "ring1").symlink_to("ring2")
    (tree / "ring2").symlink_to("ring1")
    assert symlink_loop("loop.png") and symlink_loop("ring1") and not symlink_loop("photos/a.png")
    r = _cartoonize("loop.png", "ring1", "photos/a.png", "-o", "out")
    assert r.exit_code == 1, r.output
    assert "1 done, 0 skipped, 2 failed" in r.output and "Traceback" not in r.output
    assert "failed: loop.png: symlink loop" in r.output and "failed: ring1: symlink loop" in r.output
    assert (tree / "out/a.png").is_file()
    r = _cartoonize("loop.png", "-o", "out")  # nothing but a loop: it fails, no usage error
    assert r.exit_code == 1 and "0 done, 0 skipped, 1 failed" in r.output, r.output
    r = _cartoonize("photos/a.png", "-o", "ring1")  # the output folder itself: a usage error, one line
    assert r.exit_code == 2 and "symlink loop" in r.output


def test_unsafe_output_direct(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    ids = InputIds([a, tmp_path / "missing.png"])
    assert "one of the inputs" in unsafe_output(a, tmp_path, ids)
    assert unsafe_output(tmp_path / "new.png", tmp_path, ids) is None
    assert "outside" in unsafe_output(tmp_path / "new.png", tmp_path / "sub", ids)
