"""Run logging (rank 0 only): ``metrics.jsonl`` (one JSON object per line), a rich progress bar with phase, step,
ETA and the latest losses, and TensorBoard scalars + sample grids when tensorboard is installed."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import torch


class RunLogger:
    """``log(record)`` appends to metrics.jsonl and TensorBoard; ``progress(...)`` drives the bar."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, *, enabled: bool = True,
                 progress: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        self._bar = None
        if not enabled:
            return
        if tensorboard:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:
                self._tb = None
        if progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]{task.fields[phase]}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                                 console=Console(file=sys.stderr), transient=False)
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step, phase="", losses="")
            self._bar.start()

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({k: _jsonable(v) for k, v in record.items()})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if self._tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """grid (3,H,W) in [0, 1]."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, grid.clamp(0, 1), step)

    def progress(self, step: int, phase: str, losses: dict[str, float]) -> None:
        if self.enabled and self._bar is not None:
            text = "  ".join(f"{k}={v:.4g}" for k, v in list(losses.items())[:6])
            self._bar.update(self._task, completed=step, phase=phase, losses=text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # keep metrics.jsonl strict JSON
    return v
