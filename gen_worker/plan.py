"""The run planner: from the parsed command line to folders ready for a launcher, one path for local runs, SLURM,
containers and sweeps.

A Plan is every run to make (one, or each configuration of a --sweep, each checked as a plain run would be), the
container its workers run in, and each run's folder prepared under its lock (settings, manifest, the resume check:
output/prepare.py), or the run under way there joined. A sweep's top folder is held for the whole sweep and its
configurations recorded (sweep.json). `run` makes the plan, then hands it to the launcher its target names
(local.py, slurm/submit.py), which starts the workers and follows them. Nothing here imports torch.
"""
import argparse
import contextlib
import dataclasses
import functools
import os
import sys
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from gen_worker import flags, local
from gen_worker.container.runtime import Container, ContainerOptions, prepare
from gen_worker.errors import T2IError, UsageError
from gen_worker.families import check_cfg_truncation, pipeline_guidance_default
from gen_worker.gpus import compute_capabilities
from gen_worker.model_check import identify
from gen_worker.model_source import check_model_path
from gen_worker.output import layout
from gen_worker.output.lock import OutputDirBusy, RunLock
from gen_worker.output.prepare import PreparedRun, prepare_output_dir
from gen_worker.output.provenance import settings_key
from gen_worker.output.sweep_record import SWEEP_FILE, read_sweep_record
from gen_worker.prompts import Sample, fingerprint, load_samples
from gen_worker.schedule import CannotJoin, schedule_of
from gen_worker.slurm import submit as slurm_submit
from gen_worker.slurm.options import SlurmOptions, wait_for_run
from gen_worker.slurm.record import SlurmJobsAlive, refuse_if_jobs_alive
from gen_worker.spec import JobSpec, auto_dtype
from gen_worker.sweep import Configuration, check_distinct, check_not_given, configuration_args, configurations, \
    flag_reader, keep_recorded, parse_axes, record_sweep


@dataclasses.dataclass
class Plan:
    runs: List[PreparedRun]  # one, or a sweep's configurations; every worker goes through them all
    command: str  # the command line, for the summaries and the rerun hint
    container: Optional[Container]  # every worker runs inside it
    sweep_dir: Optional[str]  # a sweep's top folder
    join: bool  # the (one) run is under way: the workers join it

    @property
    def base(self) -> str:
        """The folder of the workers' logs (and SLURM's files): the run's own, or the sweep's top folder."""
        return self.sweep_dir or self.runs[0].spec.output_dir

    def release(self) -> None:
        """Let the folders go (the workers hold them shared while they run)."""
        for run in self.runs:
            run.lock.release()


class LocalTarget:
    """--cluster local: one worker process per GPU of --gpu_ids on this machine."""
    # A local run under way holds its folder's lock: the same command on this machine joins it.
    joins_locked_runs, joins_slurm_runs = True, False

    def __init__(self, args: argparse.Namespace) -> None:
        self.gpu_ids = local.check_gpu_ids(args)
        if args.device == "auto":  # recorded as resolved: the folder says what its images were made on
            args.device = "cpu" if self.gpu_ids == [""] else "cuda"
        self.ignore_jobs = args.ignore_recorded_slurm_jobs

    def refuse_if_jobs_alive(self, output_dir: str) -> Callable[[], None]:
        """SLURM tasks queued into the folder earlier may start any time: not together with a local run."""
        return functools.partial(refuse_if_jobs_alive, output_dir, "--ignore_recorded_slurm_jobs", self.ignore_jobs)

    def container_paths(self, base: str) -> List[str]:
        return []

    def check(self, spec: JobSpec) -> None:
        pass

    def launch(self, plan: Plan) -> int:
        return local.run_local(plan.runs, self.gpu_ids, plan.command, plan.container, join=plan.join,
                               log_dir=plan.base)


class SlurmTarget:
    """--cluster slurm: --gpus tasks of one GPU each, queued through submitit."""
    # A SLURM run under way has its tasks recorded alive: the same command from a submit host joins it.
    joins_locked_runs, joins_slurm_runs = False, True
    gpu_ids: Sequence[str] = ()  # the nodes' GPUs are not seen from here (--dtype auto: bf16 unless --device cpu)

    def __init__(self, args: argparse.Namespace) -> None:
        self.options = SlurmOptions(**flags.checked_values(SlurmOptions, args))
        self.wait = wait_for_run(args.wait)
        self.limits: Tuple[int, int] = (0, 0)

    def refuse_if_jobs_alive(self, output_dir: str) -> Callable[[], None]:
        return functools.partial(refuse_if_jobs_alive, output_dir)

    def container_paths(self, base: str) -> List[str]:
        # submitit's folder is named by its host path in the sbatch script: seen there inside too.
        return [os.path.join(base, layout.SUBMITIT_DIR)]

    def check(self, spec: JobSpec) -> None:
        """Everything the cluster can tell before anything changes: limits, then sbatch --test-only."""
        self.limits = slurm_submit.check_with_cluster(spec, self.options)

    def launch(self, plan: Plan) -> int:
        return slurm_submit.submit_to_slurm(plan.runs, self.options, self.limits, plan.command, plan.container,
                                            plan.join, self.wait, plan.sweep_dir)


