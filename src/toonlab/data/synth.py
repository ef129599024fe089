"""SynthToon: a procedural unpaired photo/cartoon dataset with ground truth for the test split.

A *scene* is a sky/ground split (a possibly slanted horizon) plus a few random shapes (circles, ellipses, rotated
rectangles, polygons) with base colours. It renders two ways:

- ``cartoon``: flat colours and dark anti-aliased outlines along every shape border and the horizon;
- ``photo``: the same geometry and base colours, lit by a global light gradient and per-shape shading, textured by
  per-shape noise patterns, then optically blurred and given sensor noise; no outlines.

``make_synthtoon`` writes ``train/photos`` and ``train/cartoons`` from *different* scenes (unpaired), and
``test/photos`` + ``test/cartoons`` as renderings of the *same* scenes under the same file names, so a translator's
output can be scored against the true cartoon. Everything is deterministic from the seed (PNG bytes included).

With ``styles`` (for multi-style models) the cartoons go to one sub-folder per style name (``train/cartoons/<style>/``,
``test/cartoons/<style>/``); style i of n draws with its own palette (hue turned by i/n of the circle; every other
style pastel: less saturated, lighter) and its own line weight (1 + i mod 3 times the base width), so a
multi-style model has something to separate.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from toonlab.errors import ToonlabError, UsageError

SYNTH_FORMAT = "synthtoon/1"
KINDS = ("photo", "cartoon")
_SHIFT = 4  # cv2 sub-pixel drawing: coordinates carry 4 fractional bits (×16)
_SHAPE_KINDS = ("circle", "ellipse", "rect", "polygon")


def _scene_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit scene seed, independent across (seed, stream, index)."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(2, np.uint32).astype(np.uint64)
               .dot(np.array([1 << 31, 1], np.uint64)))


def _bright_colour(rng: np.random.Generator) -> list[int]:
    """A saturated RGB colour with luminance ≥ 90, so that dark outlines stand out from every fill."""
    while True:
        hsv = np.array([[[rng.integers(0, 180), rng.integers(90, 256), rng.integers(150, 256)]]], np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
        if rgb @ np.array([0.299, 0.587, 0.114]) >= 90:
            return [int(c) for c in rgb]


def random_scene(seed: int, size: int) -> dict:
    """A JSON-serialisable scene for a ``size``×``size`` image: horizon, sky/ground colours, 2–6 shapes
    (each a closed polygon in float pixel coordinates, with a base colour) and the photo's lighting parameters."""
    if size < 16:
        raise UsageError(f"synth: size must be >= 16 (got {size})")
    rng = np.random.default_rng(seed)
    s = float(size)
    horizon = (rng.uniform(0.3, 0.7, 2) * s).tolist()  # y at x=0 and at x=size
    shapes = []
    for _ in range(int(rng.integers(2, 7))):
        kind = _SHAPE_KINDS[int(rng.integers(len(_SHAPE_KINDS)))]
        cx, cy = rng.uniform(0.1, 0.9, 2) * s
        r = rng.uniform(0.08, 0.25) * s
        if kind == "circle":
            pts = cv2.ellipse2Poly((0, 0), (1000, 1000), 0, 0, 360, 4).astype(np.float64) / 1000 * r
        elif kind == "ellipse":
            ax = (1000, int(1000 * rng.uniform(0.35, 0.8)))
            pts = cv2.ellipse2Poly((0, 0), ax, int(rng.integers(180)), 0, 360, 4).astype(np.float64) / 1000 * r
        elif kind == "rect":
            w, h = rng.uniform(0.7, 1.6, 2) * r
            pts = cv2.boxPoints(((0.0, 0.0), (float(w), float(h)), float(rng.uniform(0, 90)))).astype(np.float64)
        else:  # star-shaped random polygon: sorted angles, random radii
            k = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.5, 1.0, k)
            pts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
        shapes.append({"kind": kind, "points": (pts + [cx, cy]).round(3).tolist(), "color": _bright_colour(rng)})
    return {
        "size": size,
        "seed": int(seed),
        "horizon": [round(v, 3) for v in horizon],
        "sky": _bright_colour(rng),
        "ground": _bright_colour(rng),
        "shapes": shapes,
        # photo only: light direction (radians) and strength of the global gradient
        "light": {"angle": float(rng.uniform(0, 2 * np.pi)), "strength": float(rng.uniform(0.1, 0.3))},
    }


