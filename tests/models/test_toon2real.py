import pytest
import torch

from toonlab import losses
from toonlab.models import build_model
from toonlab.models.toon2real import JohnsonGenerator, PatchDiscriminator
from toonlab.nn.blocks import count_parameters


def _spectral_convs(net) -> tuple[int, int]:
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with_sn = [m for m in convs if torch.nn.utils.parametrize.is_parametrized(m, "weight")]
    return len(convs), len(with_sn)


def test_paper_shapes_at_128():
    m = build_model("toon2real")
    assert m.default_size == 128 and m.direction == "cartoon2photo" and m.translator() is m.networks["G_r"]
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        y = m.networks["G_c"].eval()(x)
        assert y.shape == (1, 3, 128, 128) and y.abs().max() <= 1
        assert m.networks["D_r"](x).shape == (1, 1, 7, 7)        # Table 2: four c4s2 convs, then c4s1 → 7²
        assert PatchDiscriminator(64, "patchgan70")(x).shape == (1, 1, 14, 14)  # CycleGAN's 70×70 layout
    assert _spectral_convs(m.networks["D_r"]) == (5, 5) and _spectral_convs(m.networks["D_c"]) == (5, 5)
    assert _spectral_convs(m.networks["G_r"])[1] == 0


def test_cyclegan_is_toon2real_without_sn_and_with_nine_blocks():
    t2r, cg = build_model("toon2real"), build_model("cyclegan")
    assert (cg.cfg.n_blocks, cg.cfg.spectral_norm, cg.cfg.d_layout, cg.default_size) == (9, False, "patchgan70", 256)
    assert _spectral_convs(cg.networks["D_r"]) == (5, 0)
    # three more ResBlock(256): each two 3×3 convs 256→256 without bias + two affine INs (256 γ, 256 β)
    per_block = 2 * (256 * 256 * 9) + 2 * (2 * 256)
    assert count_parameters(cg.networks["G_r"]) - count_parameters(t2r.networks["G_r"]) == 3 * per_block
    # the D layouts differ only in one stride, so they have the same parameters
    assert count_parameters(cg.networks["D_r"]) == count_parameters(PatchDiscriminator(64, "table2"))
    assert [s.name for p in cg.phases() for s in p.steps] == ["G", "D"]


def test_translator_direction_follows_config():
    """toon2real exports G_r (cartoon → photo); the CycleGAN baseline row of photo → cartoon tables exports G_c."""
    t2r, cg = build_model("toon2real"), build_model("cyclegan")
    assert (t2r.direction, cg.direction) == ("cartoon2photo", "photo2cartoon")
    assert cg.translator() is cg.networks["G_c"] and t2r.translator() is t2r.networks["G_r"]
    back = build_model("cyclegan", {"translate": "cartoon2photo"})
    assert back.direction == "cartoon2photo" and back.translator() is back.networks["G_r"]
    fwd = _tiny(translate="photo2cartoon")
    assert fwd.direction == "photo2cartoon" and fwd.translator() is fwd.networks["G_c"]


def test_cyclegan_export_translates_photos_with_g_c(tmp_path):
    from toonlab.checkpoint import save_export
    from toonlab.infer.translator import Translator

    m = build_model("cyclegan", {"ngf": 4, "ndf": 4, "n_blocks": 1})
    save_export(m, tmp_path / "cg.safetensors")
    t = Translator.load(tmp_path / "cg.safetensors", device="cpu")
    assert t.direction == "photo2cartoon"
    x = torch.rand(1, 3, 32, 32)  # not below the translator's minimum side (smaller inputs are padded up)
    with torch.no_grad():
        ref = (m.networks["G_c"].eval()(x * 2 - 1) + 1) / 2
        assert (ref - (m.networks["G_r"].eval()(x * 2 - 1) + 1) / 2).abs().max() > 1e-2  # the check can tell
    assert torch.allclose(t.translate_tensor(x), ref.clamp(0, 1), atol=1e-5)  # no post-processing for CycleGAN


def _tiny(**over):
    cfg = {"ngf": 4, "ndf": 4, "n_blocks": 1, **over}
    return build_model("toon2real", cfg)


def _batch(seed=0, n=2, size=32):
    g = torch.Generator().manual_seed(seed)
    return {"photo": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            "cartoon": torch.rand(n, 3, size, size, generator=g) * 2 - 1}


def test_generator_losses_match_eqs_1_to_3():
    m = _tiny().eval()  # eval: spectral norm's power iteration is frozen, so recomputing D gives the same value
    b = _batch()
    out = m.training_step("G", b)
    n, c, r = m.networks, b["cartoon"], b["photo"]
    with torch.no_grad():
        fake_r, fake_c = n["G_r"](c), n["G_c"](r)
        cyc_f = (n["G_c"](fake_r) - c).abs().mean()
        cyc_b = (n["G_r"](fake_c) - r).abs().mean()
        adv_r = ((n["D_r"](fake_r) - 1) ** 2).mean()
        adv_c = ((n["D_c"](fake_c) - 1) ** 2).mean()
    assert torch.allclose(out["cycle_forward"], cyc_f) and torch.allclose(out["cycle_backward"], cyc_b)
    assert torch.allclose(out["adv_r"], adv_r) and torch.allclose(out["adv_c"], adv_c)
    assert torch.allclose(out["loss"], adv_r + adv_c + 10.0 * (cyc_f + cyc_b))
    assert "identity" not in out


def test_identity_option_and_discriminator_step_with_pool():
    m = _tiny(lambda_identity=0.5, pool_size=3).eval()
    b = _batch(n=2)
    out = m.training_step("G", b)
    n, c, r = m.networks, b["cartoon"], b["photo"]
    with torch.no_grad():
        idt = losses.l1(n["G_r"](r), r) + losses.l1(n["G_c"](c), c)
    assert torch.allclose(out["identity"], idt)
    d = m.training_step("D", b)  # uses the fakes of the G step above: pool is empty, so they pass through
    with torch.no_grad():
        d_r = 0.5 * (((n["D_r"](r) - 1) ** 2).mean() + (n["D_r"](n["G_r"](c)) ** 2).mean())
    assert torch.allclose(d["d_r"], d_r, atol=1e-6)
    assert len(m.pool_r) == 2 and len(m.pool_c) == 2
    m.training_step("D", _batch(seed=1, n=2))  # D step without a G step first: fakes made on the spot
    assert len(m.pool_r) == 3  # capped at pool_size
    resumed = _tiny(pool_size=3)
    resumed.load_extra_training_state(m.extra_training_state())  # exact resume keeps the history buffers
    assert all(torch.equal(a, b) for a, b in zip(resumed.pool_c.images, m.pool_c.images)) and len(resumed.pool_c) == 3


def test_bad_step_name_raises():
    with pytest.raises(ValueError, match="unknown step"):
        _tiny().training_step("init", _batch())


def test_johnson_generator_layout():
    g = JohnsonGenerator(64, 6)
    convs = [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    # c7-64, c3s2-128, c3s2-256, 6×2 residual convs, two fractionally strided 128/64, c7-3
    assert [(m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs] == (
        [(64, 7, 1), (128, 3, 2), (256, 3, 2)] + [(256, 3, 1)] * 12 + [(128, 3, 2), (64, 3, 2), (3, 7, 1)])
    assert [type(m).__name__ for m in convs][-3:-1] == ["ConvTranspose2d", "ConvTranspose2d"]
