"""The one error type of the evaluation package.

Every expected failure (missing file, bad input, missing weights ...) raises :class:`EvaluationError`
with a one-line message; the CLIs print it as ``error: <message>`` and exit with status 2.
"""

from __future__ import annotations

import json
import os
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


def read_json_file(path: str, what: str):
    """The parsed content of a JSON file, or an EvaluationError naming `what` it should have been."""
    if not os.path.isfile(path):
        raise EvaluationError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{what} is not valid JSON: {path} ({exc})") from None