Target = LocalTarget | SlurmTarget


def run(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace, command: str,
        record: Optional[Callable[[str], None]] = None) -> int:
    """Plan the run the command line asks for, launch it and follow it; the exit status.
    record: called with the run's folder (a sweep's top folder) once it is prepared, before any worker starts."""
    target: Target = SlurmTarget(args) if args.cluster == "slurm" else LocalTarget(args)
    with planned(parser, argv, args, command, target) as plan:
        if record is not None:
            record(plan.base)
        return target.launch(plan)


def run_together(items: Sequence[Tuple[argparse.ArgumentParser, Sequence[str], argparse.Namespace]], command: str,
                 record: Optional[Callable[[str], None]] = None) -> int:
    """Several runs (a campaign's [[run]] tables that shared_submission_problem allows) as one SLURM submission:
    one set of tasks goes through them in order, as through a sweep's configurations; the exit status."""
    target = SlurmTarget(items[0][2])
    with planned_together([args for _, _, args in items], command, target) as plan:
        for prepared in plan.runs:
            if record is not None:
                record(prepared.spec.output_dir)
        return target.launch(plan)


def shared_submission_problem(runs: Sequence[argparse.Namespace]) -> Optional[str]:
    """Why these runs cannot be one SLURM submission (None: they can). Its tasks are one set: the same SLURM and
    container settings, the same way of running (the flags of the "run" group: device, schedule, ...)."""
    first = runs[0]
    if first.cluster != "slurm":
        return "local runs"
    if any(args.sweep for args in runs):
        return "a run is a sweep"
    if first.container and len({args.prompts_csv for args in runs}) > 1:
        return "with --container, runs of different prompts files"
    names = [f.name for options in (SlurmOptions, ContainerOptions) for f in flags.flag_fields(options)]
    names += [f.name for f in flags.flag_fields(JobSpec) if f.metadata["group"] == "run"]
    for name in ["cluster", "wait", *names]:
        if any(getattr(args, name) != getattr(first, name) for args in runs):
            return f"their --{name} differ"
    return None


@contextlib.contextmanager
def planned_together(runs_args: Sequence[argparse.Namespace], command: str, target: Target) -> Iterator[Plan]:
    """The Plan of several plain runs, each checked and its folder prepared as alone; a run under way in one of
    them is refused (not joined), as a sweep's configuration is."""
    runs: List[PreparedRun] = []
    try:
        configured = [(args, *build_spec(args, target.gpu_ids)) for args in runs_args]
        specs = [spec for _, spec, _ in configured]
        others = [*(spec.output_dir for spec in specs[1:]),
                  *sorted({spec.model_path for spec in specs[1:] if os.path.isabs(spec.model_path)})]
        container = container_for(runs_args[0], specs[0],
                                  same_path=[*target.container_paths(specs[0].output_dir), *others])
        target.check(specs[0])
        for args, spec, samples in configured:
            runs.append(_prepare(spec, samples, args, target, sweep=True)[0])
        yield Plan(runs, command, container, None, False)
    finally:
        for prepared in runs:
            prepared.lock.release()


@contextlib.contextmanager
def planned(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace, command: str,
            target: Target) -> Iterator[Plan]:
    """The Plan, its folders held until the block ends (a launcher may let them go sooner: Plan.release)."""
    top = os.path.abspath(args.output_dir) if args.sweep else None
    held: Optional[RunLock] = None
    runs: List[PreparedRun] = []
    try:
        if top:
            # A second sweep into the same top folder is refused while this one runs (the same logs/). Taken
            # before the configurations are checked where the folder exists, so a refused sweep makes no
            # configuration folder; else once they made it.
            held = _hold(top, target) if os.path.isdir(top) else None
            configured = build_sweep(parser, argv, args, target.gpu_ids)
            held = held or _hold(top, target)
        else:
            configured = [(None, *build_spec(args, target.gpu_ids))]
        specs = [spec for _, spec, _ in configured]
        base = top or specs[0].output_dir
        container = container_for(args, specs[0], same_path=[*target.container_paths(base),
                                                             *_sweep_paths(specs, top)])
        target.check(specs[0])
        join = False
        for _, spec, samples in configured:
            run, join = _prepare(spec, samples, args, target, sweep=bool(top))
            runs.append(run)
        if top:
            record_sweep(top, [config for config, _, _ in configured if config is not None])
            os.makedirs(os.path.join(top, layout.LOGS_DIR), exist_ok=True)  # the workers' logs
        plan = Plan(runs, command, container, top, join)
        yield plan
    finally:
        for prepared in runs:
            prepared.lock.release()
        if held is not None:
            held.release()


