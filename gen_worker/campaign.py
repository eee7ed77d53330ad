"""Campaign files: `submit.py --config campaign.toml`, or generate(config=...).

A TOML file names submit.py's flags as keys (output_dir = "...", guidance_scale = 3.0, compile = true), a
[sweep] table gives lists (guidance_scale = [1.5, 3.0]), and each [[run]] table is one run with its own
output folder: its keys over the file's top-level ones. Every run becomes the argv of a plain command line
(named_settings.py: names and types checked against the parser's flags), with the flags given on the command
line after it, so that they override the file. Runs that can share one SLURM submission go as one
(plan.run_together), else one after another. The file's text is copied into each run's logs/.
"""
import argparse
import dataclasses
import os
import sys
from typing import Any, Callable, Dict, List, Sequence

from gen_worker.atomic_files import replace_file
from gen_worker.errors import UsageError
from gen_worker.output import layout
from gen_worker.plan import shared_submission_problem
from gen_worker.named_settings import SWEEP, flag_actions, refuse_unknown, settings_argv

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (pyproject.toml installs it there)
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

RUN = "run"  # [[run]] tables
CONFIG = "config"  # the flag that names a campaign file: not a key inside one
RECORD_NAME = "campaign.toml"  # its copy in each run's logs/


@dataclasses.dataclass
class CampaignRun:
    label: str  # e.g. "run 2 of 3 (/data/out/ckpt-2000)": the line printed before it starts
    folder: str  # its output folder (absolute)
    argv: List[str]  # the command line that makes it, the overrides last
    text: bytes  # the campaign file, recorded in the run's logs/

    def record(self, folder: str) -> None:
        """The campaign file next to the run's other records (its logs/)."""
        logs = os.path.join(folder, layout.LOGS_DIR)
        os.makedirs(logs, exist_ok=True)
        replace_file(os.path.join(logs, RECORD_NAME), self.text)


def together_or_why(config: str, runs: Sequence[CampaignRun], runs_args: Sequence[argparse.Namespace]) -> bool:
    """Whether the runs go as one SLURM submission (plan.shared_submission_problem), said in one line."""
    if len(runs) < 2:
        return False
    problem = shared_submission_problem(runs_args)
    if problem is None:
        folders = ", ".join(run.folder for run in runs)
        print(f"== {config}: {len(runs)} runs in one SLURM submission, in this order: {folders}", file=sys.stderr)
        return True
    print(f"== {config}: {len(runs)} runs, one after another ({problem})", file=sys.stderr)
    return False


def read_file(path: str) -> tuple[bytes, Dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as err:
        raise UsageError(f"--config {path}: {err.strerror}") from None
    try:
        return text, tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"--config {path}: not a TOML file: {' '.join(str(err).split())}") from None


def campaign_runs(path: str, overrides: Sequence[str],
                  make_parser: Callable[[], argparse.ArgumentParser]) -> List[CampaignRun]:
    """Every run of the campaign file at `path`, as a command line with `overrides` (the command line's other
    flags) appended; names and types checked, in one line each, before any run starts."""
    text, data = read_file(path)
    parser = make_parser()
    known = [name for name in flag_actions(parser) if name != CONFIG]
    where = f"{path}: "
    runs = data.pop(RUN, [{}])
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise UsageError(f"{where}{RUN} must be [[{RUN}]] tables, one per run")
    for name in data:
        refuse_unknown(name, known, where)
    dropped = _repeated_flags_given(parser, overrides)
    result: List[CampaignRun] = []
    folders: Dict[str, int] = {}
    for i, table in enumerate(runs):
        at = f"{path} [[{RUN}]] {i + 1}: " if len(runs) > 1 else where
        for name in table:
            refuse_unknown(name, known, at)
        settings = {**data, **table}
        if SWEEP in data and SWEEP in table:  # a run's [run.sweep] adds to (or replaces values of) the file's
            settings[SWEEP] = {**_table(data[SWEEP], where), **_table(table[SWEEP], at)}
        settings = {name: value for name, value in settings.items() if name not in dropped}
        argv = [*settings_argv(parser, settings, at), *overrides]
        folder = os.path.abspath(str(_last_value(parser, argv, "output_dir", at)))
        if folder in folders:
            raise UsageError(f"{at}output_dir {folder} is also run {folders[folder]}'s: each run needs its own folder")
        folders[folder] = i + 1
        label = f"run {i + 1} of {len(runs)} ({folder})"
        result.append(CampaignRun(label, folder, argv, text))
    return result


def _table(value: Any, where: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}{SWEEP} must be a table of lists, e.g. [{SWEEP}] guidance_scale = [1.5, 3.0]")
    return value


def _repeated_flags_given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set:
    """Repeatable flags (--sweep, --container_bind, ...) given on the command line: they replace the file's
    values instead of adding to them, as any other flag does."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name, actions in flag_actions(parser).items():
        if isinstance(actions[0], argparse._AppendAction):
            pre.add_argument(*actions[0].option_strings, dest=name, action="append")
    known, _ = pre.parse_known_args(argv)
    return {name for name, value in vars(known).items() if value is not None}


def _last_value(parser: argparse.ArgumentParser, argv: Sequence[str], name: str, where: str) -> Any:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument(*flag_actions(parser)[name][0].option_strings, dest=name)
    value = pre.parse_known_args(argv)[0].__dict__.get(name)
    if value is None:
        raise UsageError(f"{where}no output_dir: give each run its own")
    return value
