"""submit.py's command line: parse, check everything, then hand the run to a launcher.

Nothing here imports torch or diffusers: a bad input is refused in about a second, before any
worker starts or any GPU is touched.
"""
import argparse
import contextlib
import functools
import os
import signal
import sys
from typing import Any, Callable, ContextManager, Iterator, List, Optional, Sequence, Tuple

from gen_worker import flags
from gen_worker.container.runtime import Container, ContainerOptions
from gen_worker.errors import T2IError, UsageError, one_line
from gen_worker.families import check_cfg_truncation, pipeline_guidance_default
from gen_worker.flags import add_flags
from gen_worker.gpus import compute_capabilities, select_gpus, visible_gpus
from gen_worker.model_check import identify
from gen_worker.model_source import check_model_path
from gen_worker.output import layout
from gen_worker.output.lock import OutputDirBusy, RunLock
from gen_worker.output.record import prepare_output_dir
from gen_worker.output.summary import command_line
from gen_worker.output.sweep_record import SWEEP_FILE, read_sweep_record
from gen_worker.prompts import Sample, fingerprint, load_samples
from gen_worker.slurm.options import SlurmOptions, wait_for_run
from gen_worker.spec import JobSpec, auto_dtype
from gen_worker.sweep import Configuration, check_distinct, check_not_given, configuration_args, configurations, \
    flag_reader, keep_recorded, parse_axes, record_sweep, swept_required_flags


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


def build_parser(optional: Sequence[str] = ()) -> argparse.ArgumentParser:
    """optional: required flags that may be left out (--model_path when --sweep gives its values)."""
    parser = argparse.ArgumentParser(
        prog="submit.py", formatter_class=_HelpFormatter,
        description="Generate K images per prompt (CSV, TSV, JSONL or Parquet) with a diffusers pipeline, one "
                    "worker per GPU. Sample i (data row i // K) gets seed seed_start+i and is saved as "
                    "{image_id}_seed{seed}.png (or in GenEval's layout); rerunning the same command makes only what is missing.",
        epilog="SLURM runs: `submit.py status --output_dir D [--wait]` shows (or follows) the tasks of the "
               "run in D; `submit.py cancel --output_dir D [--task K ...]` cancels its jobs. Any image: "
               "`submit.py show IMAGE` prints what it was made with; `submit.py reproduce IMAGE --output_dir D` "
               "makes it again.")
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    groups["run"].add_argument("--cluster", choices=("local", "slurm"), default="local",
                               help="local: one subprocess per GPU on this machine; slurm: submit through submitit")
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


def _check_mode_flags(args: argparse.Namespace) -> None:
    """A flag of the other mode is a mistake to point out, not to ignore."""
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


def _check_output_dir(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--output_dir {path} exists and is not a folder")
    if os.path.exists(os.path.join(path, SWEEP_FILE)):
        raise UsageError(f"--output_dir {path} holds a sweep ({SWEEP_FILE}): rerun it with its --sweep, or give "
                         "one configuration's subfolder")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}.tmp")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise UsageError(f"cannot write to --output_dir {path}: {err.strerror}") from None


def build_spec(args: argparse.Namespace, gpu_ids: Sequence[str] = ()) -> Tuple[JobSpec, List[Sample]]:
    """Check every input; return (spec, samples). Raises a T2IError with a one-line message.
    The settings whose default depends on the model or the device are resolved here, so that the folder
    records the values used: --guidance_scale (the pipeline's own), --dtype auto (on gpu_ids' GPUs)."""
    values = flags.checked_values(JobSpec, args)
    model_path = check_model_path(args.model_path)
    if values["guidance_scale"] is None:
        values["guidance_scale"] = pipeline_guidance_default(model_path)
    check_cfg_truncation(values["cfg_truncation_step"], model_path)
    if values["dtype"] == "auto":
        on_gpu = args.device != "cpu" and [g for g in gpu_ids if g]
        values["dtype"] = auto_dtype(args.device, compute_capabilities(gpu_ids) if on_gpu else [])
    samples = load_samples(args.prompts_csv, args.seed_start, args.num_samples, args.id_column, args.prompt_column,
                           images_per_prompt=args.images_per_prompt, layout=args.layout,
                           prompts_format=args.prompts_format)
    output_dir = os.path.abspath(args.output_dir)
    _check_output_dir(output_dir)
    values.update(prompts_csv=os.path.abspath(args.prompts_csv), output_dir=output_dir, model_path=model_path,
                  num_samples=len(samples), samples_fingerprint=fingerprint(samples),
                  model_identity=identify(model_path))
    return JobSpec(**values), samples


Configured = Tuple[Configuration, JobSpec, List[Sample]]  # a sweep's configuration, checked


def build_sweep(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace,
                gpu_ids: Sequence[str] = ()) -> List[Configured]:
    """--sweep: every configuration's spec, each checked as a plain run's would be, before any work starts."""
    axes = parse_axes(args.sweep)
    check_not_given(args, axes)
    top = os.path.abspath(args.output_dir)
    if os.path.exists(os.path.join(top, layout.SETTINGS_FILE)):
        raise UsageError(f"--output_dir {top} holds a plain run (its {layout.SETTINGS_FILE}): a sweep writes its "
                         "configurations into subfolders of a folder of its own")
    read = flag_reader(parser, argv)
    check_distinct(axes, read)
    runs = []
    for config in keep_recorded(configurations(axes), read_sweep_record(top), read):
        config_args = configuration_args(parser, argv, config, os.path.join(top, config.name))
        try:
            spec, samples = build_spec(config_args, gpu_ids)
        except T2IError as err:
            raise UsageError(f"--sweep configuration {config.name}: {err}") from None
        runs.append((config, spec, samples))
    return runs


def local_gpu_ids(args: argparse.Namespace) -> List[str]:
    """One CUDA_VISIBLE_DEVICES value per local worker ("" hides every GPU from a CPU worker)."""
    if args.gpu_ids:
        flags.refuse_unless_utf8("--gpu_ids", args.gpu_ids)
        ids = [g.strip() for g in args.gpu_ids]
        if any(not g or "," in g for g in ids):
            raise UsageError("--gpu_ids takes GPU ids separated by spaces, e.g. --gpu_ids 0 1")
        if len(set(ids)) != len(ids):
            raise UsageError(f"--gpu_ids lists a GPU twice: {' '.join(ids)}")
        negative = [g for g in ids if g.startswith("-")]
        if negative:
            raise UsageError(f"--gpu_ids {negative[0]}: GPU ids are 0 or more (see nvidia-smi)")
        visible = visible_gpus()
        if visible:  # indices into the visible GPUs, as torch counts them
            return select_gpus(ids, visible)
        if args.device != "cpu":
            raise UsageError(f"--gpu_ids {' '.join(ids)}, but no GPU is visible (nvidia-smi finds none, or "
                             "CUDA_VISIBLE_DEVICES hides them); with --device cpu they set the number of CPU workers")
        return ids
    found = visible_gpus()
    if args.device == "cpu" or (args.device == "auto" and not found):
        return [""]
    if not found:
        raise UsageError("--device cuda, but no GPU is visible (nvidia-smi finds none, or CUDA_VISIBLE_DEVICES hides them)")
    return found


