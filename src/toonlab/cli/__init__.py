"""The ``toonlab`` command line: one Typer sub-app per package room (prepare, train, infer, eval, serve, weights,
study); each command is a thin shell over a library function and imports that library only when it runs.

Exit codes: 0 success, 1 some inputs failed (or a ToonlabError), 2 usage error (bad option, bad config).
A ToonlabError raised anywhere below a command is printed as one ``error: …`` line, never a traceback.
"""

from __future__ import annotations

import typer

from toonlab import __version__
from toonlab.cli import eval as eval_cli
from toonlab.cli import infer, prepare, serve, study, train, weights
from toonlab.cli._common import _typer

__all__ = ["app", "main"]

app = _typer(help="toonlab: photo ↔ cartoon translation with GANs — train, cartoonize, evaluate, serve.")


def _version(value: bool):
    if value:
        typer.echo(f"toonlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """toonlab: photo ↔ cartoon translation with GANs."""


app.add_typer(prepare.app, name="prepare")
app.add_typer(infer.app)  # cartoonize, realize, export, import-weights, models: top-level commands
app.add_typer(train.app)
app.add_typer(eval_cli.app)  # evaluate, experiment
app.add_typer(weights.app, name="weights")
app.add_typer(study.app, name="study")
app.add_typer(serve.app)


def main() -> None:  # console-script entry point
    app()
