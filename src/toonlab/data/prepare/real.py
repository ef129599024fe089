"""``prepare real``: a small real photo → cartoon set from installed Debian packages and scikit-image's sample
photos, with a ``LICENSES.csv`` manifest (file, source package, source file, licence, author).

Sources (each used when installed; ``root`` stands for ``/`` so tests can point at a fake tree):

- photos: ``lomiri-wallpapers-16.04`` (``/usr/share/backgrounds``), ``plasma-workspace-wallpapers``
  (``/usr/share/wallpapers/<Name>/contents/images``, the largest size of each), ``mate-backgrounds``
  (``/usr/share/backgrounds/mate/nature``), and scikit-image's bundled photos;
- cartoons: ``supertux-data`` backgrounds (``/usr/share/games/supertux2/images/background``), opaque ones only
  (the others are parallax layers with holes).

Only files on the allow-lists below are used: we looked at every wallpaper and kept the photographs (abstract
and rendered ones left out). Licence and author come from the package's Debian ``copyright`` file (DEP-5: the
last stanza whose ``Files`` pattern matches wins), for Plasma from the wallpaper's own ``metadata.json`` (its
upstream licence, more specific than Debian's blanket ``Files: *``), for scikit-image from its docstrings.

Each source image gives ``crops`` random square crops (seeded per file): the image is scaled so its short side is
a random length in [size, max_scale·size] (never enlarged), then cut at a random offset. Crops that are too dark
or too flat (filters.QualityThresholds) are redrawn up to 4× then dropped; near duplicates (pHash within
``hash_threshold`` bits) are dropped. The train/test split is by *source image* (split.split_position of the
source id), so no picture has crops on both sides.

Layout: ``OUT/{train,test}/{photos,cartoons}/*.png``, ``OUT/LICENSES.csv``, ``OUT/manifest.json``.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from toonlab.data.prepare.common import PrepareSummary, atomic_write_bytes, write_image_atomic
from toonlab.data.prepare.dedupe import HashIndex, phash
from toonlab.data.prepare.filters import QualityThresholds, quality, reject_reason
from toonlab.data.prepare.split import split_position
from toonlab.errors import ToonlabError, UsageError

REAL_FORMAT = "toonlab-real/1"
LICENSE_COLUMNS = ("file", "source_package", "source_file", "licence", "author", "licence_source")

LOMIRI = "lomiri-wallpapers-16.04"
PLASMA = "plasma-workspace-wallpapers"
MATE = "mate-backgrounds"
SUPERTUX = "supertux-data"
SKIMAGE = "scikit-image"

# Photographs among each package's wallpapers (checked by eye; abstract, rendered and logo images left out).
LOMIRI_PHOTOS = ("Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
                 "Picture_1A_by_freespace.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
                 "friends_by_Aitzol_Berasategi.jpg", "life_by_Aitzol_Berasategi.jpg",
                 "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
                 "sunset_by_Aitzol_Berasategi.jpg")
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                 "Kite", "OneStandsOut", "Path", "summer_1am")
MATE_PHOTOS = ("Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
               "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg")
# supertux backgrounds that are technical textures, not scenes
SUPERTUX_SKIP = ("misc/black_800px.png", "misc/grid.png", "misc/heatshimmer-displacement.png")
# scikit-image's bundled colour photographs whose docstrings state the licence: name → (licence, author)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class RealConfig:
    """Settings of ``prepare real`` (all our choices; the papers' sets are not redistributable)."""

    size: int = 128
    crops: int = 8           # random crops per source image
    max_scale: float = 2.0   # short side scaled to a random length in [size, max_scale·size]
    test: float = 0.2        # fraction of source images held out
    seed: int = 0
    hash_threshold: int = 6  # pHash bits: crops this close to a kept one are duplicates
    # dark / flat crops are redrawn; no sharpness rule (bokeh photos and flat cartoons are wanted)
    quality: QualityThresholds = field(default_factory=lambda: QualityThresholds(min_luma=20.0, min_std=12.0,
                                                                                 min_sharpness=0.0))


@dataclass
class SourceImage:
    """One picture: where it is, its domain ("photo" | "cartoon"), and its provenance."""

    path: Path | None  # None for scikit-image photos (loaded by name)
    domain: str
    package: str
    source_file: str
    licence: str
    author: str
    licence_source: str
    name: str = ""  # scikit-image loader name
    label: str = ""  # short unique name within the package, used in the crops' file names


# ----------------------------------------------------------------------------------------------- DEP-5 copyright

def parse_dep5(text: str) -> list[dict[str, str]]:
    """Stanzas of a machine-readable Debian copyright file: field → value (continuation lines joined by "\\n")."""
    stanzas, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key is not None:
            cur[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def _pattern_matches(pattern: str, rel: str) -> bool:
    # DEP-5 patterns name paths in the *source* package; installed paths differ in their leading folders
    # (16.04/X.jpg is installed as /usr/share/backgrounds/X.jpg), so a pattern matches any tail of the path,
    # and a pattern whose last part is a plain file name matches that file name.
    parts = rel.split("/")
    if any(fnmatch.fnmatchcase("/".join(parts[-k:]), pattern) for k in range(1, len(parts) + 1)):
        return True
    last = pattern.rsplit("/", 1)[-1]
    return "/" in pattern and not any(c in last for c in "*?[") and last == parts[-1]


def _holders(copyright_field: str) -> str:
    """"2008, Charles Barbin <x@y>\\n2008, Hylke Bons" → "Charles Barbin; Hylke Bons" (years, e-mails, URLs,
    quotes dropped; more than three holders → the first and "et al.")."""
    names = []
    for line in copyright_field.splitlines():
        s = re.sub(r"<[^>]*>|https?://\S+", "", line)
        s = re.sub(r"\b\d{4}(\s*-\s*\d{4})?\b[.,]?", "", s)
        s = s.replace('"', "").strip(" ,.´'")
        if s:
            names.append(s)
    return "; ".join(names) if len(names) <= 3 else f"{names[0]} et al."


def licence_for(stanzas: list[dict[str, str]], rel: str) -> tuple[str, str] | None:
    """(licence short name, holders) of the last stanza whose ``Files`` match ``rel``; None when none does."""
    hit = None
    for st in stanzas:
        if "files" in st and any(_pattern_matches(p, rel) for p in st["files"].split()):
            hit = st
    if hit is None:
        return None
    return hit.get("license", "").splitlines()[0].strip() if hit.get("license") else "unknown", \
        _holders(hit.get("copyright", ""))


def _author_from_name(name: str) -> str:
    """Lomiri's ``title_by_First_Last.jpg`` → "First Last" (the fallback when the copyright file is silent)."""
    m = re.search(r"_by_+(.+)$", Path(name).stem)
    return m.group(1).replace("_", " ").strip() if m else ""


# ----------------------------------------------------------------------------------------------- discovery

def _copyright(root: Path, package: str) -> tuple[list[dict[str, str]], str] | None:
    path = root / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return None  # not installed (dpkg always installs it)
    return parse_dep5(path.read_text(errors="replace")), f"/usr/share/doc/{package}/copyright"


def _from_package(root: Path, package: str, files: list[Path], domain: str) -> list[SourceImage]:
    meta = _copyright(root, package)
    if meta is None:
        return []
    stanzas, where = meta
    out = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        lic = licence_for(stanzas, rel) or ("unknown", "")
        author = lic[1] or _author_from_name(f.name)
        out.append(SourceImage(f, domain, package, "/" + rel, lic[0], author, where, label=f.stem))
    return out


def _plasma(root: Path) -> list[SourceImage]:
    base = root / "usr/share/wallpapers"
    found = []
    for name in PLASMA_PHOTOS:
        imgs = [p for p in (base / name / "contents/images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        if not imgs:
            continue
        largest = max(imgs, key=lambda p: (_pixels(p.stem), p.name))  # files are named WxH
        found.append(largest)
    out = _from_package(root, PLASMA, found, "photo")
    for s in out:  # the wallpaper's own metadata names its author and upstream licence
        s.label = s.path.parents[2].name  # the file is just "WxH"
        meta = s.path.parents[2] / "metadata.json"
        try:
            plugin = json.loads(meta.read_text()).get("KPlugin", {})
        except (OSError, ValueError):
            continue
        if plugin.get("License"):
            s.licence = plugin["License"]
            s.licence_source = "/" + meta.relative_to(root).as_posix()
        authors = [a.get("Name", "") for a in plugin.get("Authors", []) if a.get("Name")]
        if authors:
            s.author = "; ".join(authors)
    return out


def _pixels(stem: str) -> int:
    m = re.fullmatch(r"(\d+)x(\d+)", stem)
    return int(m.group(1)) * int(m.group(2)) if m else 0


def _supertux(root: Path) -> list[SourceImage]:
    base = root / "usr/share/games/supertux2/images/background"
    files = []
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base).as_posix()
        if p.suffix.lower() not in IMAGE_SUFFIXES or rel in SUPERTUX_SKIP:
            continue
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            continue
        if img.ndim == 3 and img.shape[2] == 4 and (img[..., 3] == 255).mean() < 0.99:
            continue  # a parallax layer with transparent holes, not a picture
        files.append(p)
    out = _from_package(root, SUPERTUX, files, "cartoon")
    for s in out:  # christmas/intro.jpg and halloween/intro.jpg both exist
        s.label = f"{s.path.parent.name}-{s.path.stem}"
    return out


def _skimage() -> list[SourceImage]:
    """scikit-image's sample photos, from the copies toonlab ships (:mod:`toonlab.photos`)."""
    from toonlab import photos

    return [SourceImage(None, "photo", SKIMAGE, f"skimage.data.{name}()", lic, author,
                        f"skimage.data.{name}.__doc__ (copy shipped as toonlab/photos/{name}.jpg)", name=name,
                        label=name)
            for name, (lic, author) in photos.LICENSES.items()]


def discover(root: str | Path = "/", *, include_skimage: bool = True) -> list[SourceImage]:
    """Every source image found under ``root`` (plus scikit-image's photos), sorted by package and file."""
    root = Path(root)
    lomiri = [root / "usr/share/backgrounds" / n for n in LOMIRI_PHOTOS]
    mate = [root / "usr/share/backgrounds/mate/nature" / n for n in MATE_PHOTOS]
    found = (_from_package(root, LOMIRI, [p for p in lomiri if p.is_file()], "photo")
             + _plasma(root)
             + _from_package(root, MATE, [p for p in mate if p.is_file()], "photo")
             + _supertux(root)
             + (_skimage() if include_skimage else []))
    return sorted(found, key=lambda s: (s.domain, s.package, s.source_file))


# ----------------------------------------------------------------------------------------------- crops

def _load(src: SourceImage) -> np.ndarray:
    if src.path is None:
        from toonlab import photos

        return photos.load(src.name)
    from toonlab.data.prepare.images import read_rgb

    return read_rgb(src.path)


def random_crops(rgb: np.ndarray, cfg: RealConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to ``cfg.crops`` random ``size``² crops of an HWC uint8 image that pass the quality rules (each crop
    redrawn up to 4× when too dark / flat). Images smaller than ``size`` give none."""
    size, cap = cfg.size, max(cfg.size, round(cfg.max_scale * cfg.size))
    if min(rgb.shape[:2]) < size:
        return []
    if min(rgb.shape[:2]) > cap:  # shrink once to the largest scale drawn (a 5K wallpaper per crop is slow)
        f = cap / min(rgb.shape[:2])
        rgb = cv2.resize(rgb, (max(cap, round(rgb.shape[1] * f)), max(cap, round(rgb.shape[0] * f))),
                         interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    short = min(h, w)
    out = []
    for _ in range(cfg.crops):
        for _attempt in range(4):
            target = int(rng.integers(size, short + 1))
            scale = target / short
            img = rgb if target == short else cv2.resize(rgb, (max(size, round(w * scale)),
                                                              max(size, round(h * scale))),
                                                         interpolation=cv2.INTER_AREA)
            y = int(rng.integers(0, img.shape[0] - size + 1))
            x = int(rng.integers(0, img.shape[1] - size + 1))
            crop = np.ascontiguousarray(img[y: y + size, x: x + size])
            if reject_reason(quality(crop), cfg.quality) is None:
                out.append(crop)
                break
    return out


def source_id(src: SourceImage) -> str:
    """A stable id of a source image (package + file): names its crops, seeds them and decides its split."""
    return f"{src.package}:{src.source_file}"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-")[:60]


def prepare_real(out: str | Path, cfg: RealConfig = RealConfig(), *, root: str | Path = "/",
                 include_skimage: bool = True, overwrite: bool = False) -> PrepareSummary:
    """Build the set in ``out`` (see the module docstring). Refuses a non-empty ``out`` unless ``overwrite``;
    raises UsageError when no photo or no cartoon source is installed (naming the packages to install)."""
    if cfg.size < 16 or cfg.crops < 1 or not 0.0 <= cfg.test < 1.0 or cfg.max_scale < 1.0:
        raise UsageError(f"real: need size >= 16, crops >= 1, 0 <= test < 1, max_scale >= 1 (got size={cfg.size}, "
                         f"crops={cfg.crops}, test={cfg.test}, max_scale={cfg.max_scale})")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} is not empty (use --overwrite to rebuild it)")
    sources = discover(root, include_skimage=include_skimage)
    if len({(s.package, _slug(s.label)) for s in sources}) != len(sources):
        raise ToonlabError("real: two source images would share crop names")  # a new package layout
    domains = {s.domain for s in sources}
    if "photo" not in domains or "cartoon" not in domains:
        raise UsageError(f"real: no {'photo' if 'photo' not in domains else 'cartoon'} sources installed: "
                         f"apt-get install {LOMIRI} {PLASMA} {MATE} {SUPERTUX}")
    if overwrite and out.exists():
        for sub in ("train", "test"):
            for d in ("photos", "cartoons"):
                for p in (out / sub / d).glob("*.png"):
                    p.unlink()
    rows, counts, per_source = [], {}, []
    seen = {"photo": HashIndex(cfg.hash_threshold), "cartoon": HashIndex(cfg.hash_threshold)}
    failed = []
    for src in sources:
        sid = source_id(src)
        side = "test" if split_position(sid, cfg.seed) < cfg.test else "train"
        rng = np.random.default_rng([cfg.seed, zlib.crc32(sid.encode())])
        try:
            crops = random_crops(_load(src), cfg, rng)
        except Exception as e:  # an unreadable file is reported, the others still go in
            failed.append((src.source_file, str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        kept = dupes = 0
        folder = f"{side}/{'photos' if src.domain == 'photo' else 'cartoons'}"
        for k, crop in enumerate(crops):
            if not seen[src.domain].add_if_new(phash(crop)):
                dupes += 1
                continue
            name = f"{folder}/{_slug(src.package)}--{_slug(src.label)}--{k:02d}.png"
            write_image_atomic(out / name, crop)
            rows.append({"file": name, "source_package": src.package, "source_file": src.source_file,
                         "licence": src.licence, "author": src.author, "licence_source": src.licence_source})
            kept += 1
        key = f"{side}/{src.domain}"
        counts[key] = counts.get(key, 0) + kept
        per_source.append({"source": sid, "split": side, "domain": src.domain, "crops": kept,
                           "dropped_quality": cfg.crops - len(crops), "dropped_duplicate": dupes})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LICENSE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["file"]))
    atomic_write_bytes(out / "LICENSES.csv", buf.getvalue().encode())
    manifest = {"format": REAL_FORMAT, "config": asdict(cfg), "counts": counts,
                "packages": sorted({s.package for s in sources}), "sources": per_source}
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return PrepareSummary(done=len(rows), failed=failed, extra=dict(sorted(counts.items())))
