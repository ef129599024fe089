"""The README is a tested example.

- Its first ```bash block is the quick start: exactly the two commands `.ci/run` runs (set-up + main job, tests).
- Every later ```bash block runs verbatim — each line through ``bash`` exactly as printed, in order — in a copy of
  the clone's tracked files after the quick start, offline, with empty weight and cache folders. Blocks for the
  reader's own files are fenced ```bash your-data and are not run; no other kind of shell block is allowed.
- It stays short (≤ 900 words), its model table says what the code does, and no shipped experiment quietly
  departs from what it says about offline runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RUN, YOUR_DATA = "bash", "bash your-data"


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(info string, non-empty lines) of every fenced block of ``text``, in order."""
    return [(info.strip(), [line for line in body.splitlines() if line.strip()])
            for info, body in re.findall(r"^```([^\n`]*)\n(.*?)^```", text, flags=re.S | re.M)]


def shell_blocks(text: str) -> list[tuple[str, list[str]]]:
    return [(info, lines) for info, lines in fenced_blocks(text) if info.split()[:1] in (["bash"], ["sh"])]


def test_blocks_are_labelled_and_the_quick_start_is_what_ci_runs():
    blocks = shell_blocks(README)
    assert {info for info, _ in blocks} <= {RUN, YOUR_DATA}, [info for info, _ in blocks]
    assert blocks[0][0] == RUN and len(blocks[0][1]) == 2
    setup_and_main, tests = blocks[0][1]
    assert setup_and_main.startswith("python3 -m venv .venv && ") and "toonlab cartoonize" in setup_and_main
    assert tests == ".venv/bin/python -m pytest"
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert any(line.startswith(setup_and_main + " ||") for line in ci), "the README's line 1 is not .ci/run's"
    assert tests in ci
    assert sum(len(lines) for info, lines in blocks[1:] if info == RUN) >= 15


def test_readme_is_short_with_one_picture():
    prose = re.sub(r"^```.*?^```", "", README, flags=re.S | re.M)
    assert len(README.split()) <= 900, len(README.split())
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", prose)
    assert len(pictures) == 1 and (ROOT / pictures[0]).is_file()
    for link in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)", prose):
        assert (ROOT / link).is_file(), link


def test_model_table_directions_match_the_code():
    from toonlab.config import from_dict
    from toonlab.models import get_model_class, model_names

    rows = dict(re.findall(r"^\| (\w+) \| (photo → cartoon|cartoon → photo) \|", README, flags=re.M))
    public = [n for n in model_names() if not n.startswith("_")]
    assert sorted(rows) == sorted(public)
    for name in public:
        cls = get_model_class(name)
        config = from_dict(cls.Config, {}, name)
        direction = getattr(config, "translate", None) or cls.direction  # two-way systems: the exported one
        assert rows[name] == direction.replace("2", " → "), name


def test_experiments_use_the_perceptual_backbone_the_readme_describes():
    # the docs say offline runs use EfficientNet-Lite0 (model.perceptual=auto); `random` is an explicit escape
    # that a shipped table would hide in its numbers
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        assert "perceptual=random" not in path.read_text(), path


def _fresh_clone(dst: Path) -> None:
    """The tracked files of this checkout (as a clone has them), with this environment's .venv linked in."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / ".venv").symlink_to(ROOT / ".venv")


@pytest.mark.slow
def test_readme_commands_run_verbatim(tmp_path):
    """After the quick start's main job, every ```bash line of the README, in order, exactly as printed (minutes:
    tiny trainings, DDP, export, the experiment)."""
    if not (ROOT / ".venv/bin/toonlab").is_file() or not (ROOT / ".git").exists():
        pytest.skip("needs the quick start's .venv and a git checkout")
    clone = tmp_path / "clone"
    clone.mkdir()
    _fresh_clone(clone)
    empty = {"TORCH_HOME": tmp_path / "torch_home", "TOONLAB_CACHE": tmp_path / "cache", "HOME": tmp_path / "home"}
    for folder in empty.values():
        folder.mkdir()
    env = {**os.environ, **{k: str(v) for k, v in empty.items()}, "TOONLAB_OFFLINE": "1"}
    blocks = shell_blocks(README)
    main_job = blocks[0][1][0].split(" && ")[-1]  # the set-up's last command: what the quick start leaves behind
    lines = [main_job] + [line for info, block in blocks[1:] if info == RUN for line in block]
    for line in lines:
        proc = subprocess.run(["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-3000:])
    assert (clone / "outputs/shinkai/astronaut.jpg").is_file() and (clone / "outputs/real").is_dir()
