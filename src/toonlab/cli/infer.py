"""``toonlab cartoonize | realize | export | import-weights | models`` (library: toonlab.infer, toonlab.models)."""

from __future__ import annotations

import typer

from toonlab.cli._common import _typer, need_extra

app = _typer()

_CLASSIC = "Classic cartoonizer (default: toonlab.infer.classic.ClassicConfig)"
DTYPES = ("auto", "fp32", "bf16", "fp16")  # --dtype's values (Translator.load also takes torch's long names)


# Model options shared by cartoonize and realize: -m, --style, post-processing, backend, device, tiling, video.
_MODEL = "Model (a trained checkpoint instead of the classic cartoonizer)"
_M_OPTS = dict(
    style=typer.Option(None, "--style", help="Style name of a multi-style model (see `toonlab models CKPT`).",
                       rich_help_panel=_MODEL),
    strength=typer.Option(None, "--strength", min=0.0, max=1.0, help="Blend with the input: 0 = input, 1 = full "
                                                                     "effect.", rich_help_panel=_MODEL),
    keep_colors=typer.Option(False, "--keep-colors", help="Keep the input's colours (output luminance, input "
                                                          "chroma).", rich_help_panel=_MODEL),
    post_saturation=typer.Option(None, "--post-saturation", help="Saturation factor after the model (default: "
                                                                 "the model's, CTSS 1.4).", rich_help_panel=_MODEL),
    backend=typer.Option("auto", "--backend", help="auto | torch | onnx. auto: on CPU with onnxruntime installed, "
                                                   "whichever of ONNX Runtime and PyTorch ran faster here (timed once "
                                                   "per checkpoint at 512²; the export is cached in "
                                                   "~/.cache/toonlab/onnx), else PyTorch.", rich_help_panel=_MODEL),
    device=typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N.", rich_help_panel=_MODEL),
    dtype=typer.Option("auto", "--dtype", help="auto | fp32 | bf16 | fp16 (CUDA). auto: bf16 on a CPU with bf16 "
                                               "units where, on this model, it ran faster than fp32 and its output "
                                               "stayed within 45 dB / 4/255 of fp32's (measured once per "
                                               "checkpoint, cached), else fp32 (exact). -v says which ran and why.",
                       rich_help_panel=_MODEL),
    tile=typer.Option(None, "--tile", help="Tile side in pixels (default: from the memory budget).",
                      rich_help_panel=_MODEL),
    memory_budget=typer.Option(None, "--memory-budget", help="Activation memory per forward pass in MiB; over it "
                                                             "an image is streamed layer by layer (or tiled) "
                                                             "(default: half the available RAM, 0.8 of free GPU "
                                                             "memory; the need is measured per network).",
                               rich_help_panel=_MODEL),
    verbose=typer.Option(False, "--verbose", "-v", help="Say which backend and path (untiled / streamed / tiled) ran and why.",
                         rich_help_panel=_MODEL),
    batch_size=typer.Option(8, "--batch-size", min=1, help="Images (or video frames) per forward pass.",
                            rich_help_panel=_MODEL),
    compile_=typer.Option(False, "--compile", help="torch.compile the generator (faster for many images of one "
                                                   "size; compiles once per size).", rich_help_panel=_MODEL),
    smoothing=typer.Option(0.0, "--smoothing", min=0.0, max=0.99, help="Video: temporal smoothing of static "
                                                                       "regions (0 = off, e.g. 0.6).",
                           rich_help_panel=_MODEL),
    stabilize=typer.Option(False, "--stabilize/--no-stabilize", help="Video: fuse each frame with the previous "
                                                                     "output warped by optical flow (less flicker; "
                                                                     "docs/video.md).", rich_help_panel=_MODEL),
    stabilize_weight=typer.Option(None, "--stabilize-weight", min=0.0, max=0.99,
                                  help="Video: the stabiliser's fusion weight (implies --stabilize; default: the "
                                       "measured 0.7).", rich_help_panel=_MODEL),
)


