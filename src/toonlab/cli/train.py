"""``toonlab train``: one run from a config, resume, init-from, DDP (library: toonlab.train)."""

from __future__ import annotations

import typer

from toonlab.cli._common import _typer

app = _typer()


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

        if resume is None:
            _check_before_launch(config, overrides)

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


def _check_before_launch(config: str | None, overrides: list[str]) -> None:
    """What each of --nproc's workers checks first (the config, the data folders), checked once here: a mistake is
    one line instead of one per worker under torchrun's failure report."""
    from toonlab.data.datasets import discover
    from toonlab.errors import UsageError
    from toonlab.train.config import load_run_config

    if config is None:
        raise UsageError("give a CONFIG file (or --resume RUN_DIR)")
    discover(load_run_config(config, overrides).data, requires=())
