"""Issue 24 items 10-11 (cartoonize): `-o .` with files named explicitly — they are inputs, never excluded as
"inside the output folder" ("no images found" for a valid image; a video silently skipped: 0 done, exit 0)."""

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from toonlab.cli import app


def test_named_files_in_the_output_folder_are_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save("a.png")
    (tmp_path / "odd.mp4").write_bytes(b"not a video")
    runner = CliRunner()
    r = runner.invoke(app, ["cartoonize", "a.png", "-o", ".", "--suffix", "_toon", "--no-progress"])
    assert r.exit_code == 0 and "1 done" in r.output and (tmp_path / "a_toon.png").is_file(), r.output
    r = runner.invoke(app, ["cartoonize", "a.png", "-o", ".", "--no-progress"])  # would write over its input
    assert r.exit_code == 1 and "one of the inputs" in r.output and "no images found" not in r.output, r.output
    r = runner.invoke(app, ["cartoonize", "odd.mp4", "-o", ".", "--suffix", "_toon", "--no-progress"])
    assert r.exit_code == 1 and "0 done, 0 skipped, 1 failed" in r.output and "cannot open video" in r.output
