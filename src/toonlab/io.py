"""Image I/O: the only place that turns files (or bytes) of pixels into tensors and back.

Reading gives RGB float32 (3,H,W) in [0,1] plus the alpha channel kept aside ((1,H,W) in [0,1], or None):
EXIF orientation applied, GIF/TIFF first frame, modes 1/L/LA/P (with transparency)/PA/RGB/RGBA/CMYK/YCbCr and
16-bit gray (I;16*, I — scaled by 1/65535) handled. Every failure (missing, empty, truncated, not an image, too many
pixels) is an `ImageReadError` whose one-line message names the file.

Writing is atomic (temp file in the same folder, then a rename) and never replaces an existing file unless
``overwrite=True``. Alpha policy (our choice): PNG, WebP and TIFF keep alpha; JPEG, BMP and GIF cannot hold a
full alpha channel, so it is dropped (the colour is written as is, not composited) with a log note.
"""

from __future__ import annotations

import fnmatch
import glob
import io
import logging
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from toonlab.errors import ToonlabError, UsageError
from toonlab.paths import symlink_loop

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

# 100 megapixels: above any camera photo, below what would exhaust memory as float32 (1.2 GB per RGB copy).
DEFAULT_MAX_PIXELS = 100_000_000

# mkstemp creates files readable by the owner only; outputs get the usual permissions (0666 minus the umask).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# extension -> (Pillow format, keeps alpha)
_WRITE_FORMATS = {
    ".png": ("PNG", True), ".webp": ("WEBP", True), ".tif": ("TIFF", True), ".tiff": ("TIFF", True),
    ".jpg": ("JPEG", False), ".jpeg": ("JPEG", False), ".bmp": ("BMP", False), ".gif": ("GIF", False),
}


# What Pillow's decoders raise on truncated / corrupt data besides OSError (broken headers, bad chunk tables).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError,
                  TypeError)


class ImageReadError(ToonlabError):
    """An input image cannot be read (missing, empty, truncated, not an image, too large)."""


class OutputExistsError(ToonlabError):
    """The output file exists and overwrite was not requested."""


