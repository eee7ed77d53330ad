"""--cluster slurm: check the options against the cluster, then queue one task per worker via submitit.

Two layouts, one GPU per task either way:
  array  one job array, task i = worker i (--gpus-per-node=1); split into several arrays when
         the cluster's MaxArraySize is smaller than the number of tasks;
  tasks  one job with N tasks (--ntasks=N --gpus-per-task=1, run by srun), rank r = worker r.
A rerun queues only the workers worth starting (the schedule says which: under --schedule static those
whose share has images to make; under dynamic every task, each claiming blocks). A dynamic run still under
way is joined: the new tasks get new worker indices and claim what is left. The folders come prepared by the
run planner (plan.py); check_with_cluster runs before that, so that a refused request changes nothing.
"""
import math
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import submitit
from submitit.core.utils import JobPaths
# submitit's own sbatch script writer, so that --test-only checks exactly what will be queued.
from submitit.slurm.slurm import _make_sbatch_string

from gen_worker.output import layout
from gen_worker.errors import UsageError
from gen_worker.container.slurm_launcher import write_launcher
from gen_worker.output.record import existing_images
from gen_worker.output.prepare import PreparedRun
from gen_worker.container.pyxis import srun_parameters
from gen_worker.container.runtime import PYXIS, Container as ImageContainer
from gen_worker.schedule import schedule_of
from gen_worker.slurm.options import SlurmOptions
from gen_worker.spec import JobSpec
from gen_worker.slurm.commands import SlurmError, max_array_size, partition_time_limit, test_submission
from gen_worker.slurm.record import TOGETHER, add_submission
from gen_worker.slurm.task import SlurmTask

# The checkout (the folder holding gen_worker/), put first on the tasks' PYTHONPATH.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TIME_MINUTES = 3 * 24 * 60  # capped at the partition's MaxTime
MAX_TIMEOUT_REQUEUES = 10  # submitit's default (3) ends long runs on short partitions early


