import re

import numpy as np
import torch
import torch.nn.functional as F
import pytest

from toonlab.errors import ToonlabError
from toonlab.infer.import_weights import import_weights, read_state_dict
from toonlab.infer.translator import Translator


def _cartoongan_direct(sd, x_bgr, n_res=8):
    """The released network written with torch.nn.functional from the raw dict (Transformer.py's forward:
    reflection pads for 7×7 and residual convs, zero pads elsewhere, biased-variance instance norm, eps 1e-9)."""
    def inorm(t, name):
        mean = t.mean((2, 3), keepdim=True)
        var = t.var((2, 3), unbiased=False, keepdim=True)
        scale, shift = sd[f"{name}.scale"][:, None, None], sd[f"{name}.shift"][:, None, None]
        return (t - mean) / torch.sqrt(var + 1e-9) * scale + shift

    def conv(t, name, stride=1, pad=1, reflect=False):
        if reflect:
            return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), sd[f"{name}.weight"], sd[f"{name}.bias"], stride)
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], stride, pad)

    y = F.relu(inorm(conv(x_bgr, "conv01_1", pad=3, reflect=True), "in01_1"))
    y = F.relu(inorm(conv(conv(y, "conv02_1", 2), "conv02_2"), "in02_1"))
    y = F.relu(inorm(conv(conv(y, "conv03_1", 2), "conv03_2"), "in03_1"))
    for i in range(4, 4 + n_res):
        h = F.relu(inorm(conv(y, f"conv{i:02d}_1", reflect=True), f"in{i:02d}_1"))
        y = y + inorm(conv(h, f"conv{i:02d}_2", reflect=True), f"in{i:02d}_2")
    up = lambda t, n: F.conv_transpose2d(t, sd[f"{n}.weight"], sd[f"{n}.bias"], 2, 1, 1)
    y = F.relu(inorm(conv(up(y, "deconv01_1"), "deconv01_2"), f"in{4 + n_res}_1"))
    y = F.relu(inorm(conv(up(y, "deconv02_1"), "deconv02_2"), f"in{5 + n_res}_1"))
    return torch.tanh(conv(y, "deconv03_1", pad=3, reflect=True))


def test_cartoongan_released_layout_maps_and_handles_bgr(tmp_path, astronaut, cartoongan_released):
    sd = cartoongan_released()
    src = tmp_path / "Hayao_net_G_float.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, src)  # a DataParallel-saved variant
    out = import_weights(src, "cartoongan", tmp_path / "hayao.safetensors")
    t = Translator.load(out, device="cpu")
    assert t.name == "cartoongan" and t.meta["input_order"] == "bgr"
    x = torch.from_numpy(astronaut[100:164, 200:264].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref_bgr = _cartoongan_direct(sd, x.flip(1) * 2 - 1)  # RGB→BGR, [-1,1], as the authors' test script
    ref = ((ref_bgr.flip(1) + 1) / 2).clamp(0, 1)
    assert torch.allclose(t(x), ref, atol=1e-4)


def test_animegan2_layout_maps(tmp_path, astronaut):
    from toonlab.models.animegan import AnimeGANv2Generator

    torch.manual_seed(3)
    released = AnimeGANv2Generator().state_dict()  # layout checked against animegan2-pytorch in tests/models
    sd = {k: (v + 0.05 * torch.randn_like(v)) if v.is_floating_point() else v for k, v in released.items()}
    src = tmp_path / "paprika.pt"
    torch.save(sd, src)
    out = import_weights(src, "animegan2", tmp_path / "paprika.safetensors")
    t = Translator.load(out, device="cpu")
    assert t.name == "animegan" and t.meta["input_order"] == "rgb" and t.post.is_identity
    ref_net = AnimeGANv2Generator().eval()
    ref_net.load_state_dict(sd)
    x = torch.from_numpy(astronaut[:48, :64].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = ((ref_net(x * 2 - 1) + 1) / 2).clamp(0, 1)
    assert torch.allclose(t(x), ref, atol=1e-4)


def test_mismatched_and_foreign_files(tmp_path, cartoongan_released):
    sd = cartoongan_released()
    sd.pop("in01_1.scale")
    sd["extra.weight"] = torch.zeros(1)
    src = tmp_path / "bad.pth"
    torch.save(sd, src)
    with pytest.raises(ToonlabError, match=r"bad.pth.*missing: in01_1.scale.*unexpected: extra.weight"):
        import_weights(src, "cartoongan", tmp_path / "o.safetensors")
    wrong = cartoongan_released()
    wrong["conv01_1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ToonlabError, match="shape mismatch: conv01_1.weight"):
        import_weights(tmp_path / "wrong.pth", "cartoongan", tmp_path / "o.safetensors")
    with pytest.raises(ToonlabError, match="animegan2 generator.*missing: block_a"):  # the wrong --arch
        import_weights(tmp_path / "wrong.pth", "animegan2", tmp_path / "o.safetensors")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00junk")
    with pytest.raises(ToonlabError, match="junk.pt: not a PyTorch weights file"):
        import_weights(junk, "animegan2", tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def test_unreadable_weights_say_why_in_one_line(tmp_path):
    """Not torch's multi-paragraph text nor a bare pickle memo id like `(174812789)`: what kind of file it is."""

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled",))

    text = tmp_path / "notes.pt"
    text.write_text("hello, these are not weights\n")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    full = tmp_path / "full.pt"
    torch.save({"w": torch.zeros(4000)}, full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[:3000])
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Payload()}, evil)
    expected = {text: "not a PyTorch weights file", noise: "not a PyTorch weights file",
                cut: "a damaged or truncated PyTorch weights file", evil: "holds a .*print object, not only tensors"}
    for path, reason in expected.items():
        with pytest.raises(ToonlabError) as err:
            read_state_dict(path)
        msg = str(err.value)
        assert re.match(rf"{re.escape(str(path))}: {reason}", msg), msg
        assert "\n" not in msg and len(msg) < 200 and not re.search(r"\(\d+\)", msg)
