"""The learning-free cartoonizer: the "image abstraction" baseline of the papers and the default of
``toonlab cartoonize`` (no weights, no download).

Pipeline (in the spirit of Winnemöller et al. 2006, "Real-time video abstraction", with the guided filter of
He et al. 2010 as the edge-preserving smoother):

1. **Smoothing** — ``iterations`` rounds of the self-guided filter (each channel guided by itself, radius
   ``radius``, regulariser ``eps``). Our choice, for speed: the rounds run at a *working resolution* (short side
   ``work_size``), and, as in the fast guided filter (He & Sun 2015), only the linear coefficients (A, B) are brought
   back to full size — the rounds compose into one affine map per pixel, q = A·I + B, applied to the full-resolution
   photo I, so region boundaries stay as sharp as the input's.
   Thin high-contrast structures (lattices, railings, wires) that the smoothing would dissolve are kept: where
   the smoothed luminance is more than ``protect`` away from the photo's, the map blends to the identity.
2. **Colour quantisation** — luminance Y (BT.601) snapped to ``levels`` flat bands with soft steps (``sharpness``),
   the chroma of the smoothed image kept and scaled by ``saturation``: out = Y_q + saturation · (q − Y). With
   ``adaptive_levels`` (default) the band centres are the Lloyd–Max quantiser of the image's luminance histogram
   (Lloyd 1982; Max 1960) instead of equal steps, so a wide gradient sky gets several narrow bands rather than
   two large ones. The whole tone curve (bands, steps, offset) is one table looked up per pixel.
3. **Lines** — a difference of Gaussians (σ = ``line_sigma``, 1.6σ; XDoG's soft threshold, Winnemöller 2012) on
   the luminance after the first smoothing round, inked where it falls below −``line_threshold``, darkening by up
   to ``line_strength``; computed at the working resolution so lines keep the same relative width at any size.
4. **Mean luminance** — with ``keep_luminance`` (default) the tone curve is offset so that the cartoon's mean
   luminance equals the photo's (ink and band placement would otherwise darken it by 2–9 %); solved on the
   working-resolution image, whose mean an area resize keeps.

Every length (radius, line_sigma) is in working-resolution pixels; images smaller than ``work_size`` scale them
down, so the look does not depend on the photo's size.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from toonlab.errors import UsageError
from toonlab.ops import box_filter

# BT.601 luma weights (the rgb_to_gray of toonlab.ops).
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class ClassicConfig:
    """Knobs of the classic cartoonizer (lengths in pixels of the working resolution)."""

    work_size: int = 720          # short side of the working resolution (0 = work at full size)
    radius: int = 5               # guided-filter window radius
    eps: float = 0.004            # guided-filter regulariser, in squared [0,1] units: flattens texture below ~0.06
    iterations: int = 2           # rounds of self-guided filtering
    levels: int = 8               # luminance bands
    sharpness: float = 40.0       # tanh slope of the band steps, per band width; large = hard steps
    saturation: float = 1.35      # chroma gain (> 0; 1 = unchanged)
    line_strength: float = 0.85   # 0 = no lines, 1 = black lines
    line_sigma: float = 1.2       # inner Gaussian of the DoG
    line_threshold: float = 0.003  # DoG response (in [0,1] luminance) below which ink starts
    line_gain: float = 80.0       # XDoG φ: how fast ink saturates past the threshold
    adaptive_levels: bool = True  # band centres from the luminance histogram (Lloyd–Max); False: equal bands
    keep_luminance: bool = True   # offset the tone curve so the mean luminance is the photo's
    protect: float = 0.05         # keep the photo where smoothing moves luminance more than this (0 = off); our
    #                               choice: above photo noise/texture moves (≤ 0.015 on a sky, measured)

    def __post_init__(self):
        checks = {
            "work_size": self.work_size >= 0, "radius": self.radius >= 1, "eps": self.eps > 0,
            "iterations": self.iterations >= 0, "levels": self.levels >= 2, "sharpness": self.sharpness > 0,
            "saturation": self.saturation > 0, "line_strength": 0 <= self.line_strength <= 1,
            "line_sigma": self.line_sigma > 0, "line_threshold": self.line_threshold >= 0,
            "line_gain": self.line_gain > 0, "protect": 0 <= self.protect <= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"classic cartoonizer: invalid {bad[0]}={getattr(self, bad[0])!r}")


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) -> (B,1,H,W) BT.601 luminance (three one-channel passes, no 3-channel temporary)."""
    y = x[:, 0:1] * _LUMA[0]
    y.add_(x[:, 1:2], alpha=_LUMA[1])
    return y.add_(x[:, 2:3], alpha=_LUMA[2])


