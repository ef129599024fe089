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
                  workers: int = typer.Option(1, "--workers", help="Processes."),
                  overwrite: bool = typer.Option(False, "--overwrite", help="Re-render existing images.")):
    """SynthToon: procedural photos + cartoons (train unpaired, test paired) with a manifest."""
    from toonlab.data.synth import make_synthtoon

    path = make_synthtoon(out, n, size, seed, n_test=n_test, overwrite=overwrite, workers=workers, progress=True)
    typer.echo(f"SynthToon written to {path}")


_WORKERS = typer.Option(1, "--workers", "-j", help="Processes.")
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
                   ext: str = typer.Option(".png", help="Output image format."),
                   threads: str = typer.Option("AUTO", help="Decoder threading: AUTO|FRAME|SLICE|NONE."),
                   workers: int = _WORKERS, overwrite: bool = _OVERWRITE):
    """Sample training frames from videos (resumable; writes a manifest)."""
    from toonlab.data.prepare.common import report
    from toonlab.data.prepare.filters import QualityThresholds
    from toonlab.data.prepare.frames import FrameConfig, extract_frames

    cfg = FrameConfig(every=every, scene_cuts=scene_cuts, cut_threshold=cut_threshold, skip_start=skip_start,
                      skip_end=skip_end, size=size, crop=crop, seed=seed, hash_threshold=hash_threshold,
                      quality=QualityThresholds(min_luma, min_std, min_sharpness), ext=ext, threads=threads)
    raise typer.Exit(report(extract_frames(videos, out, cfg, workers=workers, overwrite=overwrite), "frames"))
# ---- end prepare ----------------------------------------------------------------------------------------------


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
    from toonlab.train.trainer import train

    result = train(config, overrides, resume=resume, init_from=init_from)
    if int(os.environ.get("RANK", 0)) == 0:
        typer.echo(f"trained to step {result['step']}: {result['export']}")
# ---- end train ------------------------------------------------------------------------------------------------


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
