"""toonlab.io: every mode / format / bad-file case is built here with Pillow and checked against Pillow/numpy."""

import io as bytesio
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from toonlab.errors import ToonlabError, UsageError
from toonlab.io import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageReadError, LoadedImage, OutputExistsError,
                        decode_image, encode_image, expand_inputs, list_images, read_image, write_image)


@pytest.fixture
def rgb_u8():
    """A 24x32 RGB image with every channel different (HWC uint8)."""
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def _chw(arr_u8: np.ndarray) -> np.ndarray:
    return np.transpose(arr_u8.astype(np.float32) / 255.0, (2, 0, 1))


def _check(img: LoadedImage, rgb_u8: np.ndarray, alpha_u8=None, atol=1e-6):
    assert img.rgb.dtype == torch.float32 and img.rgb.shape == (3, *rgb_u8.shape[:2])
    np.testing.assert_allclose(img.rgb.numpy(), _chw(rgb_u8), atol=atol)
    if alpha_u8 is None:
        assert img.alpha is None
    else:
        assert img.alpha.shape == (1, *alpha_u8.shape)
        np.testing.assert_allclose(img.alpha[0].numpy(), alpha_u8 / 255.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("ext,kw", [(".png", {}), (".bmp", {}), (".tif", {}), (".webp", {"lossless": True})])
def test_lossless_formats_round_trip_exactly(tmp_path, rgb_u8, ext, kw):
    f = tmp_path / f"a{ext}"
    Image.fromarray(rgb_u8).save(f, **kw)
    img = read_image(f)
    _check(img, rgb_u8)
    assert img.path == f and img.size == (24, 32)


def test_jpeg_matches_pillow_decode(tmp_path, rgb_u8):
    f = tmp_path / "a.jpg"
    Image.fromarray(rgb_u8).save(f, quality=90)
    _check(read_image(f), np.asarray(Image.open(f).convert("RGB")))


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    f = tmp_path / "anim.gif"
    frames[0].save(f, save_all=True, append_images=frames[1:], duration=50)
    img = read_image(f)
    assert img.rgb.shape == (3, 6, 8)
    np.testing.assert_allclose(img.rgb[:, 0, 0].numpy(), [1.0, 0.0, 0.0])


# ------------------------------------------------------------------------------------------------ modes


def test_mode_L_and_1(tmp_path, rgb_u8):
    gray = rgb_u8[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    _check(read_image(tmp_path / "l.png"), np.dstack([gray] * 3))
    bw = gray > 128
    Image.fromarray(bw).save(tmp_path / "b.png")  # mode "1"
    assert Image.open(tmp_path / "b.png").mode == "1"
    _check(read_image(tmp_path / "b.png"), np.dstack([bw.astype(np.uint8) * 255] * 3))


def test_mode_LA_keeps_alpha(tmp_path, rgb_u8):
    la = rgb_u8[..., :2]
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    _check(read_image(tmp_path / "la.png"), np.dstack([la[..., 0]] * 3), alpha_u8=la[..., 1])


def test_mode_RGBA_keeps_alpha(tmp_path, rgb_u8):
    alpha = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    Image.fromarray(np.dstack([rgb_u8, alpha]), "RGBA").save(tmp_path / "x.png")
    _check(read_image(tmp_path / "x.png"), rgb_u8, alpha_u8=alpha)


def test_mode_P_with_and_without_transparency(tmp_path):
    idx = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4) % 3
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    lut = np.array(palette, np.uint8).reshape(256, 3)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette)
    im.save(tmp_path / "p.png")
    _check(read_image(tmp_path / "p.png"), lut[idx])
    im.save(tmp_path / "pt.png", transparency=1)  # palette entry 1 (green) fully transparent
    _check(read_image(tmp_path / "pt.png"), lut[idx], alpha_u8=np.where(idx == 1, 0, 255).astype(np.uint8))