def _polygons(scene: dict) -> list[np.ndarray]:
    """Region polygons in painting order (ground first, then shapes), as int32 ×16 for cv2's shift=4."""
    s = scene["size"]
    yl, yr = scene["horizon"]
    ground = np.array([[0, yl], [s, yr], [s, s + 1], [0, s + 1]], np.float64)
    polys = [ground] + [np.asarray(sh["points"], np.float64) for sh in scene["shapes"]]
    return [np.round(p * (1 << _SHIFT)).astype(np.int32) for p in polys]


def label_map(scene: dict) -> np.ndarray:
    """(H,W) uint8 region ids: 0 sky, 1 ground, 2+i shape i (later shapes cover earlier ones)."""
    s = scene["size"]
    labels = np.zeros((s, s), np.uint8)
    for i, poly in enumerate(_polygons(scene), start=1):
        cv2.fillPoly(labels, [poly], i, cv2.LINE_8, _SHIFT)
    return labels


def _flat(scene: dict) -> np.ndarray:
    """The flat-colour fill, anti-aliased, HWC uint8."""
    s = scene["size"]
    img = np.empty((s, s, 3), np.uint8)
    img[:] = scene["sky"]
    colours = [scene["ground"]] + [sh["color"] for sh in scene["shapes"]]
    for poly, col in zip(_polygons(scene), colours):
        cv2.fillPoly(img, [poly], tuple(col), cv2.LINE_AA, _SHIFT)
    return img


def outline_width(size: int) -> int:
    """Outline thickness in pixels: 1 at 64², 3 at 256² (our choice: about CartoonGAN-film line weight)."""
    return max(1, round(size / 96))


def style_params(index: int, count: int) -> dict:
    """Drawing parameters of style ``index`` of ``count``: hue turn (OpenCV units, 0–179), saturation and value
    gains, line-weight factor. Our choice: hues spread evenly round the circle, every other style pastel, line
    weights cycling 1×, 2×, 3× — distinct at a glance and in colour statistics."""
    if not 0 <= index < count:
        raise UsageError(f"synth: style index {index} out of range for {count} styles")
    pastel = index % 2 == 1
    return {"hue": round(180 * index / count) % 180, "sat": 0.45 if pastel else 1.0, "val": 1.15 if pastel else 1.0,
            "line": 1 + index % 3}


