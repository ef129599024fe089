import json

import onnx
import pytest
import torch

from toonlab.checkpoint import save_export
from toonlab.errors import ToonlabError
from toonlab.infer.backends import OrtBackend
from toonlab.infer.export import export_model, reference_photo
from toonlab.infer.translator import Translator
from toonlab.models import build_model


@pytest.fixture(scope="module")
def ctss_file(tmp_path_factory):
    torch.manual_seed(0)
    return save_export(build_model("ctss"), tmp_path_factory.mktemp("ck") / "ctss.safetensors")


def test_onnx_export_matches_pytorch_on_a_real_photo(ctss_file, tmp_path):
    res = export_model(ctss_file, tmp_path / "ctss.onnx", "onnx", check_size=(120, 184))
    assert res.photo_size == (120, 184) and res.max_abs_diff < 1e-3
    meta = {p.key: p.value for p in onnx.load(str(res.path)).metadata_props}
    assert meta["toonlab_model"] == "ctss" and json.loads(meta["toonlab_config"])["saturation_boost"] == 1.4
    # the ONNX backend through the Translator applies the same post-processing as the PyTorch path
    x = reference_photo(4, (64, 96))
    a = Translator.load(res.path)(x)
    b = Translator.load(ctss_file, device="cpu")(x)
    assert (a - b).abs().max() < 1e-3
    # dynamic batch and a size that needs padding
    odd = torch.rand(2, 3, 30, 42)
    assert Translator.load(res.path)(odd).shape == odd.shape


def test_torchscript_export_matches_pytorch(ctss_file, tmp_path):
    res = export_model(ctss_file, tmp_path / "ctss.pt", "torchscript", check_size=(96, 136))
    assert res.max_abs_diff < 1e-3
    files = {"toonlab.json": ""}
    torch.jit.load(str(res.path), _extra_files=files)
    assert json.loads(files["toonlab.json"])["toonlab_model"] == "ctss"


def test_multistyle_onnx_has_style_input(tmp_path):
    model = build_model("multistyle")
    path = save_export(model, tmp_path / "ms.safetensors")
    res = export_model(path, tmp_path / "ms.onnx", check_size=(64, 80))
    assert res.max_abs_diff < 1e-3
    x = reference_photo(4, (48, 48))
    y0 = OrtBackend(res.path)(x, torch.tensor([0]))
    y1 = OrtBackend(res.path)(x, torch.tensor([1]))
    assert not torch.allclose(y0, y1)
    t = Translator.load(res.path, style=model.styles[1])
    assert t.styles == tuple(model.styles)
    assert torch.allclose(t(x), y1.clamp(0, 1), atol=1e-5)


def test_bad_onnx_file(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ToonlabError, match="x.onnx"):
        Translator.load(bad)