def _hold(top: str, target: Target) -> RunLock:
    """A sweep's top folder, locked by this submitter; the SLURM tasks of an earlier sweep recorded there outlive
    their submitter, so they are checked under the lock (two submitters may race)."""
    lock = RunLock(top)
    lock.acquire_exclusive()
    try:
        target.refuse_if_jobs_alive(top)()
    except BaseException:
        lock.release()
        raise
    return lock


def _prepare(spec: JobSpec, samples: Sequence[Sample], args: argparse.Namespace, target: Target,
             sweep: bool) -> Tuple[PreparedRun, bool]:
    """The run's folder prepared under its lock, or the run under way there joined: (the run, joined).
    A sweep's configuration under way is not joined: the whole sweep waits for that run."""
    check_jobs = target.refuse_if_jobs_alive(spec.output_dir)
    try:
        check_jobs()  # first: running tasks hold the lock, whose message would name their long-gone submitter
    except SlurmJobsAlive as alive:
        if sweep or not target.joins_slurm_runs:
            raise
        _check_joinable(spec, alive)
        return PreparedRun(spec, samples, RunLock(spec.output_dir)), True  # the run's tasks hold the folder
    try:
        lock = prepare_output_dir(spec, samples, args.allow_settings_change, check=check_jobs,
                                  adopt_existing=args.adopt_existing)
    except OutputDirBusy as busy:
        if sweep or not target.joins_locked_runs:
            raise
        lock = RunLock(spec.output_dir)
        lock.acquire_shared()  # as the run's workers hold it
        try:
            _check_joinable(spec, busy)
        except BaseException:
            lock.release()
            raise
        print(f"Joining the run under way in {spec.output_dir}.", file=sys.stderr)
        return PreparedRun(spec, samples, lock), True
    return PreparedRun(spec, samples, lock), False


def _check_joinable(spec: JobSpec, under_way: T2IError) -> None:
    try:
        schedule_of(spec).join(spec, 0)  # the checks only: the launcher takes the worker indices
    except CannotJoin as err:
        raise type(under_way)(f"{under_way}; it cannot be joined: {err}") from None


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


Configured = Tuple[Optional[Configuration], JobSpec, List[Sample]]  # a sweep's configuration (None: no sweep)


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
    configs = keep_recorded(configurations(axes), read_sweep_record(top), read)
    new_folders = [p for p in [top, *(os.path.join(top, c.name) for c in configs)] if not os.path.exists(p)]
    runs: List[Configured] = []
    for config in configs:
        config_args = configuration_args(parser, argv, config, os.path.join(top, config.name))
        try:
            spec, samples = build_spec(config_args, gpu_ids)
        except T2IError as err:
            _remove_empty(reversed(new_folders))  # the configurations checked before it made their folders
            raise UsageError(f"--sweep configuration {config.name}: {err}") from None
        runs.append((config, spec, samples))
    try:
        _check_not_one_run([(config.name, spec) for config, spec, _ in runs if config])
    except UsageError:
        _remove_empty(reversed(new_folders))
        raise
    return runs


def _check_not_one_run(specs: Sequence[Tuple[str, JobSpec]]) -> None:
    """Values that differ as written but resolve to the same settings (dtype auto is fp32 on the CPU) would
    make the same images twice. "The same" as the resume check judges an image: provenance's settings key
    (the model by its content fingerprint, so two paths to one model are one model)."""
    seen: Dict[str, str] = {}
    for name, spec in specs:
        settings = settings_key(spec.recorded_settings(), spec.model_identity.get("fingerprint"))
        if settings in seen:
            raise UsageError(f"--sweep: configurations {seen[settings]} and {name} are one run (the same settings "
                             "once resolved): give one of them")
        seen[settings] = name


def _remove_empty(folders: Iterable[str]) -> None:
    for folder in folders:
        try:
            os.rmdir(folder)  # only if empty: nothing is ever lost
        except OSError:
            pass


def container_for(args: argparse.Namespace, spec: JobSpec, same_path: Sequence[str] = ()) -> Optional[Container]:
    """The checked Container of --container (None without it); ContainerError when it cannot work."""
    options = ContainerOptions(**flags.checked_values(ContainerOptions, args))
    if not options.container:
        if flags.given(ContainerOptions, args):
            raise UsageError("--container_runtime and --container_bind need --container IMAGE")
        return None
    return prepare(options.container, options.container_runtime, options.container_bind, spec, args.cluster,
                   same_path)


def _sweep_paths(specs: Sequence[JobSpec], sweep_dir: Optional[str]) -> List[str]:
    """What a sweep's container must see besides the first configuration's paths: the top folder, every model."""
    if not sweep_dir:
        return []
    return [sweep_dir, *sorted({spec.model_path for spec in specs if os.path.isabs(spec.model_path)})]
