"""Shared pieces of the command line: the Typer app factory, one-line errors, the extra check."""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from toonlab.errors import ToonlabError


_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT"}


class _PlainOption(TyperOption):
    """Help shows click's metavars (TEXT, INTEGER, FLOAT, a choice) instead of Typer's ``<str>``; a flag none."""

    def display_type_rich(self, ctx):
        if self.is_flag:
            return None
        if self.metavar:
            return self.metavar
        label = self.display_type(ctx)[1:-1].removeprefix("list[").removesuffix("]")  # "<list[str]>" → "str"
        label = label.removesuffix(" range")
        return _METAVARS.get(label, label.upper() if "|" not in label else f"[{label}]")


class _PlainArgument(TyperArgument):
    """Help names an argument in capitals (``INPUTS...``, ``[CONFIG]``) without a ``<list[str]>`` type."""

    def display_type_rich(self, ctx):
        return None

    def _rich_display_name(self) -> str:
        return self.display_name_raw.upper() + ("..." if self.nargs != 1 else "")

    def _usage_display_name(self) -> str:
        name = self._rich_display_name()
        return name if self.required else f"[{name}]"


def _plain_help(params: list) -> None:
    for p in params:
        if type(p) is TyperOption:
            p.__class__ = _PlainOption
        elif type(p) is TyperArgument:
            p.__class__ = _PlainArgument


class _OneLineErrors(TyperGroup):
    """Click group that turns ToonlabError into a one-line message and its exit code (also under CliRunner), and
    whose commands' help shows plain metavars."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ToonlabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None

    def get_params(self, ctx):
        params = super().get_params(ctx)
        _plain_help(params)
        return params

    def get_command(self, ctx, cmd_name):
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _plain_help(cmd.get_params(ctx))
        return cmd


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

