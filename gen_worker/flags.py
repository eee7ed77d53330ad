"""Command-line flags declared on dataclass fields: one definition of each setting.

A field made with `flag(...)` carries its help, its argparse group, whether it is recorded with the
output folder, whether it is applied when the pipeline is loaded, and its checks; `add_flags` turns
the fields of a dataclass into argparse options (type and default from the field) and
`checked_values` reads them back, checked. JobSpec (spec.py), SlurmOptions and ContainerOptions are
declared this way, so a new setting is one field.
"""
import argparse
import dataclasses
import math
import typing
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

from gen_worker.errors import UsageError

Check = Callable[[Any], Optional[str]]  # the problem with a value, said after its flag, or None


def flag(default: Any = dataclasses.MISSING, help: str = "", *, group: str, checks: Sequence[Check] = (),
         choices: Optional[Sequence[str]] = None, metavar: Optional[str] = None, recorded: bool = False,
         at_load: bool = False, repeatable: bool = False, bare: Optional[str] = None) -> Any:
    """A dataclass field that is also a command-line flag `--<field name>`.

    recorded: the setting decides what the images look like, so it is recorded with the output
    folder and a rerun with another value is refused (output/prepare.py).
    at_load: the worker applies it when it loads the pipeline, not at each call, so a sweep's worker
    loads the model again when it changes (worker/pipeline_cache.py).
    repeatable: the flag may be given several times (default: an empty list).
    bare: the value of the flag given without one (--compile alone: "whole").
    """
    metadata = {"help": help, "group": group, "checks": tuple(checks), "choices": choices, "metavar": metavar,
                "recorded": recorded, "at_load": at_load, "repeatable": repeatable, "bare": bare}
    if repeatable:
        return dataclasses.field(default_factory=list, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_fields(cls: type) -> list:
    return [f for f in dataclasses.fields(cls) if "group" in f.metadata]


def _base_type(annotation: Any) -> Any:
    """Optional[int] -> int; List[str] -> str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def add_flags(cls: type, groups: Dict[str, Any], optional: Sequence[str] = ()) -> None:
    """Add one argparse option per flag field of `cls` to groups[field's group].
    optional: fields without a default that may be left out this time (their value is None)."""
    hints = typing.get_type_hints(cls)
    for f in flag_fields(cls):
        meta, kind = f.metadata, _base_type(hints[f.name])
        kwargs: Dict[str, Any] = {"help": meta["help"], "dest": f.name}
        if kind is bool:
            kwargs["action"] = "store_true"
        elif meta["repeatable"]:
            kwargs.update(action="append", default=None, type=kind, metavar=meta["metavar"])
        elif f.default is dataclasses.MISSING:
            kwargs.update(required=f.name not in optional, type=kind, metavar=meta["metavar"])
        else:
            kwargs.update(default=f.default, type=kind, metavar=meta["metavar"])
        if meta["bare"] is not None:
            kwargs.update(nargs="?", const=meta["bare"])
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        groups[meta["group"]].add_argument(f"--{f.name}", **kwargs)


def checked_values(cls: type, args: argparse.Namespace) -> Dict[str, Any]:
    """{field name: value} of the flag fields of `cls` in `args`, each checked (UsageError)."""
    values = {f.name: getattr(args, f.name) for f in flag_fields(cls)}
    for f in flag_fields(cls):
        if f.metadata["repeatable"]:
            values[f.name] = list(values[f.name] or [])
    check(cls, values)
    return values


def check(cls: type, values: Dict[str, Any]) -> None:
    for f in flag_fields(cls):
        value = values.get(f.name)
        if value is None:
            continue
        refuse_unless_utf8(f"--{f.name}", value)
        for problem in (c(value) for c in f.metadata["checks"]):
            if problem:
                raise UsageError(f"--{f.name} {problem} (got {value})")


def refuse_unless_utf8(flag: str, value: Any) -> None:
    """A byte of argv that is not UTF-8 reaches Python as a lone surrogate (surrogateescape): no record,
    log or PNG chunk could hold it, so it is refused here, before anything is written."""
    try:
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{flag} is not valid UTF-8 text (got {ascii(value)}): give it in UTF-8") from None


def recorded_names(cls: type) -> tuple:
    return tuple(f.name for f in flag_fields(cls) if f.metadata["recorded"])


def load_time_names(cls: type) -> tuple:
    return tuple(f.name for f in flag_fields(cls) if f.metadata["at_load"])


def switches(cls: type) -> tuple:
    """The flags of `cls` that may be given without a value (bool fields: --vae_tiling; those with a bare value:
    --compile)."""
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in flag_fields(cls) if _base_type(hints[f.name]) is bool or f.metadata["bare"])


def given(cls: type, args: argparse.Namespace) -> list:
    """The flags of `cls` given a value other than their default (e.g. to refuse them in the other mode)."""
    return [f"--{f.name}" for f in flag_fields(cls)
            if getattr(args, f.name) != (None if f.metadata["repeatable"] else f.default)]


# Checks, each returning what is wrong with a value (said after the flag's name) or None.

def at_least(low: float) -> Check:
    # `not value >= low` also refuses NaN, which compares false with everything.
    return lambda value: None if value >= low else f"must be at least {low}" if low != 0 else "must be 0 or more"


def at_most(high: float) -> Check:
    return lambda value: None if value <= high else f"must be at most {high}"


def more_than(low: float) -> Check:
    return lambda value: None if value > low else f"must be more than {low}"


def finite(value: float) -> Optional[str]:
    return None if math.isfinite(value) else "must be a finite number"


def multiple_of(step: int) -> Check:
    return lambda value: None if value % step == 0 else f"must be a multiple of {step}"


def one_line_each(values: Iterable[str]) -> Optional[str]:
    return "takes one line each; repeat the flag for more lines" if any("\n" in v for v in values) else None