def _load_translator(model: str | None, classic_knobs: dict | None, *, style, strength, keep_colors,
                     post_saturation, backend, device, dtype, tile, memory_budget, batch_size, compile_=False):
    """A Translator for `-m MODEL` (export file, run dir, .onnx) or, without -m, the classic cartoonizer."""
    from toonlab.errors import UsageError
    from toonlab.infer.translator import Translator

    if backend not in ("auto", "torch", "onnx"):
        raise UsageError(f"--backend must be auto, torch or onnx, got {backend!r}")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be {', '.join(DTYPES)}, got {dtype!r}")
    if model is not None and str(model).lower().endswith(".onnx"):
        if backend == "torch":
            raise UsageError(f"{model}: an ONNX file runs on onnxruntime (--backend auto or onnx)")
        backend = "onnx"
    common = dict(style=style, strength=strength, keep_colors=keep_colors or None, saturation=post_saturation,
                  tile=tile, batch_size=batch_size,
                  memory_budget=None if memory_budget is None else int(memory_budget * (1 << 20)))
    if model is None:
        from toonlab.infer.classic import ClassicConfig

        if device not in ("auto", "cpu"):  # its filters are CPU-tuned (worker threads, cache-sized strips)
            typer.echo(f"note: the classic cartoonizer runs on the CPU (--device {device} applies to -m models)",
                       err=True)
        config = ClassicConfig(**{k: v for k, v in (classic_knobs or {}).items() if v is not None})
        return Translator.load("classic", classic_options={"config": config}, **common)
    if classic_knobs and any(v is not None for v in classic_knobs.values()):
        raise UsageError("classic cartoonizer options (--radius, --levels, ...) do not apply with -m")
    if str(model).lower().endswith(".onnx"):
        return Translator.load(model, backend="onnx", **common)
    return Translator.load(model, device=device, dtype=dtype, compile=compile_, backend=backend, **common)


