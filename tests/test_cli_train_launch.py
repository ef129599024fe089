"""`toonlab train --nproc N`: a config or data mistake is one line from the launcher, before torchrun starts."""

from pathlib import Path

from typer.testing import CliRunner

from toonlab.cli import app

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_nproc_checks_the_data_once_before_torchrun(tmp_path, monkeypatch):
    import toonlab.train.distributed

    def launch(nproc, args):
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(toonlab.train.distributed, "launch", launch)
    monkeypatch.chdir(tmp_path)  # no data/ here
    r = CliRunner().invoke(app, ["train", str(CONFIGS / "ctss.yaml"), "--nproc", "2"])
    assert r.exit_code == 2, r.output
    assert r.output == "error: data.photos: data/train_photo is not a folder\n"
