"""AnimeGANv2: animegan2-pytorch key layout of G, D shapes and spectral norm, the D loss by hand."""

import pytest
import torch
from torch import nn

from toonlab.models import build_model
from toonlab.models.animegan import AnimeGANv2Discriminator, AnimeGANv2Generator
from toonlab.nn.blocks import count_parameters


def test_generator_key_layout_of_animegan2_pytorch():
    state = AnimeGANv2Generator().state_dict()
    # facts of bryandlee/animegan2-pytorch model.py: ConvNormLReLU = (pad, conv, GroupNorm, lReLU); the depthwise
    # conv of an inverted-residual block has a bias; the 1×1 output conv sits in out_layer.0 without bias
    expected_shapes = {
        "block_a.0.1.weight": (32, 3, 7, 7),
        "block_a.0.2.weight": (32,),
        "block_a.1.1.weight": (64, 32, 3, 3),
        "block_b.0.1.weight": (128, 64, 3, 3),
        "block_c.1.layers.0.1.weight": (256, 128, 1, 1),
        "block_c.1.layers.1.1.weight": (256, 1, 3, 3),
        "block_c.1.layers.1.1.bias": (256,),
        "block_c.1.layers.2.weight": (256, 256, 1, 1),
        "block_c.1.layers.3.weight": (256,),
        "block_c.4.layers.2.weight": (256, 512, 1, 1),
        "block_c.5.1.weight": (128, 256, 3, 3),
        "block_d.1.1.weight": (128, 128, 3, 3),
        "block_e.2.1.weight": (32, 64, 7, 7),
        "out_layer.0.weight": (3, 32, 1, 1),
    }
    for k, shape in expected_shapes.items():
        assert tuple(state[k].shape) == shape, k
    assert "out_layer.0.bias" not in state and "block_a.0.1.bias" not in state
    # 12 ConvNormLReLU × 3 tensors + 4 inverted-residual blocks × (3 + 4 + 1 + 2) + the output conv
    assert len(state) == 12 * 3 + 4 * 10 + 1


def test_generator_shapes_odd_sizes_and_parameter_count():
    g = AnimeGANv2Generator().eval()
    with torch.no_grad():
        assert g(torch.rand(1, 3, 36, 52) * 2 - 1).shape == (1, 3, 36, 52)
    assert count_parameters(g) == 2_143_552  # ≈ 8.6 MB of fp32, the size of the released .pt files


def test_discriminator_layout_spectral_norm_and_shape():
    d = AnimeGANv2Discriminator()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in convs] == [(32, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 1), (1, 1)]
    assert all(c.bias is None and hasattr(c, "parametrizations") for c in convs)
    assert d(torch.rand(2, 3, 64, 64)).shape == (2, 1, 16, 16)
    assert not any(hasattr(c, "parametrizations") for c in AnimeGANv2Discriminator(spectral=False).modules())


class _Zero(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.w.expand(x.shape[0], 1, 2, 2)


def test_losses_by_hand_with_a_zero_discriminator():
    m = build_model("animegan")
    m.networks["D"] = _Zero()
    batch = {k: torch.rand(2, 3, 16, 16) * 2 - 1 for k in m.requires}
    out = m.training_step("D", batch)
    # LSGAN with D ≡ 0: real term (0−1)² = 1, the three fake terms 0 → 300 · 1.2 · 1
    assert out["loss"].item() == pytest.approx(360.0)
    g = m.training_step("G", batch)
    c = m.cfg
    expected = (300 * 1.0 + c.lambda_con * g["content"] + c.lambda_sty * g["style"] + c.lambda_col * g["color"]
                + c.lambda_tv * g["tv"])
    assert g["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
