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
