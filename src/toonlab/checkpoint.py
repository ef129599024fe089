"""Export checkpoints: the inference generator in safetensors, with everything needed to rebuild it.

Metadata (all strings, safetensors' rule): ``format`` = "toonlab-export/1", ``model`` (registered name),
``config`` (JSON of the model's Config), ``styles`` (JSON list), ``toonlab_version`` and any ``extra`` keys
(step, epoch, …). Tensors: the ``translator()`` state dict. Because the config travels with the weights, loading
needs no architecture flags (PEERS.md request 7). Training state (optimisers, RNG, …) is ``toonlab.train``'s.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from toonlab import __version__
from toonlab.errors import ToonlabError

EXPORT_FORMAT = "toonlab-export/1"


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes wherever they appear in keys."""
    out = {}
    for k, v in state.items():
        parts = [p for p in k.split(".") if p not in ("module", "_orig_mod")]
        out[".".join(parts)] = v
    return out


def atomic_write(path: str | Path, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then rename the temp file onto ``path`` (same folder), so readers never see
    a partial file; the temp file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_export(model, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.translator()``'s weights and the model's name/config/styles to ``path`` (.safetensors)."""
    from safetensors.torch import save_file

    state = strip_prefixes(model.translator().state_dict())
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {
        "format": EXPORT_FORMAT,
        "model": model.name,
        "config": json.dumps(model.config_dict()),
        "styles": json.dumps(list(model.styles)),
        "toonlab_version": __version__,
    }
    for k, v in (extra or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_export_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an export file; raises ToonlabError (one line, names the file) if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ToonlabError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for truncated/foreign files
        raise ToonlabError(f"{path}: not a readable safetensors checkpoint ({str(e).splitlines()[0]})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ToonlabError(f"{path}: not a toonlab export checkpoint (metadata format={meta.get('format')!r})")
    return meta


def load_export(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model from an export file and load its generator weights.

    Returns ``(model, meta)``; ``model.translator()`` is ready for inference (eval mode, on ``device``)."""
    from safetensors.torch import load_file

    from toonlab.models import build_model

    meta = read_export_metadata(path)
    model = build_model(meta["model"], json.loads(meta["config"]))
    translator = model.translator()
    try:
        state = load_file(str(path), device=str(device))
        translator.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as e:
        raise ToonlabError(f"{path}: weights do not match model {meta['model']!r} ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    return model, meta
