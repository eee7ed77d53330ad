"""The one base class of every error a user sees.

A T2IError's message is one line that says what is wrong and, where it helps, what to do. The
command lines (submit.py, status, cancel, the evaluation tools) print it as `error: <message>`
and exit with status 2; anything else that escapes is a bug and keeps its traceback. Each module
raises its own subclass (typed errors, as submitit does), so callers can catch what they handle.
"""
import sys
from typing import Callable, Optional, Sequence

EXIT_USAGE = 2


class T2IError(Exception):
    """An expected, user-facing error; its message is one line."""


class UsageError(T2IError):
    """A bad command-line value or combination of values."""


def one_line(err: BaseException) -> str:
    """`Type: message` with every run of whitespace (newlines too) folded into one space."""
    return " ".join(f"{type(err).__name__}: {err}".split())


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run `main(argv)`; a T2IError becomes `error: ...` on stderr and exit status 2."""
    try:
        return main(argv)
    except T2IError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE
