import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from toonlab.checkpoint import save_export
from toonlab.cli import app
from toonlab.infer.translator import Translator
from toonlab.models import build_model

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, astronaut):
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    ck = save_export(build_model("ctss"), root / "run" / "checkpoints" / "export-0000010.safetensors")
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(astronaut[:40, :52]).save(photos / "a.png")
    Image.fromarray(astronaut[100:132, 100:132]).save(photos / "sub" / "b.jpg", quality=95)
    (photos / "broken.png").write_bytes(b"not an image")
    return root, ck, photos


def test_cartoonize_with_run_dir_matches_python_api(setup):
    root, ck, photos = setup
    out = root / "out1"
    r = runner.invoke(app, ["cartoonize", str(photos), "-o", str(out), "-m", str(root / "run"), "--no-progress",
                            "--strength", "0.7"])
    assert r.exit_code == 1, r.output  # the broken file fails, the batch finishes
    assert "2 done, 0 skipped, 1 failed" in r.output and "broken.png" in r.output
    got = np.asarray(Image.open(out / "a.png")).astype(int)
    # the CLI's default precision is dtype="auto" (the same cached verdict, so the same network path)
    ref = Translator.load(ck, device="cpu", strength=0.7, dtype="auto")(np.asarray(Image.open(photos / "a.png")))
    assert got.shape == (40, 52, 3) and np.abs(got - ref.astype(int)).max() <= 1
    assert (out / "sub" / "b.jpg").is_file()
    r = runner.invoke(app, ["cartoonize", str(photos / "a.png"), "-o", str(out), "-m", str(ck), "--no-progress"])
    assert r.exit_code == 0 and "0 done, 1 skipped" in r.output


def test_cartoonize_onnx_backend_and_export_command(setup):
    root, ck, photos = setup
    onnx_file = root / "ctss.onnx"
    r = runner.invoke(app, ["export", str(ck), "--format", "onnx", "-o", str(onnx_file)])
    assert r.exit_code == 0, r.output
    diff = float(re.search(r"pytorch\| on a \d+x\d+ photo: (\S+)", r.output).group(1))
    assert diff < 1e-3
    out_t, out_o = root / "t", root / "o"
    for backend, out, model in (("torch", out_t, ck), ("onnx", out_o, onnx_file)):
        r = runner.invoke(app, ["cartoonize", str(photos / "a.png"), "-o", str(out), "-m", str(model),
                                "--backend", backend, "--no-progress", "--keep-colors"])
        assert r.exit_code == 0, r.output
    a = np.asarray(Image.open(out_t / "a.png")).astype(int)
    b = np.asarray(Image.open(out_o / "a.png")).astype(int)
    assert np.abs(a - b).max() <= 1


def test_usage_errors_are_one_line_exit_2(setup):
    root, ck, photos = setup
    cases = [
        ["--style", "hayao"],  # single-style model
        ["--backend", "tensorrt"],  # not a backend
        ["--radius", "3"],  # classic knob with a model
    ]
    for extra in cases:
        r = runner.invoke(app, ["cartoonize", str(photos / "a.png"), "-o", str(root / "x"), "-m", str(ck), *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert r.output.count("error:") == 1 and "Traceback" not in r.output
    r = runner.invoke(app, ["realize", str(photos / "a.png"), "-o", str(root / "x"), "-m", str(ck)])
    assert r.exit_code == 2 and "cartoonize" in r.output


def test_realize_with_toon2real(setup):
    root, _, photos = setup
    t2r = save_export(build_model("toon2real"), root / "t2r.safetensors")
    r = runner.invoke(app, ["realize", str(photos / "a.png"), "-o", str(root / "real"), "-m", str(t2r)])
    assert r.exit_code == 0, r.output
    assert np.asarray(Image.open(root / "real" / "a.png")).shape == (40, 52, 3)
    r = runner.invoke(app, ["cartoonize", str(photos / "a.png"), "-o", str(root / "real2"), "-m", str(t2r)])
    assert r.exit_code == 2 and "realize" in r.output


def test_cartoonize_video_classic(setup, tmp_path, make_video):
    import av

    _, _, photos = setup
    video = make_video(tmp_path / "clip.mp4", n=6)
    r = runner.invoke(app, ["cartoonize", str(video), str(photos / "a.png"), "-o", str(tmp_path / "o"),
                            "--suffix", "_toon", "--smoothing", "0.5", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "2 done" in r.output
    with av.open(str(tmp_path / "o" / "clip_toon.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6 and len(c.streams.audio) == 1
    assert (tmp_path / "o" / "a_toon.png").is_file()


def test_import_weights_command(tmp_path, cartoongan_released):
    src = tmp_path / "Shinkai_net_G_float.pth"
    torch.save(cartoongan_released(), src)
    r = runner.invoke(app, ["import-weights", str(src), "--arch", "cartoongan", "-o", str(tmp_path / "s.safetensors")])
    assert r.exit_code == 0, r.output
    assert Translator.load(tmp_path / "s.safetensors", device="cpu").meta["input_order"] == "bgr"
    r = runner.invoke(app, ["import-weights", str(src), "--arch", "nope", "-o", str(tmp_path / "n.safetensors")])
    assert r.exit_code == 2 and "animegan2" in r.output


def test_verbose_says_which_backend_and_path(setup):
    root, ck, photos = setup
    r = runner.invoke(app, ["cartoonize", str(photos / "a.png"), "-o", str(root / "v1"), "-m", str(ck), "-v",
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    # auto: the faster of ONNX Runtime and PyTorch here, timed once, in float32 (where bf16 is not faster and
    # faithful: then PyTorch in bf16, untimed); the line says which and why
    assert re.search(r"backend: ((onnxruntime \((exported to|cached) .*; |torch \()faster here: "
                     r"onnxruntime [\d.]+ s, torch [\d.]+ s at 512², measured once\); fp32: .+|"
                     r"torch; bf16: [\d.]+ dB to fp32, .+)\n", r.output), r.output
    assert "a.png: untiled 52×40" in r.output and "available RAM" in r.output
    r = runner.invoke(app, ["cartoonize", str(photos / "a.png"), "-o", str(root / "v2"), "-m", str(ck), "-v",
                            "--no-progress", "--backend", "torch", "--tile", "68"])
    assert r.exit_code == 0, r.output
    assert re.search(r"backend: torch; (fp32|bf16): ", r.output) and "a.png: tiled 52×40 in 68² tiles" in r.output
