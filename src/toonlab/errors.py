"""Errors that the CLI reports as one line (no traceback) with a fixed exit code."""


class ToonlabError(Exception):
    """A user-facing error: its message is printed as one line, the CLI exits with `exit_code`."""

    exit_code = 1


class UsageError(ToonlabError):
    """Bad arguments or configuration (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or override is invalid (unknown key, wrong type)."""


class MissingWeightsError(ToonlabError):
    """Pretrained weights are needed but not present locally, and cannot be downloaded."""