def _styled(colour: list[int], style: dict | None) -> tuple[int, int, int]:
    """An RGB fill colour through a style's palette (hue turn, saturation and value gains)."""
    if style is None:
        return tuple(colour)
    hsv = cv2.cvtColor(np.array([[colour]], np.uint8), cv2.COLOR_RGB2HSV)[0, 0].astype(np.float64)
    hsv = [(hsv[0] + style["hue"]) % 180, min(255.0, hsv[1] * style["sat"]), min(255.0, hsv[2] * style["val"])]
    rgb = cv2.cvtColor(np.array([[hsv]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(c) for c in rgb)


def _cartoon(scene: dict, style: dict | None = None) -> np.ndarray:
    """Flat fills painted back to front, each followed by its dark outline, so a shape in front hides the
    outlines it covers (as in a cel drawing). ``style`` (see :func:`style_params`) recolours and reweights."""
    s = scene["size"]
    t = outline_width(s) * (style["line"] if style else 1)
    dark = (24, 20, 28)  # near-black ink, slightly blue like cel outlines
    img = np.empty((s, s, 3), np.uint8)
    img[:] = _styled(scene["sky"], style)
    polys = _polygons(scene)
    cv2.fillPoly(img, [polys[0]], _styled(scene["ground"], style), cv2.LINE_AA, _SHIFT)
    yl, yr = np.round(np.asarray(scene["horizon"]) * (1 << _SHIFT)).astype(int)
    cv2.line(img, (0, int(yl)), (s << _SHIFT, int(yr)), dark, t, cv2.LINE_AA, _SHIFT)
    for poly, sh in zip(polys[1:], scene["shapes"]):
        cv2.fillPoly(img, [poly], _styled(sh["color"], style), cv2.LINE_AA, _SHIFT)
        cv2.polylines(img, [poly], True, dark, t, cv2.LINE_AA, _SHIFT)
    return img


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std value noise: a cells×cells random grid upsampled bicubically to size×size."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _photo(scene: dict) -> np.ndarray:
    s = scene["size"]
    rng = np.random.default_rng([scene["seed"], 1])  # photo-only randomness, still a function of the scene
    base = _flat(scene).astype(np.float32) / 255.0
    labels = label_map(scene)
    n_regions = len(scene["shapes"]) + 2
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5  # [-0.5, 0.5)
    # lighting: a global linear gradient along the light direction plus per-region shading across each region
    a, k = scene["light"]["angle"], scene["light"]["strength"]
    light = 1.0 + 2 * k * (np.cos(a) * xx + np.sin(a) * yy)
    shade_dir = rng.uniform(0, 2 * np.pi, n_regions).astype(np.float32)
    shade_amp = rng.uniform(0.1, 0.35, n_regions).astype(np.float32)
    light *= 1.0 + shade_amp[labels] * (np.cos(shade_dir)[labels] * xx + np.sin(shade_dir)[labels] * yy) * 2
    # texture: each region mixes a fine and a coarse noise pattern with its own amplitudes
    fine = _smooth_noise(rng, s, max(4, s // 3))
    coarse = _smooth_noise(rng, s, max(2, s // 12))
    amp_fine = rng.uniform(0.03, 0.12, n_regions).astype(np.float32)
    amp_coarse = rng.uniform(0.03, 0.12, n_regions).astype(np.float32)
    texture = 1.0 + amp_fine[labels] * fine + amp_coarse[labels] * coarse
    img = base * (light * texture)[..., None]
    # optics then sensor: defocus blur, then per-pixel Gaussian noise
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.0)) * s / 96)
    img += rng.normal(0.0, rng.uniform(0.01, 0.025), img.shape).astype(np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_scene(scene: dict, kind: str, style: dict | None = None) -> np.ndarray:
    """Render ``scene`` as ``kind`` ("photo" | "cartoon", the latter in ``style``) → (S,S,3) uint8 RGB."""
    if kind == "cartoon":
        return _cartoon(scene, style)
    if kind == "photo":
        return _photo(scene)
    raise UsageError(f"synth: unknown rendering kind {kind!r} (expected one of {', '.join(KINDS)})")


def _render_job(job: tuple) -> str:
    """Worker: (output path, scene seed, size, kind[, style params]) → writes the PNG; returns the path."""
    from toonlab.data.prepare.common import write_image_atomic

    path, scene_seed, size, kind, *style = job
    write_image_atomic(path, render_scene(random_scene(scene_seed, size), kind, *style))
    return path


def parse_styles(text: str | None) -> list[str]:
    """``"hayao,shinkai"`` → ["hayao", "shinkai"]; UsageError for empty, duplicate (up to case) or path-like
    names."""
    if text is None:
        return []
    names = [t.strip() for t in text.split(",")]
    bad = [t for t in names if not t or t in (".", "..") or any(c in t for c in "/\\")]
    if bad or not names:
        raise UsageError(f"synth: --styles needs comma-separated folder names (got {text!r})")
    if len({t.lower() for t in names}) != len(names):
        raise UsageError(f"synth: --styles names must differ (up to case), got {text!r}")
    return names


def make_synthtoon(out: str | Path, n: int, size: int = 64, seed: int = 0, *, n_test: int | None = None,
                   styles: list[str] | tuple[str, ...] | None = None, overwrite: bool = False, workers: int = 1,
                   progress: bool = False) -> Path:
    """Write a SynthToon dataset to ``out`` and return ``out``.

    ``n`` train photos and ``n`` train cartoons (from different scenes), ``n_test`` test scenes (default
    ``max(8, n // 4)``) rendered as ``test/photos/NAME.png`` and ``test/cartoons/NAME.png``, and ``manifest.json``
    (format, seed, size, counts, the scene seed of every file). With ``styles``: ``n`` train cartoons per style in
    ``train/cartoons/<style>/`` (each style from its own scenes) and the test scenes in ``test/cartoons/<style>/``.
    Existing images are kept (a rerun finishes an interrupted one) unless ``overwrite``; a manifest from
    different settings is an error unless ``overwrite``.
    """
    out = Path(out)
    if n < 1 or size < 16:
        raise UsageError(f"synth: need n >= 1 and size >= 16 (got n={n}, size={size})")
    n_test = max(8, n // 4) if n_test is None else n_test
    if n_test < 1:
        raise UsageError(f"synth: n_test must be >= 1 (got {n_test})")
    styles = parse_styles(",".join(styles)) if styles else []
    settings = {"format": SYNTH_FORMAT, "seed": int(seed), "size": int(size), "n": int(n), "n_test": int(n_test)}
    if styles:  # (absent without styles: manifests written before styles existed stay valid)
        settings["styles"] = styles
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not overwrite:
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = {}
        if {k: old.get(k) for k in (*settings, "styles")} != {"styles": None, **settings}:
            raise ToonlabError(f"{manifest_path}: a SynthToon set with other settings exists here "
                               f"(use --overwrite or another folder)")
    width = len(str(max(n, n_test) - 1))
    files: dict[str, dict[str, int]] = {}
    jobs = []

    def add(sub: str, name: str, scene_seed: int, kind: str, style: dict | None = None) -> None:
        files.setdefault(sub, {})[name] = scene_seed
        path = out / sub / name
        if overwrite or not path.exists():
            jobs.append((str(path), scene_seed, size, kind) + ((style,) if style else ()))

    # scene seeds come from separate streams per split: train photos and train cartoons never share a scene
    # (unpaired; with styles each style has its own stream, 3 + i), and each test scene is rendered every way
    cartoon_kinds = [("", 1, None)] if not styles else \
        [(f"/{name}", 3 + i, style_params(i, len(styles))) for i, name in enumerate(styles)]
    for i in range(n):
        add("train/photos", f"{i:0{width}d}.png", _scene_seed(seed, 0, i), "photo")
    for folder, stream, style in cartoon_kinds:
        for i in range(n):
            add(f"train/cartoons{folder}", f"{i:0{width}d}.png", _scene_seed(seed, stream, i), "cartoon", style)
    for i in range(n_test):
        scene_seed, name = _scene_seed(seed, 2, i), f"{i:0{width}d}.png"
        add("test/photos", name, scene_seed, "photo")
        for folder, _, style in cartoon_kinds:
            add(f"test/cartoons{folder}", name, scene_seed, "cartoon", style)
    from toonlab.data.prepare.common import atomic_write_bytes, run_jobs, split_failures

    _, failed = split_failures(run_jobs(_render_job, jobs, workers=workers, progress=progress, desc="synth"))
    if failed:
        raise ToonlabError(f"synth: {len(failed)} images could not be written, e.g. {failed[0][0]}: {failed[0][1]}")
    manifest = dict(settings, scenes=files)
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return out
