"""PyTorch and ONNX Runtime behind one interface: --backend auto, the export cache, tiled parity, the fallback."""

import pytest
import torch

from toonlab.checkpoint import save_export
from toonlab.errors import UsageError
from toonlab.infer import translator as translator_mod
from toonlab.infer.backends import OrtBackend, TorchBackend
from toonlab.infer.export import export_model
from toonlab.infer.translator import Translator
from toonlab.models import build_model


@pytest.fixture(scope="module")
def ctss_file(tmp_path_factory):
    torch.manual_seed(0)
    return save_export(build_model("ctss"), tmp_path_factory.mktemp("ck") / "ctss.safetensors")


@pytest.fixture(scope="module")
def photo(astronaut):
    return torch.from_numpy(astronaut[100:196, 90:190].copy()).permute(2, 0, 1)[None].float() / 255  # 96×100


@pytest.fixture
def auto_picks(monkeypatch):
    """Fix auto's timed choice (``faster_backend``) so a test sees the backend it is about."""
    def pick(choice: str):
        monkeypatch.setattr(translator_mod, "faster_backend",
                            lambda *a, **k: (choice, {"onnxruntime": 1.0, "torch": 1.0}))
    return pick


def test_auto_runs_onnxruntime_from_a_cached_export(ctss_file, photo, onnx_cache, auto_picks):
    auto_picks("onnxruntime")
    torch_t = Translator.load(ctss_file, device="cpu")
    auto = Translator.load(ctss_file, device="cpu", backend="auto")
    assert isinstance(auto.backend, OrtBackend) and isinstance(torch_t.backend, TorchBackend)
    assert auto.backend_note.startswith("onnxruntime (exported to ") and ".onnx; faster here: " in auto.backend_note
    assert (auto(photo) - torch_t(photo)).abs().max() < 1e-4
    files = list(onnx_cache.glob("*.onnx"))
    assert len(files) == 1
    again = Translator.load(ctss_file, device="cpu", backend="auto")
    assert again.backend_note.startswith(f"onnxruntime (cached {files[0]}; faster here: ")
    assert list(onnx_cache.glob("*.onnx")) == files  # reused, not exported twice


def test_faster_backend_times_both_once_and_caches_the_choice(ctss_file, onnx_cache, monkeypatch):
    """The faster of two backends wins (one made slower by a known sleep), and the choice is cached beside the
    export: a second call reads it without running either backend."""
    import time

    from toonlab.infer import backends

    t = Translator.load(ctss_file, device="cpu", backend="onnx")
    ort, torch_backend = t.backend, t.torch_backend
    monkeypatch.setattr(backends, "AUTO_TIMING_SIDE", 64)
    calls = []

    def slowed(call, seconds):
        def run(x, style=None):
            calls.append(x.shape[-1])
            time.sleep(seconds)
            return call(x, style)
        return run

    start = time.perf_counter()
    torch_backend(torch.rand(1, 3, 64, 64))
    delay = max(0.6, 3 * (time.perf_counter() - start))  # on a loaded machine one 64² pass took 0.8 s
    slow_ort = slowed(ort, delay)
    slow_ort.path = ort.path  # the cache is keyed by the ONNX file
    choice, seconds = backends.faster_backend(slow_ort, slowed(torch_backend, 0.0), t.size_multiple)
    assert choice == "torch" and seconds["onnxruntime"] >= delay and seconds["torch"] < seconds["onnxruntime"]
    assert calls == [128, 128, 64, 64, 64, 64]  # a warm-up each, then two alternating timed calls each
    assert len(list(onnx_cache.glob("*-speed.json"))) == 1
    fake_ort = slowed(ort, 0.0)
    fake_ort.path = ort.path
    assert backends.faster_backend(fake_ort, slowed(torch_backend, 0.6), t.size_multiple) == (choice, seconds)
    assert len(calls) == 6  # read from the cache: neither ran


