"""Device selection shared by training, inference and serving."""

from __future__ import annotations

import torch

from toonlab.errors import UsageError


def resolve_device(spec: str | torch.device = "auto", local_rank: int | None = None,
                   key: str = "device") -> torch.device:
    """``auto`` → CUDA when available, else CPU; with ``local_rank`` (DDP), ``auto``/``cuda`` → ``cuda:LOCAL_RANK``.
    A bad spec, or CUDA asked for where there is none, raises UsageError naming ``key``."""
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and local_rank is not None:
        spec = f"cuda:{local_rank}"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown {key} {spec!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{key} {spec!r} requested but CUDA is not available")
    return device


# glibc serves allocations of 32 MiB and more (its dynamic mmap threshold's ceiling) with fresh mmap()s and returns
# them on free, so every large activation map of a CPU forward pass is page-faulted and zeroed anew. Keeping freed
# memory in the heap for reuse made untiled PyTorch passes 1.3–1.6× faster (AnimeGAN/CartoonGAN generators at
# 512²–1080p) and CTSS training steps at 256² 1.1–1.3× (benchmarks/README.md "Latest: freed memory kept"), at a
# higher peak resident set (the heap's fragmentation: +17 % at 512², up to +65 % at 1080p). Layer-streamed and
# tiled passes, which exist to bound memory, run with the heap released (4K CTSS streamed: 2544 MiB kept, 1924 MiB
# released).
# TOONLAB_CPU_HEAP=return, or glibc's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / GLIBC_TUNABLES malloc
# settings, leave glibc alone.
CPU_HEAP_ENV = "TOONLAB_CPU_HEAP"
_GLIBC_MMAP_MAX, _GLIBC_TRIM_MAX = 32 << 20, 64 << 20  # glibc's dynamic thresholds at their ceilings (64-bit)
_heap_state: dict = {"libc": None, "kept": False}


def _tunable_libc():
    """glibc through ctypes, or None where the heap is not ours to tune (another C library, the user's settings)."""
    if _heap_state["libc"] is None:
        import ctypes
        import os
        import platform

        libc = False
        if os.environ.get(CPU_HEAP_ENV, "keep") != "return" and not (
                "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
                or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")) and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
            except OSError:
                libc = False
        _heap_state["libc"] = libc
    return _heap_state["libc"] or None


# A kept heap's peak resident set over the in-use peak the memory model is calibrated on: repeated untiled 1080p
# passes through PyTorch (freed memory trimmed after each) reached 1.32× the estimate for CartoonGAN (1.47×
# untrimmed), 1.01× for AnimeGAN, 0.82× for CTSS; the translator scales its CPU estimate by this where the heap is
# kept.
KEPT_HEAP_FACTOR = 1.5


def cpu_heap_tunable() -> bool:
    """Whether :func:`keep_cpu_heap` can keep freed memory in this process (glibc, not opted out)."""
    return _tunable_libc() is not None


def trim_cpu_heap() -> None:
    """Return the kept heap's free pages to the system (``malloc_trim``) — after a pass, so the memory between
    passes is what is live; a no-op where the heap is not kept."""
    import ctypes

    libc = _tunable_libc()
    if libc is not None and _heap_state["kept"]:
        libc.malloc_trim(ctypes.c_size_t(0))


def keep_cpu_heap(keep: bool = True) -> bool:
    """``keep=True``: glibc keeps freed memory for the next allocations (``mallopt`` M_MMAP_THRESHOLD and
    M_TRIM_THRESHOLD at their maximum) — for untiled passes and training. ``keep=False`` after a keep: thresholds
    back at glibc's dynamic ceilings and the kept free memory returned (``malloc_trim``) — for passes that bound
    memory. Process-wide; returns whether the heap is now kept (False, changing nothing, where it may not be
    tuned: see ``CPU_HEAP_ENV``)."""
    import ctypes

    libc = _tunable_libc()
    if libc is None or keep == _heap_state["kept"]:
        return bool(libc) and _heap_state["kept"]
    m_trim_threshold, m_mmap_threshold = -1, -3
    mmap, trim = (2**31 - 1, 2**31 - 1) if keep else (_GLIBC_MMAP_MAX, _GLIBC_TRIM_MAX)
    libc.mallopt(m_mmap_threshold, ctypes.c_int(mmap))
    libc.mallopt(m_trim_threshold, ctypes.c_int(trim))
    if not keep:
        libc.malloc_trim(ctypes.c_size_t(0))
    _heap_state["kept"] = keep
    return keep
