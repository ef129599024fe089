"""CTSS: paper shapes of G / D_img / D_patch, the CTSS sampler on constructed images, the ablation options."""

from pathlib import Path

import pytest
import torch

from toonlab.config import from_dict, load_yaml, merge
from toonlab.models import build_model
from toonlab.models.ctss import (
    CTSSConfig,
    CTSSGenerator,
    CTSSUNetGenerator,
    ctss_patch_scores,
    ctss_sample,
    image_discriminator,
    patch_discriminator,
    patches_to_gray,
)
from toonlab.nn.blocks import count_parameters

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_paper_shapes_and_size():
    g = CTSSGenerator().eval()
    with torch.no_grad():
        assert g(torch.rand(1, 3, 256, 256) * 2 - 1).shape == (1, 3, 256, 256)  # Fig. 10: 256²×3 → 256²×3
        assert image_discriminator()(torch.rand(1, 3, 256, 256)).shape == (1, 1, 32, 32)
        assert patch_discriminator()(torch.rand(2, 1, 96, 96)).shape == (2, 1, 12, 12)
        assert CTSSUNetGenerator().eval()(torch.rand(1, 3, 64, 48)).shape == (1, 3, 64, 48)
    assert 1.45e6 < count_parameters(g) < 1.6e6  # PAPERS: ~1.5 M parameters


def test_discriminators_are_spectrally_normalised_on_request():
    sn = [n for n, _ in image_discriminator(True).named_parameters() if "parametrizations" in n]
    assert len(sn) == 5  # every conv
    assert not any("parametrizations" in n for n, _ in patch_discriminator(False).named_parameters())


