"""dtype="auto": bf16 where it is measured faster than float32 and faithful to it on this model, else float32 —
the verdict measured once per checkpoint and cached; the CLI's and ``toonlab.load``'s default."""

import json
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import toonlab
from toonlab.checkpoint import save_export
from toonlab.cli import app
from toonlab.infer import backends
from toonlab.infer import translator as translator_mod
from toonlab.infer.backends import TorchBackend, cpu_has_bf16, precision_choice
from toonlab.infer.translator import Translator
from toonlab.models import build_model
from toonlab.photos import load as load_photo

runner = CliRunner()
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 units (AVX512-BF16 / AMX): "
                                                           "auto keeps float32 without measuring bf16")


@pytest.fixture(autouse=True)
def small_calibration(monkeypatch):
    """Calibrate on a 128² photo (not 256²): the tests' translators then run it without a memory calibration.
    On one thread: these small networks' ops on two threads of a loaded machine mostly wait (a test took 76 s
    there, 1.6 s on one)."""
    monkeypatch.setattr(translator_mod, "PRECISION_CALIBRATION_SIDE", 128)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def animegan_ck(tmp_path_factory):
    """AnimeGANv2's generator with random weights of a trained network's scale (as benchmarks/bench_peers.py's
    random_peer): its layer norms keep bf16 within 2/255 of float32."""
    model = build_model("animegan")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith(("scale", "weight")) else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return save_export(model, tmp_path_factory.mktemp("ag") / "ag.safetensors")


@pytest.fixture(scope="module")
def multistyle_ck(tmp_path_factory):
    """A small multi-style generator (instance-type norms): in bf16 its output is ~19/255 off float32's."""
    torch.manual_seed(0)
    return save_export(build_model("multistyle", {"ch": 8, "ra_blocks": 1}),
                       tmp_path_factory.mktemp("ms") / "ms.safetensors")


@pytest.fixture(scope="module")
def photo(astronaut):
    return torch.from_numpy(astronaut[120:220, 150:246].copy()).permute(2, 0, 1)[None].float() / 255  # 100×96


@pytest.fixture
def forwards(monkeypatch):
    """Counts PyTorch forward passes (the calibration's included)."""
    calls = []
    real = TorchBackend.__call__
    monkeypatch.setattr(TorchBackend, "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    return calls


@pytest.fixture
def slowed(monkeypatch):
    """``slowed(dtype)``: PyTorch passes in ``dtype`` take 5× their own time (+0.2 s) — the calibration's timing
    made independent of this shared machine's load (bf16 and fp32 differ by ~2.5× here); fidelity stays
    measured."""
    import time

    def slow(dtype):
        real = TorchBackend.__call__

        def call(self, x, *a, **k):
            start = time.perf_counter()
            y = real(self, x, *a, **k)
            if x.dtype == dtype:
                time.sleep(4 * (time.perf_counter() - start) + 0.2)
            return y
        monkeypatch.setattr(TorchBackend, "__call__", call)
    return slow


def _never(*a, **k):
    raise AssertionError("called")


def _fidelity(ck, side: int, styles: int) -> tuple[float, float]:
    """Independently of bf16_verdict: (worst PSNR over styles, max |Δ| in 1/255) between the 8-bit outputs of the
    fp32 and bf16 translators on the calibration photo (the astronaut resized to side²)."""
    x = cv2.resize(load_photo("astronaut"), (side, side), interpolation=cv2.INTER_AREA)
    fp32, bf16 = (Translator.load(ck, device="cpu", dtype=d) for d in ("fp32", "bf16"))
    psnr, worst = math.inf, 0.0
    for s in range(styles) if styles else [None]:
        a, b = (t(x, style=s).astype(np.float64) for t in (fp32, bf16))
        mse = ((a - b) ** 2).mean()
        psnr = min(psnr, 10 * math.log10(255 ** 2 / mse) if mse else math.inf)
        worst = max(worst, float(np.abs(a - b).max()))
    return psnr, worst


@needs_bf16
def test_auto_adopts_bf16_where_faithful_and_faster(animegan_ck, photo, slowed, monkeypatch):
    monkeypatch.setattr(translator_mod, "cached_onnx", _never)  # bf16 runs on PyTorch: no export, no timing
    monkeypatch.setattr(translator_mod, "faster_backend", _never)
    slowed(torch.float32)
    auto = Translator.load(animegan_ck, device="cpu", backend="auto", dtype="auto")
    monkeypatch.undo()
    assert auto.dtype == torch.bfloat16 and isinstance(auto.backend, TorchBackend)
    v = auto.precision_verdict
    assert v["psnr_db"] >= backends.BF16_MIN_PSNR_DB and v["max_abs_255"] <= backends.BF16_MAX_ABS_255
    assert v["seconds"]["fp32"] > backends.BF16_MIN_SPEEDUP * v["seconds"]["bf16"]
    assert auto.backend_note.startswith(f"torch; bf16: {v['psnr_db']:.1f} dB to fp32, max ")
    assert torch.equal(auto(photo), Translator.load(animegan_ck, device="cpu", dtype="bf16")(photo))
    psnr, worst = _fidelity(animegan_ck, v["side"], 0)
    assert psnr == pytest.approx(v["psnr_db"]) and worst == v["max_abs_255"]


@needs_bf16
def test_auto_keeps_fp32_where_bf16_is_not_faster(animegan_ck, photo, slowed, tmp_path, monkeypatch):
    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))  # measured afresh
    slowed(torch.bfloat16)
    auto = Translator.load(animegan_ck, device="cpu", backend="torch", dtype="auto")
    assert auto.dtype == torch.float32 and auto.backend_note.startswith("torch; fp32: bf16 is not faster here (0.")
    assert torch.equal(auto(photo), Translator.load(animegan_ck, device="cpu")(photo))


