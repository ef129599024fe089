"""Issue 24 item 10 (experiment): a row's training stopped by SIGTERM stops the experiment with a non-zero exit
and no report; the next run resumes that row (never reuses it as complete), then reuses it once complete."""

import json
import os
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import toonlab.train.trainer as trainer_mod
from toonlab.checkpoint import save_export
from toonlab.cli import app
from toonlab.eval.experiment import ROW_STATUS
from toonlab.models import build_model
from toonlab.train.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow
def test_sigterm_mid_training_stops_the_experiment_and_the_rerun_resumes(tmp_path, monkeypatch):
    spec = {"title": "t", "out": str(tmp_path / "exp"), "metrics": ["psnr"], "grid_images": 1,
            "train_overrides": ["model.perceptual=random", "train.phase_steps={init: 2, adv: 4}",
                                "train.ckpt_every=100", "train.sample_every=100", "train.progress=false",
                                "data.val_count=1"],
            "datasets": [{"name": "S", "synth": {"root": str(tmp_path / "synth"), "n": 4, "size": 32}}],
            "rows": [{"name": "ctss", "config": str(CONFIGS / "ctss-tiny.yaml")}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    steps = []
    train_step = Trainer._train_step

    def signalled(self, span, micro):
        steps.append(self.step)
        if len(steps) == 3:  # SIGTERM arrives during the third step
            os.kill(os.getpid(), signal.SIGTERM)
        return train_step(self, span, micro)

    monkeypatch.setattr(Trainer, "_train_step", signalled)
    runner = CliRunner()
    r = runner.invoke(app, ["experiment", str(path)])
    run_dir = tmp_path / "exp" / "runs" / "ctss" / "s"
    assert r.exit_code == 143 and "Traceback" not in r.output, r.output
    assert "stopped by SIGTERM while training 'ctss' on 'S' at step 3 of " in r.output
    assert not (tmp_path / "exp" / "report.md").exists() and not (tmp_path / "exp" / "outputs").exists()
    status = json.loads((run_dir / ROW_STATUS).read_text())
    assert status["steps"] == 3 and status["of"] > 3 and status["stopped_by"] == "SIGTERM"

    monkeypatch.setattr(Trainer, "_train_step", train_step)
    r = runner.invoke(app, ["experiment", str(path)])
    assert r.exit_code == 0, r.output
    assert f"resuming ctss on S in {run_dir} (stopped at step 3 of {status['of']})" in r.output
    done = json.loads((run_dir / ROW_STATUS).read_text())
    assert done["steps"] == done["of"] == status["of"] and done["stopped_by"] is None
    assert (tmp_path / "exp" / "report.md").is_file()
    r = runner.invoke(app, ["experiment", str(path)])
    assert r.exit_code == 0 and f"({done['of']} steps)" in r.output and "resuming" not in r.output, r.output


def test_an_interrupted_row_is_never_reused_as_complete(tmp_path, monkeypatch):
    """The same protocol with the trainer stood in for (fast): stopped → exit 143, no report; incomplete rows
    resume; a row cut short by train.max_minutes is scored but marked INCOMPLETE in the report."""
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.full((16, 16, 3), 90, np.uint8))
    spec = {"title": "t", "out": str(tmp_path / "exp"), "metrics": [], "grid_images": 1,
            "datasets": [{"name": "S", "test_inputs": str(tmp_path / "in"), "train_photos": str(tmp_path / "in"),
                          "train_cartoons": str(tmp_path / "in")}],
            "rows": [{"name": "cg", "config": str(CONFIGS / "cartoongan-tiny.yaml")}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "exp" / "runs" / "cg" / "s"
    calls = []

    trained = save_export(build_model("cartoongan", {"n_res": 1, "perceptual": "random"}), tmp_path / "g.safetensors")

    def fake_train(config, overrides=(), *, resume=None, init_from=None):
        step, interrupted = [(9, "SIGTERM"), (23, None), (32, None)][len(calls)]
        calls.append(resume)
        ck = run_dir / "checkpoints"
        ck.mkdir(parents=True, exist_ok=True)
        export = Path(shutil.copy(trained, ck / "latest.safetensors"))
        (ck / f"state-{step:07d}.safetensors").write_bytes(b"stands for a state")
        return {"step": step, "stop_step": 32, "run_dir": str(run_dir), "export": str(export),
                "state": None, "interrupted": interrupted}

    monkeypatch.setattr(trainer_mod, "train", fake_train)
    runner = CliRunner()
    r = runner.invoke(app, ["experiment", str(path)])
    assert r.exit_code == 143 and "at step 9 of 32" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "exp" / "report.md").exists()
    r = runner.invoke(app, ["experiment", str(path)])  # resumes; this time train.max_minutes ends it at 23
    assert r.exit_code == 0 and "stopped at step 9 of 32" in r.output, r.output
    assert "INCOMPLETE — trained 23 of 32 steps" in (tmp_path / "exp" / "report.md").read_text()
    r = runner.invoke(app, ["experiment", str(path)])  # still incomplete: resumed again, not reused
    assert r.exit_code == 0 and "stopped at step 23 of 32" in r.output and calls == [None, run_dir, run_dir]
    assert "INCOMPLETE" not in (tmp_path / "exp" / "report.md").read_text()
    r = runner.invoke(app, ["experiment", str(path)])
    assert r.exit_code == 0 and "reusing" in r.output and len(calls) == 3


def test_evaluate_with_nothing_scored_fails_in_one_line(tmp_path):
    for folder, name in (("outs", "a.png"), ("ref", "b.png")):  # no output has a same-named true image
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / name), np.full((16, 16, 3), 90, np.uint8))
    r = CliRunner().invoke(app, ["evaluate", "--outputs", str(tmp_path / "outs"), "--reference",
                                 str(tmp_path / "ref"), "--metrics", "psnr,ssim"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "Traceback" not in r.output, r.output
    assert "nothing was scored: psnr, ssim skipped: no output has a same-named true image" in r.output
