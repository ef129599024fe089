"""UNIT: the KL term, the shared layers, the loss weights, weight decay as Adam's, direction (bit-exact resume:
tests/train/test_resume.py)."""

import pytest
import torch

from toonlab import losses
from toonlab.errors import ConfigError
from toonlab.models import build_model
from toonlab.models.unit import UNITEncoder, kl_unit_variance

SMALL = {"ch": 4, "n_res": 1, "d_ch": 4, "d_layers": 3}


def test_kl_term_by_hand():
    mu = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]]])
    assert kl_unit_variance(mu).item() == pytest.approx((1 + 4 + 9 + 1) / 4)
    # it is KL(N(μ, I) ‖ N(0, I)) = ½‖μ‖² per sample, up to the authors' 2/numel normalisation
    q, p = torch.distributions.Normal(mu, 1.0), torch.distributions.Normal(torch.zeros_like(mu), 1.0)
    kl = torch.distributions.kl_divergence(q, p).sum()
    assert kl_unit_variance(mu).item() == pytest.approx(kl.item() * 2 / mu.numel())


def test_shared_layers_are_one_set_of_weights_for_both_domains():
    m = build_model("unit", SMALL)
    c2r, r2c = m.translator(), build_model("unit", {**SMALL, "translate": "photo2cartoon"}).translator()
    assert c2r.shared is m.networks["S"] and c2r.encoder is m.networks["E_c"] and c2r.decoder is m.networks["G_r"]
    assert m.networks["E_c"] is not m.networks["E_r"]
    assert {k.split(".")[0] for k in r2c.state_dict()} == {"encoder", "shared", "decoder"}
    # both domains' μ pass through S.enc, both domains' images come out of S.dec: one gradient from each
    x_c, x_r = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    w = m.networks["S"].enc[0].body[0].weight
    (g_c,) = torch.autograd.grad(m.encode(x_c, "c").sum(), w)
    (g_r,) = torch.autograd.grad(m.encode(x_r, "r").sum(), w)
    assert g_c.abs().sum() > 0 and g_r.abs().sum() > 0
    # changing the shared weights changes both directions
    m.eval()
    with torch.no_grad():
        before = (m.decode(m.encode(x_c, "c"), "r"), m.decode(m.encode(x_r, "r"), "c"))
        w.add_(0.1)
        after = (m.decode(m.encode(x_c, "c"), "r"), m.decode(m.encode(x_r, "r"), "c"))
    assert not torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])


def test_architecture_shapes_at_128():
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    m = build_model("unit")
    assert m.default_size == 128 and m.direction == "cartoon2photo"
    with torch.no_grad():
        assert m.encode(x, "c").shape == (1, 256, 32, 32)
        y = m.translator().eval()(x)
        assert y.shape == x.shape and y.abs().max() <= 1
        assert m.networks["D_r"](x).shape == (1, 1, 2, 2)     # six c3s2 convs: 128 → 2
    assert [c.out_channels for c in m.networks["D_c"].modules() if isinstance(c, torch.nn.Conv2d)] == \
        [64, 128, 256, 512, 1024, 2048, 1]
    assert sum(isinstance(x_, torch.nn.InstanceNorm2d) for x_ in UNITEncoder().modules()) == 2 + 2 * 3
    p = build_model("unit", {**SMALL, "translate": "photo2cartoon"})
    assert p.direction == "photo2cartoon" and p.translator().encoder is p.networks["E_r"]


