"""The classic (learning-free) cartoonizer: size/range/alpha kept, flat regions, dark lines at strong edges,
mean luminance kept, histogram-adaptive bands, thin structures kept, hand-computed values, and its pieces
against independent computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toonlab.errors import UsageError
from toonlab.infer.classic import (ClassicConfig, _band_centres, _lookup, _smoothing_coefficients, _tone_curve,
                                   _upsample_rows, cartoonize_classic)
from toonlab.ops import self_guided_filter


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    a = data.astronaut()[:256, 128:384]  # face + suit: skin, hair, fabric texture
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def test_keeps_size_dtype_range_and_input(photo):
    before = photo.clone()
    out = cartoonize_classic(photo)
    assert out.shape == photo.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(photo, before)  # input untouched
    odd = photo[:, :, :101, :77]
    assert cartoonize_classic(odd).shape == odd.shape
    assert cartoonize_classic(photo[0]).shape == photo[0].shape  # (3,H,W) in, (3,H,W) out
    assert cartoonize_classic(photo.double()).dtype == torch.float64


def test_alpha_channel_passes_through(photo):
    alpha = torch.linspace(0, 1, photo.shape[-1]).expand(1, 1, *photo.shape[-2:])
    out = cartoonize_classic(torch.cat([photo, alpha], 1))
    assert out.shape == (1, 4, *photo.shape[-2:])
    assert torch.equal(out[:, 3:], alpha)
    assert torch.allclose(out[:, :3], cartoonize_classic(photo))


def test_flat_regions(photo):
    """Few distinct colours and many flat neighbourhoods compared with the photo."""
    src, out = _u8(photo), _u8(cartoonize_classic(photo))

    def distinct(a):
        return len(np.unique(a.reshape(-1, 3), axis=0))

    def flat_fraction(a):  # horizontal neighbours within 1 level summed over channels
        return (np.abs(np.diff(a.astype(int), axis=1)).sum(-1) <= 1).mean()

    assert distinct(out) < 0.6 * distinct(src)
    assert flat_fraction(out) > 5 * flat_fraction(src) and flat_fraction(out) > 0.4


def test_dark_lines_at_strong_edges():
    """A bright square on a dark-ish background: ink on the dark side of the edge, none far from it."""
    x = torch.full((1, 3, 96, 96), 0.35)
    x[..., 32:64, 32:64] = 0.85
    out = cartoonize_classic(x, levels=4, keep_luminance=False)[0, 1]  # (the offset would differ with/without ink)
    plain = cartoonize_classic(x, levels=4, line_strength=0.0, keep_luminance=False)[0, 1]
    far_dark, far_bright = out[10, 10], out[48, 48]
    next_to_edge = out[48, 29:32].min()  # just outside the square's left edge (dark side)
    assert next_to_edge < 0.4 * far_dark
    assert out[29:32, 48].min() < 0.4 * far_dark  # top edge too
    assert plain[48, 30] == pytest.approx(plain[10, 10].item(), abs=0.02)  # no line when lines are off
    assert far_bright > far_dark + 0.3
    # away from the edge, the flat regions are untouched by lines
    assert out[10, 10] == pytest.approx(plain[10, 10].item(), abs=1e-6)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)


def _winnemoeller(y: np.ndarray, levels: int, sharpness: float) -> np.ndarray:
    """Equal-band soft quantisation written the old way (nearest band + tanh steps at its two borders)."""
    t = y * levels
    idx = np.clip(np.floor(t), 0, levels - 1)
    f = t - idx - 0.5
    g = 0.5 * (np.tanh((f - 0.5) * sharpness) + np.tanh((f + 0.5) * sharpness))
    return (idx + 0.5 + g) / levels


def test_constant_image_hand_computed():
    """A constant colour: smoothing keeps it, luminance snaps to its band, chroma is scaled by saturation."""
    c = torch.tensor([0.6, 0.3, 0.2])
    x = c.view(1, 3, 1, 1).expand(1, 3, 40, 50).contiguous()
    y = 0.299 * 0.6 + 0.587 * 0.3 + 0.114 * 0.2  # 0.3827
    fixed = ClassicConfig(levels=8, sharpness=40.0, saturation=1.5, adaptive_levels=False, keep_luminance=False)
    out = cartoonize_classic(x, fixed)
    expected = _winnemoeller(np.array(y), 8, 40.0) + 1.5 * (c.numpy() - y)  # equal bands: Y_q = 0.4375
    np.testing.assert_allclose(out[0, :, 20, 25].numpy(), expected, atol=1e-5)
    assert out.std(dim=(2, 3)).max() < 1e-5
    # adaptive bands: the one occupied cell's centre moves onto the colour's histogram bin (256 bins)
    adaptive = cartoonize_classic(x, levels=8, saturation=1.5, keep_luminance=False)
    bin_centre = (np.floor(y * 256) + 0.5) / 256
    np.testing.assert_allclose(adaptive[0, :, 20, 25].numpy(), bin_centre + 1.5 * (c.numpy() - y), atol=1e-4)
    # mean luminance kept (the default): the luminance is the photo's, the chroma still scaled
    kept = cartoonize_classic(x, levels=8, saturation=1.5)
    np.testing.assert_allclose(kept[0, :, 20, 25].numpy(), y + 1.5 * (c.numpy() - y), atol=1e-4)


def test_tone_curve_equal_bands_match_the_closed_form_and_are_monotone_continuous():
    y = torch.linspace(0, 1, 4001, dtype=torch.float64)
    centres = _band_centres(torch.rand(100), 8, adaptive=False)
    torch.testing.assert_close(centres, (torch.arange(8, dtype=torch.float64) + 0.5) / 8)
    table = _tone_curve(centres, 40.0)
    q = _lookup(table[None].float(), y.float()[None]).double()[0]
    np.testing.assert_allclose(q.numpy(), _winnemoeller(y.numpy(), 8, 40.0), atol=2e-4)
    assert torch.all(q[1:] >= q[:-1] - 1e-6)  # monotone
    assert (q[1:] - q[:-1]).abs().max() < 0.02  # no jumps (soft steps)
    near = (q[:, None] - centres[None]).abs().min(1).values
    assert (near < 0.01).double().mean() > 0.8  # most values sit on one of the 8 band centres


def test_lloyd_max_centres_are_the_means_of_their_cells():
    """Adaptive centres: fixed point of Lloyd–Max on the histogram, checked on the raw samples with numpy."""
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.uniform(0.55, 0.75, 30000), rng.uniform(0.05, 0.3, 6000)])  # a sky + dark ground
    c = _band_centres(torch.from_numpy(y).float(), 8, adaptive=True).numpy()
    assert np.all(np.diff(c) > 0)
    cell = np.digitize(y, (c[1:] + c[:-1]) / 2)
    for i in range(8):
        assert (cell == i).sum() > 1000 and abs(y[cell == i].mean() - c[i]) < 2 / 256  # (bins are 1/256 wide)
    assert ((c > 0.55) & (c < 0.75)).sum() >= 4  # the big sky gets most of the bands (equal bands: 2)


def test_lookup_reads_each_images_own_table():
    tables = torch.stack([torch.linspace(0, 1, 11), torch.linspace(1, 0, 11)])
    y = torch.tensor([0.25, 0.5, 1.0]).expand(2, 3)
    torch.testing.assert_close(_lookup(tables, y.clone()), torch.tensor([[0.25, 0.5, 1.0], [0.75, 0.5, 0.0]]))


def test_mean_luminance_is_kept_on_the_bundled_photos():
    """The default keeps each photo's mean luminance (the lines alone darkened them by 2–9 %)."""
    from pathlib import Path

    from PIL import Image

    root = Path(__file__).resolve().parents[1] / "examples" / "photos"
    for f in sorted(root.glob("*"))[:3]:
        a = np.asarray(Image.open(f).convert("RGB"))[::2, ::2]  # half size: a fast test
        x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255
        before = _luma(x).mean().item()
        assert _luma(cartoonize_classic(x)).mean().item() == pytest.approx(before, rel=0.005), f.name
        assert _luma(cartoonize_classic(x, keep_luminance=False)).mean().item() < 0.99 * before, f.name


