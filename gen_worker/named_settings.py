"""Settings given by name (generate()'s keywords, a campaign file's keys) -> submit.py's argv.

The names and types come from the parser's own flags (cli.build_parser: JobSpec, SlurmOptions, ContainerOptions
and the run flags), so a new flag is a new name here without a change. The argv is then parsed by that same
parser and planned like any command line: the same checks, the same run. Only what argparse cannot say in one
clear line is checked here: an unknown name (with the closest one) and a value of the wrong type.
"""
import argparse
import difflib
import json
import os
from typing import Any, Dict, List, Mapping, Sequence

from gen_worker.errors import UsageError

SWEEP = "sweep"  # {setting: [values]}: --sweep NAME=[...] per setting


def flag_actions(parser: argparse.ArgumentParser) -> Dict[str, List[argparse.Action]]:
    """{setting name: its options} (--wait and --no_wait are both `wait`)."""
    actions: Dict[str, List[argparse.Action]] = {}
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            actions.setdefault(action.dest, []).append(action)
    return actions


def refuse_unknown(name: str, known: Sequence[str], where: str) -> None:
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else " (see submit.py --help)"
        raise UsageError(f"{where}{name} is not a setting{hint}")


def settings_argv(parser: argparse.ArgumentParser, settings: Mapping[str, Any], where: str = "") -> List[str]:
    """The argv that gives these settings; `where` starts each error (e.g. the file and its [[run]])."""
    actions = flag_actions(parser)
    argv: List[str] = []
    for name, value in settings.items():
        refuse_unknown(name, list(actions), where)
        if name == SWEEP:
            argv += _sweep_argv(actions, value, where)
        else:
            argv += _flag_argv(actions[name], name, value, where)
    return argv


def _kind(action: argparse.Action) -> type:
    return action.type if isinstance(action.type, type) else str


def _check_type(name: str, value: Any, kind: type, where: str) -> str:
    """The value as its flag reads it on a command line, once its type is the flag's."""
    if isinstance(value, os.PathLike) and kind is str:
        value = os.fspath(value)
    # a whole number is also text as a command line writes it (--gpu_ids 0 1 in Python: gpu_ids=[0, 1])
    fits = (kind is float and isinstance(value, (int, float))) or (kind is str and isinstance(value, int)) \
        or isinstance(value, kind)
    if isinstance(value, bool) or not fits:
        wanted = {int: "a whole number", float: "a number", str: "text"}.get(kind, kind.__name__)
        raise UsageError(f"{where}{name} = {value!r}: expected {wanted}, got {type(value).__name__}")
    return str(value)


def _flag_argv(actions: List[argparse.Action], name: str, value: Any, where: str) -> List[str]:
    switches = [a for a in actions if a.nargs == 0]  # store_true / store_false
    if switches:
        if not isinstance(value, bool):
            raise UsageError(f"{where}{name} = {value!r}: expected true or false, got {type(value).__name__}")
        chosen = [a for a in switches if a.const == value]
        return [chosen[0].option_strings[0]] if chosen else []  # the other value is the default
    action = actions[0]
    option = action.option_strings[0]
    if action.nargs == "?" and action.const is not None:  # --compile alone, or --compile regional
        if isinstance(value, bool):
            return [option] if value else []
        if isinstance(value, str) and value in (action.choices or ()):
            return [f"{option}={value}"]
        raise UsageError(f"{where}{name} = {value!r}: expected true or false, or one of "
                         f"{', '.join(action.choices or ())}, got {type(value).__name__}")
    many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if not many:
        return [f"{option}={_check_type(name, value, _kind(action), where)}"]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    texts = [_check_type(name, item, _kind(action), where) for item in items]
    if isinstance(action, argparse._AppendAction):
        return [f"{option}={text}" for text in texts]
    return [option, *texts] if texts else []


def _sweep_argv(actions: Dict[str, List[argparse.Action]], axes: Any, where: str) -> List[str]:
    if not isinstance(axes, Mapping):
        raise UsageError(f"{where}{SWEEP}: expected a table of lists, e.g. {SWEEP} = {{guidance_scale = [1.5, 3.0]}}")
    argv = []
    for name, values in axes.items():
        refuse_unknown(name, list(actions), f"{where}{SWEEP}: ")
        if not isinstance(values, (list, tuple)):
            raise UsageError(f"{where}{SWEEP}.{name} = {values!r}: expected a list of values, e.g. [1.5, 3.0]")
        texts = [_sweep_value(actions[name], f"{SWEEP}.{name}", v, where) for v in values]
        # A JSON list of text: each value is read by the flag, as on the command line.
        argv.append(f"--{SWEEP}={name}={json.dumps(texts, ensure_ascii=False)}")
    return argv


def _sweep_value(actions: List[argparse.Action], name: str, value: Any, where: str) -> str:
    """One swept value as --sweep reads it; a switch's (vae_tiling) is true or false."""
    if any(a.nargs == 0 for a in actions):
        if not isinstance(value, bool):
            raise UsageError(f"{where}{name} = {value!r}: expected true or false, got {type(value).__name__}")
        return "true" if value else "false"
    return _check_type(name, value, _kind(actions[0]), where)
