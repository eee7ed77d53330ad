"""The evaluation package's error type, a gen_worker T2IError like every user-facing error.

Every expected failure (missing file, bad input, missing weights ...) raises :class:`EvaluationError`
with a one-line message; the CLIs (gen_worker.errors.run_cli) print it as ``error: <message>`` and
exit with status 2.
"""

from __future__ import annotations

import json
import os

from gen_worker.errors import T2IError, run_cli  # noqa: F401 (run_cli: the evaluation CLIs' entry)


class EvaluationError(T2IError):
    """An expected, user-facing error; its message is one line."""


def read_json_file(path: str, what: str):
    """The parsed content of a JSON file, or an EvaluationError naming `what` it should have been."""
    if not os.path.isfile(path):
        raise EvaluationError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{what} is not valid JSON: {path} ({exc})") from None