def test_gradient_sky_gets_several_narrow_bands_not_two_big_ones():
    """A vertical sky gradient (Y 0.55 → 0.75) over dark ground: equal bands cut the sky in two, adaptive ones
    give it several, none larger than a third of it."""
    h, w = 120, 80
    sky = torch.linspace(0.55, 0.75, 80).view(80, 1).expand(80, w)
    x = torch.full((1, 3, h, w), 0.15)
    x[0, :, :80] = sky
    x[0, 2, :80] += 0.1  # a bluish sky

    def band_sizes(out):
        y = (_luma(out)[0, :80, w // 2] * 255).round()
        runs = np.diff(np.flatnonzero(np.diff(y.numpy()) != 0), prepend=-1, append=79)
        return runs[runs > 2]  # plateaus (soft steps are 1–2 px)

    adaptive = band_sizes(cartoonize_classic(x, line_strength=0.0))
    equal = band_sizes(cartoonize_classic(x, line_strength=0.0, adaptive_levels=False))
    assert len(equal) <= 2 and equal.max() >= 35
    assert len(adaptive) >= 4 and adaptive.max() <= 80 / 3


def test_thin_high_contrast_structures_are_kept():
    """A 1-px dark lattice on a sky (a launch tower): kept by default, washed out by the smoothing without
    ``protect``. Measured as the contrast between the bar and the sky beside it (photo: 0.3)."""
    x = torch.full((1, 3, 160, 160), 0.6)
    x[..., 20:140, 60] = 0.3  # two thin vertical bars
    x[..., 20:140, 80] = 0.3
    for i in range(20, 140, 10):  # diagonal braces between them
        for k in range(10):
            x[..., i + k, 60 + k * 2] = 0.3

    def bar_contrast(out):
        y = _luma(out)[0]
        return (y[30:130, 100].mean() - y[30:130, 80].mean()).item()  # sky beside the bar − the bar

    cfg = dict(line_strength=0.0, work_size=160)  # full-size lengths: smoothing radius 5
    kept = bar_contrast(cartoonize_classic(x, **cfg))
    lost = bar_contrast(cartoonize_classic(x, protect=0.0, **cfg))
    assert kept > 0.2 and lost < 0.6 * kept, (kept, lost)


def test_a_batch_equals_its_images_one_by_one(photo):
    other = photo.flip(-1) * 0.6
    both = cartoonize_classic(torch.cat([photo, other]))
    torch.testing.assert_close(both[1:], cartoonize_classic(other), atol=1e-5, rtol=0)
    torch.testing.assert_close(both[:1], cartoonize_classic(photo), atol=1e-5, rtol=0)


def test_one_round_equals_the_ops_self_guided_filter(photo):
    a, b, first = _smoothing_coefficients(photo, 3, 0.01, 1)
    ref = self_guided_filter(photo, 3, 0.01)
    torch.testing.assert_close(a * photo + b, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(first, ref, atol=1e-5, rtol=0)
    # two rounds compose into one affine map: A·x + B == filter(filter(x))
    a2, b2, _ = _smoothing_coefficients(photo, 3, 0.01, 2)
    torch.testing.assert_close(a2 * photo + b2, self_guided_filter(ref, 3, 0.01), atol=1e-5, rtol=0)


def test_strip_upsampling_equals_full_interpolate():
    low = torch.rand(2, 7, 37, 53)
    full = F.interpolate(low, size=(160, 211), mode="bilinear", align_corners=False)
    strips = torch.cat([_upsample_rows(low, i, min(160, i + 23), (160, 211)) for i in range(0, 160, 23)], 2)
    torch.testing.assert_close(strips, full, atol=1e-5, rtol=0)


def test_large_image_uses_working_resolution_and_keeps_edges():
    """Above work_size the fast path runs; a sharp step edge stays sharp (coefficients applied at full size)."""
    x = torch.full((1, 3, 300, 400), 0.2)
    x[..., :, 200:] = 0.8
    out = cartoonize_classic(x, work_size=100, line_strength=0.0)
    assert out.shape == x.shape
    row = out[0, 1, 150]
    assert (row[195] - row[205]).abs() > 0.5  # the step is still a step ...
    assert (row[:190] - row[0]).abs().max() < 0.02 and (row[210:] - row[399]).abs().max() < 0.02  # ... with flat sides


def test_bad_knobs_and_inputs():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(UsageError, match="levels"):
        cartoonize_classic(x, levels=1)
    with pytest.raises(UsageError, match="unknown knob 'colour'"):
        cartoonize_classic(x, colour=3)
    with pytest.raises(UsageError, match=r"\(B,3,H,W\)"):
        cartoonize_classic(torch.rand(1, 2, 16, 16))
    with pytest.raises(UsageError, match=r"\(B,3,H,W\)"):
        cartoonize_classic(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    assert cartoonize_classic(torch.rand(1, 3, 2, 2)).shape == (1, 3, 2, 2)  # tiny images work too


def test_same_result_on_any_thread_count_and_thread_setting_restored():
    x = torch.rand(1, 3, 260, 180)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = cartoonize_classic(x, work_size=64)  # fast path: strips on worker threads
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one = cartoonize_classic(x, work_size=64)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(one, two)


# ---- the command line of the classic cartoonizer ----------------------------------------------------------------
def _cli():
    from typer.testing import CliRunner

    from toonlab.cli import app

    return CliRunner(), app


def test_help_shows_the_classic_defaults():
    """Each classic option's help shows its default, and that default is ClassicConfig's."""
    import re

    runner, app = _cli()
    r = runner.invoke(app, ["cartoonize", "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert r.exit_code == 0
    cfg = ClassicConfig()
    for opt, field in (("--work-size", "work_size"), ("--radius", "radius"), ("--eps", "eps"),
                       ("--iterations", "iterations"), ("--levels", "levels"), ("--saturation", "saturation"),
                       ("--line-strength", "line_strength"), ("--line-threshold", "line_threshold")):
        line = next(x for x in r.output.splitlines() if f"{opt} " in x)
        shown = re.search(r"\[default: \(?([^\])]+)\)?\]", line)  # (typer puts a given text in brackets)
        assert shown and float(shown.group(1)) == getattr(cfg, field), (opt, line)


def test_cli_device_note_and_skip_reason(tmp_path):
    """--device cuda with the classic cartoonizer says it runs on the CPU; a rerun's skips say why and how to redo."""
    from PIL import Image

    runner, app = _cli()
    Image.fromarray(np.full((24, 32, 3), 120, np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    r = runner.invoke(app, ["cartoonize", str(tmp_path / "a.png"), "-o", str(out), "--device", "cuda",
                            "--ext", "png"])
    assert r.exit_code == 0, r.output
    assert "note: the classic cartoonizer runs on the CPU" in r.output and (out / "a.png").is_file()
    r = runner.invoke(app, ["cartoonize", str(tmp_path / "a.png"), "-o", str(out), "--levels", "4"])
    assert r.exit_code == 0 and "note:" not in r.output
    assert "0 done, 1 skipped, 0 failed (1 skipped: the output exists already; --overwrite replaces it)" in r.output
    r = runner.invoke(app, ["cartoonize", str(tmp_path / "a.png"), "-o", str(out), "--overwrite"])
    assert r.exit_code == 0 and "1 done, 0 skipped, 0 failed" in r.output and "--overwrite" not in r.output
