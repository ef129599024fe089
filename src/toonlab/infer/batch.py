"""Batch translation of image files: inputs (files, folders, globs) -> one output file each (``run_batch``, what
``cartoonize`` runs), and ``translate_folder`` (a checkpoint over a folder, as experiments and ``evaluate`` do).

The batch never stops at a bad file: unreadable inputs, failing translations and unwritable outputs are collected in
``BatchSummary.failed`` (one line each), existing outputs are skipped unless ``overwrite``. Outputs keep the
inputs' relative sub-folders and get the input's alpha channel back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from toonlab.errors import ConfigError, ToonlabError, UsageError
from toonlab.io import (DEFAULT_MAX_PIXELS, LoadedImage, OutputExistsError, expand_inputs, output_format,
                        read_image, write_image)
from toonlab.paths import InputIds, contained_relative, symlink_loop, unsafe_output
from toonlab.terminal import LineProgress, is_terminal

Report = Callable[[int, int, str], None]  # report(done, total, unit): progress within one image
# translate(loaded) -> rgb (3,H,W) [0,1]; with run_batch(sub_progress=True): translate(loaded, report)
Translate = Callable[[LoadedImage], torch.Tensor] | Callable[[LoadedImage, Report], torch.Tensor]


@dataclass
class BatchSummary:
    """What a batch did: outputs written, outputs skipped (they existed), inputs failed with a one-line message."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        """The summary line; skips say why (outputs from an earlier run, perhaps with other options) and the fix."""
        counts = f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"
        if not self.skipped:
            return counts
        return f"{counts} ({len(self.skipped)} skipped: the output exists already; --overwrite replaces it)"


def output_path(rel: Path, out_dir: Path, suffix: str | None, ext: str | None) -> Path:
    """out_dir / rel's folder / rel's stem + suffix + (ext or rel's extension, lower-cased)."""
    new_ext = ext if ext is not None else rel.suffix.lower()
    return out_dir / rel.parent / f"{rel.stem}{suffix or ''}{new_ext}"


def _normalize_ext(ext: str | None) -> str | None:
    if ext is None:
        return None
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    output_format(ext, "--ext")  # UsageError for formats we cannot write
    return ext


def _matching_alpha(alpha: torch.Tensor | None, hw: tuple[int, int]) -> torch.Tensor | None:
    """The input's alpha (1,h,w) resized to the output's size if the translator changed it."""
    if alpha is None or tuple(alpha.shape[-2:]) == hw:
        return alpha
    return F.interpolate(alpha[None], size=hw, mode="bilinear", align_corners=False)[0].clamp_(0, 1)


def _one_line(path: Path, e: BaseException) -> str:
    if isinstance(e, ToonlabError):
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return first if str(path) in first else f"{path}: {first}"  # always name the file
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{path}: {type(e).__name__}: {first}" if first else f"{path}: {type(e).__name__}"


def _process(src: Path, dst: Path, translate: Translate, overwrite: bool, max_pixels: int | None,
             quality: int, report: Report | None = None) -> None:
    loaded = read_image(src, max_pixels=max_pixels)
    rgb = translate(loaded, report) if report is not None else translate(loaded)
    if not isinstance(rgb, torch.Tensor) or rgb.ndim != 3 or rgb.shape[0] != 3:
        got = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
        raise ToonlabError(f"{src}: the translator returned {got}, expected an rgb (3,H,W) tensor")
    alpha = _matching_alpha(loaded.alpha, tuple(rgb.shape[-2:]))
    write_image(dst, rgb, alpha, overwrite=overwrite, quality=quality)


def run_batch(inputs: Sequence[str | Path], out_dir: str | Path, translate: Translate, *, suffix: str | None = None,
              ext: str | None = None, overwrite: bool = False, progress: bool = True, recursive: bool = True,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, quality: int = 95,
              sub_progress: bool = False) -> BatchSummary:
    """Translate every image named by ``inputs`` into ``out_dir``.

    ``translate(loaded) -> rgb (3,H,W) in [0,1]``. Output names: the input's path relative to its folder / glob
    root (normalised: always inside ``out_dir``), with ``suffix`` appended to the stem and ``ext`` (png, jpg, webp,
    ...) or the input's extension. An output that would be one of the inputs fails that file.
    Raises UsageError (exit 2) when nothing matched or ``ext`` is not writable; everything else is per file.
    ``progress``: a Rich bar on a terminal; piped, one plain line per file with rate and ETA.
    ``sub_progress``: ``translate`` is called as ``translate(loaded, report)`` and ``report(done, total, unit)``
    feeds a second progress bar within the image (e.g. its tiles); the bars show even for one image.
    """
    out_dir = Path(out_dir)
    ext = _normalize_ext(ext)
    if symlink_loop(out_dir):
        raise UsageError(f"{out_dir}: the output folder is a symlink loop")
    loops = [Path(i) for i in inputs if symlink_loop(i)]  # fail alone, like any unreadable file
    pairs = expand_inputs([i for i in inputs if Path(i) not in loops], recursive=recursive, exclude=out_dir,
                          keep_missing=True)
    if not pairs and not loops:
        raise UsageError(f"no images found in: {' '.join(str(i) for i in inputs)}")
    summary = BatchSummary(failed=[(p, f"{p}: symlink loop (it points back to itself)") for p in loops])
    claimed: dict[Path, Path] = {}
    input_ids = InputIds(src for src, _ in pairs)

    def one(src: Path, rel: Path, report: Report | None = None) -> None:
        dst = output_path(contained_relative(src, rel), out_dir, suffix, ext)  # no `..` climbs out of out_dir
        unsafe = unsafe_output(dst, out_dir, input_ids)
        if unsafe:
            summary.failed.append((src, f"{src}: {unsafe}"))
            return
        if dst in claimed:
            summary.failed.append((src, f"{src}: output {dst} would collide with the output of {claimed[dst]}"))
            return
        claimed[dst] = src
        if dst.exists() and not overwrite:
            summary.skipped.append(dst)
            return
        try:
            _process(src, dst, translate, overwrite, max_pixels, quality, report)
        except OutputExistsError:  # appeared while we were working
            summary.skipped.append(dst)
        except Exception as e:  # the batch never stops at a bad file; Ctrl-C still does
            summary.failed.append((src, _one_line(src, e)))
        else:
            summary.done.append(dst)

    piped = progress and not is_terminal()  # a live bar would print nothing: one plain line per file instead
    if progress and (len(pairs) > 1 or sub_progress) and not piped:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[name]}"))
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("images", total=len(pairs), name="")
            inner = bar.add_task("", total=None, name="", visible=False)

            def report(done: int, total: int, unit: str) -> None:
                if unit == "image":  # an untiled image: nothing finer to show
                    return
                bar.update(inner, description=f"{unit}s", completed=done, total=total, visible=True)

            for src, rel in pairs:
                bar.update(task, name=src.name)
                bar.reset(inner, visible=False)
                one(src, rel, report if sub_progress else None)
                bar.advance(task)
    else:
        lines = LineProgress("images", len(pairs), "image") if piped else None
        for i, (src, rel) in enumerate(pairs, 1):
            one(src, rel)
            if lines is not None:
                lines.update(i, note=str(src))
    return summary


