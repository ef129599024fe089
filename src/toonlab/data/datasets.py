"""Unpaired photo / cartoon training data.

Layouts (found by :func:`discover`):

- two folders: ``data.photos`` and ``data.cartoons`` (any nesting, any format ``toonlab.io`` reads);
- AnimeGAN: ``data.cartoons`` = ``<style>/style`` (or ``<style>`` holding ``style/``); a sibling ``smooth/`` with the
  same file names is used as the prepared edge-smoothed set unless ``data.smooth`` says otherwise;
- multi-style (a model with ``styles``): ``data.cartoons`` holds one sub-folder per style, named like the model's
  ``styles`` up to case (``Hayao/`` serves ``hayao``; an AnimeGAN ``Hayao/style/`` works too); the model's
  ``styles`` order gives the style ids, other sub-folders are ignored.

Side inputs a model ``requires`` (``smooth``, ``guided``, ``gray`` of the cartoon; ``saliency`` of the photo) come
from prepared folders (same relative path, any image extension) when configured, else are computed on the fly
after cropping. The sampler is an infinite, deterministic stream: position ``pos`` → (photo, cartoon, pos); an
epoch is one pass over the photos; augmentation is drawn from ``default_rng([seed, 2, pos])``. So a batch depends
only on its stream position, which is all that a checkpoint needs to resume the data exactly.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from toonlab.data.transforms import CropFlip, center_square, resize_to, to_signed
from toonlab.errors import ToonlabError, UsageError

CARTOON_SIDES = ("smooth", "guided", "gray")
PHOTO_SIDES = ("saliency",)


@dataclass
class Sources:
    """The files of a dataset. ``cartoon_styles[i]`` is the style id of ``cartoons[i]`` (multi-style only);
    ``prepared[key][i]`` is the prepared side file of ``cartoons[i]`` (or ``photos[i]`` for saliency)."""

    photos: list[Path]
    cartoons: list[Path]
    cartoon_styles: list[int] | None = None
    styles: tuple[str, ...] = ()
    prepared: dict[str, list[Path]] = field(default_factory=dict)


def _images(folder: Path) -> list[Path]:
    from toonlab.io import list_images

    return list_images([str(folder)], recursive=True)


def _index_by_stem(folder: Path) -> dict[str, Path]:
    """relative path without extension (posix) → file, for every image under ``folder``."""
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in _images(folder)}


def _match(files: list[Path], root: Path, side_dir: Path, key: str) -> list[Path]:
    index = _index_by_stem(side_dir)
    out, missing = [], []
    for f in files:
        hit = index.get(f.relative_to(root).with_suffix("").as_posix())
        (out.append(hit) if hit is not None else missing.append(f))
    if missing:
        raise UsageError(f"data.{key}: {len(missing)} of {len(files)} files have no prepared counterpart in "
                         f"{side_dir} (first: {missing[0].relative_to(root)})")
    return out


def style_folders(root: Path, styles: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """The sub-folder of ``root`` for each style name, matched case-insensitively (``Hayao/`` serves ``hayao``);
    UsageError listing the sub-folders found when a style has none, or two folders differ only in case.
    A folder may hold its images directly or in an AnimeGAN-style ``style/`` sub-folder."""
    found = sorted(p for p in root.iterdir() if p.is_dir())
    by_key: dict[str, list[Path]] = {}
    for p in found:
        by_key.setdefault(p.name.casefold(), []).append(p)
    out, missing = {}, []
    for name in styles:
        hits = by_key.get(name.casefold(), [])
        if len(hits) > 1:
            raise UsageError(f"data.cartoons: style {name!r} matches several folders of {root}: "
                             f"{', '.join(h.name for h in hits)}")
        if not hits:
            missing.append(name)
            continue
        out[name] = hits[0] / "style" if (hits[0] / "style").is_dir() else hits[0]
    if missing:
        raise UsageError(f"data.cartoons: no sub-folder of {root} for style(s) {', '.join(missing)} of the model "
                         f"(styles {list(styles)}; found: {', '.join(p.name for p in found) or 'no sub-folders'};"
                         f" names match case-insensitively)")
    return out


def discover(data, requires: tuple[str, ...], styles: tuple[str, ...] = ()) -> Sources:
    """Find the training files for a DataConfig ``data`` and a model's ``requires`` / ``styles``."""
    if not data.photos or not data.cartoons:
        raise UsageError("data.photos and data.cartoons must both be set to image folders")
    photo_root, cartoon_root = Path(data.photos), Path(data.cartoons)
    for key, folder in (("photos", photo_root), ("cartoons", cartoon_root)):
        if not folder.is_dir():
            raise UsageError(f"data.{key}: {folder} is not a folder")
    side_dirs = {k: Path(getattr(data, k)) for k in (*CARTOON_SIDES, *PHOTO_SIDES) if getattr(data, k)}
    if not styles and (cartoon_root / "style").is_dir():  # AnimeGAN: data.cartoons = <style>/
        cartoon_root = cartoon_root / "style"
    if not styles and cartoon_root.name == "style" and "smooth" not in side_dirs \
            and (cartoon_root.parent / "smooth").is_dir():
        side_dirs["smooth"] = cartoon_root.parent / "smooth"  # AnimeGAN's prepared edge-smoothed set
    for key, folder in side_dirs.items():
        if not folder.is_dir():
            raise UsageError(f"data.{key}: {folder} is not a folder")

    photos = _images(photo_root)
    if not photos:
        raise UsageError(f"data.photos: no images found in {photo_root}")
    cartoon_styles = None
    if styles:
        folders = style_folders(cartoon_root, styles)
        cartoons, cartoon_styles = [], []
        for sid, name in enumerate(styles):
            files = _images(folders[name])
            if not files:
                raise UsageError(f"data.cartoons: no images for style {name!r} in {folders[name]}")
            cartoons += files
            cartoon_styles += [sid] * len(files)
    else:
        cartoons = _images(cartoon_root)
    if not cartoons:
        raise UsageError(f"data.cartoons: no images found in {cartoon_root}")

    prepared = {}
    for key in requires:
        if key in side_dirs and key in CARTOON_SIDES:
            prepared[key] = _match(cartoons, cartoon_root, side_dirs[key], key)
        elif key in side_dirs and key in PHOTO_SIDES:
            prepared[key] = _match(photos, photo_root, side_dirs[key], key)
    return Sources(photos, cartoons, cartoon_styles, tuple(styles), prepared)