@dataclass
class LoadedImage:
    """A decoded image: ``rgb`` float32 (3,H,W) in [0,1]; ``alpha`` float32 (1,H,W) in [0,1] or None;
    ``path`` the file it came from (or the upload name)."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    path: Path

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _hwc_to_chw(arr: np.ndarray, scale: float) -> torch.Tensor:
    """(H,W) or (H,W,C) numeric array -> contiguous float32 (C,H,W) tensor, multiplied by ``scale``."""
    if not arr.flags.writeable:  # Pillow's array interface is read-only; torch wants a writable buffer
        arr = arr.copy()
    t = torch.from_numpy(arr)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    out = torch.empty(t.shape, dtype=torch.float32)
    out.copy_(t)  # one pass: HWC uint8 -> CHW float32
    return out.mul_(scale)


def _to_tensors(im: Image.Image) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pillow image (any mode) -> (rgb (3,H,W), alpha (1,H,W) | None), float32 in [0,1]."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit gray (PNG opens as I;16, some TIFFs as I): full range is 0..65535; F is taken as [0,1] already.
        arr = np.asarray(im)
        scale = 1.0 if mode == "F" else 1.0 / 65535.0
        gray = _hwc_to_chw(arr.astype(np.float32), scale).clamp_(0.0, 1.0)
        return gray.expand(3, -1, -1).contiguous(), None
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
    if mode in ("L", "1") and not has_alpha:
        gray = _hwc_to_chw(np.asarray(im.convert("L")), 1.0 / 255.0)
        return gray.expand(3, -1, -1).contiguous(), None
    if has_alpha:
        arr = np.asarray(im.convert("RGBA"))  # also un-premultiplies RGBa/La and applies P's tRNS
        rgba = _hwc_to_chw(arr, 1.0 / 255.0)
        return rgba[:3].contiguous(), rgba[3:].contiguous()
    # RGB, CMYK (Pillow's naive inversion; ICC profiles are ignored), YCbCr, RGBX, P without transparency, ...
    return _hwc_to_chw(np.array(im if mode == "RGB" else im.convert("RGB")), 1.0 / 255.0), None


def _decode(src, name: str, max_pixels: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Open, check the size, decode the first frame, apply EXIF orientation, convert to (rgb, alpha) tensors;
    every failure becomes ImageReadError naming ``name``; the file is closed on return."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above Image.MAX_IMAGE_PIXELS; our own limit (max_pixels) is the policy, checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(src)
        with im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageReadError(f"{name}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                                     "(possible decompression bomb; raise max_pixels if the file is trusted)")
            im.seek(0)  # animated GIF/WebP, multi-page TIFF: first frame
            im.load()
            return _to_tensors(ImageOps.exif_transpose(im))
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{name}: too many pixels for Pillow's own limit ({_one_line(e)})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image (or an unsupported format)") from None
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError(f"{name}: permission denied") from None
    except _DECODE_ERRORS as e:
        # truncated data ("image file is truncated"), broken chunks, bad headers
        raise ImageReadError(f"{name}: truncated or corrupt image ({_one_line(e)})") from None


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file -> LoadedImage (rgb (3,H,W) float32 [0,1], alpha (1,H,W) | None).

    Raises ImageReadError (one line, names the file) for missing / empty / truncated / non-image files and for
    images above ``max_pixels`` (None = no limit of ours; Pillow's hard limit, 2 x Image.MAX_IMAGE_PIXELS, stays).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file")
    rgb, alpha = _decode(path, str(path), max_pixels)
    return LoadedImage(rgb, alpha, path)


def decode_image(data: bytes, *, name: str = "<upload>", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Like `read_image`, from the bytes of an image file (e.g. an HTTP upload); ``name`` is used in errors."""
    if not data:
        raise ImageReadError(f"{name}: empty file")
    rgb, alpha = _decode(io.BytesIO(data), name, max_pixels)
    return LoadedImage(rgb, alpha, Path(name))


# ----------------------------------------------------------------------------------------------------- writing


def _rgb_to_uint8(rgb) -> np.ndarray:
    """(3,H,W) / (1,3,H,W) float tensor in [0,1] or (H,W,3) uint8 array -> (H,W,3) uint8 array."""
    if isinstance(rgb, np.ndarray):
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H,W,3) uint8 array, got {rgb.dtype} {rgb.shape}")
        return rgb
    if rgb.ndim == 4 and rgb.shape[0] == 1:
        rgb = rgb[0]
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected an rgb tensor of shape (3,H,W), got {tuple(rgb.shape)}")
    u8 = rgb.detach().to("cpu", torch.float32).mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return u8.permute(1, 2, 0).contiguous().numpy()


def _alpha_to_uint8(alpha, hw: tuple[int, int]) -> np.ndarray:
    """(1,H,W) / (H,W) float tensor in [0,1] or (H,W) uint8 array -> (H,W) uint8 array of size ``hw``."""
    if isinstance(alpha, np.ndarray):
        a = alpha if alpha.dtype == np.uint8 else np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
        a = a.reshape(a.shape[-2:]) if a.ndim == 3 else a
    else:
        t = alpha.detach().to("cpu", torch.float32)
        t = t.reshape(t.shape[-2:]) if t.ndim > 2 else t
        a = t.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    if a.shape != hw:
        raise ValueError(f"alpha of size {a.shape} does not match the image size {hw}")
    return a


def _to_pil(rgb, alpha, keeps_alpha: bool, name: str) -> Image.Image:
    arr = _rgb_to_uint8(rgb)
    if alpha is None:
        return Image.fromarray(arr, "RGB")
    a = _alpha_to_uint8(alpha, arr.shape[:2])
    if not keeps_alpha:
        log.warning("%s: this format has no alpha channel; alpha dropped (write PNG/WebP/TIFF to keep it)", name)
        return Image.fromarray(arr, "RGB")
    return Image.fromarray(np.dstack([arr, a]), "RGBA")