def _edge_batch():
    """Two 64² images: image 0 flat; image 1 flat with a checkerboard inside rows 32:64, cols 0:32."""
    x = torch.zeros(2, 3, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    x[1, :, 32:, :32] = (((yy // 4 + xx // 4) % 2) * 1.6 - 0.8).float()
    return x


def test_sampler_selects_the_patch_with_the_strongest_edges():
    x = _edge_batch()
    scores = ctss_patch_scores(x, 32, 32)  # windows ordered image, row, column: the textured one is #6
    assert scores.shape == (8,) and scores.argmax().item() == 6
    top = ctss_sample(x, k=1, size=32, stride=32)
    assert torch.equal(top, patches_to_gray(x[1:2, :, 32:, :32]))


def test_flat_images_give_no_preference():
    flat = torch.full((2, 3, 64, 64), 0.3)
    flat[1] = -0.5  # two different flat colours
    scores = ctss_patch_scores(flat, 32, 16)
    # without the min-range floor the guided filter's round-off would be stretched into "edges"
    assert scores.max() < 1e-3 * 32 * 32 and torch.allclose(scores, scores[0], atol=1e-3 * 32 * 32)


def test_number_of_patches_matches_formula():
    n, h, w, l, s = 2, 80, 112, 32, 24
    expected = n * ((h - l) // s + 1) * ((w - l) // s + 1)  # M = N(⌊(H−l)/s⌋+1)(⌊(W−l)/s⌋+1) = 24
    x = torch.rand(n, 3, h, w) * 2 - 1
    assert ctss_patch_scores(x, l, s).numel() == expected
    assert ctss_sample(x, k=5, size=l, stride=s, select="all").shape == (expected, 1, l, l)
    assert ctss_sample(x, k=100, size=l, stride=s).shape[0] == expected  # K clamps to M


def test_patches_are_gray_in_range_and_carry_gradients():
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    p = ctss_sample(x, k=5, size=32, stride=16)
    assert p.shape == (5, 1, 32, 32)
    mm = ctss_sample(x, k=5, size=32, stride=16, gray="sum_minmax")  # authors' code: per-patch min-max
    assert torch.allclose(mm.amin(dim=(1, 2, 3)), -torch.ones(5)) and torch.allclose(mm.amax(dim=(1, 2, 3)), torch.ones(5))
    p.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # top-K comes out sorted by score
    scores = ctss_patch_scores(x, 32, 16)
    order = scores.argsort(descending=True)[:5]
    from toonlab.ops import sliding_patches
    assert torch.equal(p.detach(), patches_to_gray(sliding_patches(x.detach(), 32, 16)[order]))


def test_patch_size_clamps_to_small_images():
    assert ctss_sample(torch.rand(2, 3, 40, 48) * 2 - 1, k=32, size=96, stride=48).shape == (2, 1, 40, 40)


def test_patches_gray_by_standard_luma_by_default():
    p = torch.rand(3, 3, 8, 8) * 2 - 1
    by_hand = 0.299 * p[:, 0:1] + 0.587 * p[:, 1:2] + 0.114 * p[:, 2:3]  # no min-max: colours keep their levels
    assert torch.allclose(patches_to_gray(p), by_hand, atol=1e-6)
    assert build_model("ctss").cfg.patch_gray == "luma"
    with pytest.raises(ValueError):
        patches_to_gray(p, "average")


def test_edge_normalisation_is_per_image_by_default():
    """Eq 2 per image: scoring a batch == scoring each image alone; the authors' whole-batch min-max is not."""
    x = _edge_batch()
    x[0, :, :16, :16] = 0.05  # a faint edge in image 0, dwarfed by image 1's checkerboard
    alone = torch.cat([ctss_patch_scores(x[i:i + 1], 32, 16) for i in range(2)])
    assert torch.allclose(ctss_patch_scores(x, 32, 16), alone, atol=1e-4)
    assert not torch.allclose(ctss_patch_scores(x, 32, 16, normalize="batch"), alone, atol=1e-2)
    assert build_model("ctss").cfg.edge_normalize == "image"


def test_stride_policies():
    random_model = build_model("ctss")
    draws = {random_model._strides("D") for _ in range(40)}
    assert all(a == b and 48 <= a <= 72 for a, b in draws) and len(draws) > 1  # s ~ U(48, 72), shared by C and S
    assert build_model("ctss", {"stride_policy": "fixed"})._strides("D") == (48, 72)  # authors: cartoons 48, fakes 72


def test_stride_drawn_once_per_iteration_and_shared_by_d_and_g(monkeypatch):
    m = build_model("ctss", {"patch_size": 16, "stride_range": [4, 12], "perceptual": "random"})
    seen: list[tuple[str, int]] = []
    real = m.sample_patches

    def spy(images, stride):
        seen.append(("G" if images.requires_grad else "D", stride))
        return real(images, stride)

    monkeypatch.setattr(m, "sample_patches", spy)
    torch.manual_seed(0)
    for _ in range(6):  # the trainer's adversarial iteration: D step, then G step, on the same batch
        b = _batch()
        m.training_step("D", b)
        m.training_step("G", b)
    d_strides = [s for who, s in seen if who == "D"]
    assert len(d_strides) == 12  # D: real and fake patches, same s
    assert d_strides[0::2] == d_strides[1::2]
    assert [s for who, s in seen if who == "G"] == d_strides[0::2]  # G reuses its iteration's draw
    assert len(set(d_strides)) > 1  # and iterations draw anew


def test_branch_options_change_networks_and_steps():
    m = build_model("ctss", {"patch_branch": False})
    assert set(m.networks) == {"G", "D_img"} and m.phases()[1].steps[0].networks == ("D_img",)
    m = build_model("ctss", {"image_branch": False})
    assert set(m.networks) == {"G", "D_patch"}
    with pytest.raises(ValueError):
        build_model("ctss", {"image_branch": False, "patch_branch": False})
    assert build_model("ctss", {"edge_promoting": True}).requires == ("photo", "cartoon", "smooth")


def _batch(size=32):
    return {k: torch.rand(2, 3, size, size) * 2 - 1 for k in ("photo", "cartoon", "smooth")}


def test_local_adversarial_loss_alone_reaches_the_generator():
    m = build_model("ctss", {"image_branch": False, "lambda_con": 0.0, "lambda_col": 0.0, "lambda_tv": 0.0})
    m.networks["D_patch"].requires_grad_(False)
    out = m.training_step("G", _batch())
    out["loss"].backward()
    assert set(out) == {"loss", "content", "color", "tv", "g_local"}
    assert all(p.grad is not None for p in m.networks["G"].parameters())
    assert sum(p.grad.abs().sum() for p in m.networks["G"].parameters()) > 0


def test_generator_loss_is_the_weighted_sum_of_eq_16():
    m = build_model("ctss", {"extra_losses": ["gram", "mean_std"]})
    torch.manual_seed(0)
    out = m.training_step("G", _batch())
    c = m.cfg
    expected = (c.lambda_global * out["g_global"] + c.lambda_local * out["g_local"] + c.lambda_con * out["content"]
                + c.lambda_col * out["color"] + c.lambda_tv * out["tv"] + c.lambda_gram * out["gram"]
                + c.lambda_mean_std * out["mean_std"])
    assert torch.allclose(out["loss"], expected)


def test_every_ablation_yaml_builds_a_model():
    files = sorted((CONFIGS / "ablations").glob("ctss-*.yaml"))
    assert len(files) == 12  # Table II (4) + Table III (3) + Table IV (5 distinct rows beyond the full model)
    default = CTSSConfig()
    for f in files:
        data = load_yaml(f)
        base = load_yaml(f.parent / data.pop("base"))
        section = merge(base, data)["model"]
        assert section.pop("name") == "ctss"
        cfg = from_dict(CTSSConfig, section)  # strict: a typo in a key fails here
        assert cfg != default or "k32" in f.name
    build_model("ctss", {"sampler": "all", "edge_promoting": True, "extra_losses": ["gram", "mean_std"]})


@pytest.mark.parametrize("n,h,w,l,s,k", [(2, 64, 48, 16, 8, 5), (3, 40, 40, 16, 12, 7), (2, 32, 32, 16, 8, 40)])
def test_sampler_cuts_only_the_chosen_windows_exactly(n, h, w, l, s, k):
    """The K windows cut straight from the images equal top-K of all M windows, values and gradients bit for bit
    (the sampler no longer materialises the M − K windows it throws away)."""
    from toonlab import ops

    x = (torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(s)) * 2 - 1).requires_grad_()
    new = ctss_sample(x, k, l, s)
    scores = ctss_patch_scores(x, l, s)
    old = patches_to_gray(ops.topk_patches(ops.sliding_patches(x, l, s), scores, min(k, scores.shape[0])))
    assert torch.equal(new, old)
    g = torch.randn_like(new)
    assert torch.equal(torch.autograd.grad(new, x, g)[0], torch.autograd.grad(old, x, g)[0])


def test_patch_batch_is_fixed_size_over_the_paper_stride_range():
    """Paper setting (256², batch 8, l = 96, s ~ U(48, 72)): M goes from 72 to 128 with the stride, D_patch's
    batch stays K = 32 — static shapes for cudnn.benchmark and torch.compile."""
    m = build_model("ctss", {"perceptual": "random"})
    x = torch.rand(8, 3, 256, 256) * 2 - 1
    counts = {s: m.sample_patches(x, s).shape for s in (48, 55, 64, 72)}
    assert set(counts.values()) == {(32, 1, 96, 96)}
