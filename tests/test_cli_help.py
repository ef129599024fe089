"""Every command's help: click-style metavars, flags without a value, arguments in capitals."""

import re

import typer
from typer.testing import CliRunner

from toonlab.cli import app

runner = CliRunner()


def _command_paths(group=None, prefix=()):
    import click

    group = group or typer.main.get_command(app)
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if hasattr(cmd, "list_commands"):
            yield from _command_paths(cmd, (*prefix, name))
        else:
            yield (*prefix, name)


def test_help_shows_plain_metavars_everywhere():
    paths = list(_command_paths())
    assert ("cartoonize",) in paths and ("prepare", "synth") in paths and len(paths) > 20
    for path in paths:
        r = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert r.exit_code == 0, (path, r.output)
        bad = re.findall(r"<(?:bool|str|int|float|list\[[a-z]+\])>|\{[a-z_]+\}", r.output)
        assert not bad, (path, bad)
    r = runner.invoke(app, ["cartoonize", "--help"], terminal_width=200)
    assert "cartoonize [OPTIONS] INPUTS..." in r.output
    assert re.search(r"--quality\s+INTEGER", r.output) and re.search(r"--out\s+-o\s+TEXT", r.output)
    assert re.search(r"--overwrite\s+Replace", r.output)  # a flag: no value column


def test_boolean_options_are_flags():
    import click

    for path in _command_paths():
        group, ctx = typer.main.get_command(app), None
        cmd = group
        for name in path:
            ctx = click.Context(cmd, parent=ctx)
            cmd = cmd.get_command(ctx, name)
        for p in cmd.get_params(click.Context(cmd)):
            if isinstance(p, click.Option) and p.type_descriptor.annotation is bool:
                assert p.is_flag, (path, p.name)
