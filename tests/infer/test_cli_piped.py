"""Piped runs and cheap checks: plain progress lines when stderr is not a terminal, every check that needs no model
before one is loaded or its backend timed."""

import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from toonlab.checkpoint import save_export
from toonlab.cli import app
from toonlab.infer.translator import Translator
from toonlab.models import build_model

runner = CliRunner()  # its stderr is not a terminal: what a pipe or a log file sees
LINE = re.compile(r"^images: (\d+)/3 images, [\d.]+ images/s, ETA \d+:\d\d:\d\d \((.+)\)$")


@pytest.fixture
def photos(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.ascontiguousarray(astronaut[i * 40:i * 40 + 48, :64])).save(src / f"p{i}.png")
    return src


def test_piped_folder_prints_one_line_per_file(photos, tmp_path):
    r = runner.invoke(app, ["cartoonize", str(photos), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["1", "2", "3"], lines
    assert [LINE.match(line).group(2) for line in lines] == [str(photos / f"p{i}.png") for i in range(3)]
    assert r.stdout.splitlines() == [f"cartoonize: 3 done, 0 skipped, 0 failed -> {tmp_path / 'out'}"]
    r = runner.invoke(app, ["cartoonize", str(photos), "-o", str(tmp_path / "quiet"), "--no-progress"])
    assert r.exit_code == 0 and r.stderr == ""


def test_piped_video_prints_a_line_per_25_frames(tmp_path, make_video):
    make_video(tmp_path / "clip.mp4", n=60, audio=False)
    r = runner.invoke(app, ["cartoonize", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    done = [re.match(r"^clip\.mp4: (\d+)/60 frames, [\d.]+ frames/s, ETA \d+:\d\d:\d\d$", line)
            for line in r.stderr.splitlines()]
    assert all(done) and [int(m.group(1)) for m in done][-1] == 60, r.stderr
    assert len(done) == 3  # frames 25 (or the batch crossing it), 50, and the last


@pytest.fixture(scope="module")
def multistyle_ck(tmp_path_factory):
    return save_export(build_model("multistyle", {"ch": 8, "ra_blocks": 1}),
                       tmp_path_factory.mktemp("ms") / "ms.safetensors")


def test_style_typo_fails_before_the_backend_is_timed(multistyle_ck, photos, tmp_path, monkeypatch):
    from toonlab.infer import translator

    def timed(*a, **k):
        raise AssertionError("the backend was exported or timed before the style was checked")

    monkeypatch.setattr(translator, "faster_backend", timed)
    monkeypatch.setattr(translator, "cached_onnx", timed)
    monkeypatch.setattr(translator, "bf16_verdict", timed)  # --dtype auto's calibration
    monkeypatch.setattr(translator, "cpu_has_bf16", lambda: True)
    r = runner.invoke(app, ["cartoonize", str(photos), "-o", str(tmp_path / "out"), "-m", str(multistyle_ck),
                            "--style", "hayoa"])
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "unknown style 'hayoa'" in r.output and "hayao" in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["output is a file", "no inputs", "torchscript", "smoothing+stabilize", "ext",
                                  "dtype"])
def test_cheap_checks_run_before_loading(case, multistyle_ck, photos, tmp_path, monkeypatch):
    import torch

    def load(*a, **k):
        raise AssertionError("a model was loaded before the cheap checks")

    monkeypatch.setattr(Translator, "load", load)
    out, model, inputs, extra = tmp_path / "out", str(multistyle_ck), [str(photos)], []
    if case == "output is a file":
        out.write_text("x")
        words = "the output folder is a file"
    elif case == "no inputs":
        inputs, words = [str(tmp_path / "nothing" / "*.png")], "no images found"
    elif case == "torchscript":
        model = str(tmp_path / "g.pt")
        torch.jit.save(torch.jit.script(torch.nn.Identity()), model)
        words = "TorchScript"
    elif case == "ext":
        extra, words = ["--ext", "xyz"], "cannot write '.xyz'"
    elif case == "dtype":
        extra, words = ["--dtype", "float64"], "--dtype must be auto, fp32, bf16, fp16"
    else:
        extra, words = ["--smoothing", "0.5", "--stabilize"], "alternatives"
    r = runner.invoke(app, ["cartoonize", *inputs, "-o", str(out), "-m", model, *extra])
    assert r.exit_code == 2 and words in r.output and r.output.count("\n") == 1, r.output


def test_small_inputs_run_without_memory_calibration(multistyle_ck, monkeypatch):
    from toonlab.infer import tiling

    def calibrate(*a, **k):
        raise AssertionError("calibrated")

    monkeypatch.setattr(tiling, "measure_memory", calibrate)
    t = Translator.load(multistyle_ck, device="cpu")
    plan = t.plan(64, 64)
    assert plan.tile is None and "not calibrated" in plan.reason and "available RAM" in plan.reason
    assert t.plan(100, 120, batch=1).chunk == 1  # 100×120 padded ≤ 128²
    with pytest.raises(AssertionError, match="calibrated"):
        t.plan(64, 64, batch=8)  # 8 images together exceed the calibration's pass
    with pytest.raises(AssertionError, match="calibrated"):
        Translator.load(multistyle_ck, device="cpu", memory_budget=1 << 30).plan(64, 64)  # the user's budget


def test_memory_calibration_is_cached_across_processes(multistyle_ck, monkeypatch, tmp_path):
    from toonlab.infer import tiling, translator

    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))
    calls = []
    measure = tiling.measure_memory
    monkeypatch.setattr(tiling, "measure_memory", lambda *a, **k: calls.append(1) or measure(*a, **k))
    monkeypatch.setattr(translator, "_MEMORY_MODELS", {})  # a fresh process
    first = Translator.load(multistyle_ck, device="cpu").memory_model()
    assert len(calls) == 1
    monkeypatch.setattr(translator, "_MEMORY_MODELS", {})  # the next command: read from the disk cache
    assert Translator.load(multistyle_ck, device="cpu").memory_model() == first and len(calls) == 1
    stored, = (tmp_path / "cache" / "memory").glob("*.json")
    stored.write_text('{"fixed": -1, "per_pixel": "x"}')  # malformed: calibrated again, rewritten
    monkeypatch.setattr(translator, "_MEMORY_MODELS", {})
    again = Translator.load(multistyle_ck, device="cpu").memory_model()
    assert len(calls) == 2 and again.per_pixel > 0  # (the heap's sampling varies from run to run)
    assert json.loads(stored.read_text()) == {"fixed": again.fixed, "per_pixel": again.per_pixel}
