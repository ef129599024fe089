"""Where a command may write: inside its output folder, never over one of its own inputs.

Inputs name files through folders and glob patterns whose matches may carry ``..`` (``photos/*/../../a.jpg``) or
symlinks; an output's relative layout is therefore taken from normalised paths, and the final output path is checked
against the real (symlink-resolved) output folder and against the inputs' identities (device, inode) before anything
is written. Also where toonlab keeps its caches (:func:`cache_root`) and how it fingerprints files
(:func:`file_digest`).
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Iterable


def symlink_loop(path: str | Path) -> bool:
    """Whether ``path`` is (or runs through) a symlink loop: such a path can be neither read nor resolved."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _normal(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def contained_relative(src: Path, rel: Path) -> Path:
    """The layout an output of ``src`` keeps, given its relative path ``rel`` under a folder or glob root (``src``
    is that root joined with ``rel``, lexically). Normalised from the absolute paths, so it never holds ``..``; a
    match that lies outside its root (``photos/*/../../other/a.jpg``) keeps its file name only."""
    n = len(rel.parts)
    if rel.is_absolute() or n == 0 or tuple(src.parts[len(src.parts) - n:]) != rel.parts:
        return Path(src.name)
    root = Path(*src.parts[:len(src.parts) - n]) if len(src.parts) > n else Path(".")
    inner = os.path.relpath(_normal(src), _normal(root))
    if inner == os.curdir or inner == os.pardir or inner.startswith(os.pardir + os.sep):
        return Path(src.name)
    return Path(inner)


class InputIds:
    """The identities (device, inode) of a command's input files, to refuse writing over any of them (through
    another name, a symlink or a hard link)."""

    def __init__(self, inputs: Iterable[str | Path]):
        self._ids = {i for i in map(_file_id, inputs) if i is not None}

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, Path)) and _file_id(path) in self._ids


def _file_id(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def unsafe_output(dst: Path, out_dir: Path, inputs: InputIds) -> str | None:
    """Why ``dst`` must not be written (one line), or None: it would land outside ``out_dir`` once symlinks are
    followed, or it is one of the inputs."""
    if dst in inputs:
        return f"output {dst} is one of the inputs (refusing to overwrite an input)"
    try:
        inside = Path(os.path.realpath(dst)).is_relative_to(os.path.realpath(out_dir))
    except (OSError, RuntimeError):  # a symlink loop on the way
        inside = False
    if not inside:
        return f"output {dst} would be written outside the output folder {out_dir}"
    return None


def cache_root() -> Path:
    """``$TOONLAB_CACHE``, or ``~/.cache/toonlab``: the root of every cache (FID stats, ONNX exports, fetched
    wheels), one sub-folder each."""
    base = os.environ.get("TOONLAB_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "toonlab"


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (weight files are hundreds of MB)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