def _find_work(command: str, inputs: list[str], out: str, model: str | None, *, ext: str | None, smoothing: float,
               stabilize: float | None) -> tuple[list[str], list]:
    """The checks that need no model, run before one is loaded or its backend timed: options (--ext, conflicts),
    the output folder, the inputs and ``-m``'s file. Returns (image inputs for run_batch, (video, relative path)
    pairs)."""
    import glob
    import os
    from pathlib import Path

    from toonlab.errors import UsageError
    from toonlab.infer.video import find_videos, is_video
    from toonlab.io import expand_inputs, glob_paths, output_format
    from toonlab.paths import symlink_loop

    if ext is not None:
        output_format("." + ext.lower().lstrip("."), "--ext")  # UsageError for a format we cannot write
    if stabilize is not None and smoothing > 0:
        raise UsageError("--smoothing and --stabilize are alternatives: choose one")
    if symlink_loop(out):
        raise UsageError(f"{out}: the output folder is a symlink loop")
    existing = Path(out)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == Path(out) and not existing.is_dir():
        raise UsageError(f"{out}: the output folder is a file")
    if not os.access(existing.resolve(), os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot write there ({existing} is not writable)")
    if not any(Path(p).exists() or os.path.islink(p) or (glob.has_magic(p) and glob_paths(p)[1])
               for p in inputs):  # glob_paths, not glob.glob: a '**' through a symlink loop must end
        raise UsageError(f"no images found in: {' '.join(inputs)}")
    if model is not None:
        _check_model_file(model)
    video_pairs = find_videos([p for p in inputs if not symlink_loop(p)], exclude=Path(out))  # loops: run_batch
    if video_pairs:
        need_extra("video", f"{command} of a video", "av")
    images = [p for p in inputs if not (is_video(p) and Path(p).is_file())]
    loops = [p for p in images if symlink_loop(p)]  # they fail alone in run_batch
    if images and video_pairs and not expand_inputs([p for p in images if p not in loops], exclude=Path(out),
                                                    keep_missing=True):
        images = loops  # folders / globs holding only videos
    return images, video_pairs


def _check_model_file(model: str) -> None:
    """``-m``: an existing export, run dir or ONNX file — not a TorchScript / pickle archive (a zip file)."""
    import zipfile
    from pathlib import Path

    from toonlab.errors import UsageError

    path = Path(model)
    if not path.exists():
        raise UsageError(f"{model}: no such checkpoint file or run directory")
    if path.is_file() and zipfile.is_zipfile(path):
        raise UsageError(f"{model}: a TorchScript or torch.save file, which -m does not run; give it the export "
                         f"checkpoint (.safetensors) it came from, a run dir, or an .onnx export")


def _run_translation(command: str, work: tuple[list[str], list], out: str, translator, *, suffix: str,
                     ext: str | None, overwrite: bool, quality: int, progress: bool, smoothing: float,
                     batch_size: int, verbose: bool = False, stabilize: float | None = None) -> None:
    """The images of ``work`` (:func:`_find_work`) through infer/batch.run_batch, its videos through
    infer/video.translate_video (``stabilize``: the Stabilizer's weight, None = off); progress on stderr (a bar
    on a terminal, plain lines when piped); one summary line."""
    from pathlib import Path

    from toonlab.infer.batch import BatchSummary, run_batch
    from toonlab.infer.video import translate_video
    from toonlab.io import OutputExistsError
    from toonlab.paths import InputIds, contained_relative, unsafe_output

    images, video_pairs = work
    videos = [v for v, _ in video_pairs]
    if verbose:
        typer.echo(f"backend: {translator.backend_note or translator.name}", err=True)

    def translate_image(loaded, report=None):
        y = translator.translate_tensor(loaded.rgb[None], progress=report)[0]
        if verbose and translator.last_plan is not None:
            typer.echo(f"{loaded.path}: {translator.last_plan.reason}", err=True)
        return y

    summary = BatchSummary()
    if images:
        summary = run_batch(images, out, translate_image, suffix=suffix, ext=ext, overwrite=overwrite,
                            progress=progress, quality=quality, sub_progress=progress)
    video_ids = InputIds(videos)
    for video, rel in video_pairs:
        rel = contained_relative(video, rel)
        dst = Path(out) / rel.parent / f"{video.stem}{suffix or ''}{video.suffix}"
        unsafe = unsafe_output(dst, Path(out), video_ids)  # e.g. `-o .` would write clip.mp4 over clip.mp4
        if unsafe:
            summary.failed.append((video, f"{video}: {unsafe}"))
            continue
        try:
            with _frame_progress(video.name, progress) as report:
                stabilizer = None
                if stabilize is not None:
                    from toonlab.infer.temporal import Stabilizer

                    stabilizer = Stabilizer(weight=stabilize)
                res = translate_video(video, dst, translator.translate_tensor, batch_size=batch_size,
                                      smoothing=smoothing, stabilizer=stabilizer, overwrite=overwrite,
                                      progress=report)
            if verbose and translator.last_plan is not None:
                typer.echo(f"{video}: {res.frames} frames at {res.frames / max(res.seconds, 1e-9):.2f} frames/s; "
                           f"{translator.last_plan.reason}", err=True)
        except OutputExistsError:
            summary.skipped.append(dst)
        except Exception as e:  # one bad video never stops the others
            summary.failed.append((video, str(e).splitlines()[0] if str(e) else type(e).__name__))
        else:
            summary.done.append(dst)
            if res.bad_frames:
                typer.echo(f"warning: {video}: {res.bad_frames} undecodable packet(s) skipped", err=True)
    for _, message in summary.failed:
        typer.echo(f"failed: {message}", err=True)
    typer.echo(f"{command}: {summary.line()} -> {out}")
    raise typer.Exit(0 if summary.ok else 1)


PIPED_FRAMES = 25  # a piped video run prints one progress line per this many frames


def _frame_progress(name: str, show: bool):
    """A context giving ``report(done, total, unit)`` for translate_video: a rich bar on stderr with frames,
    frames/s and ETA; piped, one plain line per ``PIPED_FRAMES`` frames (a no-op when ``show`` is False)."""
    from contextlib import contextmanager, nullcontext

    from toonlab.terminal import LineProgress, is_terminal

    if not show:
        return nullcontext(None)
    if not is_terminal():
        lines = LineProgress(name, None, "frame", every=PIPED_FRAMES)

        def report_line(done: int, total: int | None, unit: str) -> None:
            lines.total, lines.unit = total, unit
            lines.update(done)

        return nullcontext(report_line)

    @contextmanager
    def bar_context():
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeRemainingColumn)

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[fps]}"), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(name, total=None, fps="")

            def report(done: int, total: int | None, unit: str) -> None:
                speed = bar.tasks[0].speed
                bar.update(task, completed=done, total=total, fps=f"{speed:.2f} {unit}s/s" if speed else "")

            yield report

    return bar_context()