def test_mode_CMYK(tmp_path, rgb_u8):
    cmyk = Image.fromarray(rgb_u8).convert("CMYK")
    cmyk.save(tmp_path / "c.tif")
    cmyk.save(tmp_path / "c.jpg", quality=95)
    _check(read_image(tmp_path / "c.tif"), np.asarray(cmyk.convert("RGB")))
    _check(read_image(tmp_path / "c.jpg"), np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB")))
    # an exact CMYK TIFF round-trip gives back the RGB (Pillow's CMYK is a plain inversion)
    np.testing.assert_allclose(read_image(tmp_path / "c.tif").rgb.numpy(), _chw(rgb_u8), atol=1e-6)


def test_16bit_png_scaled_by_65535(tmp_path):
    v = (np.arange(12 * 10, dtype=np.uint32) * 541 % 65536).astype(np.uint16).reshape(12, 10)
    v[0, 0], v[0, 1] = 0, 65535
    Image.fromarray(v).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    img = read_image(tmp_path / "g16.png")
    expected = v.astype(np.float64) / 65535.0
    for c in range(3):
        np.testing.assert_allclose(img.rgb[c].numpy(), expected, atol=1e-6)
    assert img.rgb[0, 0, 0] == 0.0 and img.rgb[0, 0, 1] == 1.0
    # a gradient finer than 8 bits survives (values 1/65535 apart stay distinct)
    assert len(np.unique(img.rgb[0].numpy())) == len(np.unique(v))


def test_mode_I_tiff(tmp_path):
    v = np.array([[0, 1000, 65535], [30000, 5, 12345]], dtype=np.int32)
    Image.fromarray(v, "I").save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    np.testing.assert_allclose(read_image(tmp_path / "i.tif").rgb[1].numpy(), v / 65535.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ EXIF orientation


@pytest.mark.parametrize("orientation,expect", [
    (3, lambda a: np.rot90(a, 2)),      # rotate 180
    (6, lambda a: np.rot90(a, -1)),     # rotate 90 CW to display
    (8, lambda a: np.rot90(a, 1)),      # rotate 90 CCW to display
    (2, lambda a: a[:, ::-1]),          # mirror
])
def test_exif_orientation_applied(tmp_path, rgb_u8, orientation, expect):
    exif = Image.Exif()
    exif[0x0112] = orientation
    f = tmp_path / "o.png"
    Image.fromarray(rgb_u8).save(f, exif=exif)
    _check(read_image(f), np.ascontiguousarray(expect(rgb_u8)))


def test_exif_orientation_jpeg(tmp_path, rgb_u8):
    exif = Image.Exif()
    exif[0x0112] = 6
    f = tmp_path / "o.jpg"
    Image.fromarray(rgb_u8).save(f, exif=exif, quality=95)
    img = read_image(f)
    assert img.rgb.shape == (3, 32, 24)
    raw = np.asarray(Image.open(f).convert("RGB"))
    _check(img, np.ascontiguousarray(np.rot90(raw, -1)))


# ------------------------------------------------------------------------------------------------ bad files


def _bad_files(tmp_path, rgb_u8):
    Image.fromarray(rgb_u8).save(tmp_path / "ok.jpg", quality=90)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    Image.fromarray(rgb_u8).save(tmp_path / "ok.png")
    png = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "text.png").write_text("this is not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    return {
        "trunc.jpg": "truncated", "trunc.png": "truncated", "text.png": "not an image",
        "empty.png": "empty", "missing.png": "no such file",
    }


def test_bad_files_give_one_line_error_naming_the_file(tmp_path, rgb_u8):
    for name, words in _bad_files(tmp_path, rgb_u8).items():
        with pytest.raises(ImageReadError) as ei:
            read_image(tmp_path / name)
        msg = str(ei.value)
        assert "\n" not in msg and str(tmp_path / name) in msg and words in msg, msg
        assert isinstance(ei.value, ToonlabError)


def test_decode_bytes_same_as_file_and_errors_name_upload(tmp_path, rgb_u8):
    Image.fromarray(rgb_u8).save(tmp_path / "a.png")
    img = decode_image((tmp_path / "a.png").read_bytes(), name="a.png")
    _check(img, rgb_u8)
    half = (tmp_path / "a.png").read_bytes()[:900]
    for data, words in [(b"", "empty"), (half, "truncated"), (b"hello", "not an image")]:
        with pytest.raises(ImageReadError, match=f"^up.png: .*{words}"):
            decode_image(data, name="up.png")


def test_pixel_limit(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match=r"big.png: 40x30 = 1200 pixels exceeds the limit of 1000"):
        read_image(tmp_path / "big.png", max_pixels=1000)
    assert read_image(tmp_path / "big.png", max_pixels=1200).size == (30, 40)
    assert DEFAULT_MAX_PIXELS >= 50_000_000
    # Pillow's own bomb check: its warning (above MAX_IMAGE_PIXELS) defers to our limit ...
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "big.png").size == (30, 40)
    # ... and its hard error (above 2x) becomes our one-line error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(ImageReadError, match="big.png: too many pixels"):
        read_image(tmp_path / "big.png")


