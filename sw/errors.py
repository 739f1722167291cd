"""Errors that mean "the user's input is wrong", as opposed to a bug.

The CLI prints these as one line (no traceback) and exits non-zero; the message must name
the file, layer or value at fault and, where it helps, what to do about it.
"""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a model): printed as one line by the CLI."""