def container_for(args: argparse.Namespace, spec: JobSpec, same_path: Sequence[str] = ()) -> Optional[Container]:
    """The checked Container of --container (None without it); ContainerError when it cannot work."""
    options = ContainerOptions(**flags.checked_values(ContainerOptions, args))
    if not options.container:
        if flags.given(ContainerOptions, args):
            raise UsageError("--container_runtime and --container_bind need --container IMAGE")
        return None
    from gen_worker.container.runtime import prepare
    return prepare(options.container, options.container_runtime, options.container_bind, spec, args.cluster,
                   same_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("status", "cancel"):
        from gen_worker.slurm.status import main as status_main
        return status_main(argv)
    if argv and argv[0] in ("show", "reproduce"):
        from gen_worker.image_tools import main as image_main
        return image_main(argv)
    parser = build_parser(optional=swept_required_flags(argv))
    args = parser.parse_args(argv)
    # A SIGTERM (kill, timeout) stops the run as cleanly as Ctrl+C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = command_line(["python", sys.argv[0] or "submit.py", *argv])
    try:
        return _run(parser, argv, args, command)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a file system gone read-only: the images written so far are kept
        where = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else one_line(err)
        print(f"error: {where}", file=sys.stderr)
        print("The images already written are kept. Fix that, then rerun the same command to make only "
              f"what is missing:\n  {command}", file=sys.stderr)
        return 1


def _run(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace, command: str) -> int:
    from gen_worker.slurm.record import refuse_if_jobs_alive
    try:
        _check_mode_flags(args)
        if args.cluster == "slurm":
            from gen_worker.slurm.submit import submit_to_slurm
            options = SlurmOptions(**flags.checked_values(SlurmOptions, args))
            # --device auto stays auto: the submit host may have no GPU (--dtype auto: bf16 unless --device cpu)
            # After the submission the sweep's tasks, recorded in its top folder, hold it: checked under the lock.
            sweep: ContextManager[List[Configured]] = contextlib.nullcontext([])
            if args.sweep:
                sweep = locked_sweep(parser, argv, args, functools.partial(refuse_if_jobs_alive,
                                                                           os.path.abspath(args.output_dir)))
            with sweep as configured:
                runs = [(spec, samples) for _, spec, samples in configured] or [build_spec(args)]
                sweep_dir = os.path.abspath(args.output_dir) if args.sweep else None
                base = sweep_dir or runs[0][0].output_dir
                # submitit's folder is named by its host path in the sbatch script: seen there inside too.
                container = container_for(args, runs[0][0], same_path=[os.path.join(base, layout.SUBMITIT_DIR),
                                                                       *_sweep_paths(runs, sweep_dir)])
                if sweep_dir:
                    record_sweep(sweep_dir, [config for config, _, _ in configured])
                    os.makedirs(os.path.join(sweep_dir, layout.LOGS_DIR), exist_ok=True)  # the workers' logs
                return submit_to_slurm(runs, options, command, args.allow_settings_change, container,
                                       wait_for_run(args.wait), args.adopt_existing, sweep_dir)
        gpu_ids = local_gpu_ids(args)
        if args.device == "auto":
            args.device = "cpu" if gpu_ids == [""] else "cuda"
        if args.sweep:
            return _run_local_sweep(parser, argv, args, gpu_ids, command)
        spec, samples = build_spec(args, gpu_ids)
        # SLURM tasks queued into this folder earlier may start any time: not together with a local run.
        # Checked first (running tasks hold the lock, whose message would name their long-gone
        # submitter), and again under the lock.
        check_slurm = functools.partial(refuse_if_jobs_alive, spec.output_dir, "--ignore_recorded_slurm_jobs",
                                        args.ignore_recorded_slurm_jobs)
        check_slurm()
        container = container_for(args, spec)
        join = False
        try:
            lock = prepare_output_dir(spec, samples, args.allow_settings_change, check=check_slurm,
                                      adopt_existing=args.adopt_existing)
        except OutputDirBusy as busy:
            lock, join = join_local_run(spec, busy), True
    except T2IError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from gen_worker.local import LocalRun, run_local
    try:
        return run_local([LocalRun(spec, samples, lock)], gpu_ids, command, container, join=join)
    finally:
        lock.release()


def _sweep_paths(runs: Sequence[Tuple[JobSpec, Sequence[Sample]]], sweep_dir: Optional[str]) -> List[str]:
    """What a sweep's container must see besides the first configuration's paths: the top folder, every model."""
    if not sweep_dir:
        return []
    return [sweep_dir, *sorted({spec.model_path for spec, _ in runs if os.path.isabs(spec.model_path)})]


def _run_local_sweep(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace,
                     gpu_ids: Sequence[str], command: str) -> int:
    """--sweep, local: every configuration checked and its folder prepared, then one set of workers for all."""
    from gen_worker.local import LocalRun, run_local
    from gen_worker.slurm.record import refuse_if_jobs_alive
    top = os.path.abspath(args.output_dir)
    with locked_sweep(parser, argv, args, functools.partial(refuse_if_jobs_alive, top, "--ignore_recorded_slurm_jobs",
                                                            args.ignore_recorded_slurm_jobs), gpu_ids) as configured:
        checks = [functools.partial(refuse_if_jobs_alive, spec.output_dir, "--ignore_recorded_slurm_jobs",
                                    args.ignore_recorded_slurm_jobs) for _, spec, _ in configured]
        for check in checks:
            check()
        container = container_for(args, configured[0][1],
                                  same_path=_sweep_paths([(spec, samples) for _, spec, samples in configured], top))
        runs: List[Any] = []
        try:
            for (_, spec, samples), check in zip(configured, checks):
                # A sweep's configuration under way is not joined: the whole sweep waits for that run.
                lock = prepare_output_dir(spec, samples, args.allow_settings_change, check=check,
                                          adopt_existing=args.adopt_existing)
                runs.append(LocalRun(spec, samples, lock))
            record_sweep(top, [config for config, _, _ in configured])
            os.makedirs(os.path.join(top, layout.LOGS_DIR), exist_ok=True)  # the workers' logs
            return run_local(runs, gpu_ids, command, container, log_dir=top)
        finally:
            for run in runs:
                run.lock.release()


@contextlib.contextmanager
def locked_sweep(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace,
                 check: Callable[[], object], gpu_ids: Sequence[str] = ()) -> Iterator[List[Configured]]:
    """build_sweep, its top folder held by this submitter (as a plain run's folder is) until the block ends:
    a second sweep into it (other configurations, the same logs/) is refused while the first runs. `check`
    refuses the SLURM tasks of an earlier sweep recorded there, which outlive their submitter; it runs under
    the lock, as two submitters may race. Taken before the configurations are checked where the folder
    exists, so that a refused sweep makes no configuration folder; else once they made it."""
    top = os.path.abspath(args.output_dir)
    lock: Optional[RunLock] = None

    def hold() -> RunLock:
        held = RunLock(top)
        held.acquire_exclusive()
        try:
            check()
        except BaseException:
            held.release()
            raise
        return held

    try:
        lock = hold() if os.path.isdir(top) else None
        configured = build_sweep(parser, argv, args, gpu_ids)
        lock = lock or hold()
        yield configured
    finally:
        if lock:
            lock.release()


def join_local_run(spec: JobSpec, busy: OutputDirBusy) -> RunLock:
    """The folder's run is under way: join it (dynamic schedule, same settings) holding the lock shared
    as its workers do, or refuse as before, saying why."""
    from gen_worker.output.claims import CannotJoin, join_run
    lock = RunLock(spec.output_dir)
    lock.acquire_shared()
    try:
        join_run(spec, 0)  # checks only; run_local takes the indices
    except CannotJoin as err:
        lock.release()
        raise OutputDirBusy(f"{busy}; it cannot be joined: {err}") from None
    print(f"Joining the run under way in {spec.output_dir}.", file=sys.stderr)
    return lock