@needs_bf16
def test_auto_keeps_fp32_where_bf16_differs(multistyle_ck, photo):
    auto = Translator.load(multistyle_ck, device="cpu", dtype="auto")
    v = auto.precision_verdict
    assert auto.dtype == torch.float32 and v["max_abs_255"] > backends.BF16_MAX_ABS_255
    assert auto.backend_note == f"torch; fp32: bf16 differs by {v['max_abs_255']:.0f}/255 ({v['psnr_db']:.1f} dB; " \
                                f"needs ≥ 45 dB, ≤ 4/255) (measured once at {v['side']}²)"
    fp32 = Translator.load(multistyle_ck, device="cpu")
    for style in ("hayao", "shinkai"):
        assert torch.equal(auto(photo, style=style), fp32(photo, style=style))
    psnr, worst = _fidelity(multistyle_ck, v["side"], len(auto.styles))  # the worst of all styles
    assert psnr == pytest.approx(v["psnr_db"]) and worst == v["max_abs_255"]


def test_verdict_is_cached_and_a_malformed_cache_measured_again(multistyle_ck, forwards, tmp_path, monkeypatch):
    """Once per checkpoint: the second load runs no forward pass; a malformed cache is measured again and
    rewritten. (The probe is forced on: the cache does not depend on the CPU.)"""
    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(translator_mod, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(translator_mod, "PRECISION_CALIBRATION_SIDE", 64)  # five calibrations: small ones
    first = Translator.load(multistyle_ck, device="cpu", dtype="auto")
    assert len(forwards) == 8  # fp32 and bf16: a warm-up each, then three alternating timed calls each
    (cache,) = (tmp_path / "cache" / "onnx").glob("*-bf16.json")
    assert json.loads(cache.read_text()) == first.precision_verdict
    again = Translator.load(multistyle_ck, device="cpu", dtype="auto")
    assert len(forwards) == 8 and again.precision_verdict == first.precision_verdict
    assert again.backend_note == first.backend_note and again.dtype == first.dtype
    for bad in ["text", {"psnr_db": 50.0}, {**first.precision_verdict, "max_abs_255": -1},
                {**first.precision_verdict, "seconds": {"fp32": 1.0, "bf16": 0.0}}]:
        cache.write_text(json.dumps(bad))
        forwards.clear()
        measured = Translator.load(multistyle_ck, device="cpu", dtype="auto")
        assert len(forwards) == 8, bad
        assert json.loads(cache.read_text()) == measured.precision_verdict


def test_no_bf16_units_keeps_fp32_without_calibrating(multistyle_ck, photo, forwards, monkeypatch):
    monkeypatch.setattr(translator_mod, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(translator_mod, "bf16_verdict", _never)
    auto = Translator.load(multistyle_ck, device="cpu", dtype="auto")
    assert auto.dtype == torch.float32 and auto.precision_verdict is None and not forwards
    assert auto.backend_note == "torch; fp32: this CPU has no bf16 units"
    assert torch.equal(auto(photo), Translator.load(multistyle_ck, device="cpu", dtype="fp32")(photo))


def test_auto_is_fp32_off_the_cpu_and_on_onnx_runtime(multistyle_ck, monkeypatch):
    """No calibration on a GPU (fp16/bf16 unverified there) or for ONNX Runtime (float32)."""
    from toonlab.infer.translator import GeneratorWrapper, _auto_dtype
    from toonlab.infer.postprocess import PostProcess

    monkeypatch.setattr(translator_mod, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(translator_mod, "bf16_verdict", _never)
    wrapper = GeneratorWrapper(torch.nn.Identity())
    for device, backend, why in ((torch.device("cuda"), "auto", "fp32: auto keeps float32 on cuda"),
                                 (torch.device("cpu"), "onnx", "fp32: ONNX Runtime runs float32")):
        assert _auto_dtype(multistyle_ck, wrapper, (), 1, device, backend, None, PostProcess()) == \
            (torch.float32, why, None)


@pytest.mark.parametrize("psnr,worst,fp32_s,choice", [(45.0, 4.0, 2.0, "bf16"), (44.9, 2.0, 2.0, "fp32"),
                                                       (60.0, 5.0, 2.0, "fp32"), (math.inf, 0.0, 1.05, "fp32"),
                                                       (math.inf, 0.0, 1.1, "bf16")])
def test_precision_choice_thresholds(psnr, worst, fp32_s, choice):
    verdict = {"psnr_db": psnr, "max_abs_255": worst, "mean_abs_255": 0.0, "seconds": {"fp32": fp32_s, "bf16": 1.0}}
    assert precision_choice(verdict)[0] == choice


def test_cli_defaults_to_auto_and_fp32_is_exact(multistyle_ck, astronaut, tmp_path, monkeypatch):
    src = tmp_path / "in.png"
    Image.fromarray(astronaut[200:248, 180:244]).save(src)
    monkeypatch.setattr(translator_mod, "cpu_has_bf16", lambda: False)
    r = runner.invoke(app, ["cartoonize", str(src), "-o", str(tmp_path / "auto"), "-m", str(multistyle_ck), "-v",
                            "--backend", "torch", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "backend: torch; fp32: this CPU has no bf16 units\n" in r.output  # the default is auto
    assert toonlab.load(multistyle_ck, device="cpu").backend_note.endswith("fp32: this CPU has no bf16 units")
    monkeypatch.setattr(translator_mod, "cpu_has_bf16", _never)  # fp32 asks nothing
    r = runner.invoke(app, ["cartoonize", str(src), "-o", str(tmp_path / "fp32"), "-m", str(multistyle_ck), "-v",
                            "--backend", "torch", "--dtype", "fp32", "--no-progress"])
    assert r.exit_code == 0 and "backend: torch\n" in r.output, r.output
    want = Translator.load(multistyle_ck, device="cpu", dtype="fp32")(np.asarray(Image.open(src)))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "fp32" / "in.png")), want)  # PNG: bit for bit


def test_invalid_dtype_is_one_line_before_loading(multistyle_ck, astronaut, tmp_path, monkeypatch):
    monkeypatch.setattr(Translator, "load", _never)
    src = tmp_path / "in.png"
    Image.fromarray(astronaut[:32, :32]).save(src)
    for model in (["-m", str(multistyle_ck)], []):  # the classic cartoonizer also rejects it
        r = runner.invoke(app, ["cartoonize", str(src), "-o", str(tmp_path / "o"), *model, "--dtype", "fp64"])
        assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
        assert "--dtype must be auto, fp32, bf16, fp16, got 'fp64'" in r.output