def test_auto_takes_pytorch_where_it_was_timed_faster(ctss_file, photo, auto_picks):
    auto_picks("torch")
    t = Translator.load(ctss_file, device="cpu", backend="auto")
    assert isinstance(t.backend, TorchBackend)
    assert t.backend_note == "torch (faster here: onnxruntime 1.00 s, torch 1.00 s at 512², measured once)"
    assert torch.equal(t(photo), Translator.load(ctss_file, device="cpu")(photo))


def test_onnx_tiles_run_through_pytorch_with_exact_statistics(ctss_file, photo, auto_picks, monkeypatch):
    """Over the budget, the ONNX Runtime translator tiles through its PyTorch twin: the same pooled statistics,
    so it equals the PyTorch translator's tiled output — never per-tile (blocky) ONNX tiles."""
    auto_picks("onnxruntime")
    monkeypatch.setattr(Translator, "streamer", lambda self: (None, "tiles in this test"))
    ref = Translator.load(ctss_file, device="cpu")
    budget = int(ref.memory_model().bytes(68, 68))
    tiled_torch = Translator.load(ctss_file, device="cpu", memory_budget=budget)
    tiled_ort = Translator.load(ctss_file, device="cpu", memory_budget=budget, backend="auto")
    a, b = tiled_torch(photo), tiled_ort(photo)
    assert tiled_ort.last_plan.tile == 68 and "through PyTorch" in tiled_ort.last_plan.reason
    assert torch.allclose(a, b, atol=1e-6)
    assert (b - ref(photo)).abs().mean() < 8 / 255  # random-init G, tiny tiles: close to untiled


def test_auto_falls_back_to_pytorch_with_a_reason(ctss_file, photo, monkeypatch):
    monkeypatch.setattr(translator_mod, "ort_missing_reason", lambda: "onnxruntime is not installed (pip ...)")
    t = Translator.load(ctss_file, device="cpu", backend="auto")
    assert isinstance(t.backend, TorchBackend)
    assert t.backend_note == "torch (onnxruntime is not installed (pip ...))"
    with pytest.raises(UsageError, match="onnxruntime"):
        Translator.load(ctss_file, device="cpu", backend="onnx")
    assert isinstance(Translator.load(ctss_file, device="cpu", backend="auto", compile=True).backend, TorchBackend)


def test_bare_onnx_file_never_tiles(ctss_file, photo, tmp_path):
    res = export_model(ctss_file, tmp_path / "c.onnx", check_size=(64, 64))
    t = Translator.load(res.path, memory_budget=1 << 20)  # far below what a 96×100 image needs
    y = t(photo)
    assert t.last_plan.tile is None and "cannot tile" in t.last_plan.reason
    assert (y - Translator.load(ctss_file, device="cpu")(photo)).abs().max() < 1e-4
    with pytest.raises(UsageError, match="onnx"):
        Translator.load(res.path, backend="torch")


