"""Experiments: every shipped experiment file resolves (rows → run configs → models); a SynthToon experiment
runs end to end and writes a report with the right rows, columns and grid."""

import json
from pathlib import Path

import pytest
import yaml

from toonlab.checkpoint import save_export
from toonlab.errors import ConfigError
from toonlab.eval.experiment import load_experiment, run_experiment
from toonlab.models.base import build_model
from toonlab.train.config import load_run_config

EXPERIMENTS = sorted(Path(__file__).resolve().parents[2].joinpath("configs", "experiments").glob("*.yaml"))
PAPER_TABLES = {"ctss-table1", "ctss-table2", "ctss-table3", "ctss-table4", "multistyle-table1",
                "multistyle-ablation", "salcbam-tables1-2", "toon2real-table3", "ctss-table3-synth"}


def test_every_paper_table_has_an_experiment_file():
    assert PAPER_TABLES <= {p.stem for p in EXPERIMENTS}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_rows_resolve_to_run_configs(path):
    spec, base = load_experiment(path)
    assert spec.rows and spec.datasets
    for row in spec.rows:
        if row.config is None:
            continue
        cfg = load_run_config(base / row.config, [*spec.train_overrides, *row.overrides])  # strict keys
        assert cfg.model_name


def test_bad_experiment_files(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump({"title": "t", "datasets": [{"name": "d", "test_inputs": "in"}],
                                 "rows": [{"name": "a", "classic": True, "config": "c.yaml"}]}))
    with pytest.raises(ConfigError, match="exactly one of"):
        load_experiment(p)
    p.write_text(yaml.safe_dump({"title": "t", "datasets": [{"name": "d", "test_inputs": "in"}],
                                 "rows": [{"name": "a", "classic": True}], "metrics": ["lpips"]}))
    with pytest.raises(ConfigError, match="unknown metric"):
        load_experiment(p)


def test_synthtoon_experiment_end_to_end(tmp_path, monkeypatch):
    """A classic row and a reused export (a freshly initialised tiny CTSS: no training needed to test the
    pipeline) on a generated SynthToon; FID skipped (no weights offline) with a note, paired scores present."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TOONLAB_OFFLINE", "1")
    export = save_export(build_model("ctss", {"perceptual": "random"}), tmp_path / "ctss.safetensors")
    spec = {
        "title": "SynthToon smoke", "out": str(tmp_path / "exp"), "grid_images": 3,
        "metrics": ["fid", "kid", "psnr", "ssim", "edge_f1"],
        "datasets": [{"name": "SynthToon", "synth": {"root": str(tmp_path / "synth"), "n": 4, "size": 32}}],
        "rows": [{"name": "Learning-free abstraction", "classic": True},
                 {"name": "CTSS (untrained)", "run": str(export)}],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = run_experiment(path, log=lambda m: None)

    md = res.report_md.read_text()
    header = [c.strip() for c in md.splitlines()[next(i for i, l in enumerate(md.splitlines())
                                                      if l.startswith("| Method"))].strip("|").split("|")]
    assert header == ["Method", "FID ↓", "KID×10³ ↓", "PSNR ↑", "SSIM ↑", "edge F1 ↑"]
    assert "| Learning-free abstraction |" in md and "| CTSS (untrained) |" in md
    assert "FID/KID not computed" in md and "pt_inception-2015-12-05-6726825d.pth" in md
    data = json.loads(res.results_json.read_text())
    for row in ("Learning-free abstraction", "CTSS (untrained)"):
        cell = data["cells"][f"{row}|SynthToon"]
        assert cell["fid"] is None and 0 < cell["ssim"] <= 1 and 0 <= cell["edge_f1"] <= 1
    outs = sorted((tmp_path / "exp" / "outputs" / "ctss-untrained" / "synthtoon").glob("*.png"))
    assert len(outs) == 8  # SynthToon's test split: max(8, n // 4) scenes
    assert "<th colspan=5>SynthToon</th>" in res.report_html.read_text()
    from toonlab.io import read_image

    grid = read_image(res.grids[0]).rgb
    assert grid.shape[1] == 4 * (128 + 2) + 2  # rows: input, true cartoon, 2 methods
    assert grid.shape[2] == 150 + 3 * (128 + 2) + 2
