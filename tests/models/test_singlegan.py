"""SingleGAN: the conditional-bias instance norm by hand, the authors' layer sizes, domain conditioning, the loss
composition (bit-exact resume: tests/train/test_resume.py)."""

import pytest
import torch
import torch.nn.functional as F

from toonlab import losses
from toonlab.models import build_model
from toonlab.models.singlegan import CBIN, MultiScaleD, SingleGenerator, domain_code
from toonlab.nn.blocks import count_parameters

SMALL = {"ngf": 4, "ndf": 4, "n_blocks": 1}


def test_cbin_by_hand():
    norm = CBIN(3, 2)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x, d = torch.randn(2, 3, 5, 4), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    shift = torch.tanh(d @ norm.con_bias.weight.T + norm.con_bias.bias)[:, :, None, None]
    expected = ((x - mean) / torch.sqrt(var + 1e-5) + shift) * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(norm(x, d), expected, rtol=1e-5, atol=1e-5)


def test_authors_layer_sizes():
    ngf = 64
    cbin = lambda c: 2 * c + c + 2 * c  # noqa: E731  Linear(2, C) weight + bias, then γ and β
    expected = (3 * ngf * 49 + cbin(ngf) + ngf * 2 * ngf * 16 + cbin(2 * ngf) + 2 * ngf * 4 * ngf * 16 + cbin(4 * ngf)
                + 6 * (2 * (4 * ngf) ** 2 * 9 + 2 * cbin(4 * ngf))
                + 4 * ngf * 2 * ngf * 16 + 2 * ngf * ngf * 16 + ngf * 3 * 49)  # no conv biases anywhere in G
    assert count_parameters(SingleGenerator()) == expected
    d = MultiScaleD(64)
    x = torch.rand(1, 3, 128, 128)
    assert [tuple(s.shape) for s in d(x)] == [(1, 1, 15, 15), (1, 1, 7, 7)]
    convs = [m for m in list(d.modules()) + list(SingleGenerator(4, 1).modules())
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(hasattr(m, "weight_orig") for m in convs)   # spectral norm on every conv


def test_domain_code_steers_the_translation():
    m = build_model("singlegan", SMALL).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        to_r, to_c = m.networks["G"](x, domain_code(1, 2, x)), m.networks["G"](x, domain_code(0, 2, x))
        assert not torch.allclose(to_r, to_c)
        torch.testing.assert_close(m.translator()(x), to_r)           # cartoon → photo exports G(·, d_R)
        p2c = build_model("singlegan", {**SMALL, "translate": "photo2cartoon"})
        p2c.load_state_dict(m.state_dict())
        torch.testing.assert_close(p2c.eval().translator()(x), to_c)
    assert m.direction == "cartoon2photo" and p2c.direction == "photo2cartoon"
    assert {k.split(".")[0] for k in m.translator().state_dict()} == {"G"}


def test_losses_are_the_authors():
    torch.manual_seed(0)
    m = build_model("singlegan", SMALL).train()
    x_c, x_r = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    G, D_r, D_c = m.networks["G"], m.networks["D_r"], m.networks["D_c"]
    state = {k: v.clone() for k, v in m.state_dict().items()}  # SN power iterations move u, v: replay them
    out = m.training_step("G", {"cartoon": x_c, "photo": x_r})
    m.load_state_dict(state)
    fake_r, fake_c = G(x_c, domain_code(1, 2, x_c)), G(x_r, domain_code(0, 2, x_r))
    adv = sum(F.mse_loss(s, torch.ones_like(s)) for s in D_r(fake_r)) + \
        sum(F.mse_loss(s, torch.ones_like(s)) for s in D_c(fake_c))
    cyc = torch.cat([G(fake_r, domain_code(0, 2, x_c)), G(fake_c, domain_code(1, 2, x_r))]).sub(
        torch.cat([x_c, x_r])).abs().mean()
    torch.testing.assert_close(out["g_adv"], adv)
    torch.testing.assert_close(out["cycle"], cyc)
    torch.testing.assert_close(out["loss"], adv + 10 * cyc)
    d = m.training_step("D", {"cartoon": x_c, "photo": x_r})
    assert d["loss"].item() == pytest.approx(d["d_r"].item() + d["d_c"].item())
    assert losses.d_loss_real(torch.ones(3)).item() == 0                 # real → 1 (LSGAN)
    assert [s.name for s in m.phases()[0].steps] == ["D", "G"] and m.phases()[0].steps[0].lr == 1e-4


def test_authors_xavier_init_reaches_the_spectral_norm_weights_and_biases_start_at_zero():
    """Authors' weights_init('xavier'): Xavier-normal (gain √2) into weight_orig under SN, zero biases."""
    torch.manual_seed(0)
    m = build_model("singlegan", {"ngf": 64, "ndf": 64, "n_blocks": 1})
    layers = [mod for k in ("G", "D_c", "D_r") for mod in m.networks[k].modules()
              if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    assert sum(hasattr(mod, "weight_orig") for mod in layers) >= 15
    for mod in layers:
        w = getattr(mod, "weight_orig", mod.weight)
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
        expected = 2 ** 0.5 * (2 / (fan_in + fan_out)) ** 0.5
        if w.numel() >= 4096:  # the sample std is then within ~3 % of the true one
            assert w.std().item() == pytest.approx(expected, rel=0.05), (mod, w.shape)
            assert abs(w.mean().item()) < 0.1 * expected
        if mod.bias is not None:
            assert torch.count_nonzero(mod.bias) == 0, mod
    # the residual conv 256→256 3×3: Xavier √2 gives 0.029, PyTorch's default (what the old code kept) 0.012
    res = m.networks["G"].blocks[0].c1[1]
    assert res.weight_orig.std().item() == pytest.approx(0.0295, rel=0.03)
    d_last = m.networks["D_c"].model_1[-1][1]
    assert d_last.bias is not None and torch.count_nonzero(d_last.bias) == 0