def _stabilize_weight(stabilize: bool, weight: float | None) -> float | None:
    """The stabiliser's weight for --stabilize / --stabilize-weight, None when off."""
    if weight is None and not stabilize:
        return None
    from toonlab.infer.temporal import DEFAULT_WEIGHT

    return DEFAULT_WEIGHT if weight is None else weight


@app.command("cartoonize")
def cartoonize_cmd(
        inputs: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or glob patterns "
                                                     "(quote them: 'photos/**/*.jpg')."),
        out: str = typer.Option(..., "--out", "-o", help="Output folder (keeps the inputs' sub-folders)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them)."),
        ext: str = typer.Option(None, "--ext", help="Output format: png, jpg, webp, bmp, tif, gif (default: the "
                                                    "input's)."),
        suffix: str = typer.Option("", "--suffix", help="Appended to each output's file name stem, e.g. _toon."),
        quality: int = typer.Option(95, "--quality", min=1, max=100, help="JPEG/WebP quality."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
        work_size: int = typer.Option(None, "--work-size", help="Short side of the working resolution (0 = full).",
                                      show_default="720", rich_help_panel=_CLASSIC),
        radius: int = typer.Option(None, "--radius", help="Guided-filter radius (working-resolution pixels).",
                                   show_default="5", rich_help_panel=_CLASSIC),
        eps: float = typer.Option(None, "--eps", help="Guided-filter eps: larger flattens more.",
                                  show_default="0.004", rich_help_panel=_CLASSIC),
        iterations: int = typer.Option(None, "--iterations", help="Smoothing rounds.", show_default="2",
                                       rich_help_panel=_CLASSIC),
        levels: int = typer.Option(None, "--levels", help="Luminance bands (placed by the photo's histogram).",
                                   show_default="8", rich_help_panel=_CLASSIC),
        saturation: float = typer.Option(None, "--saturation", help="Chroma gain (1 = unchanged).",
                                         show_default="1.35", rich_help_panel=_CLASSIC),
        line_strength: float = typer.Option(None, "--line-strength", help="0 = no lines … 1 = black lines.",
                                            show_default="0.85", rich_help_panel=_CLASSIC),
        line_threshold: float = typer.Option(None, "--line-threshold", help="Edge response where ink starts "
                                                                            "(smaller = more lines).",
                                             show_default="0.003", rich_help_panel=_CLASSIC),
        model: str = typer.Option(None, "--model", "-m", help="Export checkpoint (.safetensors), run dir, or .onnx "
                                                              "file (default: the classic cartoonizer).",
                                  rich_help_panel=_MODEL),
        style: str = _M_OPTS["style"], strength: float = _M_OPTS["strength"],
        keep_colors: bool = _M_OPTS["keep_colors"], post_saturation: float = _M_OPTS["post_saturation"],
        backend: str = _M_OPTS["backend"], device: str = _M_OPTS["device"], dtype: str = _M_OPTS["dtype"],
        tile: int = _M_OPTS["tile"], memory_budget: float = _M_OPTS["memory_budget"],
        batch_size: int = _M_OPTS["batch_size"], smoothing: float = _M_OPTS["smoothing"],
        compile_: bool = _M_OPTS["compile_"], verbose: bool = _M_OPTS["verbose"],
        stabilize: bool = _M_OPTS["stabilize"], stabilize_weight: float = _M_OPTS["stabilize_weight"]):
    """Cartoonize images and videos (files, folders, globs) into an output folder. Exit 0 all done, 1 some
    failed, 2 usage."""
    classic = dict(work_size=work_size, radius=radius, eps=eps, iterations=iterations, levels=levels,
                   saturation=saturation, line_strength=line_strength, line_threshold=line_threshold)
    stabilize_w = _stabilize_weight(stabilize, stabilize_weight)
    work = _find_work("cartoonize", inputs, out, model, ext=ext, smoothing=smoothing, stabilize=stabilize_w)
    translator = _load_translator(model, classic, style=style, strength=strength, keep_colors=keep_colors,
                                  post_saturation=post_saturation, backend=backend, device=device, dtype=dtype,
                                  tile=tile, memory_budget=memory_budget, batch_size=batch_size,
                                  compile_=compile_)
    if translator.direction == "cartoon2photo":
        from toonlab.errors import UsageError

        raise UsageError(f"{model}: a cartoon → photo model ({translator.name}); use `toonlab realize`")
    _run_translation("cartoonize", work, out, translator, suffix=suffix, ext=ext, overwrite=overwrite,
                     quality=quality, progress=not no_progress, smoothing=smoothing, batch_size=batch_size,
                     verbose=verbose, stabilize=stabilize_w)


