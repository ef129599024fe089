import pytest
import torch
import torch.nn.functional as F

from toonlab.errors import UsageError
from toonlab.models import build_model
from toonlab.nn.adalin import AdaLIN


def _batch(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = lambda: torch.rand(n, 3, size, size, generator=g) * 2 - 1  # noqa: E731
    return {"photo": img(), "cartoon": img(), "guided": img(), "style": torch.tensor([0, 1] * (n // 2))}


def test_styles_change_the_output_and_mixed_batches_match_single_styles():
    m = build_model("multistyle", {"ch": 8})
    assert m.styles == ("hayao", "shinkai") and m.edge_class == 2
    G = m.translator().eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        y0, y1 = G(x, 0), G(x, 1)
        mixed = G(x, torch.tensor([0, 1]))
    assert y0.shape == x.shape and y0.abs().max() <= 1
    assert (y0 - y1).abs().max() > 1e-3
    assert torch.allclose(mixed[0], y0[0], atol=1e-6) and torch.allclose(mixed[1], y1[1], atol=1e-6)
    with pytest.raises(UsageError, match="out of range"):
        G(x, 2)
    with pytest.raises(UsageError, match="integer id"):
        G(x, "hayao")
    with pytest.raises(UsageError, match="style ids"):
        G(x, torch.tensor([0, 5]))


def test_generator_layout_norms_and_rho_clipping():
    m = build_model("multistyle", {"ch": 8, "ra_blocks": 3})
    G = m.networks["G"]
    ada = [mod for mod in G.modules() if isinstance(mod, AdaLIN)]
    assert len(ada) == 6  # two per R-A block
    convs = [mod for mod in G.decoder.modules() if isinstance(mod, torch.nn.Conv2d)]
    # DE ends with the 32- and 16-channel flat convs and a 7×7 conv to RGB
    assert [(c.out_channels, c.kernel_size[0]) for c in convs[-3:]] == [(32, 3), (16, 3), (3, 7)]
    with torch.no_grad():
        ada[0].rho.fill_(1.5)
        ada[1].rho.fill_(-0.2)
    m.after_optimizer_step("G")
    assert float(ada[0].rho.detach().max()) == 1.0 and float(ada[1].rho.detach().min()) == 0.0
    plain = build_model("multistyle", {"ch": 8, "norm": "in"})
    assert not any(isinstance(mod, AdaLIN) for mod in plain.modules())
    with torch.no_grad():  # the style still reaches G through γ, β
        x = torch.rand(1, 3, 16, 16)
        assert (plain.translator()(x, 0) - plain.translator()(x, 1)).abs().max() > 1e-4


def test_no_instance_norm_variant_keeps_feature_statistics():
    """Fig. 4 (a): R-A blocks without normalisation apply h·γ + β to the raw features (AdaIN would whiten them)."""
    from toonlab.models.multistyle import RABlock

    torch.manual_seed(0)
    block = RABlock(4, "none")
    assert not any(isinstance(mod, (AdaLIN, torch.nn.InstanceNorm2d)) for mod in block.modules())
    x = torch.randn(2, 4, 6, 6)
    gamma, beta = torch.rand(2, 4) + 0.5, torch.randn(2, 4)
    with torch.no_grad():
        h = torch.relu(block.conv1(x) * gamma[:, :, None, None] + beta[:, :, None, None])
        expected = x + block.conv2(h) * gamma[:, :, None, None] + beta[:, :, None, None]
        assert torch.allclose(block(x, gamma, beta), expected, atol=1e-6)
    m = build_model("multistyle", {"ch": 8, "norm": "none"})
    with torch.no_grad():
        x = torch.rand(1, 3, 16, 16)
        assert (m.translator()(x, 0) - m.translator()(x, 1)).abs().max() > 1e-4


def test_discriminator_step_matches_eqs_2_and_3():
    m = build_model("multistyle", {"ch": 8, "d_norm": "in"})
    b = _batch(size=32)  # D_aux halves 4 times: keep ≥ 2×2 for its instance norms
    out = m.training_step("D", b)
    D, A = m.networks["D"], m.networks["D_aux"]
    with torch.no_grad():
        fake = m.networks["G"](b["photo"], b["style"])
        bce = F.binary_cross_entropy_with_logits
        real = bce(D(b["cartoon"]), torch.ones_like(D(b["cartoon"])))
        gen = bce(D(fake), torch.zeros_like(D(fake)))
        edge = bce(D(b["guided"]), torch.zeros_like(D(b["guided"])))
        logits_c, logits_e = A(b["cartoon"]), A(b["guided"])
        # −log softmax, written out: CE with the cartoons' styles, and with the extra class 2 for e
        cls = (-(logits_c.log_softmax(1)[torch.arange(2), b["style"]]).mean()
               - logits_e.log_softmax(1)[:, 2].mean())
    assert logits_c.shape == (2, 3)
    for key, want in {"d_real": real, "d_fake": gen, "d_edge": edge, "aux_cls": cls}.items():
        assert torch.allclose(out[key], want, atol=1e-6), key
    assert torch.allclose(out["loss"], real + gen + edge + 0.5 * cls, atol=1e-6)


def test_no_aux_ablation_drops_d_aux_and_style_loss():
    m = build_model("multistyle", {"ch": 8, "aux_classifier": False})
    assert "D_aux" not in m.networks
    assert m.phases()[1].steps[0].networks == ("D",)
    out = m.training_step("G", _batch(n=2, size=16))
    assert set(out) == {"loss", "g_adv", "content"}
    assert torch.allclose(out["loss"], out["g_adv"] + 0.2 * out["content"])


def test_recipe_defaults():
    c = build_model("multistyle").cfg
    assert (c.w_content, c.w_style, c.lr_g, c.lr_init, c.init_epochs) == (0.2, 0.5, 1e-5, 2e-4, 20)
    with pytest.raises(UsageError, match="distinct"):
        build_model("multistyle", {"styles": ["a", "a"]})