# ------------------------------------------------------------------------------------------------ writing


def test_write_png_with_alpha_round_trips(tmp_path, rgb_u8):
    alpha = np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1))
    rgb = torch.from_numpy(_chw(rgb_u8))
    out = write_image(tmp_path / "sub" / "o.png", rgb, torch.from_numpy(alpha / 255.0).float()[None])
    assert out == tmp_path / "sub" / "o.png"
    back = np.asarray(Image.open(out))
    np.testing.assert_array_equal(back, np.dstack([rgb_u8, alpha]))


def test_png_is_written_at_the_fast_zlib_level_and_stays_lossless(tmp_path, astronaut):
    """PNG_COMPRESS_LEVEL 1: the zlib header of the first IDAT chunk says "fastest" (FLEVEL 0; Pillow's default
    level 6 writes FLEVEL 2), the pixels round-trip exactly, and the file is smaller than the raw pixels."""
    import struct

    out = write_image(tmp_path / "a.png", astronaut)
    data = out.read_bytes()
    pos = 8
    while data[pos + 4:pos + 8] != b"IDAT":
        pos += 12 + struct.unpack(">I", data[pos:pos + 4])[0]
    cmf, flg = data[pos + 8], data[pos + 9]
    assert cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0  # a zlib stream (deflate), valid header check bits
    assert flg >> 6 == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), astronaut)
    assert len(data) < astronaut.nbytes


def test_write_accepts_uint8_array_and_rounds_floats(tmp_path, rgb_u8):
    write_image(tmp_path / "u.png", rgb_u8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "u.png")), rgb_u8)
    x = torch.tensor([[[0.0, 0.5, 1.2, -0.1, 0.499 / 255]]]).expand(3, 1, 5)
    write_image(tmp_path / "r.png", x)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png"))[0, :, 0], [0, 128, 255, 0, 0])


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_formats_without_alpha_drop_it_with_a_note(tmp_path, rgb_u8, ext, caplog):
    rgb = torch.from_numpy(_chw(rgb_u8))
    with caplog.at_level(logging.WARNING, logger="toonlab.io"):
        write_image(tmp_path / f"o{ext}", rgb, torch.zeros(1, 24, 32))
    assert Image.open(tmp_path / f"o{ext}").mode == "RGB"
    assert "alpha dropped" in caplog.text
    if ext == ".bmp":  # colour written as is, not composited over black
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.bmp")), rgb_u8)


