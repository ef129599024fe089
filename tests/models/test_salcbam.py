import math

import torch

from toonlab.models import build_model
from toonlab.models.cartoongan import CartoonGANGenerator
from toonlab.models.salcbam import PlainBlock, SaliencyNet
from toonlab.nn.blocks import ResBlock, count_parameters
from toonlab.nn.cbam import CBAM


def _batch(n=1, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = lambda: torch.rand(n, 3, size, size, generator=g) * 2 - 1  # noqa: E731
    return {"photo": img(), "cartoon": img(), "smooth": img(), "saliency": torch.rand(n, 1, size, size, generator=g)}


def test_saliency_map_shape_and_range():
    m = build_model("salcbam")
    assert m.requires == ("photo", "cartoon", "smooth", "saliency")
    G = m.translator().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        y, sal = G.forward_with_saliency(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert sal.shape == (2, 1, 32, 32) and sal.min() > 0 and sal.max() < 1
    assert sum(isinstance(mod, CBAM) for mod in G.modules()) == 8  # one per CartoonGAN residual block


def test_plain_and_residual_saliency_differ_only_by_skips():
    plain, res = SaliencyNet(residual=False, blocks=2, ch=8), SaliencyNet(residual=True, blocks=2, ch=8)
    assert count_parameters(plain) == count_parameters(res)
    res.load_state_dict(plain.state_dict())  # same keys
    blk_p, blk_r = plain.body[3], res.body[3]
    assert isinstance(blk_p, PlainBlock) and type(blk_r) is ResBlock
    h = torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        assert torch.allclose(blk_r(h), h + blk_p(h), atol=1e-6)


def test_without_saliency_and_cbam_it_is_cartoongan_generator():
    m = build_model("salcbam", {"saliency": "none", "cbam": False, "ch": 16})
    assert m.requires == ("photo", "cartoon", "smooth")
    ref = CartoonGANGenerator(ch=16)
    ref.load_state_dict(m.networks["G"].state_dict())  # strict: same layers, same keys
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(m.networks["G"].eval()(x), ref.eval()(x), atol=1e-6)


def test_generator_loss_with_decayed_saliency_weight():
    m = build_model("salcbam", {"ch": 16})  # VGG: conftest's offline vgg19 file
    assert m.saliency_weight == 1.0
    m.set_epoch(5)
    assert math.isclose(m.saliency_weight, 0.96 ** 5)
    b = _batch()
    out = m.training_step("G", b)
    with torch.no_grad():
        _, sal = m.networks["G"].forward_with_saliency(b["photo"])
    assert torch.allclose(out["saliency"], (sal - b["saliency"]).abs().mean(), atol=1e-6)  # eq 10
    assert torch.allclose(out["loss"], out["g_adv"] + 0.25 * out["content"] + 0.96 ** 5 * out["saliency"])
    init = m.training_step("init", b)
    assert "g_adv" not in init and torch.allclose(init["loss"], 0.25 * init["content"] + 0.96 ** 5 * init["saliency"])


def test_saliency_decay_start_option():
    """ω_s stays 1 until epoch e₀, then decays: e₀ = init_epochs starts the decay with the adversarial phase."""
    m = build_model("salcbam", {"ch": 8, "saliency_decay_start": 10})
    for epoch, weight in ((0, 1.0), (10, 1.0), (13, 0.96 ** 3)):
        m.set_epoch(epoch)
        assert math.isclose(m.saliency_weight, weight)
