"""Shared pieces of the command line: the Typer app factory, one-line errors, the extra check."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

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

