"""``prepare split``: a deterministic train/test split by hashed file name.

Each file's side is decided by its own name alone — ``sha256(f"{seed}:{relative path}")`` read as a number in
[0,1) below ``test`` → test — so adding or removing files never moves the others between splits."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from toonlab.data.prepare.common import PrepareSummary, atomic_write_bytes
from toonlab.errors import UsageError

MODES = ("list", "link", "copy")


def split_position(name: str, seed: int = 0) -> float:
    """The file's position in [0,1) (the first 8 bytes of sha256 of "seed:name")."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_names(names: list[str], test: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, test) lists, each sorted; ``names`` are relative posix paths."""
    if not 0.0 <= test <= 1.0:
        raise UsageError(f"split: --test must be in [0, 1] (got {test})")
    tr, te = [], []
    for n in sorted(names):
        (te if split_position(n, seed) < test else tr).append(n)
    return tr, te


def split_dataset(src: str | Path, out: str | Path | None = None, test: float = 0.1, seed: int = 0,
                  mode: str = "link", overwrite: bool = False) -> PrepareSummary:
    """Split the images under ``src``: write ``train.txt`` / ``test.txt`` (relative paths) to ``out`` (default
    ``src``), and with ``mode`` link/copy also ``out/train/<rel>`` and ``out/test/<rel>`` (hard links where the
    file system allows, else copies). Existing outputs are kept unless ``overwrite``."""
    from toonlab.io import list_images

    if mode not in MODES:
        raise UsageError(f"split: unknown --mode {mode!r} (expected one of {', '.join(MODES)})")
    root = Path(src)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    dest = Path(out) if out is not None else root
    if mode != "list" and out is None:
        raise UsageError("split: --mode link/copy needs --out (a folder outside the input)")
    dest_abs = dest.resolve()
    files = [p for p in list_images([str(root)])
             if not {dest_abs / "train", dest_abs / "test"} & set(p.resolve().parents)]
    names = [p.relative_to(root).as_posix() for p in files]
    if not names:
        raise UsageError(f"{root}: no images to split")
    train, test_names = split_names(names, test, seed)
    done = skipped = 0
    if mode != "list":
        for side, subset in (("train", train), ("test", test_names)):
            for name in subset:
                target = dest / side / name
                if target.exists() and not overwrite:
                    skipped += 1
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.unlink(missing_ok=True)
                try:
                    if mode == "link":
                        os.link(root / name, tmp)
                    else:
                        raise OSError("copy requested")
                except OSError:
                    shutil.copy2(root / name, tmp)
                os.replace(tmp, target)
                done += 1
    for side, subset in (("train", train), ("test", test_names)):
        atomic_write_bytes(dest / f"{side}.txt", "".join(n + "\n" for n in subset).encode())
    return PrepareSummary(done=done, skipped=skipped, extra={"train": len(train), "test": len(test_names)})
