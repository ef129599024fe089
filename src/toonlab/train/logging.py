"""Run logging (rank 0 only): ``metrics.jsonl`` (one JSON object per line), a rich progress bar with phase, step,
ETA and the latest losses, TensorBoard scalars + sample grids when tensorboard is installed, and — when stdout is
not a terminal (a file, a pipe, a batch job) — one plain line per metrics record on stdout."""

from __future__ import annotations

import json
import math
import random
import sys
import time
import warnings
from pathlib import Path

import torch


class RunLogger:
    """``log(record)`` appends to metrics.jsonl and TensorBoard; ``progress(...)`` drives the bar."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, *, enabled: bool = True,
                 progress: bool = True, tensorboard: bool = True, lines: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        self._bar = None
        self.total, self.start_step, self._t0 = total_steps, start_step, time.monotonic()
        self.lines = lines  # records in metrics.jsonl (a training state stores it: a resume drops later lines)
        self.plain = enabled and not sys.stdout.isatty()
        if not enabled:
            return
        if tensorboard:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:  # the [tensorboard] extra is missing: say so once instead of writing nothing
                self._tb = None
                print("warning: train.tensorboard needs the [tensorboard] extra (tensorboard is not installed): "
                      "pip install 'toonlab[tensorboard]', or train.tensorboard=false; metrics.jsonl has every "
                      "record", file=sys.stderr)
        if progress and sys.stderr.isatty():  # piped, a bar's last frame would be left as a cut-off line
            # rich draws from Python's global RNG when first imported (rich.style's ids): a resumed run imports it
            # after its RNG states are restored, which moved the saved Python RNG position off the uninterrupted one
            state = random.getstate()
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            random.setstate(state)

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
        self.lines += 1
        if self.plain and "phase" in record:
            print(self._plain_line(record), flush=True)
        if self._tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def _plain_line(self, r: dict) -> str:
        """``step 40/400  adv  12.5 img/s  D/loss=0.5123  G/loss=3.201  ETA 0:01:23`` (ETA from this run's pace)."""
        step = r["step"]
        done, elapsed = step - self.start_step, time.monotonic() - self._t0
        eta = elapsed / done * max(self.total - step, 0) if done > 0 else None
        losses = "  ".join(f"{k}={v:.4g}" for k, v in r.items() if "/" in k and not k.startswith("lr/")
                           and isinstance(v, float))
        parts = [f"step {step}/{self.total}", r["phase"], f"{r.get('images_per_s', 0.0):.1f} img/s", losses,
                 "ETA " + (_hms(eta) if eta is not None else "?")]
        return "  ".join(p for p in parts if p)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """grid (3,H,W) in [0, 1]."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, grid.clamp(0, 1), step)

    def progress(self, step: int, phase: str, losses: dict[str, float] | None = None) -> None:
        """Move the bar to ``step``; ``losses`` (read every log_every steps) replace the ones it shows."""
        if self.enabled and self._bar is not None:
            if losses is None:
                self._bar.update(self._task, completed=step, phase=phase)
                return
            text = "  ".join(f"{k}={v:.4g}" for k, v in list(losses.items())[:6])
            self._bar.update(self._task, completed=step, phase=phase, losses=text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # keep metrics.jsonl strict JSON
    return v
