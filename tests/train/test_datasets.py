import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from toonlab.data.datasets import StreamSampler, UnpairedDataset, discover
from toonlab.data.transforms import CropFlip, center_square, resize_short
from toonlab.errors import UsageError
from toonlab.train.config import DataConfig

from .conftest import write_pngs


def _cfg(data, **kw):
    return DataConfig(photos=str(data["photos"]), cartoons=str(data["cartoons"]), **kw)


def test_discover_nested_folders(tiny_data):
    src = discover(_cfg(tiny_data), ("photo", "cartoon"))
    assert len(src.photos) == 6 and len(src.cartoons) == 5
    assert any(p.parent.name == "sub" for p in src.photos)
    with pytest.raises(UsageError, match="data.photos"):
        discover(DataConfig(photos=str(tiny_data["root"] / "nope"), cartoons=str(tiny_data["cartoons"])), ())


def test_animegan_layout_finds_style_and_smooth(tmp_path):
    write_pngs(tmp_path / "train_photo", 3)
    write_pngs(tmp_path / "Hayao" / "style", 4, seed=5)
    write_pngs(tmp_path / "Hayao" / "smooth", 4, seed=6)
    for cartoons in ("Hayao", "Hayao/style"):
        src = discover(DataConfig(photos=str(tmp_path / "train_photo"), cartoons=str(tmp_path / cartoons)),
                       ("photo", "cartoon", "smooth"))
        assert [p.parent.name for p in src.cartoons] == ["style"] * 4
        assert [p.parent.name for p in src.prepared["smooth"]] == ["smooth"] * 4
        assert [p.name for p in src.prepared["smooth"]] == [p.name for p in src.cartoons]


def test_multistyle_layout_ids_follow_sorted_names(tmp_path):
    write_pngs(tmp_path / "p", 2)
    write_pngs(tmp_path / "c" / "shinkai", 3, seed=1)
    write_pngs(tmp_path / "c" / "hayao", 2, seed=2)
    cfg = DataConfig(photos=str(tmp_path / "p"), cartoons=str(tmp_path / "c"))
    src = discover(cfg, ("photo", "cartoon", "style"), styles=("hayao", "shinkai"))
    assert src.cartoon_styles == [0, 0, 1, 1, 1]
    assert [p.parent.name for p in src.cartoons] == ["hayao"] * 2 + ["shinkai"] * 3
    ds = UnpairedDataset(src, ("photo", "cartoon", "style"), 16)
    assert ds[(0, 3, 0)]["style"].item() == 1 and ds[(0, 1, 0)]["style"].item() == 0
    # the model's styles order gives the ids, whatever the folders' order
    assert discover(cfg, ("photo", "cartoon", "style"), styles=("shinkai", "hayao")).cartoon_styles == [0] * 3 + [1] * 2


def test_multistyle_folders_match_case_insensitively_with_a_clear_error(tmp_path):
    write_pngs(tmp_path / "p", 2)
    write_pngs(tmp_path / "styles" / "Hayao" / "style", 2, seed=1)  # AnimeGAN layout inside a style folder
    write_pngs(tmp_path / "styles" / "Shinkai", 3, seed=2)
    cfg = DataConfig(photos=str(tmp_path / "p"), cartoons=str(tmp_path / "styles"))
    src = discover(cfg, ("photo", "cartoon", "style"), styles=("hayao", "shinkai"))
    assert src.cartoon_styles == [0, 0, 1, 1, 1] and src.cartoons[0].parent.name == "style"
    with pytest.raises(UsageError, match=r"style\(s\) paprika .*found: Hayao, Shinkai"):
        discover(cfg, ("photo", "cartoon", "style"), styles=("hayao", "paprika"))
    write_pngs(tmp_path / "styles" / "hayao", 1, seed=3)
    with pytest.raises(UsageError, match="several folders"):
        discover(cfg, ("photo", "cartoon", "style"), styles=("hayao", "shinkai"))


def test_prepared_side_without_counterpart_is_an_error(tiny_data, tmp_path):
    write_pngs(tmp_path / "smooth", 4, seed=3)  # one cartoon short
    with pytest.raises(UsageError, match="data.smooth: 1 of 5"):
        discover(_cfg(tiny_data, smooth=str(tmp_path / "smooth")), ("photo", "cartoon", "smooth"))


