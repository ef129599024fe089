"""The registry table ``toonlab models`` prints, cached per toonlab source and torch version.

Measuring it builds every registered model and counts its generator's FLOPs (:mod:`toonlab.models._summary`,
~15 s on two cores); the numbers change only when the networks' code or torch does, so a listing reads
``$TOONLAB_CACHE/models/table-<key>.json`` and imports neither torch nor the models.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from toonlab.paths import cache_root


KEYED_SOURCES = ("models", "nn", "ops", "config.py", "losses.py", "model_table.py")  # the networks' wiring


def source_key() -> str:
    """Digest of the ``.py`` files the networks are built from (:data:`KEYED_SOURCES`: path and bytes) and the
    installed torch version."""
    try:
        torch_version = version("torch")
    except PackageNotFoundError:  # a source tree run without an installed torch distribution
        torch_version = "?"
    h = hashlib.sha256(torch_version.encode())
    root = Path(__file__).parent
    files = [p for name in KEYED_SOURCES for p in ((root / name).rglob("*.py") if (root / name).is_dir()
                                                    else [root / name])]
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:24]


def model_table(use_cache: bool = True) -> list[dict]:
    """One row per public registered model (names without a leading ``_``), as
    :class:`toonlab.models._summary.ModelSummary` fields: name, direction, default_size, params (trainable
    parameters per network), generator_gflops (one default-size image), styles."""
    path = cache_root() / "models" / f"table-{source_key()}.json"
    if use_cache:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    from toonlab.models import model_names
    from toonlab.models._summary import summarize

    rows = [asdict(summarize(name)) for name in model_names() if not name.startswith("_")]
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(rows))
            os.replace(tmp, path)  # concurrent listings never read half a file
        except OSError:  # a read-only cache: measure every time
            pass
    return json.loads(json.dumps(rows))  # the same types (lists, not tuples) as a cached read