def array_chunks(workers: List[int], max_size: int,
                 parallelism: Optional[int] = None) -> List[Tuple[List[int], int]]:
    """[(workers, cap), ...]: arrays of at most max_size tasks; a --array_parallelism cap is shared
    among them in proportion to their sizes (at least 1 each), so the total stays at the cap."""
    chunks = [workers[i:i + max_size] for i in range(0, len(workers), max_size)]
    sizes = [len(c) for c in chunks]
    if parallelism is None:
        return list(zip(chunks, sizes))
    caps = [max(1, min(size, parallelism * size // len(workers))) for size in sizes]
    i = 0
    while sum(caps) < min(parallelism, len(workers)):
        if caps[i % len(caps)] < sizes[i % len(caps)]:
            caps[i % len(caps)] += 1
        i += 1
    return list(zip(chunks, caps))


def _mem(gb: float) -> str:
    return f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"


def _time_limit(opts: SlurmOptions) -> int:
    limit = partition_time_limit(opts.partition)
    if opts.time is None:
        return min(DEFAULT_TIME_MINUTES, limit) if limit else DEFAULT_TIME_MINUTES
    if limit is not None and opts.time > limit:
        where = f"partition {opts.partition}" if opts.partition else "the default partition"
        raise UsageError(f"--time {opts.time} is more than the {limit} minutes {where} allows")
    return opts.time


def _parameters(opts: SlurmOptions, time_min: int, mode: str, num_tasks: int,
                array_cap: Optional[int] = None) -> Dict[str, Any]:
    """submitit SlurmExecutor parameters for one job: num_tasks array tasks or ranks."""
    # `python -m submitit...` puts the job's directory first on sys.path: started in the submit
    # directory, a task would import any other gen_worker found there (another checkout).
    checkout = shlex.quote(PACKAGE_PARENT)
    setup = [*opts.slurm_setup, f"export PYTHONPATH={checkout}${{PYTHONPATH:+:$PYTHONPATH}}", f"cd {checkout}"]
    additional: Dict[str, Any] = dict(opts.sbatch)
    params: Dict[str, Any] = dict(job_name=opts.job_name, time=time_min, cpus_per_task=opts.cpus_per_task,
                                  mem_per_gpu=_mem(opts.mem_gb), setup=setup, partition=opts.partition,
                                  account=opts.account, qos=opts.qos, constraint=opts.constraint,
                                  exclude=opts.exclude, signal_delay_s=90, additional_parameters=additional)
    if mode == "array":
        params.update(gpus_per_node=1, array_parallelism=array_cap or num_tasks)
    else:  # --gpus-per-task=1 + srun binds one GPU per rank; --gpus or --gpus-per-node would not
        params.update(nodes=math.ceil(num_tasks / opts.gpus_per_node), gpus_per_task=1)
        additional["ntasks"] = num_tasks
    return {k: v for k, v in params.items() if v is not None}


def _submitit_folder(output_dir: str) -> str:
    return os.path.join(output_dir, layout.SUBMITIT_DIR, "%j")  # one folder per job (array task)


def _executor(output_dir: str, params: Dict[str, Any], python: Optional[str] = None) -> submitit.SlurmExecutor:
    """python: the command that runs python in each task (default: this Python)."""
    try:
        executor = submitit.SlurmExecutor(folder=_submitit_folder(output_dir), max_num_timeout=MAX_TIMEOUT_REQUEUES,
                                          python=python)
    except RuntimeError as err:  # no srun
        raise UsageError(f"--cluster slurm: {err}") from None
    executor.update_parameters(**params)
    return executor


def _jobs_plan(opts: SlurmOptions, workers: List[int], max_array: int,
               time_min: int) -> List[Tuple[List[int], Dict[str, Any]]]:
    """[(workers, parameters), ...]: one entry per SLURM job to queue."""
    if opts.slurm_mode == "tasks":
        return [(workers, _parameters(opts, time_min, "tasks", len(workers)))]
    return [(chunk, _parameters(opts, time_min, "array", len(chunk), cap))
            for chunk, cap in array_chunks(workers, max_array, opts.array_parallelism)]


def check_with_cluster(spec: JobSpec, opts: SlurmOptions) -> Tuple[int, int]:
    """Everything SLURM can tell before anything is queued: limits, then sbatch --test-only.
    Returns (MaxArraySize, time limit in minutes)."""
    try:
        max_array, time_min = max_array_size(), _time_limit(opts)
        plan = _jobs_plan(opts, list(range(opts.num_tasks)), max_array, time_min)
        workers, params = plan[0]
        folder = _submitit_folder(spec.output_dir)
        map_count = len(workers) if opts.slurm_mode == "array" and len(workers) > 1 else None
        test_submission(_make_sbatch_string(command="true", folder=folder, map_count=map_count, **params))
    except SlurmError as err:
        raise UsageError(str(err)) from None
    return max_array, time_min


def _queue(specs: Sequence[JobSpec], opts: SlurmOptions, workers: List[int], max_array: int, time_min: int,
           container: Optional[ImageContainer] = None,
           base: Optional[str] = None) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """Submit the jobs, each task making every spec in turn; returns (tasks, error): what was queued, and
    why the rest was not. base: the folder of submitit's files and the workers' logs (default: the
    first spec's; a sweep's top folder)."""
    tasks: List[Dict[str, Any]] = []
    base = base or specs[0].output_dir
    task_specs, python = list(specs), None
    if container is not None:  # the image's python runs the task, given the paths as it sees them
        task_specs = [container.inside_spec(spec) for spec in specs]
        python = "python" if container.runtime == PYXIS else \
            write_launcher(container, base, os.path.join(base, layout.SUBMITIT_DIR))
    log_dir = container.path(base) if container is not None else base
    for chunk, params in _jobs_plan(opts, workers, max_array, time_min):
        if container is not None and container.runtime == PYXIS:  # srun starts the container
            params = {**params, **srun_parameters(container, params["setup"])}
        executor = _executor(base, params, python)
        try:
            with submitit.helpers.clean_env():  # from inside a job: do not inherit its allocation
                if opts.slurm_mode == "tasks":
                    jobs = [executor.submit(SlurmTask(task_specs, opts.num_tasks, rank_workers=chunk,
                                                      log_dir=log_dir))] * len(chunk)
                else:
                    jobs = executor.map_array(SlurmTask(task_specs, opts.num_tasks, log_dir=log_dir), chunk)
        except Exception as err:  # sbatch refused (submitit raises its own error types)
            return tasks, " ".join(str(err).split())[:500]
        for rank, (worker, job) in enumerate(zip(chunk, jobs)):
            task_rank = rank if opts.slurm_mode == "tasks" else 0
            paths = JobPaths(_submitit_folder(base), job.job_id, task_rank)
            tasks.append({"worker": worker, "slurm_id": job.job_id, "job_id": job.job_id.split("_")[0],
                          "rank": task_rank, "stdout": str(paths.stdout), "stderr": str(paths.stderr)})
    return tasks, None


def describe_workers(workers: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts, start = [], None
    for i, k in enumerate(workers):
        if start is None:
            start = k
        if i + 1 == len(workers) or workers[i + 1] != k + 1:
            parts.append(str(start) if start == k else f"{start}-{k}")
            start = None
    return ",".join(parts)


def _print_submitted(out: str, opts: SlurmOptions, submission: Dict[str, Any]) -> None:
    by_job: Dict[str, List[int]] = {}
    for t in submission["tasks"]:
        by_job.setdefault(t["job_id"], []).append(t["worker"])
    jobs = ", ".join(f"job {j} (tasks {describe_workers(w)})" for j, w in by_job.items())
    print(f"Submitted {len(submission['tasks'])} SLURM tasks ({opts.slurm_mode} mode, one GPU each): {jobs}")
    print(f"Logs: {os.path.join(out, layout.SUBMITIT_DIR)}/<job id>/ (SLURM output), "
          f"{os.path.join(out, layout.LOGS_DIR)}/worker_gpu<task>.log")
    sys.stdout.flush()


def _record(specs: Sequence[JobSpec], per_folder: Sequence[Dict[str, Any]], submission: Dict[str, Any],
            together: Dict[str, Any], sweep_dir: Optional[str]) -> None:
    """The submission in each folder's logs/slurm_jobs.json, and in a sweep's top folder with its folders."""
    for s, own in zip(specs, per_folder):
        add_submission(s.output_dir, {**submission, **own, **together})
    if sweep_dir:
        add_submission(sweep_dir, {**submission, "folders": [os.path.relpath(s.output_dir, sweep_dir) for s in specs]})


def submit_to_slurm(runs: Sequence[PreparedRun], opts: SlurmOptions, limits: Tuple[int, int], command: str,
                    container: Optional[ImageContainer] = None, join: bool = False, wait: bool = False,
                    sweep_dir: Optional[str] = None) -> int:
    """Queue what is missing in the prepared folders (plan.py), then follow it (`wait`) or return; the exit status.
    runs: the run, every configuration of the sweep in `sweep_dir`, or the runs of a campaign queued together (each
    folder's record names them all): one set of tasks goes through them all.
    limits: check_with_cluster's (MaxArraySize, time limit). `container`: every task runs inside it.
    join: the (one) run is under way: its queue gets more tasks. The folders are let go once the tasks are queued:
    the tasks hold them while they run."""
    from gen_worker.slurm.status import follow, follow_hints, summarize_run

    specs = [run.spec for run in runs]
    spec, samples = runs[0].spec, runs[0].samples
    schedule = schedule_of(spec)
    out = sweep_dir or spec.output_dir  # submitit's files, the workers' logs, status and cancel
    max_array, time_min = limits
    tasks: List[Dict[str, Any]] = []
    try:
        started = time.time()
        submission = {"submitted_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                      "submitted_unix": started, "command": command, "mode": opts.slurm_mode, "num_workers": opts.num_tasks,
                      "num_samples": len(samples), "batch_size": spec.batch_size, "block_size": spec.block_size(),
                      "schedule": schedule.name,
                      "join": join, "container": container.image if container else None, "job_ids": [], "tasks": []}
        on_disk = [existing_images(s.output_dir) for s in specs]
        # What differs between the folders' records of the submission (their status, summary and reruns read it).
        per_folder = [{"num_samples": len(run.samples), "batch_size": run.spec.batch_size,
                       "block_size": run.spec.block_size(), "logs_in": out,
                       "already_there": sum(x.file_name in there for x in run.samples)}
                      for run, there in zip(runs, on_disk)]
        to_start = {k for run, there in zip(runs, on_disk)
                    for k in schedule.workers_to_start([x.file_name not in there for x in run.samples],
                                                       run.spec.block_size(), opts.num_tasks)}
        together = {TOGETHER: [s.output_dir for s in specs]} if len(specs) > 1 and not sweep_dir else {}
        if not to_start:
            print(f"Nothing to submit: every image is in {out}.")
            if not join:  # recorded, with no task: status judges this rerun, not the tasks before it
                _record(specs, per_folder, submission, together, sweep_dir)
                for s, own in zip(specs, per_folder):
                    print("\n".join(summarize_run(s.output_dir, {**submission, **own}, [])[1]), file=sys.stderr)
            return 0
        if join:
            workers = schedule.join(spec, opts.num_tasks)
            print(f"Joining the run under way in {out} with {len(workers)} more tasks (workers "
                  f"{describe_workers(workers)}).")
        else:
            workers = [k for k in [schedule.start(s, opts.num_tasks) for s in specs][0] if k in to_start]
        for s in specs:
            for k in workers:  # a task's GPU and job ids from an earlier run would mislead status
                if os.path.exists(layout.slurm_task_file(s.output_dir, k)):
                    os.remove(layout.slurm_task_file(s.output_dir, k))
        tasks, error = _queue(specs, opts, workers, max_array, time_min, container, out)
        submission.update(job_ids=sorted({t["job_id"] for t in tasks}, key=int), tasks=tasks)
        if tasks:
            _record(specs, per_folder, submission, together, sweep_dir)
    finally:
        for run in runs:
            run.lock.release()  # the tasks take it shared while they run
    if tasks:
        _print_submitted(out, opts, submission)
    if error:
        queued = {t["worker"] for t in tasks}
        left = describe_workers([k for k in workers if k not in queued])
        print(f"error: sbatch refused the job for tasks {left}: {error}", file=sys.stderr)
        if tasks:
            print("The tasks above are queued; once they end, rerun the same command to queue the rest.",
                  file=sys.stderr)
        return 1
    if not wait:
        print("\n".join(follow_hints(out)))
        return 0
    return follow(out)
