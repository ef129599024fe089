"""Issue 24 item 11: prepared data files get 0666 minus the umask (mkstemp's 0600 stayed on every file)."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_prepared_files_honour_the_umask(tmp_path, umask):
    code = ("import sys; from toonlab.data.synth import make_synthtoon; "
            "make_synthtoon(sys.argv[1], 2, 16, 0, n_test=1)")
    out = tmp_path / "st"
    run = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120,
                         preexec_fn=lambda: os.umask(umask))
    assert run.returncode == 0, run.stderr[-2000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 4 and any(p.suffix == ".json" for p in files) and any(p.suffix == ".png" for p in files)
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}