def test_write_webp_and_tiff_keep_alpha(tmp_path, rgb_u8):
    alpha = np.full((24, 32), 77, np.uint8)
    for ext in (".webp", ".tiff"):
        write_image(tmp_path / f"o{ext}", rgb_u8, alpha)
        back = read_image(tmp_path / f"o{ext}")
        assert back.alpha is not None
        np.testing.assert_allclose(back.alpha.numpy(), 77 / 255.0, atol=1 / 255)


def test_no_overwrite_unless_asked(tmp_path, rgb_u8):
    f = tmp_path / "o.png"
    f.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="o.png: exists"):
        write_image(f, rgb_u8)
    assert f.read_bytes() == b"keep me"
    write_image(f, rgb_u8, overwrite=True)
    np.testing.assert_array_equal(np.asarray(Image.open(f)), rgb_u8)
    assert sorted(os.listdir(tmp_path)) == ["o.png"]  # no temp file left behind


def test_failed_write_leaves_nothing(tmp_path, rgb_u8, monkeypatch):
    def broken_save(self, fp, format=None, **kw):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "o.png", rgb_u8)
    assert os.listdir(tmp_path) == []


def test_bad_extension_and_shape(tmp_path, rgb_u8):
    with pytest.raises(UsageError, match="cannot write '.xyz'"):
        write_image(tmp_path / "o.xyz", rgb_u8)
    with pytest.raises(ValueError, match=r"\(3,H,W\)"):
        write_image(tmp_path / "o.png", torch.zeros(4, 5, 5))
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "o.png", rgb_u8, np.zeros((5, 5), np.uint8))


def test_encode_image_decodes_back(rgb_u8):
    alpha = np.full((24, 32), 200, np.uint8)
    data = encode_image(torch.from_numpy(_chw(rgb_u8)), torch.full((1, 24, 32), 200 / 255), fmt="png")
    _check(decode_image(data), rgb_u8, alpha_u8=alpha)
    jpg = encode_image(rgb_u8, fmt="jpg", quality=80)
    assert Image.open(bytesio.BytesIO(jpg)).format == "JPEG"


# ------------------------------------------------------------------------------------------------ listing


def test_list_images_files_folders_globs(tmp_path, rgb_u8, monkeypatch):
    tree = ["a.png", "b.JPG", "sub/c.webp", "sub/deep/d.tif", "notes.txt", ".hidden.png", ".cache/e.png"]
    for rel in tree:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    imgs = ["a.png", "b.JPG", "sub/c.webp", "sub/deep/d.tif"]
    assert list_images([tmp_path]) == sorted(tmp_path / r for r in imgs)
    assert list_images([tmp_path], recursive=False) == [tmp_path / "a.png", tmp_path / "b.JPG"]
    assert list_images([str(tmp_path / "sub" / "*.webp"), tmp_path / "a.png", tmp_path / "a.png"]) == [
        tmp_path / "a.png", tmp_path / "sub" / "c.webp"]
    assert list_images([str(tmp_path / "**" / "*.tif")]) == [tmp_path / "sub/deep/d.tif"]
    assert list_images([str(tmp_path / "nothing*.png")]) == []
    # explicit files are kept whatever their name; a missing path only on request (a batch reports it)
    assert list_images([tmp_path / "notes.txt", tmp_path / "gone.png", tmp_path / "gone"]) == [tmp_path / "notes.txt"]
    assert [f for f, _ in expand_inputs([tmp_path / "gone.png"], keep_missing=True)] == [tmp_path / "gone.png"]
    # relative output paths: under the folder, under the glob's fixed prefix, or the bare name
    monkeypatch.chdir(tmp_path)
    pairs = dict((str(f), str(r)) for f, r in expand_inputs(["sub", "*.png", "sub/deep/d.tif"]))
    assert pairs == {"sub/c.webp": "c.webp", "sub/deep/d.tif": "deep/d.tif", "a.png": "a.png"}
    assert [str(f) for f, _ in expand_inputs(["."], exclude=tmp_path / "sub")] == ["a.png", "b.JPG"]
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"} <= IMAGE_EXTENSIONS
