"""``toonlab.cli.main`` ends an inference command's process without interpreter teardown (FAST_EXIT_COMMANDS), yet
keeps what a normal exit does that matters: the exit code, flushed piped output, atexit handlers, and a wait for
non-daemon threads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

PROBE = """import atexit, sys, threading, time
from pathlib import Path

class Teardown:  # prints only when the interpreter tears its modules down
    def __del__(self):
        print("teardown ran", file=sys.stderr)

KEEP = Teardown()
atexit.register(lambda: print("atexit ran", file=sys.stderr))
if {thread!r}:
    def late():
        time.sleep(0.5)
        Path({marker!r}).write_text("done")
    threading.Thread(target=late).start()  # non-daemon: the exit must wait for it
from toonlab.cli import main
sys.argv = ["toonlab", *{argv!r}]
main()
print("after main", file=sys.stderr)
"""


def _probe(tmp_path, argv, thread=False):
    code = PROBE.format(argv=argv, thread=thread, marker=str(tmp_path / "marker"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "in" / "p.png"
    path.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def test_cartoonize_exits_fast_with_its_output_and_exit_handlers(tmp_path, photo):
    run = _probe(tmp_path, ["cartoonize", str(photo), "-o", str(tmp_path / "out"), "--no-progress"])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 done, 0 skipped, 0 failed" in run.stdout  # piped stdout flushed before os._exit
    assert (tmp_path / "out" / "p.png").is_file()
    assert "atexit ran" in run.stderr
    assert "teardown ran" not in run.stderr and "after main" not in run.stderr  # the process ended in main


def test_fast_exit_keeps_the_exit_code_of_a_failure(tmp_path):
    run = _probe(tmp_path, ["cartoonize", str(tmp_path / "missing.png"), "-o", str(tmp_path / "out")])
    assert run.returncode == 2, run.stderr[-2000:]
    assert [line for line in run.stderr.splitlines() if line.startswith("error: ")], run.stderr
    assert "Traceback" not in run.stderr and "teardown ran" not in run.stderr and "atexit ran" in run.stderr


def test_a_running_non_daemon_thread_gets_a_normal_exit(tmp_path, photo):
    run = _probe(tmp_path, ["cartoonize", str(photo), "-o", str(tmp_path / "out"), "--no-progress"], thread=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "marker").read_text() == "done"  # os._exit would have ended the sleeping thread


def test_other_commands_exit_normally(tmp_path):
    run = _probe(tmp_path, ["weights", "--help"])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "teardown ran" in run.stderr and "atexit ran" in run.stderr