@app.command("realize")
def realize_cmd(
        inputs: list[str] = typer.Argument(..., help="Cartoon images / videos: files, folders or glob patterns."),
        model: str = typer.Option(..., "--model", "-m", help="A cartoon → photo checkpoint (toon2real export "
                                                             "file, run dir or .onnx)."),
        out: str = typer.Option(..., "--out", "-o", help="Output folder (keeps the inputs' sub-folders)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them)."),
        ext: str = typer.Option(None, "--ext", help="Output image format (default: the input's)."),
        suffix: str = typer.Option("", "--suffix", help="Appended to each output's file name stem."),
        quality: int = typer.Option(95, "--quality", min=1, max=100, help="JPEG/WebP quality."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
        style: str = _M_OPTS["style"], strength: float = _M_OPTS["strength"],
        keep_colors: bool = _M_OPTS["keep_colors"], post_saturation: float = _M_OPTS["post_saturation"],
        backend: str = _M_OPTS["backend"], device: str = _M_OPTS["device"], dtype: str = _M_OPTS["dtype"],
        tile: int = _M_OPTS["tile"], memory_budget: float = _M_OPTS["memory_budget"],
        batch_size: int = _M_OPTS["batch_size"], smoothing: float = _M_OPTS["smoothing"],
        compile_: bool = _M_OPTS["compile_"], verbose: bool = _M_OPTS["verbose"],
        stabilize: bool = _M_OPTS["stabilize"], stabilize_weight: float = _M_OPTS["stabilize_weight"]):
    """Turn cartoons into photo-like images (Toon2real). Exit 0 all done, 1 some failed, 2 usage."""
    stabilize_w = _stabilize_weight(stabilize, stabilize_weight)
    work = _find_work("realize", inputs, out, model, ext=ext, smoothing=smoothing, stabilize=stabilize_w)
    translator = _load_translator(model, None, style=style, strength=strength, keep_colors=keep_colors,
                                  post_saturation=post_saturation, backend=backend, device=device, dtype=dtype,
                                  tile=tile, memory_budget=memory_budget, batch_size=batch_size,
                                  compile_=compile_)
    if translator.direction != "cartoon2photo":
        from toonlab.errors import UsageError

        raise UsageError(f"{model}: {translator.name} translates photos to cartoons; use `toonlab cartoonize`")
    _run_translation("realize", work, out, translator, suffix=suffix, ext=ext, overwrite=overwrite,
                     quality=quality, progress=not no_progress, smoothing=smoothing, batch_size=batch_size,
                     verbose=verbose, stabilize=stabilize_w)


@app.command("export")
def export_cmd(checkpoint: str = typer.Argument(..., help="Export checkpoint (.safetensors) or run dir."),
               out: str = typer.Option(..., "--out", "-o", help="Output file (.onnx or .pt)."),
               fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript."),
               opset: int = typer.Option(17, "--opset", help="ONNX opset version.")):
    """Export a generator to ONNX or TorchScript (dynamic H/W) and compare it with PyTorch on a real photo."""
    from toonlab.infer.export import export_model

    if fmt == "onnx":
        need_extra("onnx", "export --format onnx", "onnx", "onnxruntime")

    res = export_model(checkpoint, out, fmt, opset=opset)
    h, w = res.photo_size
    typer.echo(f"export: {res.path} ({res.format}); max |exported - pytorch| on a {h}x{w} photo: "
               f"{res.max_abs_diff:.2e}")
    if res.max_abs_diff > 1e-3:
        typer.echo("error: the exported model differs from PyTorch by more than 1e-3", err=True)
        raise typer.Exit(1)


@app.command("import-weights")
def import_weights_cmd(src: str = typer.Argument(..., help="Released weights: animegan2-pytorch .pt or "
                                                           "CartoonGAN *_net_G_float.pth."),
                       arch: str = typer.Option(..., "--arch", help="animegan2 | cartoongan."),
                       out: str = typer.Option(..., "--out", "-o", help="Output export checkpoint "
                                                                         "(.safetensors).")):
    """Convert published generator weights into a toonlab export checkpoint (use it with -m)."""
    from toonlab.infer.import_weights import import_weights

    path = import_weights(src, arch, out)
    typer.echo(f"import-weights: {src} ({arch}) -> {path}")


@app.command("models")
def models_cmd(checkpoint: str = typer.Argument(None, help="An export checkpoint (.safetensors), a run dir or an "
                                                          "ONNX export (.onnx) to describe; omit to list the "
                                                          "registered models.")):
    """List the registered models (networks, parameters, generator GFLOPs at the default size; measured once per
    toonlab and torch version, then cached), or describe an export checkpoint's (run dir's, ONNX export's) model,
    config and styles."""
    import json

    if checkpoint:
        _check_model_file(checkpoint)
    if checkpoint and checkpoint.lower().endswith(".onnx"):
        need_extra("onnx", "describing an ONNX file", "onnx")
        meta = _onnx_metadata(checkpoint)
        typer.echo(f"model: {meta.pop('toonlab_model')}")
        typer.echo(f"styles: {', '.join(json.loads(meta.pop('toonlab_styles', '[]'))) or '-'}")
        typer.echo(f"format: onnx (opset {meta.pop('opset')})")
        config = json.loads(meta.pop("toonlab_config", "{}"))
        for key in sorted(meta):
            typer.echo(f"{key.removeprefix('toonlab_')}: {meta[key]}")
        typer.echo("config:")
        for key, value in config.items():
            typer.echo(f"  {key}: {json.dumps(value)}")
        return
    if checkpoint:
        from toonlab.checkpoint import read_export_metadata
        from toonlab.infer.translator import resolve_checkpoint

        meta = read_export_metadata(resolve_checkpoint(checkpoint))
        typer.echo(f"model: {meta['model']}")
        typer.echo(f"styles: {', '.join(json.loads(meta.get('styles', '[]'))) or '-'}")
        config = json.loads(meta["config"])
        if "perceptual" in config:  # the backbone its content loss was trained with (resolved by the trainer)
            typer.echo(f"perceptual: {config['perceptual']}")
        for key in sorted(set(meta) - {"model", "styles", "config", "format"}):
            typer.echo(f"{key}: {meta[key]}")
        typer.echo("config:")
        for key, value in config.items():
            typer.echo(f"  {key}: {json.dumps(value)}")
        return
    from toonlab.model_table import model_table

    typer.echo(f"{'model':<12}{'direction':<15}{'size':>5}  {'G GFLOPs':>9}  networks (trainable parameters)")
    for s in model_table():
        nets = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in s["params"].items())
        styles = f"  styles: {', '.join(s['styles'])}" if s["styles"] else ""
        typer.echo(f"{s['name']:<12}{s['direction']:<15}{s['default_size']:>5}  {s['generator_gflops']:>9.1f}  "
                   f"{nets}{styles}")


def _onnx_metadata(path: str) -> dict[str, str]:
    """The toonlab metadata (``toonlab_*`` props, written by ``toonlab export``) and opset of an ONNX file."""
    from pathlib import Path

    from toonlab.errors import ToonlabError, UsageError

    if not Path(path).is_file():
        raise UsageError(f"{path}: no such ONNX file")
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own types for foreign/corrupt files
        raise ToonlabError(f"{path}: not a readable ONNX file ({(str(e).splitlines() or [type(e).__name__])[0]})") \
            from None
    meta = {p.key: p.value for p in model.metadata_props if p.key.startswith("toonlab_")}
    if "toonlab_model" not in meta:
        raise ToonlabError(f"{path}: not exported by toonlab (no toonlab_model metadata)")
    meta["opset"] = ", ".join(str(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")) or "?"
    return meta
