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
# ---- end prepare ----------------------------------------------------------------------------------------------


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
