"""Issue 24 item 3: the ONNX export cache is tied to its checkpoint, malformed measurement caches are rebuilt."""

import json
import shutil

import pytest
import torch

from toonlab.checkpoint import save_export
from toonlab.infer import backends
from toonlab.infer.backends import OrtBackend
from toonlab.infer.translator import Translator
from toonlab.models import build_model


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two small CartoonGAN generators (one residual block) with different weights."""
    folder = tmp_path_factory.mktemp("ab")
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        out.append(save_export(build_model("cartoongan", {"n_res": 1}), folder / f"m{seed}.safetensors"))
    return out


@pytest.fixture(scope="module")
def photo(astronaut):
    return torch.from_numpy(astronaut[100:164, 90:154].copy()).permute(2, 0, 1)[None].float() / 255


class _Fake:
    """A backend stand-in that returns its input at once; the caches are keyed by ``path``."""

    def __init__(self, path=None):
        self.path = path

    def __call__(self, x, style=None, eager=False):
        return x


@pytest.fixture(scope="module")
def cached(two_models, photo, tmp_path_factory):
    """A's and B's cached ONNX exports and their outputs on ``photo`` (run by ONNX Runtime alone)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOONLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        ta, tb = (Translator.load(p, device="cpu", backend="onnx") for p in two_models)
    want_a, want_b = ta.backend(photo), tb.backend(photo)
    assert (want_a - want_b).abs().max() > 0.05
    return ta.backend.path, tb.backend.path, want_a


@pytest.mark.parametrize("backend,planted", [("onnx", "B"), ("auto", "B"), ("onnx", "junk")])
def test_another_models_onnx_copied_over_the_cache_is_never_run(two_models, photo, cached, monkeypatch, capsys,
                                                                backend, planted):
    from toonlab.infer import translator as translator_mod

    path_a, path_b, want_a = cached
    monkeypatch.setenv("TOONLAB_CACHE", str(path_a.parent.parent))
    monkeypatch.setattr(translator_mod, "faster_backend",  # auto runs ONNX Runtime here
                        lambda *a, **k: ("onnxruntime", {"onnxruntime": 1.0, "torch": 2.0}))
    if planted == "B":
        shutil.copyfile(path_b, path_a)  # B's cached export under A's key
    else:
        path_a.write_bytes(b"not onnx")
    capsys.readouterr()
    again = Translator.load(two_models[0], device="cpu", backend=backend)
    assert isinstance(again.backend, OrtBackend) and again.backend.path == path_a
    assert "is not the export of" in capsys.readouterr().err
    assert torch.allclose(again.backend(photo), want_a, atol=1e-4)
    assert again.backend.metadata[backends.CHECKPOINT_DIGEST_KEY] == backends._digest(two_models[0])


def test_malformed_speed_cache_is_ignored_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))  # this test's own cache
    onnx_cache = tmp_path / "cache" / "onnx"
    onnx = tmp_path / "x.onnx"
    onnx.write_bytes(b"stands for an export: only its digest keys the cache")
    choice, seconds = backends.faster_backend(_Fake(onnx), _Fake())
    (cache,) = onnx_cache.glob(f"{backends._digest(onnx)}-*-speed.json")
    for bad in [{"choice": "torch", "seconds": {}}, {"choice": "gpu", "seconds": {"torch": 1, "onnxruntime": 1}},
                {"choice": "torch", "seconds": {"onnxruntime": "x", "torch": 1}}, {"choice": "torch"}, [], "text"]:
        cache.write_text(json.dumps(bad))
        choice, seconds = backends.faster_backend(_Fake(onnx), _Fake())
        assert choice in ("onnxruntime", "torch") and sorted(seconds) == ["onnxruntime", "torch"]
        assert json.loads(cache.read_text())["choice"] == choice  # rewritten


def test_malformed_memory_cache_is_measured_again(two_models, cached, tmp_path, monkeypatch):
    import onnxruntime

    monkeypatch.setenv("TOONLAB_CACHE", str(cached[0].parent.parent))  # the module's cache, holding A's export
    onnx_cache = cached[0].parent
    t = Translator.load(two_models[0], device="cpu", backend="onnx")
    cache = onnx_cache / f"{backends._digest(t.backend.path)}-ort{onnxruntime.__version__}-memory.json"
    cache.write_text(json.dumps({"fixed": -1.0, "per_pixel": 1.0}))
    monkeypatch.setattr(backends, "ORT_CALIBRATION_SIDES", (32, 64))
    fitted = t.backend.measure_memory(t.size_multiple)
    assert fitted != (-1.0, 1.0)
    if fitted is not None:  # None where the resident set did not grow: then nothing is cached
        assert json.loads(cache.read_text())["fixed"] == fitted[0] >= 0
