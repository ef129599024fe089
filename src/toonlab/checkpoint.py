"""Export checkpoints: the inference generator in safetensors, with everything needed to rebuild it.

Metadata (all strings, safetensors' rule): ``format`` = "toonlab-export/1", ``model`` (registered name),
``config`` (JSON of the model's Config), ``styles`` (JSON list), ``toonlab_version`` and any ``extra`` keys
(step, epoch, …). Tensors: the ``translator()`` state dict. Because the config travels with the weights, loading
needs no architecture flags (PEERS.md request 7). ``sha256`` is a digest of the tensors (:func:`tensors_digest`),
checked on load, so a flipped byte is a one-line error instead of silently wrong weights. Training state
(optimisers, RNG, …) is ``toonlab.train``'s.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from toonlab import __version__
from toonlab.errors import ToonlabError

EXPORT_FORMAT = "toonlab-export/1"
TEMP_SUFFIX = ".tmp"  # atomic_write's temp files: ".<name>.<random>.tmp" next to the target
# Refuse to build a model from a checkpoint's config above this many parameters (4 GB of fp32 weights; the
# largest registered system, cyclegan, has 28 M): a tampered config (toon2real ngf=20000: 1.5 T) fails first.
MAX_PARAMS = 1_000_000_000

# mkstemp creates files readable by the owner only; checkpoints and run files get the usual 0666 minus the umask.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes wherever they appear in keys."""
    out = {}
    for k, v in state.items():
        parts = [p for p in k.split(".") if p not in ("module", "_orig_mod")]
        out[".".join(parts)] = v
    return out


def atomic_write(path: str | Path, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then rename the temp file onto ``path`` (same folder), so readers never see
    a partial file; the temp file is removed on failure, and a failed write (disk full, read-only folder) is a
    one-line ToonlabError. The file gets mode 0666 minus the umask."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            why = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e).splitlines()[0])
            raise ToonlabError(f"cannot write {path}: {why}") from None
        raise
    return path


def remove_temp_files(folder: str | Path) -> int:
    """Delete the temp files that killed :func:`atomic_write` calls left in ``folder`` (not recursive); returns
    how many. Only for folders that one writer owns (a run dir under its lock)."""
    n = 0
    for p in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def tensors_digest(tensors: Mapping[str, torch.Tensor], extra: str = "") -> str:
    """SHA-256 (hex) of named tensors — names, dtypes, shapes and bytes, in name order — plus ``extra`` text."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(extra.encode())
    return h.hexdigest()


def verify_digest(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str],
                  extra: str = "") -> None:
    """Raise ToonlabError if ``meta["sha256"]`` does not match ``tensors`` (files written before checksums
    existed carry none and pass)."""
    want = meta.get("sha256")
    if want is not None and tensors_digest(tensors, extra) != want:
        raise ToonlabError(f"{path}: checksum mismatch (the file is corrupt)")


def check_model_size(name: str, config: Mapping[str, Any], source: str = "config") -> None:
    """Refuse a model whose config asks for more than MAX_PARAMS parameters, counted on the meta device
    (no memory is allocated). Building on the meta device costs seconds (spectral norm, init), so it only runs
    when some integer field is above the model's default: widths and depths only make a model larger."""
    import dataclasses

    from toonlab.models import build_model, get_model_class

    defaults = {f.name: getattr(get_model_class(name).Config(), f.name)
                for f in dataclasses.fields(get_model_class(name).Config)}
    if not any(isinstance(v, int) and not isinstance(v, bool) and isinstance(defaults.get(k), int)
               and v > defaults[k] for k, v in config.items()):
        return
    try:
        with torch.device("meta"):
            model = build_model(name, dict(config))
    except ToonlabError:
        raise
    except Exception:  # a constructor that cannot run on the meta device: the real build reports its errors
        return
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMS:
        raise ToonlabError(f"{source}: model {name!r} would have {n / 1e9:.1f} G parameters "
                           f"({4 * n / 1e9:.1f} GB in fp32), over the {MAX_PARAMS / 1e9:.0f} G limit; "
                           f"refusing to build it")


def save_export(model, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.translator()``'s weights and the model's name/config/styles to ``path`` (.safetensors)."""
    from safetensors.torch import save_file

    state = strip_prefixes(model.translator().state_dict())
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ToonlabError(f"{path}: refusing to write an export with non-finite weights ({bad[0]}"
                           f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''})")
    meta = {
        "format": EXPORT_FORMAT,
        "model": model.name,
        "config": json.dumps(model.config_dict()),
        "styles": json.dumps(list(model.styles)),
        "toonlab_version": __version__,
    }
    for k, v in (extra or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    meta["sha256"] = tensors_digest(tensors)
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
    try:
        config = json.loads(meta["config"])
    except (KeyError, ValueError):
        raise ToonlabError(f"{path}: export metadata has no readable 'config'") from None
    check_model_size(meta["model"], config, str(path))
    model = build_model(meta["model"], config)
    translator = model.translator()
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated files
        raise ToonlabError(f"{path}: not a readable export checkpoint ({str(e).splitlines()[0]})") from None
    verify_digest(path, state, meta)
    try:
        translator.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as e:
        raise ToonlabError(f"{path}: weights do not match model {meta['model']!r} ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    return model, meta