class UnpairedDataset(Dataset):
    """Indexed by sampler keys ``(photo_idx, cartoon_idx, pos)``; returns a dict of tensors in [-1, 1]:
    ``photo``/``cartoon`` (3,S,S), the required side inputs (``saliency`` (1,S,S) in [0, 1]), ``style`` () int64
    for multi-style data, and ``_skipped`` () int64 = unreadable files passed over for this sample."""

    def __init__(self, sources: Sources, requires: tuple[str, ...], size: int, *, resize: int | None = None,
                 crop: str = "random", flip: bool = True, seed: int = 0, guided_radius: int = 5,
                 guided_eps: float = 0.2):
        self.src = sources
        self.requires = tuple(requires)
        self.size, self.resize, self.crop, self.flip, self.seed = size, resize, crop, flip, seed
        self.guided_radius, self.guided_eps = guided_radius, guided_eps
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.src.photos)

    # -- reading ------------------------------------------------------------------------------------------
    def _read(self, path: Path) -> torch.Tensor:
        from toonlab.io import read_image

        return read_image(path).rgb

    def _load_group(self, files: list[Path], side: dict[str, list[Path]], idx: int):
        """Read ``files[idx]`` and its prepared side files, moving on to the next index when one is unreadable.
        Returns (index used, image (3,H,W) [0,1], {key: side (3,H,W) [0,1]}, skipped count)."""
        skipped = 0
        for _ in range(len(files)):
            try:
                img = self._read(files[idx])
                sides = {k: resize_to(self._read(paths[idx]), tuple(img.shape[-2:])) for k, paths in side.items()}
                return idx, img, sides, skipped
            except (ToonlabError, OSError, ValueError) as e:
                skipped += 1
                if files[idx] not in self._warned:
                    self._warned.add(files[idx])
                    print(f"warning: skipping unreadable training image: {str(e).splitlines()[0]}", file=sys.stderr)
                idx = (idx + 1) % len(files)
        raise ToonlabError(f"no readable image among {len(files)} files (first: {files[0]})")

    # -- on-the-fly side inputs (after cropping, on (1,3,S,S) [0,1]) ---------------------------------------
    def _side_from_cartoon(self, key: str, cartoon: torch.Tensor) -> torch.Tensor:
        import toonlab.ops as ops

        x = cartoon[None]
        if key == "smooth":
            return ops.edge_smooth(x)[0]
        if key == "guided":  # self-guided filter on [-1, 1] (PAPERS §2 eq 1, CTSS step 1 values by default)
            return ((ops.self_guided_filter(to_signed(x), self.guided_radius, self.guided_eps) + 1) / 2)[0]
        if key == "gray":
            return ops.rgb_to_gray(x).repeat(1, 3, 1, 1)[0]
        raise KeyError(key)

    def _saliency(self, photo: torch.Tensor) -> torch.Tensor:
        try:
            from toonlab.data.saliency import mbd_saliency
        except ImportError:
            raise UsageError("the model needs saliency maps: set data.saliency to a prepared folder "
                             "(toonlab.data.saliency is not available)") from None
        hwc = (photo.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        sal = mbd_saliency(hwc)
        return torch.as_tensor(np.asarray(sal), dtype=torch.float32)[None]

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        p_idx, c_idx, pos = key
        rng = np.random.default_rng([self.seed, 2, int(pos)])
        prep = self.src.prepared
        photo_side = {k: prep[k] for k in PHOTO_SIDES if k in prep and k in self.requires}
        cartoon_side = {k: prep[k] for k in CARTOON_SIDES if k in prep and k in self.requires}
        _, photo, p_sides, skip_p = self._load_group(self.src.photos, photo_side, p_idx)
        c_idx, cartoon, c_sides, skip_c = self._load_group(self.src.cartoons, cartoon_side, c_idx)

        def geometry(img):
            return CropFlip.draw(tuple(img.shape[-2:]), self.size, self.resize, self.crop, self.flip, rng)

        g_photo, g_cartoon = geometry(photo), geometry(cartoon)
        photo = g_photo(photo)
        cartoon = g_cartoon(cartoon)
        out = {"photo": to_signed(photo), "cartoon": to_signed(cartoon)}
        for key in CARTOON_SIDES:
            if key in self.requires:
                side = g_cartoon(c_sides[key]) if key in c_sides else self._side_from_cartoon(key, cartoon)
                out[key] = to_signed(side.clamp(0, 1))
        if "saliency" in self.requires:
            out["saliency"] = (g_photo(p_sides["saliency"])[:1] if "saliency" in p_sides
                               else self._saliency(photo)).clamp(0, 1)
        if self.src.cartoon_styles is not None:
            out["style"] = torch.tensor(self.src.cartoon_styles[c_idx], dtype=torch.int64)
        out["_skipped"] = torch.tensor(skip_p + skip_c, dtype=torch.int64)
        return out


@functools.lru_cache(maxsize=8)
def _permutation(seed: int, stream: int, block: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, block]).permutation(n)


