"""End-to-end: every registered system trains from its tiny recipe through the CLI (init and adversarial steps),
writes checkpoints, resumes, and its export translates images."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from toonlab.checkpoint import load_export
from toonlab.cli import app
from toonlab.infer.translator import Translator
from toonlab.models import get_model_class
from toonlab.train.config import load_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = ["ctss", "cartoongan", "animegan", "multistyle", "salcbam", "toon2real", "cyclegan"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from toonlab.data.synth import make_synthtoon

    root = make_synthtoon(tmp_path_factory.mktemp("synth") / "st", n=4, size=32, seed=0, n_test=2)
    styles = root / "styles"  # multi-style layout: one sub-folder per style
    for name in ("hayao", "shinkai"):
        shutil.copytree(root / "train" / "cartoons", styles / name)
    return root


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.mark.parametrize("name", MODELS)
def test_tiny_recipe_trains_resumes_and_translates(tmp_path, synth, name):
    cls = get_model_class(name)
    cartoons = synth / ("styles" if name == "multistyle" else "train/cartoons")
    run = tmp_path / "run"
    common = [f"data.photos={synth / 'train/photos'}", f"data.cartoons={cartoons}", "train.progress=false"]
    total = sum(load_run_config(CONFIGS / f"{name}-tiny.yaml").train.phase_steps.values())
    _invoke("train", CONFIGS / f"{name}-tiny.yaml", *common, f"train.run_dir={run}", f"train.max_steps={total - 1}")
    first = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in first] == list(range(1, total))
    phases = [p.name for p in cls(cls.Config()).phases()]
    assert first[0]["phase"] == phases[0]
    _invoke("train", "--resume", run, "train.max_steps=null")
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, total + 1))
    assert {r["phase"] for r in recs} == set(phases)  # every phase ran
    assert all(torch.isfinite(torch.tensor(v)) for r in recs for k, v in r.items() if k.endswith("/loss"))
    ck = run / "checkpoints"
    assert (ck / "latest.safetensors").is_file() and (ck / f"state-{total:07d}.safetensors").is_file()
    assert (run / "samples" / f"step-{total:06d}.png").is_file()

    model, meta = load_export(ck / "latest.safetensors")
    assert meta["model"] == name and meta["step"] == str(total)
    translator = Translator.load(run, device="cpu")  # a run dir resolves to its latest export
    x = torch.rand(1, 3, 32, 32)
    y = translator(x, style=1) if model.styles else translator(x)
    assert y.shape == (1, 3, 32, 32) and 0 <= y.min() and y.max() <= 1 and not torch.equal(x, y)


def test_cli_errors_are_one_line(tmp_path, synth):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: cartoongan}\ntrain: {max_stepz: 3}\n")
    result = CliRunner().invoke(app, ["train", str(bad)])
    assert result.exit_code == 2 and "train.max_stepz" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "none")])
    assert result.exit_code == 2 and "not a run dir" in result.output
