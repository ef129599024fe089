"""fastapi installed, uvicorn not: the app still imports (TestClient use), `toonlab serve` says which extra."""

import subprocess
import sys

PROBE = """
import sys
sys.modules["uvicorn"] = None  # as if not installed
import toonlab.serve.app  # the app does not need the server
from typer.testing import CliRunner
from toonlab.cli import app
r = CliRunner().invoke(app, ["serve", "--port", "0"])
print(r.exit_code)
print(r.output, end="")
"""


def test_serve_without_uvicorn_names_the_extra():
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    code, *lines = res.stdout.splitlines()
    assert code == "2" and lines == ["error: toonlab serve needs the [serve] extra (uvicorn is not installed): "
                                     "pip install 'toonlab[serve]'"]


def test_browser_tests_skip_with_a_reason_without_chromium(tmp_path):
    import os
    from pathlib import Path

    test_file = Path(__file__).with_name("test_browser.py")
    env = {**os.environ, "TOONLAB_CHROMIUM": str(tmp_path / "no-chromium")}
    res = subprocess.run([sys.executable, "-m", "pytest", str(test_file), "-m", "browser", "-q", "-rs", "-p",
                          "no:cacheprovider"], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "error" not in res.stdout.lower() and res.stdout.count("SKIPPED [1]") == 5, res.stdout[-2000:]
    assert "no Chromium at" in res.stdout
