"""Any-size inference: reflect-pad to the network's multiple, a measured memory model that decides whether an image
fits untiled (:func:`measure_memory`, :func:`default_budget`), and overlapping tiles when it does not.

A generator is translation-equivariant except for its normalisation layers (LN / IN statistics are taken over the
whole image) and its borders. Tiles therefore (1) start on multiples of the network's stride so every tile sees the
same sampling grid as the whole image, (2) overlap, and are blended with a raised-cosine window that is ~0 at an
inner tile edge (where the tile's own border padding corrupts the output) and 1 in the tile's centre, and (3) can
share *image-wide* normalisation statistics (``norm_stats="global"``): a first pass over all tiles records each
GroupNorm / InstanceNorm layer's per-tile mean and variance, pools them over the tiles (law of total variance), and
the blending pass normalises every tile with the pooled statistics — close to what the untiled network computes.

Measured (1024² photo, 512² tiles, 64 px overlap; mean |tiled − untiled| in 1/255 units): registered CTSS G with
its N(0, 0.02) init: 0.79 shared vs 4.8 per-tile statistics (tests/infer/test_tiling.py, slow). A CTSS-like G
with PyTorch's default init (a higher-variance output) gave 3.0 shared vs 13.7 per-tile: pooled statistics are
computed under per-tile normalisation of the earlier layers, so the gap grows with depth and output variance.
"""

from __future__ import annotations

import ctypes
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

TileFn = Callable[[torch.Tensor], torch.Tensor]

# The memory budget is a fraction of what the machine has free when the translator is built: MemAvailable on CPU
# (the page cache and the other processes' needs stay out of it), free device memory on CUDA. Half on CPU leaves
# room for other work on the machine; 0.8 on CUDA, where nothing else shares the memory in the usual case.
CPU_BUDGET_FRACTION = 0.5
CUDA_BUDGET_FRACTION = 0.8