def _smoothing_coefficients(x: torch.Tensor, r: int, eps: float, iterations: int) -> tuple[torch.Tensor, ...]:
    """Rounds of the per-channel self-guided filter on x (B,3,h,w), composed into one affine map.

    Round k (He et al. 2010, eqs. 5, 6, 8 with I = p): a = σ²/(σ² + eps), b = (1 − a)·μ, x_k = mean(a)·x_{k-1} +
    mean(b). Composition: x_n = A·x_0 + B. Returns (A, B, x_1), each (B,3,h,w): x_1, the image after the first
    round, is what lines are drawn from (later rounds wash out thin structures such as railings or lattices).
    """
    a_tot = torch.ones_like(x)
    b_tot = torch.zeros_like(x)
    first = x
    for k in range(iterations):
        m = box_filter(torch.cat([x, x * x], 1), r)
        mean, var = m[:, :3], (m[:, 3:] - m[:, :3] ** 2).clamp_(min=0)
        a = var / (var + eps)
        b = (1 - a) * mean
        ab = box_filter(torch.cat([a, b], 1), r)
        a_k, b_k = ab[:, :3], ab[:, 3:]
        x = torch.addcmul(b_k, a_k, x)
        b_tot = torch.addcmul(b_k, a_k, b_tot)
        a_tot = a_tot * a_k
        if k == 0:
            first = x
    return a_tot, b_tot, first


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B,1,h,w), radius 3σ, replicate borders (works on any size)."""
    rad = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-rad, rad + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (rad, rad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, rad, rad), mode="replicate"), k.view(1, 1, -1, 1))


_MIN_LINE_SIGMA = 0.7  # on small images lines stay at least ~1 px wide instead of vanishing


def _ink(y: torch.Tensor, cfg: ClassicConfig, scale: float) -> torch.Tensor:
    """XDoG-style ink map in [0,1) from luminance y (B,1,h,w): 1 = full line, 0 = paper."""
    sigma = max(cfg.line_sigma * scale, _MIN_LINE_SIGMA)
    dog = _gaussian_blur(y, sigma) - _gaussian_blur(y, 1.6 * sigma)  # < 0 on the dark side of an edge
    return torch.tanh((-dog - cfg.line_threshold).clamp_(min=0) * cfg.line_gain)


_HIST_BINS = 256
_LLOYD_ROUNDS = 30
_TONE_ENTRIES = 8192  # tone-curve table: a band step (1/(levels·sharpness) ≈ 0.003 wide) spans ~25 entries


def _band_centres(y: torch.Tensor, levels: int, adaptive: bool) -> torch.Tensor:
    """``levels`` ascending band centres in [0,1] (float64, CPU) for the luminance y (any shape, [0,1]).

    Equal bands: (i + 0.5) / levels. Adaptive: the Lloyd–Max quantiser of y's 256-bin histogram (Lloyd 1982):
    starting from the histogram's (i + 0.5)/levels quantiles (every cell holds pixels, none starts stranded in
    an empty tone range), each round moves every centre to the mean of its cell, whose borders are the midpoints
    between centres. A centre whose cell is empty stays where it is, so the order is kept."""
    centres = (torch.arange(levels, dtype=torch.float64) + 0.5) / levels
    if not adaptive:
        return centres
    hist = torch.histc(y.detach().float().flatten(), bins=_HIST_BINS, min=0.0, max=1.0).double().cpu()
    v = (torch.arange(_HIST_BINS, dtype=torch.float64) + 0.5) / _HIST_BINS
    cdf = hist.cumsum(0)
    centres = v[torch.searchsorted(cdf, centres * cdf[-1]).clamp_(max=_HIST_BINS - 1)]
    for _ in range(_LLOYD_ROUNDS):
        cell = torch.bucketize(v, (centres[1:] + centres[:-1]) / 2)
        mass = torch.zeros(levels, dtype=torch.float64).index_add_(0, cell, hist)
        moment = torch.zeros(levels, dtype=torch.float64).index_add_(0, cell, hist * v)
        centres = torch.where(mass > 0, moment / mass.clamp(min=1e-12), centres)
    return centres


def _tone_curve(centres: torch.Tensor, sharpness: float, entries: int = _TONE_ENTRIES) -> torch.Tensor:
    """Soft quantisation (Winnemöller 2006, eq. 6, generalised to unequal bands) tabulated on ``entries`` equally
    spaced luminances in [0,1] -> (entries,) float64.

    q(y) = c_0 + Σ_i (c_{i+1} − c_i) · ½(1 + tanh((y − t_i) · sharpness / (c_{i+1} − c_i))), t_i = (c_i + c_{i+1})/2:
    flat at each centre c_i, a smooth step of slope ``sharpness`` per band width at each border (no aliasing).
    Mirror centres −c_0 and 2 − c_last add half steps at 0 and 1, so black stays black and white white (for equal
    bands this is exactly the eq. 6 quantiser)."""
    y = torch.linspace(0.0, 1.0, entries, dtype=torch.float64)
    c = torch.cat([-centres[:1], centres, 2 - centres[-1:]])
    gaps = (c[1:] - c[:-1]).clamp(min=1e-6)
    steps = torch.tanh((y[:, None] - (c[1:] + c[:-1]) / 2) * (sharpness / gaps)).add_(1).mul_(0.5)
    return c[0] + steps @ gaps


def _lookup(tables: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """tables (B,N), each sampled on [0,1], at y (B,...; clamped to [0,1]), linearly interpolated -> y's shape."""
    n = tables.shape[-1]
    pos = y.clamp(0.0, 1.0).mul_(n - 1)
    i = pos.long().clamp_(max=n - 2)
    frac = pos.sub_(i)
    if tables.shape[0] > 1:  # image b reads its own table
        i.add_((torch.arange(tables.shape[0], device=i.device) * n).view(-1, *[1] * (i.ndim - 1)))
    flat = tables.reshape(-1)
    lo = flat.take(i)
    return lo.add_(flat.take(i.add_(1)).sub_(lo).mul_(frac))