class StreamSampler(Sampler):
    """Infinite sampler of keys ``(photo_idx, cartoon_idx, pos)`` for global positions ``start + rank``,
    ``start + rank + world``, … (DistributedSampler's interleaving without its padding). Photos follow one
    permutation per epoch; cartoons one permutation per pass over the cartoons, independently."""

    def __init__(self, n_photos: int, n_cartoons: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world: int = 1):
        self.n_photos, self.n_cartoons, self.seed = n_photos, n_cartoons, seed
        self.start, self.rank, self.world = start, rank, world

    def key(self, pos: int) -> tuple[int, int, int]:
        epoch, i = divmod(pos, self.n_photos)
        block, j = divmod(pos, self.n_cartoons)
        return (int(_permutation(self.seed, 0, epoch, self.n_photos)[i]),
                int(_permutation(self.seed, 1, block, self.n_cartoons)[j]), pos)

    def __iter__(self):
        pos = self.start + self.rank
        while True:
            yield self.key(pos)
            pos += self.world


def _worker_init(_):
    torch.set_num_threads(1)  # workers run OpenCV/torch ops per sample; one thread each avoids oversubscription


def make_loader(dataset: UnpairedDataset, sampler: StreamSampler, batch_size: int, workers: int,
                pin_memory: bool) -> DataLoader:
    # a private generator: creating the iterator must not draw from the global torch RNG (exact resume);
    # samples get their randomness from their stream position, not from worker seeds
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=workers > 0,
                      worker_init_fn=_worker_init if workers > 0 else None,
                      generator=torch.Generator().manual_seed(sampler.seed))


def load_val_photos(paths: list[Path], size: int, multiple: int) -> torch.Tensor:
    """(N,3,S,S) [0,1] centre crops of the readable ``paths`` (unreadable ones skipped with a warning)."""
    from toonlab.io import read_image

    out = []
    for p in paths:
        try:
            out.append(center_square(read_image(p).rgb, size, multiple))
        except (ToonlabError, OSError, ValueError) as e:
            print(f"warning: skipping validation image: {str(e).splitlines()[0]}", file=sys.stderr)
    if not out:
        return torch.zeros(0, 3, size, size)
    return torch.stack(out)
