"""`toonlab cartoonize` end to end (Typer's CliRunner): folders with bad files, skip/overwrite, globs, usage errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.infer.classic import cartoonize_classic
from toonlab.io import read_image

runner = CliRunner()


@pytest.fixture
def photos(tmp_path, astronaut):
    """in/a.png (RGB), in/sub/b.jpg, in/c.png (RGBA) + bad files: truncated JPEG, text named .png, empty file."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    small = np.asarray(Image.fromarray(astronaut).resize((64, 48)))
    Image.fromarray(small).save(src / "a.png")
    Image.fromarray(small[::-1]).save(src / "sub" / "b.jpg", quality=90)
    alpha = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    Image.fromarray(np.dstack([small, alpha]), "RGBA").save(src / "c.png")
    data = (src / "sub" / "b.jpg").read_bytes()
    (src / "broken.jpg").write_bytes(data[: len(data) // 3])
    (src / "notes.png").write_text("not an image")
    (src / "empty.webp").write_bytes(b"")
    return src


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_folder_with_bad_files(photos, tmp_path):
    out = tmp_path / "out"
    r = _run("cartoonize", photos, "-o", out)
    assert r.exit_code == 1, r.output
    assert "3 done, 0 skipped, 3 failed" in r.output
    failed = [line for line in r.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3
    for name, words in [("broken.jpg", "truncated"), ("notes.png", "not an image"), ("empty.webp", "empty")]:
        assert sum(name in line and words in line for line in failed) == 1, (name, failed)
    # good outputs: same size, relative sub-folders kept, alpha re-attached
    for rel, size in [("a.png", (64, 48)), ("sub/b.jpg", (64, 48)), ("c.png", (64, 48))]:
        assert Image.open(out / rel).size == size
    c_out = Image.open(out / "c.png")
    assert c_out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(c_out)[..., 3], np.asarray(Image.open(photos / "c.png"))[..., 3])
    assert not (out / "notes.png").exists() and not (out / "broken.jpg").exists()
    # the output is the classic cartoonizer's, written losslessly for PNG
    expected = cartoonize_classic(read_image(photos / "a.png").rgb[None])[0]
    got = read_image(out / "a.png").rgb
    assert (got - expected).abs().max() <= 0.5 / 255 + 1e-6


def test_skip_existing_unless_overwrite(photos, tmp_path):
    out = tmp_path / "out"
    good = tmp_path / "good"
    good.mkdir()
    for name in ("a.png", "c.png"):
        (good / name).write_bytes((photos / name).read_bytes())
    assert _run("cartoonize", good, "-o", out).exit_code == 0
    (out / "a.png").write_bytes(b"old")
    r = _run("cartoonize", good, "-o", out)
    assert r.exit_code == 0 and "0 done, 2 skipped, 0 failed" in r.output
    assert (out / "a.png").read_bytes() == b"old"
    r = _run("cartoonize", good, "-o", out, "--overwrite")
    assert r.exit_code == 0 and "2 done, 0 skipped, 0 failed" in r.output
    assert Image.open(out / "a.png").size == (64, 48)


def test_globs_ext_suffix_and_knobs(photos, tmp_path):
    out = tmp_path / "out"
    r = _run("cartoonize", str(photos / "*.png"), str(photos / "sub" / "*.jpg"), "-o", out, "--ext", "webp",
             "--suffix", "_toon", "--levels", "3", "--line-strength", "0")
    # *.png matches a.png, c.png and notes.png (a text file): 1 failure
    assert r.exit_code == 1 and "3 done, 0 skipped, 1 failed" in r.output, r.output
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a_toon.webp", "b_toon.webp", "c_toon.webp"]
    assert Image.open(out / "c_toon.webp").mode == "RGBA"  # WebP keeps alpha
    # the knobs reach the cartoonizer: compare a lossless PNG run with the library call
    r = _run("cartoonize", photos / "a.png", "-o", tmp_path / "png", "--levels", "3", "--line-strength", "0")
    assert r.exit_code == 0
    expected = cartoonize_classic(read_image(photos / "a.png").rgb[None], levels=3, line_strength=0.0)[0]
    assert torch.allclose(read_image(tmp_path / "png" / "a.png").rgb, expected, atol=0.5 / 255 + 1e-6)


def test_output_folder_inside_input_folder_is_not_re_read(photos):
    r = _run("cartoonize", photos, "-o", photos / "toon")
    assert "3 done" in r.output
    r = _run("cartoonize", photos, "-o", photos / "toon")
    assert "0 done, 3 skipped, 3 failed" in r.output  # the outputs were not taken as inputs


@pytest.mark.parametrize("args,words", [
    (["nothing/*.png"], "no images found"),
    (["IN", "--ext", "xyz"], "cannot write '.xyz'"),
    (["IN", "--levels", "1"], "invalid levels"),
])
def test_usage_errors_exit_2(photos, tmp_path, args, words):
    args = [str(photos) if a == "IN" else a for a in args]
    r = _run("cartoonize", *args, "-o", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "error: " in r.output and words in r.output
    assert not (tmp_path / "out").exists()


def test_missing_option_is_a_usage_error(photos):
    assert _run("cartoonize", photos).exit_code == 2


def test_missing_named_file_is_a_failed_input(photos, tmp_path):
    r = _run("cartoonize", photos / "a.png", photos / "gone.png", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "1 done, 0 skipped, 1 failed" in r.output
    assert f"failed: {photos / 'gone.png'}: no such file" in r.output
