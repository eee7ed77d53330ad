"""The one error type of the evaluation package.

Every expected failure (missing file, bad input, missing weights ...) raises :class:`EvaluationError`
with a one-line message; the CLIs print it as ``error: <message>`` and exit with status 2.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class EvaluationError(Exception):
    """An expected, user-facing error; its message is one line."""


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn an :class:`EvaluationError` into ``error: ...`` on stderr and exit code 2."""
    try:
        return main(argv)
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