def match_style(style: str, styles: tuple[str, ...]) -> str | None:
    """The entry of ``styles`` equal to ``style`` ignoring case, or None."""
    return next((s for s in styles if s.casefold() == style.casefold()), None)


def translate_folder(model_ref: str, inputs: Path, out_dir: Path, device: str, *, style: str | None = None,
                     saturation: float = 1.0, direction: str | None = None) -> list[tuple[str, str]]:
    """Translate every image of ``inputs`` into ``out_dir`` (same relative names, PNG); returns failures.

    ``style``: a multi-style model's style (matched case-insensitively). ``saturation``: the post-processing of
    every row (1.0 = none), replacing the model's own (CTSS's +40 %) so that rows are compared alike.
    ``direction``: the direction ``inputs`` need; a translator going the other way is a ConfigError."""
    from toonlab.infer.translator import Translator
    from toonlab.io import list_images

    translator = Translator.load(model_ref, device=device, saturation=saturation, contrast=1.0, brightness=1.0,
                                 keep_colors=False, match_luminance=False, strength=1.0)
    if direction is not None and translator.direction != direction:
        raise ConfigError(f"{model_ref}: translates {translator.direction}, but {inputs} needs {direction}")
    style_id = None
    if style is not None and translator.styles:
        match = match_style(style, translator.styles)
        if match is None:
            raise ConfigError(f"{model_ref}: no style {style!r} (styles: {', '.join(translator.styles)})")
        style_id = translator.styles.index(match)
    failed = []
    for f in list_images([str(inputs)]):
        try:
            rgb = read_image(f).rgb
            with torch.inference_mode():
                y = translator.translate_tensor(rgb[None], style_id)[0]
            write_image(out_dir / f.relative_to(inputs).with_suffix(".png"), y.float().cpu(), overwrite=True)
        except ToonlabError as e:
            failed.append((str(f), str(e)))
    return failed
