"""``toonlab prepare …``: training-ready datasets (library: toonlab.data.prepare, toonlab.data.synth)."""

from __future__ import annotations

import typer

from toonlab.cli._common import _typer

app = _typer(help="Build training-ready datasets: film frames, photo folders, side inputs, splits, checks.")


@app.command("synth")
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


@app.command("frames")
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


@app.command("photos")
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


@app.command("real")
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


@app.command("smooth")
def prepare_smooth(src: str = _SRC, out: str = _OUT, workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """CartoonGAN edge smoothing of cartoons (cartoongan / animegan / salcbam)."""
    _map("smooth", src, out, {}, workers, overwrite)


@app.command("guided")
def prepare_guided(src: str = _SRC, out: str = _OUT,
                   radius: int = typer.Option(5, "--radius", "-r", help="Guided-filter window radius."),
                   eps: float = typer.Option(0.2, help="Regularisation, on [-1,1] images."),
                   workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """Self-guided-filter edge processing of cartoons (multistyle; seed 000 eq. 1)."""
    _map("guided", src, out, {"r": radius, "eps": eps}, workers, overwrite)


@app.command("gray")
def prepare_gray(src: str = _SRC, out: str = _OUT, workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """Grayscale cartoons as 3-channel images (animegan)."""
    _map("gray", src, out, {}, workers, overwrite)


@app.command("saliency")
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


@app.command("split")
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


@app.command("check")
def prepare_check(src: str = typer.Argument(..., help="Dataset folder."),
                  size: int = typer.Option(None, help="Every image must be SIZE×SIZE."),
                  hash_threshold: int = typer.Option(4, help="Near duplicates: pHash bits ≤ this; -1 off."),
                  workers: int = _WORKERS):
    """Counts, formats, sizes, corrupt files, duplicates; exit 1 when something is wrong."""
    from toonlab.data.prepare.check import check_dataset, print_report

    rep = check_dataset(src, size=size, hash_threshold=hash_threshold, workers=workers)
    print_report(rep)
    raise typer.Exit(0 if rep.ok else 1)