def test_onnx_runtime_memory_is_measured_once_and_bounds_a_larger_call(ctss_file, onnx_cache, monkeypatch,
                                                                        auto_picks):
    """ONNX Runtime's own resident memory (its arena), fitted at 128²/256² and cached beside the export, is at
    least what a fresh session keeps resident after a 384² call, and not wildly more."""
    import subprocess
    import sys

    from toonlab.device import keep_cpu_heap

    auto_picks("onnxruntime")
    t = Translator.load(ctss_file, device="cpu", backend="auto")
    for fitted in onnx_cache.glob("*-memory.json"):  # an earlier test's fit: this one measures
        fitted.unlink()
    keep_cpu_heap(True)  # as after an untiled PyTorch pass: 512 MiB freed into a kept heap, which the fit releases
    torch.ones(128 << 20).mul_(2)  # allocated and freed at once
    model = t.ort_memory_model()
    assert model is not None and model.per_pixel > 0
    assert len(list(onnx_cache.glob("*-memory.json"))) == 1
    # What a 384² call keeps resident, measured in a fresh process: in this one, memory that earlier tests freed
    # can absorb part of the growth (once, under load: 148 MB in-process where a fresh process grows by 258 MB),
    # which made the upper bound flaky.
    measure = ("import sys, numpy as np; from toonlab.infer.backends import OrtBackend, _resident_bytes; "
               "s = OrtBackend(sys.argv[1])._new_session(); b = _resident_bytes(); "
               "s.run(['output'], {'image': np.random.rand(1, 3, 384, 384).astype(np.float32)}); "
               "print(_resident_bytes() - b)")
    grown = int(subprocess.run([sys.executable, "-c", measure, str(t.backend.path)], capture_output=True,
                               text=True, check=True).stdout)
    assert grown <= model.bytes(384, 384) <= 2.5 * grown
    # a second load reads the cached fit: no session is built to measure it
    cached = OrtBackend(t.backend.path)  # builds its own session: patch after it
    monkeypatch.setattr(OrtBackend, "_new_session", lambda self: (_ for _ in ()).throw(AssertionError("measured")))
    assert cached.measure_memory(t.size_multiple) == (model.fixed, model.per_pixel)


def test_onnx_runtime_over_budget_streams_else_runs_untiled_through_pytorch(ctss_file, photo, monkeypatch,
                                                                            auto_picks):
    """ONNX Runtime's own memory decides whether it runs; over the budget the image is streamed (exact, PyTorch),
    and where the network does not stream but PyTorch's untiled pass fits, that runs — never tiles first."""
    from toonlab.infer.tiling import MemoryModel

    ref = Translator.load(ctss_file, device="cpu")
    budget = int(ref.memory_model().bytes(128, 128))  # the 96×100 photo fits PyTorch's estimate
    auto_picks("onnxruntime")
    t = Translator.load(ctss_file, device="cpu", backend="auto", memory_budget=budget)
    t._ort_memory = MemoryModel(0.0, 1.0)
    y = t(photo)
    assert t.last_plan.backend == "onnxruntime" and (y - ref(photo)).abs().max() < 1e-4
    t._ort_memory = MemoryModel(0.0, 4.0 * budget / (96 * 100))
    y = t(photo)
    assert t.last_plan.streamed and t.last_plan.backend == "torch" and "on onnxruntime > budget" in t.last_plan.reason
    assert (y - ref(photo)).abs().max() < 2 / 255  # fp16-stored maps
    monkeypatch.setattr(t, "streamer", lambda: (None, "unsupported op"))
    y = t(photo)
    plan = t.last_plan
    assert plan.backend == "torch" and plan.tile is None and not plan.streamed
    assert "through PyTorch" in plan.reason and "not streamed: unsupported op" in plan.reason
    assert torch.equal(y, ref(photo))  # the same PyTorch module, untiled


def test_a_cached_export_opens_no_session_unless_onnx_runtime_runs(ctss_file, photo, auto_picks, monkeypatch):
    """Auto on a cached export reads its choice before an ONNX Runtime session exists: where PyTorch was faster
    no session is opened (0.05–0.2 s); where ONNX Runtime was, it opens on the first call."""
    auto_picks("onnxruntime")
    Translator.load(ctss_file, device="cpu", backend="auto")  # the export, cached
    opened = []
    real = OrtBackend._new_session
    monkeypatch.setattr(OrtBackend, "_new_session", lambda self: opened.append(1) or real(self))
    auto_picks("torch")
    assert isinstance(Translator.load(ctss_file, device="cpu", backend="auto").backend, TorchBackend)
    assert not opened
    auto_picks("onnxruntime")
    t = Translator.load(ctss_file, device="cpu", backend="auto")
    assert isinstance(t.backend, OrtBackend) and t.backend_note.startswith("onnxruntime (cached ") and not opened
    assert (t(photo) - Translator.load(ctss_file, device="cpu")(photo)).abs().max() < 1e-4 and len(opened) == 1
