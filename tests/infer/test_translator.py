
import numpy as np
import pytest
import torch
from PIL import Image

from toonlab.checkpoint import save_export
from toonlab.errors import ToonlabError, UsageError
from toonlab.infer.translator import Translator, resolve_checkpoint
from toonlab.models import build_model


@pytest.fixture(scope="module")
def ctss_export(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("ctss")
    return model, save_export(model, tmp_path_factory.mktemp("ck") / "ctss.safetensors")


def _direct(model, x01):
    """Independent computation: the model's translator on the padded [-1,1] input, then the CTSS ×1.4 saturation."""
    with torch.no_grad():
        y = (model.translator().eval()(x01 * 2 - 1) + 1) / 2
    gray = (0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2])[:, None]
    return (gray + 1.4 * (y - gray)).clamp(0, 1)


def test_export_translator_matches_model_and_keeps_kind(ctss_export, astronaut):
    model, path = ctss_export
    t = Translator.load(path, device="cpu")
    assert t.name == "ctss" and t.post.saturation == 1.4 and t.size_multiple == 4
    x = torch.from_numpy(astronaut[:64, :64].copy()).permute(2, 0, 1)[None].float() / 255
    y = t(x)
    assert torch.is_tensor(y) and y.shape == x.shape
    assert torch.allclose(y, _direct(model, x), atol=1e-4)
    arr = t(astronaut[:64, :64])
    assert arr.dtype == np.uint8 and arr.shape == (64, 64, 3)
    assert np.abs(arr.astype(int) - np.round(y[0].permute(1, 2, 0).numpy() * 255)).max() <= 1
    pil = t(Image.fromarray(astronaut[:64, :64]).convert("RGBA"))
    assert isinstance(pil, Image.Image) and pil.mode == "RGBA" and pil.size == (64, 64)
    assert torch.allclose(t(x[0]), y[0])


def test_any_size_is_padded_and_cropped(ctss_export, astronaut):
    model, path = ctss_export
    t = Translator.load(path, device="cpu")
    x = torch.from_numpy(astronaut[:50, :37].copy()).permute(2, 0, 1)[None].float() / 255
    y = t(x)
    assert y.shape == x.shape
    xp = torch.nn.functional.pad(x, (1, 2, 1, 1), mode="reflect")  # 52×40: split padding as documented
    ref = _direct(model, xp)[..., 1:51, 1:38]
    assert torch.allclose(y, ref, atol=1e-4)


def test_list_input_is_batched_and_order_kept(ctss_export, astronaut):
    _, path = ctss_export
    t = Translator.load(path, device="cpu", batch_size=2)
    imgs = [astronaut[:32, :32], astronaut[32:64, :32], astronaut[:40, :24], astronaut[64:96, :32]]
    outs = t(imgs)
    assert [o.shape for o in outs] == [(32, 32, 3), (32, 32, 3), (40, 24, 3), (32, 32, 3)]
    for img, out in zip(imgs, outs):
        assert np.abs(out.astype(int) - t(img).astype(int)).max() <= 1  # batched conv rounding only


def test_tiling_kicks_in_beyond_budget(ctss_export, astronaut, monkeypatch):
    from toonlab.infer import tiling

    monkeypatch.setattr(Translator, "streamer", lambda self: (None, "tiles in this test"))  # (streaming: its tests)
    _, path = ctss_export
    whole = Translator.load(path, device="cpu")
    x = torch.from_numpy(astronaut[:96, :96].copy()).permute(2, 0, 1)[None].float() / 255
    budget = int(68 * 68 * whole.bytes_per_pixel())  # a 96² image does not fit: 2×2 tiles of 68²
    tiled = Translator.load(path, device="cpu", memory_budget=budget)
    a, b = whole(x), tiled(x)
    tile = tiling.tile_for_budget(budget, whole.bytes_per_pixel(), 4, 32)
    assert tile == 68
    with torch.inference_mode():
        raw = tiling.run_tiled(lambda t: tiled.module(t), x, tile, 32, 4, module=tiled.module)
    assert torch.allclose(b, tiled.post(raw.clamp(0, 1), x), atol=1e-5)
    assert (a - b).abs().mean() < 8 / 255  # random-init G, tiny tiles: close but not equal

