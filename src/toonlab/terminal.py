"""Output that reads well on a terminal and when piped: Rich consoles that do not wrap piped text at 80 columns,
and plain progress lines (rate, ETA) where a live bar would print nothing."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

PIPED_WIDTH = 10_000  # columns of a piped Rich console: tables take their natural width, lines never wrap


def console(stderr: bool = False):
    """A Rich console on stdout (or stderr); piped, it is as wide as its text instead of 80 columns."""
    from rich.console import Console

    con = Console(stderr=stderr)
    return con if con.is_terminal else Console(stderr=stderr, width=PIPED_WIDTH)


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr, where progress goes) is a terminal, as Rich decides it."""
    from rich.console import Console

    return Console(file=stream or sys.stderr).is_terminal


def clock(seconds: float) -> str:
    """``h:mm:ss`` of a non-negative duration."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LineProgress:
    """One plain line per ``every`` items (and at the last): ``label: done/total units, rate units/s, ETA h:mm:ss``.

    ``total`` None (unknown, e.g. a video without a frame count) prints the count and rate only."""

    def __init__(self, label: str, total: int | None, unit: str, every: int = 1, stream: TextIO | None = None,
                 clock_fn: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit, self.every = label, total, unit, max(1, every)
        self.stream, self._now = stream, clock_fn
        self.start, self.last = clock_fn(), 0

    def update(self, done: int, note: str = "") -> None:
        """Record ``done`` items finished; prints when a multiple of ``every`` was crossed or all are done."""
        crossed = done // self.every > self.last // self.every or (done == self.total and done > self.last)
        self.last = max(self.last, done)
        if not crossed:
            return
        elapsed = max(self._now() - self.start, 1e-9)
        rate = done / elapsed
        line = f"{self.label}: {done}/{self.total if self.total is not None else '?'} {self.unit}s, " \
               f"{rate:.2f} {self.unit}s/s"
        if self.total is not None:
            line += f", ETA {clock((self.total - done) / rate) if rate > 0 else '?'}"
        print(line + (f" ({note})" if note else ""), file=self.stream or sys.stderr, flush=True)
