"""submit.py's command line: the flags (each declared once, with its checks, in spec.py, slurm/options.py and
container/runtime.py), the subcommands (status, cancel, show, reproduce, pack, unpack), and the hand-over of everything else
to the run planner (plan.py). Errors are one line, exit 2 (errors.run_cli).

Nothing here imports torch or diffusers: a bad input is refused in about a second, before any
worker starts or any GPU is touched.
"""
import argparse
import functools
import signal
import sys
from typing import Callable, List, NoReturn, Optional, Sequence, Tuple, Type

from gen_worker import flags, plan
from gen_worker.campaign import campaign_runs, together_or_why
from gen_worker.container.runtime import ContainerOptions, check_cluster
from gen_worker.errors import UsageError, one_line, run_cli
from gen_worker.flags import add_flags
from gen_worker.output.summary import command_line
from gen_worker.slurm.options import SlurmOptions
from gen_worker.spec import JobSpec
from gen_worker.sweep import swept_required_flags


# The option groups of --help, in order; each flag field (spec.py, slurm/options.py,
# container/runtime.py) names its group.
GROUPS = {
    "run": "where to run",
    "data": "input and output",
    "generation": "generation settings (recorded in the output folder; a rerun must match)",
    "speed": "speed (not recorded: like the GPU model, they may change the last bits of a pixel, not the image)",
    "container": "containers (every worker runs inside the image; see containers/README.md)",
    "slurm": "SLURM (--cluster slurm; --output_dir must be on a file system the nodes share)",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every optional flag's help ends with its default, unless the help already says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        repeatable = isinstance(action, argparse._AppendAction)
        if action.required or repeatable or "default:" in text:
            return text
        return super()._get_help_string(action) or ""


class RaisingParser(argparse.ArgumentParser):
    """For generate() and campaign files: a bad value is a UsageError (a T2IError), not SystemExit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser(optional: Sequence[str] = (),
                 parser_class: Type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """optional: required flags that may be left out (--model_path when --sweep gives its values)."""
    parser = parser_class(
        prog="submit.py", formatter_class=_HelpFormatter,
        description="Generate K images per prompt (CSV, TSV, JSONL or Parquet) with a diffusers pipeline, one "
                    "worker per GPU. Sample i (data row i // K) gets seed seed_start+i and is saved as "
                    "{image_id}_seed{seed}.png (or in GenEval's layout); rerunning the same command makes only what is missing.",
        epilog="SLURM runs: `submit.py status --output_dir D [--wait]` shows (or follows) the tasks of the "
               "run in D; `submit.py cancel --output_dir D [--task K ...]` cancels its jobs. Any image: "
               "`submit.py show IMAGE` prints what it was made with; `submit.py reproduce IMAGE --output_dir D` "
               "makes it again. `submit.py pack D` turns a finished PNG folder into tar shards, `submit.py "
               "unpack D` back (the originals are removed once the new files are read back equal).")
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    groups["run"].add_argument("--cluster", choices=("local", "slurm"), default="local",
                               help="local: one subprocess per GPU on this machine; slurm: submit through submitit")
    groups["run"].add_argument("--config", metavar="FILE.toml", default=None,
                               help="a campaign file: any of these flags by name, [sweep] lists, [[run]] tables "
                                    "(one output folder each; docs/usage.md); flags given here override it")
    groups["run"].add_argument("--gpu_ids", nargs="+", default=None, metavar="ID",
                               help="GPUs to use, one worker each (local mode): indices into the visible GPUs, as torch "
                                    "counts them (under CUDA_VISIBLE_DEVICES=4,5, 0 is GPU 4); default: every visible GPU. "
                                    "With --device cpu they still set the number of workers")
    groups["run"].add_argument("--ignore_recorded_slurm_jobs", action="store_true",
                               help="local mode: start even when squeue cannot tell whether the SLURM jobs recorded "
                                    "in the output folder (logs/slurm_jobs.json) have ended, e.g. on a machine "
                                    "without SLURM; only when you know they have (jobs squeue lists are still refused)")
    groups["generation"].add_argument("--allow_settings_change", action="store_true",
                                      help="add to an output folder made with other settings or prompts instead "
                                           "of refusing")
    groups["generation"].add_argument("--adopt_existing", action="store_true",
                                      help="take in the images of a folder that has no settings record (made by "
                                           "the original script): each valid PNG under a sample's name is kept as "
                                           "made with this run's settings, and the adoption is recorded")
    for options in (JobSpec, SlurmOptions, ContainerOptions):
        add_flags(options, groups, optional)
    groups["generation"].add_argument(
        "--sweep", action="append", default=None, metavar="NAME=V1,V2,...",
        help="run every combination of these values of recorded settings (repeatable), each in its own "
             "subfolder of --output_dir with the same prompts and seeds, e.g. --sweep guidance_scale=1.5,3,5; "
             "values with commas or spaces as a JSON list: --sweep 'negative_prompt=[\"blurry, ugly\", \"dark\"]'; "
             "the workers load each model once and go through every configuration")
    groups["slurm"].add_argument("--wait", dest="wait", action="store_true", default=None,
                                 help="after submitting, show one progress bar per task until the run ends "
                                      "(default: wait when stdout is a terminal); Ctrl+C detaches, the jobs keep running")
    groups["slurm"].add_argument("--no_wait", dest="wait", action="store_false", default=None,
                                 help="submit and return")
    return parser


def check_mode_flags(args: argparse.Namespace) -> None:
    """A flag of the other mode is a mistake to point out, not to ignore."""
    check_cluster(args.container_runtime, args.cluster)  # before the output folder is made
    if args.cluster == "slurm":
        if args.gpu_ids is not None:
            raise UsageError("--gpu_ids is for --cluster local; with --cluster slurm use --gpus N (the number of tasks)")
        if args.ignore_recorded_slurm_jobs:
            raise UsageError("--ignore_recorded_slurm_jobs is for --cluster local; a SLURM submission always checks "
                             "its earlier jobs with squeue")
        return
    if args.gpus is not None:
        raise UsageError("--gpus is for --cluster slurm; with --cluster local use --gpu_ids (e.g. --gpu_ids 0 1)")
    given = flags.given(SlurmOptions, args)
    if args.wait is not None:
        given.append("--wait" if args.wait else "--no_wait")
    if given:
        raise UsageError(f"{', '.join(given)} only applies to --cluster slurm")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("status", "cancel"):
        from gen_worker.slurm.status import main as status_main
        return status_main(argv)
    if argv and argv[0] in ("pack", "unpack"):
        from gen_worker.pack import main as pack_main
        return pack_main(argv)
    if argv and argv[0] in ("show", "reproduce"):
        from gen_worker.image_tools import main as image_main
        return image_main(argv)
    return run_cli(_submit, argv)


def parse(argv: Sequence[str],
          parser_class: Type[argparse.ArgumentParser] = argparse.ArgumentParser) -> Tuple[argparse.ArgumentParser,
                                                                                           argparse.Namespace]:
    """The parser (for a sweep's configurations) and the checked flags of a command line without --config."""
    parser = build_parser(optional=swept_required_flags(argv), parser_class=parser_class)
    args = parser.parse_args(argv)
    if args.config:
        raise UsageError("--config names a campaign file; a campaign file cannot name another one")
    check_mode_flags(args)
    for options in (JobSpec, SlurmOptions, ContainerOptions):  # each flag's own checks, before anything runs
        flags.checked_values(options, args)
    return parser, args


def config_file(argv: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """(--config's file or None, the rest of argv): a campaign's runs get their required flags from the file."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    return known.config, rest


def _submit(argv: Optional[Sequence[str]]) -> int:
    argv = list(argv or [])
    config, overrides = config_file(argv)
    if config is None:
        parser, args = parse(argv)
        command = _on_sigterm_stop(argv)
        return _guarded(command, functools.partial(plan.run, parser, argv, args, command))
    runs = campaign_runs(config, overrides, build_parser)
    parsed = []
    for run in runs:  # every run checked by name, type and flag before the first starts
        try:
            parsed.append(parse(run.argv, RaisingParser))
        except UsageError as err:
            raise UsageError(f"{config} ({run.label}): {err}") from None
    command = _on_sigterm_stop(argv)
    together = together_or_why(config, runs, [args for _, args in parsed])
    if together:
        items = [(parser, run.argv, args) for run, (parser, args) in zip(runs, parsed)]
        return _guarded(command, functools.partial(plan.run_together, items, command, runs[0].record))
    worst = 0
    for run, (parser, args) in zip(runs, parsed):
        if len(runs) > 1:
            print(f"== {config}: {run.label}", file=sys.stderr)
        worst = max(worst, _guarded(command, functools.partial(plan.run, parser, run.argv, args, command, run.record)))
    return worst


def _on_sigterm_stop(argv: Sequence[str]) -> str:
    """A SIGTERM (kill, timeout) stops the run as cleanly as Ctrl+C does; the command line, for the records."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return command_line(["python", sys.argv[0] or "submit.py", *argv])


def _guarded(command: str, launch: Callable[[], int]) -> int:
    try:
        return launch()
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a file system gone read-only: the images written so far are kept
        where = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else one_line(err)
        print(f"error: {where}", file=sys.stderr)
        print("The images already written are kept. Fix that, then rerun the same command to make only "
              f"what is missing:\n  {command}", file=sys.stderr)
        return 1
