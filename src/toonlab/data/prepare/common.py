"""Shared machinery of ``toonlab prepare``: a process pool with a rich progress bar that never loses finished
work, atomic image writes, and the "skip what already exists" rule that makes every command resumable."""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np

from toonlab.errors import ToonlabError


@dataclass
class JobFailure:
    """A job that raised: the item it was working on and a one-line message."""

    item: str
    message: str


@dataclass
class PrepareSummary:
    """What a prepare command did: outputs written, outputs already present (skipped), inputs that failed."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class _Safe:
    """Picklable wrapper: run ``fn(job)``; an exception becomes a JobFailure so one bad input never stops a pool."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, job):
        try:
            return self.fn(job)
        except (ToonlabError, OSError, ValueError, cv2.error) as e:
            item = job[0] if isinstance(job, tuple) else job
            return JobFailure(str(item), str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def _init_worker() -> None:
    # one thread per worker process: the pool is the parallelism (not N workers × M threads on M cores).
    # torch reads OMP_NUM_THREADS when (and if) a job imports it; importing it here would cost every worker
    # seconds even for jobs that never use it.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    cv2.setNumThreads(1)


def run_jobs(fn: Callable, jobs: Sequence, *, workers: int = 1, progress: bool = True, desc: str = "",
             on_result: Callable | None = None) -> list:
    """Run ``fn`` over ``jobs`` (in ``workers`` processes when > 1), showing a rich progress bar.

    Returns the results in job order; a job that raised ToonlabError/OSError/ValueError/cv2.error yields a
    ``JobFailure`` instead. ``fn`` must be a module-level function (picklable) and should write its own output
    atomically, so an interrupted pool leaves only complete files behind. ``on_result(result)`` is called in
    this process as each result arrives, in job order (to record progress before the pool finishes).
    """
    safe = _Safe(fn)
    results: list = []
    if not jobs:
        return results
    bar = _progress(progress)
    with bar:
        task = bar.add_task(desc or "prepare", total=len(jobs))
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                results.append(safe(job))
                if on_result is not None:
                    on_result(results[-1])
                bar.advance(task)
        else:
            ctx = mp.get_context("forkserver" if os.name == "posix" else "spawn")
            with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
                for r in pool.imap(safe, jobs, chunksize=max(1, min(16, len(jobs) // (workers * 8)))):
                    results.append(r)
                    if on_result is not None:
                        on_result(r)
                    bar.advance(task)
    return results


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def split_failures(results: Iterable) -> tuple[list, list[tuple[str, str]]]:
    """(successful results, [(item, message)] of the failures)."""
    ok, bad = [], []
    for r in results:
        (bad.append((r.item, r.message)) if isinstance(r, JobFailure) else ok.append(r))
    return ok, bad


# files get the usual permissions, 0666 minus the umask (read once: os.umask can only be read by setting it)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``: readers (and a rerun after a
    crash) never see a partial file. (toonlab.checkpoint.atomic_write does the same but imports torch, which
    costs seconds per worker process.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would stay on the prepared data
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_image_atomic(path: str | Path, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write HWC uint8 RGB (or HW / HW1 gray) ``rgb`` to ``path`` (format from the suffix), atomically."""
    path = Path(path)
    ext = path.suffix.lower()
    img = rgb if rgb.ndim == 2 or rgb.shape[2] == 1 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    if ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ToonlabError(f"{path}: cannot encode an image with suffix {ext!r}")
    return atomic_write_bytes(path, buf.tobytes())


def report(summary: PrepareSummary, what: str) -> int:
    """Print a one-line summary and one line per failure (to stderr); return the exit code (1 if any failed)."""
    from toonlab.terminal import console

    out, err = console(), console(stderr=True)
    extra = "".join(f", {k} {v}" for k, v in summary.extra.items())
    out.print(f"{what}: {summary.done} written, {summary.skipped} already present{extra}, "
              f"{len(summary.failed)} failed", soft_wrap=True, highlight=False)
    for item, message in summary.failed:
        line = message if Path(item).name in message else f"{item}: {message}"  # most errors name the file
        err.print(f"failed: {line}", markup=False, highlight=False, soft_wrap=True)
    return 1 if summary.failed else 0