def _upsample_rows(low: torch.Tensor, i0: int, i1: int, size: tuple[int, int]) -> torch.Tensor:
    """Rows [i0, i1) of ``F.interpolate(low, size, mode="bilinear", align_corners=False)`` without making the
    full-size tensor: a lerp between two low-resolution rows along H, then interpolate along W only."""
    (h, w), hs = size, low.shape[-2]
    scale = hs / h
    src = ((torch.arange(i0, i1, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_(min=0)
    r0 = src.floor().long().clamp_(max=hs - 1)
    r1 = (r0 + 1).clamp_(max=hs - 1)
    weight = (src - r0).to(low.device, low.dtype).view(1, 1, -1, 1)  # indices computed on the CPU in float64
    r0, r1 = r0.to(low.device), r1.to(low.device)
    rows = torch.lerp(low.index_select(2, r0), low.index_select(2, r1), weight)
    return F.interpolate(rows, size=(i1 - i0, w), mode="bilinear", align_corners=False)


def _finish(x: torch.Tensor, ab: torch.Tensor, tone: torch.Tensor, cfg: ClassicConfig, out: torch.Tensor) -> None:
    """Assembly of one strip: x (B,3,n,W) photo rows; ab (B,6 or 7,n,W) = [sat·A, sat·B, ink?]; tone (B,N) the
    tone curves Y -> Y_q (one per image); writes the cartoon rows into ``out`` (B,3,n,W)."""
    s = torch.addcmul(ab[:, 3:6], ab[:, 0:3], x)  # sat·q, q = A·x + B (fast guided filter output)
    y_sat = _luma(s)
    d = _lookup(tone, y_sat / cfg.saturation).sub_(y_sat)  # out = Y_q + sat·(q − Y) = s + (Y_q − sat·Y)
    if ab.shape[1] == 7:
        m = ab[:, 6:7].mul(-cfg.line_strength).add_(1.0)  # ink darkens multiplicatively
        torch.addcmul(d.mul_(m), s, m, out=out)  # (s + d)·m in one pass over the 3 channels
    else:
        torch.add(s, d, out=out)
    out.clamp_(0.0, 1.0)


_STRIP_BYTES = 1 << 22  # full-resolution strips of ~4 MiB of coefficients: a strip's temporaries stay in cache


def _on_worker_threads(jobs: list[Callable[[], None]]) -> None:
    """Run independent jobs on torch.get_num_threads() Python threads, each job with ONE intra-op torch thread.

    Why: on a shared 2-core machine, intra-op (OpenMP) parallelism over many mid-sized ops spends most of its time
    at barriers waiting for a descheduled thread (measured 4–5× slower than one thread); independent jobs on
    threads (torch ops release the GIL) keep the cores busy without barriers. ``set_num_threads`` acts on the
    calling thread's OpenMP setting; the process default that new threads start from is restored afterwards.
    """
    workers = torch.get_num_threads()
    if workers == 1:
        for job in jobs:
            job()
        return
    inference = torch.is_inference_mode_enabled()  # thread-local: carry it over

    def run(job: Callable[[], None]) -> None:
        torch.set_num_threads(1)
        with torch.inference_mode(inference):
            job()

    try:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for future in [pool.submit(run, job) for job in jobs]:
                future.result()
    finally:
        torch.set_num_threads(workers)


def _coefficients(x: torch.Tensor, cfg: ClassicConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Working-resolution maps (B, 6|7, h', w') = [sat·A, sat·B, ink?] and the tone curves (B,N) for the photo x
    (B,3,H,W)."""
    h, w = x.shape[-2:]
    short = min(h, w)
    factor = short / cfg.work_size if cfg.work_size and short > cfg.work_size else 1.0
    scale = min(short, cfg.work_size) / cfg.work_size if cfg.work_size else 1.0  # lengths for small images
    small = x
    if factor > 1.0:
        small = F.interpolate(x, size=(max(1, round(h / factor)), max(1, round(w / factor))), mode="area")
    r = min(max(1, round(cfg.radius * scale)), min(small.shape[-2:]) - 1)
    a, b, line_src = _smoothing_coefficients(small, r, cfg.eps, cfg.iterations if r >= 1 else 0)
    y_in = _luma(small)
    if cfg.protect > 0:  # thin high-contrast structures: where smoothing moved Y by > protect, keep the photo
        moved = (_luma(torch.addcmul(b, a, small)) - y_in).abs_()
        keep = moved.sub_(cfg.protect).div_(cfg.protect).clamp_(0, 1)  # ramps from protect to 2·protect
        a = torch.lerp(a, torch.ones_like(a), keep)
        b = b * (1 - keep)
    # Saturation folded into the affine map (free at low resolution): s = sat·(A·x + B), luma(s) = sat·Y.
    parts = [a.mul_(cfg.saturation), b.mul_(cfg.saturation)]
    if cfg.line_strength > 0:
        parts.append(_ink(_luma(line_src), cfg, scale))
    coef = torch.cat(parts, 1)
    y_q = _luma(torch.addcmul(coef[:, 3:6], coef[:, 0:3], small)).div_(cfg.saturation)  # Y of the smoothed image
    # one tone curve per image: an image's result never depends on the batch it came in
    tone = torch.stack([_tone_curve(_band_centres(y, cfg.levels, cfg.adaptive_levels), cfg.sharpness)
                        for y in y_q])
    if cfg.keep_luminance:
        tone = _keep_mean_luminance(tone, small, coef, y_in.mean(dim=(1, 2, 3)).double().cpu(), cfg)
    return coef, tone.to(x.device, x.dtype)


def _keep_mean_luminance(tone: torch.Tensor, small: torch.Tensor, coef: torch.Tensor, target: torch.Tensor,
                         cfg: ClassicConfig) -> torch.Tensor:
    """The tone curves (B,N) plus per-image offsets δ that make the mean luminance of the (working-resolution)
    cartoon equal ``target`` (B,): ink multiplies luminance by m, so δ = (target − mean Y_out) / mean m; a
    second round absorbs the [0,1] clipping."""
    ink_mean = torch.ones(small.shape[0], dtype=torch.float64)
    if coef.shape[1] == 7:
        ink_mean = coef[:, 6:7].mul(-cfg.line_strength).add_(1.0).mean(dim=(1, 2, 3)).double().cpu()
    out = torch.empty_like(small)
    for _ in range(2):
        _finish(small, coef, tone.to(small.device, small.dtype), cfg, out)
        miss = target - _luma(out).mean(dim=(1, 2, 3)).double().cpu()
        tone = tone + (miss / ink_mean.clamp(min=0.1))[:, None]
    return tone


@torch.inference_mode()
def cartoonize_classic(rgb: torch.Tensor, config: ClassicConfig | None = None, **knobs) -> torch.Tensor:
    """Cartoonize photos without learning. rgb (B,3,H,W) or (3,H,W) in [0,1] -> same shape in [0,1].

    A 4th channel (alpha) is passed through unchanged. ``knobs`` override fields of ``config`` (see ClassicConfig).
    """
    cfg = config or ClassicConfig()
    if knobs:
        unknown = sorted(set(knobs) - {f.name for f in dataclasses.fields(ClassicConfig)})
        if unknown:
            raise UsageError(f"cartoonize_classic: unknown knob {unknown[0]!r}")
        cfg = dataclasses.replace(cfg, **knobs)
    if not isinstance(rgb, torch.Tensor) or not rgb.is_floating_point() or rgb.ndim not in (3, 4) \
            or rgb.shape[-3] not in (3, 4):
        got = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
        raise UsageError(f"cartoonize_classic: expected a float (B,3,H,W) tensor in [0,1], got {got}")
    if rgb.ndim == 3:
        return cartoonize_classic(rgb[None], cfg)[0]
    if rgb.shape[1] == 4:
        return torch.cat([cartoonize_classic(rgb[:, :3], cfg), rgb[:, 3:]], 1)
    out_dtype = rgb.dtype
    x = rgb.float().contiguous() if rgb.dtype in (torch.float16, torch.bfloat16) else rgb.contiguous()
    h, w = x.shape[-2:]
    coef_box: list[tuple[torch.Tensor, torch.Tensor]] = []
    _on_worker_threads([lambda: coef_box.append(_coefficients(x, cfg))])
    coef, tone = coef_box[0]
    full_size = tuple(coef.shape[-2:]) == (h, w)
    out = torch.empty_like(x)

    # Fast guided filter: coefficients (and ink) bilinearly brought to full size strip by strip and applied to the
    # full-resolution photo; each strip's temporaries stay in cache, strips run on worker threads.
    def strip(i0: int, i1: int) -> Callable[[], None]:
        def job() -> None:
            c = coef[:, :, i0:i1] if full_size else _upsample_rows(coef, i0, i1, (h, w))
            _finish(x[:, :, i0:i1], c, tone, cfg, out[:, :, i0:i1])
        return job

    rows = max(8, _STRIP_BYTES // (coef.shape[0] * coef.shape[1] * w * coef.element_size()))
    _on_worker_threads([strip(i0, min(h, i0 + rows)) for i0 in range(0, h, rows)])
    return out.to(out_dtype)
