"""The ``toonlab`` command line: one Typer sub-app per package room (prepare, train, infer, eval, serve, weights,
study); each command is a thin shell over a library function and imports that library only when it runs.

Exit codes: 0 success, 1 some inputs failed (or a ToonlabError), 2 usage error (bad option, bad config).
A ToonlabError raised anywhere below a command is printed as one ``error: …`` line, never a traceback.
"""

from __future__ import annotations

import sys

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


# Commands whose every output is written and closed when they return: their process ends without tearing the
# interpreter down (PyTorch's teardown alone takes ~0.23 s here: `python -c "import torch"` 1.02 s, with os._exit
# 0.78 s) — a quarter of a one-photo `cartoonize` beyond the import. Training, serving and evaluation exit normally.
FAST_EXIT_COMMANDS = frozenset({"cartoonize", "realize", "models"})


def main() -> None:
    """The console script (and ``python -m toonlab.cli``): runs the command and ends the process. To call the CLI
    from Python and go on afterwards, call :data:`app` (``standalone_mode=False`` returns instead of exiting)."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    try:
        app()
    except SystemExit as e:
        if command in FAST_EXIT_COMMANDS:
            _exit_now(e.code)
        raise


def _exit_now(code) -> None:
    """End the process with ``code`` (SystemExit's: None, an int, or a message for stderr) after what a normal exit
    does that matters here — atexit handlers (logging, temporary files), flushed stdout/stderr — skipping module
    teardown. Returns (a normal exit follows) while a non-daemon thread still runs: a normal exit would wait for it."""
    import atexit
    import os
    import threading

    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: what a normal exit would also fail to write
            pass
    os._exit(code or 0)
