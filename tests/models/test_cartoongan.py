"""CartoonGAN: the released-weights layout of G, the paper's D, the edge-promoting loss by hand."""

import math

import pytest
import torch
from torch import nn

from toonlab.models import build_model
from toonlab.models.cartoongan import CartoonGANDiscriminator, CartoonGANGenerator, ScaleShiftInstanceNorm


def released_keys() -> dict[str, tuple]:
    """Key → shape of the released CartoonGAN PyTorch state dict (network/Transformer.py naming)."""
    keys = {}

    def conv(name, cout, cin, k):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        keys[f"{name}.scale"], keys[f"{name}.shift"] = (c,), (c,)

    conv("conv01_1", 64, 3, 7), norm("in01_1", 64)
    conv("conv02_1", 128, 64, 3), conv("conv02_2", 128, 128, 3), norm("in02_1", 128)
    conv("conv03_1", 256, 128, 3), conv("conv03_2", 256, 256, 3), norm("in03_1", 256)
    for i in range(4, 12):
        for j in (1, 2):
            conv(f"conv{i:02d}_{j}", 256, 256, 3), norm(f"in{i:02d}_{j}", 256)
    keys["deconv01_1.weight"], keys["deconv01_1.bias"] = (256, 128, 3, 3), (128,)  # ConvTranspose: (in, out, k, k)
    conv("deconv01_2", 128, 128, 3), norm("in12_1", 128)
    keys["deconv02_1.weight"], keys["deconv02_1.bias"] = (128, 64, 3, 3), (64,)
    conv("deconv02_2", 64, 64, 3), norm("in13_1", 64)
    conv("deconv03_1", 3, 64, 7)
    return keys


def test_generator_has_the_released_key_layout_and_loads_it():
    g = CartoonGANGenerator()
    assert {k: tuple(v.shape) for k, v in g.state_dict().items()} == released_keys()
    gen = torch.Generator().manual_seed(0)
    foreign = {k: torch.randn(s, generator=gen) * 0.02 for k, s in released_keys().items()}
    g.load_state_dict(foreign, strict=True)
    with torch.no_grad():
        y = g.eval()(torch.rand(1, 3, 64, 48) * 2 - 1)
    assert y.shape == (1, 3, 64, 48) and y.abs().max() <= 1


def test_bgr_channel_order_flips_inside_the_network():
    torch.manual_seed(0)
    rgb = CartoonGANGenerator(n_res=1).eval()
    bgr = CartoonGANGenerator(n_res=1, bgr=True).eval()
    bgr.load_state_dict(rgb.state_dict())
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(bgr(x), rgb(x.flip(1)).flip(1))
    model = build_model("cartoongan", {"channel_order": "bgr", "n_res": 1})
    assert model.translator().bgr and set(model.translator().state_dict()) == set(rgb.state_dict())


def test_scale_shift_instance_norm_matches_formula():
    norm = ScaleShiftInstanceNorm(3)
    with torch.no_grad():
        norm.scale.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.shift.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(2, 3, 5, 4)
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)  # biased variance, as the released layer
    expected = (x - mean) / torch.sqrt(var + 1e-9) * norm.scale.view(1, 3, 1, 1) + norm.shift.view(1, 3, 1, 1)
    assert torch.allclose(norm(x), expected, atol=1e-5)


def test_discriminator_paper_layout_and_shape():
    d = CartoonGANDiscriminator()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in convs] == [(32, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 1), (1, 1)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3  # after the stride-1 convs 128, 256, 256
    assert d(torch.rand(2, 3, 64, 64)).shape == (2, 1, 16, 16)


class _Const(nn.Module):
    """A discriminator that scores everything 0 (logit 0 → BCE = log 2 whatever the label)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.w.expand(x.shape[0], 1, 2, 2)


def _batch():
    return {k: torch.rand(2, 3, 16, 16) * 2 - 1 for k in ("photo", "cartoon", "smooth")}


def test_edge_promoting_loss_by_hand():
    m = build_model("cartoongan")
    m.networks["D"] = _Const()
    out = m.training_step("D", _batch())
    # log D(c) + log(1 − D(G(p))) + log(1 − D(e)) with D ≡ ½: three terms of log 2
    assert out["loss"].item() == pytest.approx(3 * math.log(2), rel=1e-6)
    plain = build_model("cartoongan", {"edge_promoting": False})
    plain.networks["D"] = _Const()
    assert plain.requires == ("photo", "cartoon")
    assert plain.training_step("D", _batch())["loss"].item() == pytest.approx(2 * math.log(2), rel=1e-6)


def test_generator_loss_weights_content_by_omega():
    m = build_model("cartoongan", {"omega": 10.0})
    m.networks["D"] = _Const()
    out = m.training_step("G", _batch())
    assert out["g_adv"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert out["loss"].item() == pytest.approx(math.log(2) + 10.0 * out["content"].item(), rel=1e-5)
    with pytest.raises(ValueError):
        m.training_step("E", _batch())
