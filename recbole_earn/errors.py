"""Errors about what the user gave (flags, config values, files): `run_earn.py` prints their message on one line,
without a traceback (`--debug` shows it), and exits with their `exit_code`."""


class UserInputError(Exception):
    """Something the user can fix, e.g. a path that cannot be written; exit code 1."""

    exit_code = 1


class ConfigError(UserInputError, ValueError):
    """A flag or config value that cannot work; exit code 2, as for argparse's usage errors."""

    exit_code = 2