def test_run_dir_resolves_latest_export(ctss_export, tmp_path):
    model, _ = ctss_export
    ck = tmp_path / "run" / "checkpoints"
    for step in (20, 100, 3):
        save_export(model, ck / f"export-{step:07d}.safetensors")
    assert resolve_checkpoint(tmp_path / "run").name == "export-0000100.safetensors"
    save_export(model, tmp_path / "run" / "latest.safetensors")
    assert resolve_checkpoint(tmp_path / "run").name == "latest.safetensors"
    with pytest.raises(ToonlabError, match="no export checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(UsageError, match="no such"):
        Translator.load(tmp_path / "missing.safetensors")


def test_styles_of_multistyle_model(tmp_path, astronaut):
    model = build_model("multistyle")
    path = save_export(model, tmp_path / "ms.safetensors")
    t = Translator.load(path, device="cpu")
    assert t.styles == tuple(model.styles) and len(t.styles) >= 2
    x = torch.from_numpy(astronaut[:32, :32].copy()).permute(2, 0, 1)[None].float() / 255
    a, b = t(x, style=t.styles[0]), t(x, style=t.styles[1])
    assert not torch.allclose(a, b)
    with torch.no_grad():
        ref = (model.translator().eval()(x * 2 - 1, torch.tensor([1])) + 1) / 2
    assert torch.allclose(b, ref.clamp(0, 1), atol=1e-4)
    with pytest.raises(UsageError, match="valid: " + t.styles[0]):
        t(x, style="nope")


def test_single_style_model_rejects_style(ctss_export):
    with pytest.raises(UsageError, match="single style"):
        Translator.load(ctss_export[1], device="cpu", style="hayao")


def test_classic_and_top_level_load(astronaut):
    import toonlab
    from toonlab.infer.classic import cartoonize_classic

    t = toonlab.load("classic")
    x = torch.from_numpy(astronaut[:48, :48].copy()).permute(2, 0, 1)[None].float() / 255
    assert torch.allclose(t(x), cartoonize_classic(x), atol=1e-6)
    assert torch.allclose(toonlab.load("classic", strength=0.5)(x), 0.5 * cartoonize_classic(x) + 0.5 * x, atol=1e-5)


def test_bad_inputs():
    t = Translator.load("classic")
    with pytest.raises(UsageError, match="HWC"):
        t(np.zeros((4, 4), np.uint8))
    with pytest.raises(UsageError, match="cannot translate"):
        t("image.png")
    from toonlab.infer.translator import _pick_dtype

    with pytest.raises(UsageError, match="fp16"):
        _pick_dtype("fp16", torch.device("cpu"))
    with pytest.raises(UsageError, match="unknown device"):
        Translator.load("x.safetensors", device="tpu:0")


@pytest.mark.slow
def test_compiled_translator_matches_eager(ctss_export, astronaut):
    _, path = ctss_export
    x = torch.from_numpy(astronaut[:64, :96].copy()).permute(2, 0, 1)[None].float() / 255
    a = Translator.load(path, device="cpu")(x)
    b = Translator.load(path, device="cpu", compile=True)(x)
    assert torch.allclose(a, b, atol=1e-4)


def test_channels_last_auto_follows_the_generator_norms():
    """Channels-last is chosen on CPU only for LayerNorm generators (it slows instance-norm kernels down there)."""
    from toonlab.infer.translator import _channels_last_pays

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _channels_last_pays(build_model("ctss").translator(), cpu)
    assert _channels_last_pays(build_model("animegan").translator(), cpu)
    for name in ("cartoongan", "toon2real", "multistyle"):
        assert not _channels_last_pays(build_model(name).translator(), cpu), name
        assert _channels_last_pays(build_model(name).translator(), cuda), name