def available_memory(device: torch.device | str) -> int:
    """Bytes free for new allocations on ``device``: /proc/meminfo's MemAvailable on CPU (os.sysconf's free
    physical pages where there is no /proc), ``torch.cuda.mem_get_info`` on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def default_budget(device: torch.device | str) -> int:
    """The activation-memory budget (bytes) of one forward pass on ``device``: a fraction of the free memory."""
    device = torch.device(device)
    fraction = CUDA_BUDGET_FRACTION if device.type == "cuda" else CPU_BUDGET_FRACTION
    return int(available_memory(device) * fraction)


def pad_to_multiple(x: torch.Tensor, multiple: int, min_side: int = 1
                    ) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad (B,C,H,W) ``x`` so H and W are multiples of ``multiple`` and at least ``min_side``; returns
    ``(padded, (top, bottom, left, right))``. The padding is split between both sides so borders are treated
    alike; it reflects, except where the image is too small to reflect (pad ≥ size: 1×1, 3×3, 1×N images),
    where it replicates the edge pixels."""
    h, w = x.shape[-2:]
    th = max(h + (-h) % multiple, -(-min_side // multiple) * multiple)
    tw = max(w + (-w) % multiple, -(-min_side // multiple) * multiple)
    ph, pw = th - h, tw - w
    top, left = ph // 2, pw // 2
    pads = (top, ph - top, left, pw - left)
    if ph == 0 and pw == 0:
        return x, pads
    mode = "reflect" if max(pads[:2]) < h and max(pads[2:]) < w else "replicate"
    return F.pad(x, (left, pw - left, top, ph - top), mode=mode), pads


def crop_padding(y: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on the network output ``y`` (same spatial size as the padded input)."""
    top, bottom, left, right = pads
    h, w = y.shape[-2:]
    return y[..., top:h - bottom, left:w - right]


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` pixels shared
    between neighbours; starts are multiples of ``multiple`` (``length`` and ``tile`` must be, too)."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    n = math.ceil((length - tile) / stride) + 1
    last = length - tile
    starts = [(round(i * last / (n - 1)) // multiple) * multiple for i in range(n)]
    starts[-1] = last
    return sorted(set(starts))


def _ramp(n: int, device, dtype) -> torch.Tensor:
    """Raised-cosine ramp of length n rising from ~0 to ~1 (strictly inside (0, 1), so weights never vanish)."""
    i = torch.arange(n, device=device, dtype=dtype)
    return 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / n)


def blend_window(size: int, start: int, length: int, overlap: int, device=None,
                 dtype=torch.float32) -> torch.Tensor:
    """1-D window (size,) of a tile at ``start`` in ``[0, length)``: raised-cosine ramps over ``overlap`` pixels
    on the sides that have a neighbour, 1 elsewhere (image borders are not faded)."""
    w = torch.ones(size, device=device, dtype=dtype)
    ramp_len = min(overlap, size // 2)
    if ramp_len > 0:
        ramp = _ramp(ramp_len, device, dtype)
        if start > 0:
            w[:ramp_len] = ramp
        if start + size < length:
            w[size - ramp_len:] = ramp.flip(0)
    return w


# --- shared normalisation statistics ---------------------------------------------------------------------------

def _norm_types() -> tuple[type, ...]:
    from toonlab.models.cartoongan import ScaleShiftInstanceNorm  # the released CartoonGAN's instance norm

    return nn.GroupNorm, nn.InstanceNorm2d, ScaleShiftInstanceNorm


@dataclass
class GroupMoments:
    """Per-(sample, group) pixel count, mean and M2 in float64, merged part by part (Chan et al.'s pairwise
    update): exact image-wide statistics of a norm layer from its tiles (here) or row stripes
    (``toonlab.infer.streaming``), without the cancellation of a pooled sum of squares."""

    n: float = 0.0
    mean: torch.Tensor | None = None  # (B, G) float64
    m2: torch.Tensor | None = None  # (B, G) float64: Σ (x − mean)²

    def add(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        """Merge one part: its (B, G) ``mean`` and biased ``var`` over ``n`` pixels per (sample, group)."""
        mean, m2 = mean.double(), var.double() * n
        if self.mean is None:
            self.n, self.mean, self.m2 = float(n), mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.n * n / total)
        self.n = total

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, G) float64 mean and biased variance of everything added."""
        return self.mean, (self.m2 / self.n).clamp_min(0)


def _groups(m: nn.Module, channels: int) -> int:
    return m.num_groups if isinstance(m, nn.GroupNorm) else channels


def _norm_forward(m: nn.Module, x: torch.Tensor, mode: str, store: dict) -> torch.Tensor:
    """GroupNorm / InstanceNorm forward that records (mode "record") or uses (mode "apply") pooled statistics."""
    b, c = x.shape[:2]
    g = _groups(m, c)
    xf = x.float().reshape(b, g, -1)
    if mode == "record":
        var, mean = torch.var_mean(xf, dim=2, unbiased=False)
        store.setdefault(id(m), GroupMoments()).add(mean, var, xf.shape[2])
    else:
        mean, var = (v.float() for v in store[id(m)].mean_var())
    # in place after the first subtraction: one activation-sized temporary, not four (peak memory of big tiles)
    y = (xf - mean[..., None]).mul_(torch.rsqrt(var[..., None] + m.eps)).reshape(b, c, *x.shape[2:])
    weight, bias = getattr(m, "weight", getattr(m, "scale", None)), getattr(m, "bias", getattr(m, "shift", None))
    if weight is not None:
        y = y.mul_(weight.float()[None, :, None, None]).add_(bias.float()[None, :, None, None])
    return y.to(x.dtype)


@contextmanager
def shared_norm_stats(module: nn.Module, mode: Literal["record", "apply"], store: dict) -> Iterator[None]:
    """Within the block, every GroupNorm (incl. LayerNorm2d) / InstanceNorm2d (incl. CartoonGAN's) of ``module``
    normalises with the tile's own statistics and pools them into ``store`` ("record"), or normalises with the
    pooled ones ("apply"). Other norms (AdaLIN, BatchNorm in eval mode) are untouched: BatchNorm is
    tile-independent already, AdaLIN keeps per-tile statistics."""
    patched = [m for m in module.modules() if isinstance(m, _norm_types())
               and not (isinstance(m, nn.InstanceNorm2d) and m.track_running_stats)]
    for m in patched:
        m.forward = (lambda x, _m=m: _norm_forward(_m, x, mode, store))
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def has_image_wide_norms(module: nn.Module) -> bool:
    return any(isinstance(m, _norm_types()) for m in module.modules())


# --- the tiled forward pass ------------------------------------------------------------------------------------

def run_tiled(fn: TileFn, x: torch.Tensor, tile: int, overlap: int, multiple: int = 1,
              module: nn.Module | None = None, norm_stats: Literal["tile", "global"] = "global",
              progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``fn`` applied to (B,C,H,W) ``x`` (H, W multiples of ``multiple``) in overlapping ``tile``² tiles, blended
    with raised-cosine windows; returns (B,C',H,W) float32 on ``x``'s device. Memory: one tile's activations plus
    the (B,C',H,W) accumulator. ``norm_stats="global"`` (needs ``module``, the network ``fn`` runs) shares pooled
    normalisation statistics across tiles at the cost of a second pass. ``progress(done, total)`` is called after
    each tile forward (both passes count). (Re-pooling the statistics under the
    pooled ones does not converge in practice: it was measured to drift further from the untiled result.)"""
    if tile % multiple or overlap >= tile:
        raise ValueError(f"tile {tile} must be a multiple of {multiple} and larger than overlap {overlap}")
    b, _, h, w = x.shape
    ys = tile_starts(h, tile, overlap, multiple)
    xs = tile_starts(w, tile, overlap, multiple)
    boxes = [(y0, x0, min(tile, h), min(tile, w)) for y0 in ys for x0 in xs]

    store: dict = {}
    use_global = norm_stats == "global" and module is not None and len(boxes) > 1 and has_image_wide_norms(module)
    total, done = len(boxes) * (2 if use_global else 1), 0
    if use_global:
        with shared_norm_stats(module, "record", store):
            for y0, x0, th, tw in boxes:
                fn(x[..., y0:y0 + th, x0:x0 + tw])
                done += 1
                if progress:
                    progress(done, total)

    out = None
    weight = torch.zeros(1, 1, h, w, device=x.device, dtype=torch.float32)
    for y0, x0, th, tw in boxes:
        if use_global:
            with shared_norm_stats(module, "apply", store):
                y = fn(x[..., y0:y0 + th, x0:x0 + tw])
        else:
            y = fn(x[..., y0:y0 + th, x0:x0 + tw])
        if out is None:
            out = torch.zeros(b, y.shape[1], h, w, device=x.device, dtype=torch.float32)
        win = (blend_window(th, y0, h, overlap, x.device)[:, None]
               * blend_window(tw, x0, w, overlap, x.device)[None, :])
        out[..., y0:y0 + th, x0:x0 + tw] += y.float() * win
        weight[..., y0:y0 + th, x0:x0 + tw] += win
        done += 1
        if progress:
            progress(done, total)
    return out / weight


# --- measured activation memory --------------------------------------------------------------------------------

# The calibration samples the allocator between operators; temporaries inside one operator (convolution
# workspaces, weight reorders) come on top. Real peak RSS over the calibrated estimate, measured at 512² in a fresh
# process (tests/infer/test_memory.py): CTSS 1.24, SalCBAM 1.39; this factor covers them.
INTRA_OP_FACTOR = 1.5


@dataclass(frozen=True)
class MemoryModel:
    """Peak activation memory of one forward pass ≈ ``fixed + per_pixel · B·H·W`` bytes (after the factor)."""

    fixed: float
    per_pixel: float

    def bytes(self, height: int, width: int, batch: int = 1) -> float:
        return self.fixed + self.per_pixel * batch * height * width


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_in_use() -> Callable[[], int] | None:
    """glibc's bytes in use (heap + mmapped chunks), or None where mallinfo2 is missing (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2

    def in_use() -> int:
        m = fn()
        return m.uordblks + m.hblkhd

    return in_use


def _peak_bytes(run: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated above the level before ``run()``: the CUDA allocator's own peak on CUDA; on CPU
    glibc's in-use bytes sampled after every ATen operator (a TorchDispatchMode). None if not measurable."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if device.type != "cpu":
        return None
    in_use = _heap_in_use()
    if in_use is None:
        return None
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Sampler(TorchDispatchMode):
        peak = in_use()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.peak = max(self.peak, in_use())
            return out

    base = in_use()
    with _Sampler() as sampler:
        run()
    return sampler.peak - base


CALIBRATION_SIDES = (64, 128)  # the square sides measure_memory runs untiled


def measure_memory(forward: TileFn, channels_in: int = 3, multiple: int = 1, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, sizes: tuple[int, int] = CALIBRATION_SIDES) -> MemoryModel:
    """Calibrate the activation peak of ``forward`` (B=1): measure it at two square ``sizes`` (after a warm-up
    call, which absorbs one-off allocations such as weight reorders), fit ``fixed + per_pixel·pixels`` — the
    networks here are fully convolutional, so activations grow linearly in pixels — and scale by
    ``INTRA_OP_FACTOR``. Falls back to :func:`estimate_from_layers` where the allocator cannot be read."""
    device = torch.device(device)
    s0, s1 = (max(s, multiple) // multiple * multiple for s in sizes)
    peaks = []
    with torch.inference_mode():
        for side in (s0, s0, s1):
            x = torch.rand(1, channels_in, side, side, device=device).to(dtype)
            peaks.append(_peak_bytes(lambda: forward(x), device))
    if any(p is None for p in peaks) or peaks[2] <= peaks[1]:
        per_pixel = estimate_from_layers(forward, channels_in, s1, device, dtype)
        return MemoryModel(0.0, per_pixel)
    per_pixel = (peaks[2] - peaks[1]) / (s1 * s1 - s0 * s0)
    fixed = max(0.0, peaks[1] - per_pixel * s0 * s0)
    return MemoryModel(INTRA_OP_FACTOR * fixed, INTRA_OP_FACTOR * per_pixel)


def estimate_from_layers(forward: TileFn, channels_in: int, size: int, device: torch.device,
                         dtype: torch.dtype) -> float:
    """Bytes per pixel from the tensors' sizes alone (no allocator access): 3× the largest operator output at a
    ``size``² input — an input, an output and a residual branch of that size live at once."""
    from torch.utils._python_dispatch import TorchDispatchMode

    biggest = [0]

    class _Sizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if torch.is_tensor(out):
                biggest[0] = max(biggest[0], out.numel() * out.element_size())
            return out

    with torch.inference_mode(), _Sizes():
        forward(torch.zeros(1, channels_in, size, size, device=device, dtype=dtype))
    return 3.0 * biggest[0] / (size * size)


def tile_for_budget(budget_bytes: int, bytes_per_pixel: float, multiple: int, overlap: int) -> int:
    """Largest square tile side (a multiple of ``multiple``, > ``overlap``) whose activations fit the budget."""
    side = int(math.sqrt(max(budget_bytes, 1) / max(bytes_per_pixel, 1e-9)))
    side = side // multiple * multiple
    min_side = (2 * overlap // multiple + 1) * multiple
    return max(side, min_side)
