"""Issue 24 item 7: symlink loops in the inputs — a `**` glob through self-referencing folder links ends, and a
symlink-loop file in a folder is one failed item, never a traceback (images and videos)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from toonlab.cli import app
from toonlab.infer.video import find_videos
from toonlab.io import expand_inputs, glob_paths, walk_tree


@pytest.fixture
def looped(tmp_path):
    """d/ with two images, two links to itself and one to its parent (glob.glob's recursion doubles per level
    and never ends), and a PNG and an MP4 name that are symlinks to themselves."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(d / name)
    os.symlink(".", d / "l1")
    os.symlink(".", d / "l2")
    os.symlink("..", d / "sub" / "up")
    os.symlink("bad.png", d / "bad.png")
    os.symlink("bad.mp4", d / "bad.mp4")
    return d


def test_recursive_glob_through_self_referencing_links_ends(looped):
    code = ("import sys; from toonlab.io import list_images; "
            "print(len(list_images([sys.argv[1]])), len(list_images([sys.argv[2]])))")
    out = subprocess.run([sys.executable, "-c", code, f"{looped}/**/*.png", f"{looped}/**"], capture_output=True,
                         text=True, timeout=60)  # glob.glob: gigabytes and no end
    assert out.returncode == 0 and out.stdout.split() == ["3", "3"], out.stderr[-2000:]


def test_each_real_folder_is_walked_once(looped):
    entries = [p.relative_to(looped).as_posix() for p, _ in walk_tree(looped)]
    assert entries == ["a.png", "bad.mp4", "bad.png", "sub", "sub/b.png"]  # l1, l2, sub/up lead back: left out
    root, matches = glob_paths(f"{looped}/**/*.png")
    assert root == looped and sorted(p.name for p, _ in matches) == ["a.png", "b.png", "bad.png"]
    rels = sorted(r.as_posix() for _, r in expand_inputs([looped]))
    assert rels == ["a.png", "bad.png", "sub/b.png"]  # the loop is kept, to fail alone when read


def test_loop_files_in_a_folder_fail_alone(looped, tmp_path):
    videos = find_videos([looped])  # resolve() raised "Symlink loop" for the whole batch
    assert [r.as_posix() for _, r in videos] == ["bad.mp4"]
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["cartoonize", str(looped), "-o", str(out), "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert (out / "a.png").is_file() and (out / "sub" / "b.png").is_file()
    failed = [x for x in r.output.splitlines() if x.startswith("failed: ")]
    assert len(failed) == 2 and {f.split(": ")[1].rsplit("/", 1)[1] for f in failed} == {"bad.png", "bad.mp4"}
    assert "2 done, 0 skipped, 2 failed" in r.output, r.output


def test_cli_glob_through_self_referencing_links_ends(looped, tmp_path):
    code = ("import sys; from toonlab.cli import main; sys.argv = ['toonlab', 'cartoonize', sys.argv[1], '-o', "
            "sys.argv[2], '--no-progress']; main()")
    run = subprocess.run([sys.executable, "-c", code, f"{looped}/**/*.png", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)  # glob.glob in the CLI's input check: no end
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "2 done, 0 skipped, 1 failed" in run.stdout  # a.png, sub/b.png; bad.png fails alone
