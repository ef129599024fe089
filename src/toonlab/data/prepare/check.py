"""``prepare check``: is a dataset folder ready for training? Counts, formats, sizes, corrupt files, exact
duplicates (same bytes, anywhere) and near duplicates (pHash within a threshold, within each folder — sibling
folders such as test/photos and test/cartoons hold renderings of the same scenes on purpose)."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toonlab.data.prepare.common import JobFailure, run_jobs
from toonlab.data.prepare.dedupe import hamming, phash
from toonlab.errors import UsageError


@dataclass
class CheckReport:
    """Findings of ``check_dataset``; ``ok`` is False when anything needs fixing."""

    root: Path
    images: int = 0
    other_files: int = 0
    formats: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)  # "W×H" → count
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    exact_duplicates: list[list[str]] = field(default_factory=list)
    near_duplicates: list[list[str]] = field(default_factory=list)
    wrong_size: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.images > 0 and not (self.corrupt or self.exact_duplicates or self.near_duplicates
                                         or self.wrong_size)


def _inspect(job: tuple[str, str]) -> dict:
    """Worker: decode one file fully (as training will) → format, size, sha256, pHash."""
    from PIL import Image

    from toonlab.data.prepare.images import read_rgb

    path, rel = job
    data = Path(path).read_bytes()
    rgb = read_rgb(path)
    with Image.open(path) as im:
        fmt = im.format or Path(path).suffix.lstrip(".").upper()
    return {"rel": rel, "format": fmt, "size": f"{rgb.shape[1]}×{rgb.shape[0]}",
            "sha256": hashlib.sha256(data).hexdigest(), "phash": phash(rgb)}


def _groups(pairs: list[tuple[int, int]], n: int) -> list[list[int]]:
    """Connected components (union-find) of the index pairs, only those with ≥ 2 members."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    comps = defaultdict(list)
    for i in {i for p in pairs for i in p}:
        comps[find(i)].append(i)
    return sorted(sorted(c) for c in comps.values() if len(c) > 1)


def check_dataset(root: str | Path, *, size: int | None = None, hash_threshold: int = 4, workers: int = 1,
                  progress: bool = True) -> CheckReport:
    """Inspect every file under ``root`` (recursive). ``size``: every image must be size×size.
    ``hash_threshold`` < 0 turns near-duplicate detection off."""
    from toonlab.io import IMAGE_EXTENSIONS

    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    rep = CheckReport(root=root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    rep.other_files = len(files) - len(images)
    jobs = [(str(p), p.relative_to(root).as_posix()) for p in images]
    results = run_jobs(_inspect, jobs, workers=workers, progress=progress, desc="check")
    good = []
    for job, r in zip(jobs, results):
        if isinstance(r, JobFailure):
            rep.corrupt.append((job[1], r.message))
        else:
            good.append(r)
    rep.images = len(images)
    for r in good:
        rep.formats[r["format"]] += 1
        rep.sizes[r["size"]] += 1
        if size is not None and r["size"] != f"{size}×{size}":
            rep.wrong_size.append((r["rel"], r["size"]))
    by_sha = defaultdict(list)
    for r in good:
        by_sha[r["sha256"]].append(r["rel"])
    rep.exact_duplicates = sorted(g for g in by_sha.values() if len(g) > 1)
    if hash_threshold >= 0:
        exact = {rel for g in rep.exact_duplicates for rel in g}
        by_dir = defaultdict(list)
        for r in good:
            if r["rel"] not in exact:
                by_dir[str(Path(r["rel"]).parent)].append(r)
        for members in by_dir.values():
            hashes = np.array([m["phash"] for m in members], np.uint64)
            dist = hamming(hashes[:, None], hashes[None, :])  # (n, n) popcounts; n per folder is ≤ ~10⁴
            ii, jj = np.nonzero(np.triu(dist <= hash_threshold, k=1))
            for g in _groups(list(zip(ii.tolist(), jj.tolist())), len(members)):
                rep.near_duplicates.append([members[i]["rel"] for i in g])
    return rep


def print_report(rep: CheckReport, limit: int = 10) -> None:
    """A rich table of the findings, then up to ``limit`` examples of each problem."""
    from toonlab.terminal import console
    from rich.table import Table

    con = console()
    t = Table(title=f"prepare check: {rep.root}")
    t.add_column("item")
    t.add_column("value")
    t.add_column("status")
    mark = lambda bad: "[red]problem[/red]" if bad else "[green]ok[/green]"  # noqa: E731
    t.add_row("images", str(rep.images), mark(rep.images == 0))
    t.add_row("other files", str(rep.other_files), "")
    t.add_row("formats", ", ".join(f"{k} {v}" for k, v in rep.formats.most_common()), "")
    t.add_row("sizes", ", ".join(f"{k} ({v})" for k, v in rep.sizes.most_common(5))
              + (f" … {len(rep.sizes)} distinct" if len(rep.sizes) > 5 else ""), mark(bool(rep.wrong_size)))
    t.add_row("corrupt / unreadable", str(len(rep.corrupt)), mark(bool(rep.corrupt)))
    t.add_row("exact duplicate groups", str(len(rep.exact_duplicates)), mark(bool(rep.exact_duplicates)))
    t.add_row("near-duplicate groups", str(len(rep.near_duplicates)), mark(bool(rep.near_duplicates)))
    con.print(t)
    for rel, msg in rep.corrupt[:limit]:
        con.print(f"corrupt: {rel}: {msg}", markup=False, highlight=False)
    for g in rep.exact_duplicates[:limit]:
        con.print("duplicate (same bytes): " + ", ".join(g), markup=False, highlight=False)
    for g in rep.near_duplicates[:limit]:
        con.print("near duplicate (pHash): " + ", ".join(g), markup=False, highlight=False)
    for rel, sz in rep.wrong_size[:limit]:
        con.print(f"wrong size: {rel}: {sz}", markup=False, highlight=False)