# zlib level of written PNGs (lossless at every level). 1 = OpenCV's default, "best speed": a 512² cartoon writes in
# 15 ms at 215 KiB against 65 ms at 173 KiB at Pillow's default 6 (measured 2026-12-06, issue 25) — ~4× faster
# for ~25 % more bytes, which matters more for a folder or a video's frames than the size does.
PNG_COMPRESS_LEVEL = 1


def _save_kwargs(fmt: str, quality: int) -> dict:
    if fmt == "JPEG":
        return {"quality": quality}
    if fmt == "WEBP":
        return {"quality": quality, "method": 4}
    if fmt == "PNG":
        return {"compress_level": PNG_COMPRESS_LEVEL}
    return {}


def output_format(ext: str, name: str) -> tuple[str, bool]:
    """(Pillow format, keeps alpha) for an output extension; UsageError naming ``name`` if we cannot write it."""
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    if ext not in _WRITE_FORMATS:
        raise UsageError(f"{name}: cannot write '{ext}' images (use one of {', '.join(sorted(_WRITE_FORMATS))})")
    return _WRITE_FORMATS[ext]


def encode_image(rgb, alpha=None, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode rgb ((3,H,W) [0,1] tensor or (H,W,3) uint8 array) [+ alpha] as ``fmt`` (png/jpg/webp/...) bytes."""
    pil_fmt, keeps_alpha = output_format(fmt, f"<{fmt}>")
    buf = io.BytesIO()
    _to_pil(rgb, alpha, keeps_alpha, f"<{fmt}>").save(buf, format=pil_fmt, **_save_kwargs(pil_fmt, quality))
    return buf.getvalue()


def write_image(path: str | Path, rgb, alpha=None, *, overwrite: bool = False, quality: int = 95) -> Path:
    """Write rgb ((3,H,W) [0,1] tensor or (H,W,3) uint8 array) [+ alpha (1,H,W) [0,1]] to ``path``.

    The format follows the extension. Atomic: the bytes go to a temp file in the same folder that is then
    renamed onto ``path``, so no reader ever sees half a file. Raises OutputExistsError if ``path`` exists and
    ``overwrite`` is False (checked again at the rename: hard-link, which fails if the name appeared meanwhile).
    """
    path = Path(path)
    pil_fmt, keeps_alpha = output_format(path.suffix, str(path))
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    img = _to_pil(rgb, alpha, keeps_alpha, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=pil_fmt, **_save_kwargs(pil_fmt, quality))
        os.chmod(tmp, 0o666 & ~_UMASK)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # no-clobber publish: fails if the name exists
            except FileExistsError:
                raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)") from None
            except OSError:  # file system without hard links
                if path.exists():
                    raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)") from None
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------------------------------- listing


def _is_image_file(p: Path) -> bool:
    """An image by its name, and a file — or a symlink loop, kept so that it fails alone as one unreadable item."""
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and (p.is_file() or symlink_loop(p))


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first magic component (outputs keep paths relative to it)."""
    parts = Path(pattern).parts
    root = []
    for part in parts:
        if glob.has_magic(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def walk_tree(root: Path, max_depth: int | None = None) -> Iterator[tuple[Path, bool]]:
    """Every entry below ``root`` (down to ``max_depth`` levels) as ``(path, is_dir)``, depth-first in name order,
    following symlinked folders — but each real folder (st_dev, st_ino) once: a link back to a folder already
    walked (itself, a parent) is left out instead of looping for ever. Unreadable folders are skipped; a symlink
    loop is an entry that is not a folder."""
    try:
        st = root.stat()
    except OSError:
        return
    seen = {(st.st_dev, st.st_ino)}
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        below = []
        for entry in entries:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()
                if is_dir:
                    st = path.stat()
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
            except OSError:  # e.g. ELOOP: a symlink loop is not a folder
                is_dir = False
            yield path, is_dir
            if is_dir and (max_depth is None or depth + 1 < max_depth):
                below.append((path, depth + 1))
        stack.extend(reversed(below))


def glob_paths(pattern: str, recursive: bool = True) -> tuple[Path, list[tuple[Path, bool]]]:
    """``(root, [(path, is_dir), …])``: the pattern's fixed folder and the entries matching it, as ``glob.glob``
    finds them (component by component: ``..`` and plain names literally, wildcards never matching a leading
    dot, ``**`` — with ``recursive`` — any number of folders), but through :func:`walk_tree`, so that it ends on
    symlink loops where glob recursed until memory ran out."""
    root = _glob_root(pattern)
    current = {root: True}
    for part in Path(pattern).parts[len(root.parts):]:
        found: dict[Path, bool] = {}
        for base in (b for b, is_dir in current.items() if is_dir):
            if part == "**" and recursive:
                found[base] = True  # zero folders
                found.update((p, d) for p, d in walk_tree(base)
                             if not any(x.startswith(".") for x in p.relative_to(base).parts))
            elif glob.has_magic(part):
                found.update((p, d) for p, d in walk_tree(base, 1) if fnmatch.fnmatchcase(p.name, part)
                             and (not p.name.startswith(".") or part.startswith(".")))
            elif os.path.lexists(base / part):
                found[base / part] = (base / part).is_dir()
        current = found
    return root, sorted(current.items())


def file_key(path: Path) -> Path:
    """A file's identity for de-duplication: its resolved path, or — a symlink loop — its resolved folder and its
    name (the same loop reached through another folder link is one item)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13's "Symlink loop from …"
        return path.parent.resolve() / path.name


def expand_inputs(inputs: list[str | Path], recursive: bool = True, exclude: Path | None = None,
                  keep_missing: bool = False) -> list[tuple[Path, Path]]:
    """Resolve files / folders / glob patterns to (file, relative path) pairs, sorted, without duplicates.

    The relative path is what an output keeps: the file name for a file, the path under the folder (or under the
    glob's fixed prefix) otherwise. Folders give image files only (by extension, hidden names skipped); a file
    named explicitly is kept whatever its name. With ``keep_missing`` a named path that does not exist is kept
    too, so that a batch reports it as a failed input. Anything found under ``exclude`` (e.g. the output folder)
    is left out — but not a file named explicitly (``cartoonize a.png -o .``: the batch's own checks keep its
    output off the input). Symlinked folders are searched once each; a symlink loop is kept as a file that will
    fail to read.
    """
    found: dict[Path, Path] = {}
    excl = exclude.resolve() if exclude is not None else None

    def add(f: Path, rel: Path, named: bool = False):
        key = file_key(f)
        if not named and excl is not None and (key == excl or excl in key.parents):
            return
        found.setdefault(key, (f, rel))

    def add_folder(folder: Path, root: Path):
        for f, is_dir in walk_tree(folder, None if recursive else 1):
            if not is_dir and _is_image_file(f) and not any(p.startswith(".") for p in f.relative_to(folder).parts):
                add(f, f.relative_to(root))

    for item in inputs:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            add_folder(p, p)
        elif p.is_file() or (keep_missing and not p.exists() and not glob.has_magic(s)):
            add(p, Path(p.name), named=True)
        else:
            root, matches = glob_paths(s, recursive)
            for mp, is_dir in matches:
                if is_dir:
                    add_folder(mp, root)
                elif _is_image_file(mp):
                    add(mp, mp.relative_to(root) if root != Path(".") else mp)
    pairs = list(found.values())
    pairs.sort(key=lambda fr: str(fr[0]))
    return [(f, r) for f, r in pairs]


def list_images(inputs: list[str | Path], recursive: bool = True) -> list[Path]:
    """Image files named by ``inputs`` (files, folders searched recursively, glob patterns), sorted, unique."""
    return [f for f, _ in expand_inputs(inputs, recursive=recursive)]