def test_generator_loss_is_the_published_weighted_sum():
    torch.manual_seed(0)
    m = build_model("unit", SMALL).train()
    batch = {"cartoon": torch.rand(2, 3, 16, 16) * 2 - 1, "photo": torch.rand(2, 3, 16, 16) * 2 - 1}
    out = m.training_step("G", batch)
    expected = (10 * out["g_adv"] + 0.1 * out["kl"] + 100 * out["recon"] + 0.1 * out["kl_cycle"]
                + 100 * out["cycle"] + out["weight_decay"])
    torch.testing.assert_close(out["loss"], expected)
    params = [p for k in ("E_c", "E_r", "S", "G_c", "G_r") for p in m.networks[k].parameters()]
    assert out["weight_decay"].item() == pytest.approx(0.5 * 1e-4 * sum(p.pow(2).sum().item() for p in params), rel=1e-5)
    # D: cross-entropy on real (→ 1) and translated (→ 0) images of its domain, λ0-weighted
    torch.manual_seed(1)
    d = m.training_step("D", batch)
    torch.manual_seed(1)
    with torch.no_grad():
        fake_r = m.decode(m.encode(batch["cartoon"], "c") + torch.randn(2, 16, 4, 4), "r")
        ref = (losses.d_loss_real(m.networks["D_r"](batch["photo"]), "bce")
               + losses.d_loss_fake(m.networks["D_r"](fake_r), "bce"))
    torch.testing.assert_close(d["d_r"], ref)
    assert [s.name for s in m.phases()[0].steps] == ["D", "G"]


def test_weight_decay_term_is_adams_weight_decay():
    """One Adam step on loss + ½·wd·‖θ‖² equals one step of Adam(weight_decay=wd) on the loss alone."""
    torch.manual_seed(0)
    a, b = build_model("unit", SMALL), build_model("unit", SMALL)
    b.load_state_dict(a.state_dict())
    batch = {"cartoon": torch.rand(1, 3, 16, 16) * 2 - 1, "photo": torch.rand(1, 3, 16, 16) * 2 - 1}
    nets = ("D_c", "D_r")
    opt_a = torch.optim.Adam([p for k in nets for p in a.networks[k].parameters()], 1e-4, (0.5, 0.999))
    opt_b = torch.optim.Adam([p for k in nets for p in b.networks[k].parameters()], 1e-4, (0.5, 0.999),
                             weight_decay=1e-4)
    for model, opt, with_wd in ((a, opt_a, True), (b, opt_b, False)):
        torch.manual_seed(3)
        out = model.training_step("D", batch)
        (out["loss"] if with_wd else out["loss"] - out["weight_decay"]).backward()
        opt.step()
    for k in nets:
        for pa, pb in zip(a.networks[k].parameters(), b.networks[k].parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-8)


def test_kl_on_the_noisy_code_is_the_authors_option():
    """``kl_on: z`` (authors' cocogan_trainer: _compute_kl(shared), shared = μ + ε) vs the paper's KL on μ."""
    torch.manual_seed(0)
    batch = {"cartoon": torch.rand(2, 3, 16, 16) * 2 - 1, "photo": torch.rand(2, 3, 16, 16) * 2 - 1}
    on_mu = build_model("unit", SMALL).train()
    on_z = build_model("unit", {**SMALL, "kl_on": "z"}).train()
    on_z.load_state_dict(on_mu.state_dict())
    with torch.no_grad():
        mu_c, mu_r = on_mu.encode(batch["cartoon"], "c"), on_mu.encode(batch["photo"], "r")
        torch.manual_seed(5)
        eps_c, eps_r = torch.randn_like(mu_c), torch.randn_like(mu_r)  # the first two draws of the G step
        torch.manual_seed(5)
        got_z = on_z.training_step("G", batch)
        torch.manual_seed(5)
        got_mu = on_mu.training_step("G", batch)
    torch.testing.assert_close(got_mu["kl"], (mu_c ** 2).mean() + (mu_r ** 2).mean())
    torch.testing.assert_close(got_z["kl"], ((mu_c + eps_c) ** 2).mean() + ((mu_r + eps_r) ** 2).mean())
    torch.testing.assert_close(got_z["recon"], got_mu["recon"])        # only the KL's argument differs
    assert got_z["kl_cycle"].item() > got_mu["kl_cycle"].item() + 1.0   # E[mean z²] = mean μ² + 1 per term
    # by hand: μ = (1, 2), ε = (0.5, −1) → z = (1.5, 1), mean z² = 1.625 (vs mean μ² = 2.5)
    mu, eps = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    assert kl_unit_variance(mu + eps).item() == pytest.approx(1.625)
    assert kl_unit_variance(mu).item() == pytest.approx(2.5)
    with pytest.raises(ConfigError):
        build_model("unit", {**SMALL, "kl_on": "sigma"})