def test_same_crop_and_flip_for_cartoon_and_prepared_sides(tiny_data, tmp_path):
    # prepared "smooth" = the cartoons themselves, saliency = the photos' red channel as gray PNGs:
    # any mismatch of crop/flip/resize between an image and its side input shows up as a difference
    shutil.copytree(tiny_data["cartoons"], tmp_path / "smooth")
    sal = tmp_path / "sal"
    for p in sorted(tiny_data["photos"].rglob("*.png")):
        out = sal / p.relative_to(tiny_data["photos"])
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(Image.open(p))[..., 0]).save(out)
    req = ("photo", "cartoon", "smooth", "saliency")
    src = discover(_cfg(tiny_data, smooth=str(tmp_path / "smooth"), saliency=str(sal)), req)
    ds = UnpairedDataset(src, req, 16, resize=18, seed=3)
    flips = set()
    for pos in range(12):
        s = ds[(pos % 6, pos % 5, pos)]
        assert s["photo"].shape == (3, 16, 16) and s["saliency"].shape == (1, 16, 16)
        assert s["photo"].min() >= -1 and s["photo"].max() <= 1
        assert torch.equal(s["smooth"], s["cartoon"])
        torch.testing.assert_close(s["saliency"][0], (s["photo"][0] + 1) / 2, atol=1e-5, rtol=0)
        flips.add(bool(torch.equal(s["cartoon"], ds[(pos % 6, pos % 5, pos)]["cartoon"])))
    assert flips == {True}  # deterministic per stream position


def test_on_the_fly_gray_and_guided_match_independent_formulas(tiny_data):
    req = ("photo", "cartoon", "gray", "guided")
    src = discover(_cfg(tiny_data), req)
    ds = UnpairedDataset(src, req, 16, crop="center", flip=False, guided_radius=2, guided_eps=0.2)
    s = ds[(0, 2, 0)]
    rgb = ((s["cartoon"] + 1) / 2).numpy()
    gray = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    for c in range(3):
        np.testing.assert_allclose(((s["gray"][c] + 1) / 2).numpy(), gray, atol=1e-5)
    signed = s["cartoon"].numpy().astype(np.float32)
    for c in range(3):  # self-guided: each channel guided by itself, on [-1, 1] (OpenCV's guided filter;
        ref = cv2.ximgproc.guidedFilter(signed[c], signed[c], 2, 0.2)  # its border rule differs: interior only)
        np.testing.assert_allclose(s["guided"][c].numpy()[4:-4, 4:-4], np.clip(ref, -1, 1)[4:-4, 4:-4], atol=2e-3)


def test_unreadable_files_are_skipped_and_counted(tiny_data, capsys):
    (tiny_data["cartoons"] / "00.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = UnpairedDataset(discover(_cfg(tiny_data), ()), ("photo", "cartoon"), 16)
    s = ds[(0, 0, 0)]
    assert s["_skipped"].item() == 1 and s["cartoon"].shape == (3, 16, 16)
    assert "skipping unreadable" in capsys.readouterr().err
    assert ds[(0, 1, 1)]["_skipped"].item() == 0


def test_stream_sampler_epochs_are_permutations_and_ranks_interleave():
    single = StreamSampler(7, 3, seed=4)
    keys = [single.key(p) for p in range(21)]
    for e in range(3):
        assert sorted(k[0] for k in keys[7 * e:7 * e + 7]) == list(range(7))
    for b in range(7):
        assert sorted(k[1] for k in keys[3 * b:3 * b + 3]) == [0, 1, 2]
    it = iter(single)
    assert [next(it) for _ in range(21)] == keys
    r0, r1 = iter(StreamSampler(7, 3, 4, start=5, rank=0, world=2)), iter(StreamSampler(7, 3, 4, start=5, rank=1, world=2))
    merged = [k for pair in zip([next(r0) for _ in range(8)], [next(r1) for _ in range(8)]) for k in pair]
    assert merged == [single.key(p) for p in range(5, 21)]
    assert [k[0] for k in keys[:7]] != [k[0] for k in keys[7:14]]  # reshuffled per epoch


def test_cropflip_geometry():
    img = torch.arange(2 * 30 * 40, dtype=torch.float32).reshape(2, 30, 40)
    rng = np.random.default_rng(0)
    g = CropFlip.draw((30, 40), 10, 0, "random", False, rng)  # native resolution: plain crop
    out = g(img)
    assert torch.equal(out, img[:, g.top:g.top + 10, g.left:g.left + 10])
    flipped = CropFlip(g.short, 10, g.top, g.left, True)(img)
    assert torch.equal(flipped, out.flip(-1))
    assert resize_short(img, 15).shape == (2, 15, 20)
    assert center_square(img, 18, multiple=4).shape == (2, 16, 16)
    c = CropFlip.draw((30, 40), 30, None, "center", False, rng)
    assert (c.top, c.left) == (0, 5) and torch.equal(c(img), img[:, :, 5:35])
