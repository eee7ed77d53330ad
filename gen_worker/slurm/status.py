"""The tasks of a SLURM run, seen from the output folder: status, cancel, and --wait's bars.

Liveness comes from squeue (never from submitit's job.result(), which blocks forever for a job
that ended without a result when sacct is missing); progress from the files the tasks write.
A task is finished once it has left squeue, or once it reports done with its summary written.

    python submit.py status --output_dir D [--wait]
    python submit.py cancel --output_dir D [--task K ...]
"""
import argparse
import os
import re
import shlex
import sys
import time
from typing import Any, Collection, Mapping, Sequence

from gen_worker.errors import EXIT_USAGE, T2IError
from gen_worker.output import layout
from gen_worker.schedule import Schedule, schedule_named
from gen_worker.schedule.claims import RUN_FILE
from gen_worker.schedule.dynamic import FINISH_GRACE_SECONDS, every_block_done, stopped_late
from gen_worker.atomic_files import read_json_if_any
from gen_worker.output.progress import read_progress
from gen_worker.output.progress_bars import ProgressBars
from gen_worker.output.record import existing_images, read_manifest
from gen_worker.output.sweep_record import read_sweep_record
from gen_worker.output.summary import exit_status, final_lines, missing_images, read_worker_summary, \
    write_run_summary
from gen_worker.slurm.commands import SlurmError, cancel, kill_wait_seconds, queue_states
from gen_worker.slurm.record import TOGETHER, latest_submission

SQUEUE_EVERY_SECONDS = 3.0
# Tasks report done a moment before their jobs leave squeue; wait that long (at most) so that a
# rerun right after --wait is not refused as "still running".
LEAVE_QUEUE_GRACE_SECONDS = 30
CANCEL_WAIT_SECONDS = 30
# slurmstepd's line in a task's stderr when SLURM ends it, e.g.
# "slurmstepd: error: *** JOB 12 ON node1 CANCELLED AT 2026-11-26T20:40:01 DUE TO TIME LIMIT ***"
_SLURM_END = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ (.+?) \*\*\*")
# srun refusing the task's own line, e.g. "srun: unrecognized option '--container-image=...'" where SLURM has no
# Pyxis plugin (--container_runtime pyxis): the task never started.
_SRUN_REFUSED = re.compile(r"^srun: (unrecognized option '--?([\w-]+)[^']*'|invalid option.*)$", re.M)


def _schedule(submission: dict[str, Any]) -> Schedule:
    return schedule_named(submission.get("schedule", "static"))


def block_size(submission: dict[str, Any]) -> int:
    """The schedule's unit of the submission (a shard with --output_format tar; a record from before: the batch)."""
    return int(submission.get("block_size") or submission["batch_size"])


def worker_files(output_dir: str, submission: dict[str, Any]) -> dict[int, list[str]]:
    """{worker index: its image file names} where the schedule fixes them, from manifest.csv (status does not
    reread the prompts file); {} where workers claim blocks as they go: each task's count is what it made."""
    shares = _schedule(submission).shares(submission["num_samples"], block_size(submission),
                                          submission["num_workers"])
    if shares is None:
        return {}
    manifest = read_manifest(output_dir)
    return {k: [manifest[i]["file_name"] for i in share] for k, share in enumerate(shares)}


def _ended_reason(task: dict[str, Any], progress: dict[str, Any]) -> str:
    """Why a task left the queue unfinished: SLURM's own line in its stderr, else what it last said."""
    try:
        with open(task["stderr"], "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        tail = ""
    found = _SLURM_END.findall(tail)
    if found:
        return f"SLURM: {found[-1]}"
    refused = _SRUN_REFUSED.search(tail)
    if refused:
        hint = " (this cluster's srun has no Pyxis plugin)" if (refused.group(2) or "").startswith("container-") else ""
        return f"srun refused the task's options: {refused.group(1)}{hint} (log: {task['stderr']})"
    last = next((line.strip() for line in reversed(tail.splitlines())
                 if line.strip() and not line.startswith(("srun:", "slurmstepd"))), "")
    said = f": {last[:200]}" if last else ""
    if not progress:
        return f"left the queue without starting{said} (log: {task['stderr']})"
    return f"ended while {progress['state']}{said} (log: {task['stderr']})"


def task_views(output_dir: str, submission: dict[str, Any], states: dict[str, str] | None,
               not_needed: Collection[int] = (), stopped: Mapping[int, str] = {}) -> list[dict[str, Any]]:
    """One dict per queued task. states: squeue's answer, or None when squeue could not be asked.
    not_needed: tasks cancelled before they started because every block was done (dynamic schedule).
    stopped: tasks cancelled while still running once every block was done, and how (stuck ones)."""
    files = worker_files(output_dir, submission)
    on_disk = existing_images(output_dir)
    views = []
    for task in submission["tasks"]:
        k = task["worker"]
        progress = read_progress(output_dir, k) or {}
        started = read_json_if_any(layout.slurm_task_file(output_dir, k)) or {}
        gpu = started.get("host_gpu", started.get("cuda_visible_devices"))
        queued = None if states is None else states.get(task["slurm_id"])
        reported_done = progress.get("state") == "done" and read_worker_summary(output_dir, k) is not None
        finished = reported_done or (states is not None and queued is None) or k in not_needed or k in stopped
        view = {"worker": k, "slurm_id": task["slurm_id"], "task": task, "progress": progress, "queue": queued,
                "label": f"task {k}" + (f" (GPU {gpu})" if gpu else ""), "gpu": gpu,
                "done": (sum(name in on_disk for name in files[k]) if k in files
                         else (progress.get("generated") or 0) + (progress.get("skipped") or 0)),
                "total": len(files[k]) if k in files else progress.get("total") or submission["num_samples"],
                "finished": finished, "ok": finished and (progress.get("state") == "done" or k in not_needed),
                "message": "not started: every block was done" if k in not_needed else "",
                "stopped": stopped.get(k)}
        if finished and not view["ok"]:
            view["message"] = (progress.get("message") if progress.get("state") in ("error", "interrupted")
                               else None) or _ended_reason(task, progress)
        views.append(view)
    return views


def _queue_or_none(submission: dict[str, Any]) -> dict[str, str] | None:
    try:
        return queue_states([t["slurm_id"] for t in submission["tasks"]])
    except SlurmError as err:
        print(f"warning: {err}", file=sys.stderr)
        return None


def summarize_run(output_dir: str, submission: dict[str, Any], views: Sequence[dict[str, Any]],
                  finished_at: float | None = None) -> tuple[dict[str, Any], list[str]]:
    """summary.json for the run (every worker, queued or not) and its final lines."""
    manifest = read_manifest(output_dir)
    file_names = [manifest[i]["file_name"] for i in range(submission["num_samples"])]
    files = worker_files(output_dir, submission)
    by_worker = {v["worker"]: v for v in views}
    workers = []
    for k in (range(submission["num_workers"]) if files else sorted(by_worker)):
        v = by_worker.get(k)
        if v is None:  # not queued: all its images were there
            workers.append({"label": f"task {k}", "slurm_id": None, "exit_code": None, "state": "nothing left",
                            "skipped": len(files[k])})
        else:
            # A task left running (a sweep's configuration it has not finished): no outcome yet.
            code = None if not v["finished"] else 0 if v["ok"] else 1
            workers.append({"label": v["label"], "slurm_id": v["slurm_id"], "exit_code": code,
                            "message": v["message"], "stopped": v["stopped"], "worker_index": k})
    summary = write_run_summary(output_dir, file_names, workers, submission["submitted_unix"], submission["command"],
                                finished=finished_at, schedule=_schedule(submission).name,
                                judged_by_folder=_schedule(submission).judged_by_folder,
                                already_there=submission.get("already_there"), logs_in=submission.get("logs_in"))
    return summary, final_lines(summary)


def follow_hints(output_dir: str) -> list[str]:
    d = shlex.quote(output_dir)
    return [f"  follow: python submit.py status --output_dir {d} --wait",
            f"  cancel: python submit.py cancel --output_dir {d}"]


def _last_submission(output_dir: str) -> dict[str, Any]:
    submission = latest_submission(output_dir)
    if submission is None:
        raise SlurmError(f"no SLURM submission is recorded in {output_dir} ({layout.SLURM_JOBS_FILE})")
    return submission


def follow_run(output_dir: str, last: bool = True, folders: Sequence[str] = ()) -> int:
    """One bar per task until every task is finished; then summary.json and the final lines.
    Ctrl+C detaches: the jobs keep running. Returns the exit status.
    last: False for a sweep's configuration that its tasks leave for the next one: they stay queued.
    folders: the run's other folders (a sweep's configurations), whose blocks must be done too before a
    task still running is cancelled.

    Dynamic schedule, every block done: tasks still pending are cancelled at once (they would find nothing
    to make); tasks still running FINISH_GRACE_SECONDS later are stuck (their blocks were taken over) and
    are cancelled too, or, for a sweep's configuration that is not the last, left to the next one."""
    submission = _last_submission(output_dir)
    views = task_views(output_dir, submission, {})
    bars = ProgressBars(output_dir, [v["label"] for v in views], [v["total"] for v in views],
                        [v["done"] for v in views], worker_indices=[v["worker"] for v in views])
    left = _blocks_left([output_dir, *folders])
    states: dict[str, str] | None = None
    next_poll, all_done_at, blocks_done_at = 0.0, None, None
    not_needed: set[int] = set()
    stopped: dict[int, str] = {}
    try:
        while True:
            if left is not None and not blocks_done_at and every_block_done(left):
                blocks_done_at = time.monotonic()
            if time.monotonic() >= next_poll:
                states = _queue_or_none(submission)
                next_poll = time.monotonic() + (1.0 if all_done_at else SQUEUE_EVERY_SECONDS)
                if last and blocks_done_at:
                    not_needed |= _cancel_pending(submission, states)
            views = task_views(output_dir, submission, states, not_needed, stopped)
            notes: dict[int, str] = {}
            for position, v in enumerate(views):
                bars.set_label(position, v["label"])
                if v["finished"] and not v["ok"]:
                    notes[position] = v["stopped"] or f"stopped: {v['message']}"
                elif v["queue"] and not v["queue"].startswith("RUNNING"):
                    notes[position] = v["queue"].lower()
            bars.refresh(notes)
            stuck = [v for v in views if not v["finished"]]
            if stuck and states is not None and blocks_done_at \
                    and time.monotonic() - blocks_done_at > FINISH_GRACE_SECONDS:
                if not last:
                    break  # the sweep's next configuration: its tasks are cancelled, if need be, at the end
                stopped.update(_cancel_stuck(stuck))  # finished from the next look on
            if all(v["finished"] for v in views):
                all_done_at = all_done_at or time.monotonic()
                if not last or states is not None and not states \
                        or time.monotonic() - all_done_at > LEAVE_QUEUE_GRACE_SECONDS:
                    break
            time.sleep(0.5)
    except KeyboardInterrupt:
        bars.close()
        print("\nDetached: the SLURM jobs keep running.", file=sys.stderr)
        print("\n".join(follow_hints(output_dir)), file=sys.stderr)
        return 130
    bars.close()
    summary, lines = summarize_run(output_dir, submission, views)
    for line in lines:
        print(line, file=sys.stderr)
    return exit_status(summary, all(v["ok"] for v in views))


def _blocks_left(folders: Sequence[str]) -> dict[str, set[int]] | None:
    """{folder: the blocks of its last submission's run neither done nor on disk}, where the schedule can tell
    (None where it cannot: the tasks end when their shares are made)."""
    left = {}
    for folder in folders:
        submission = _last_submission(folder)
        manifest = read_manifest(folder)
        names = [manifest[i]["file_name"] for i in range(submission["num_samples"])]
        blocks = _schedule(submission).blocks_left(folder, names, block_size(submission), existing_images(folder))
        if blocks is None:
            return None
        left[folder] = blocks
    return left


def _cancel_stuck(views: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Every block is done, yet these tasks still run (stuck in a GPU call, or slow to end): cancel them so that
    their GPUs are freed; returns {worker: what happened}, for the last lines."""
    try:
        cancel([v["slurm_id"] for v in views])
    except SlurmError as err:
        print(f"warning: {err}", file=sys.stderr)
        return {}
    return {v["worker"]: stopped_late("cancelled") for v in views}


def sweep_folders(top: str) -> list[str] | None:
    """A sweep's configuration folders: those its last SLURM submission queued, else all it records;
    None when `top` is no sweep."""
    record = read_sweep_record(top)
    if record is None:
        return None
    submission = latest_submission(top)
    relative = submission["folders"] if submission and "folders" in submission else \
        [c.folder for c in record.configurations]
    return [os.path.join(top, f) for f in relative]


def run_folders(output_dir: str) -> list[str] | None:
    """The folders one set of tasks goes through in turn, where there are several: a sweep's configurations, or
    the runs of a campaign queued together (recorded under TOGETHER); None for a plain run."""
    folders = sweep_folders(output_dir)
    if folders is not None:
        return folders
    submission = latest_submission(output_dir)
    return list(submission[TOGETHER]) if submission and TOGETHER in submission else None


def follow(output_dir: str) -> int:
    """--wait: the run's bars, or each folder's in turn where its tasks go through several."""
    folders = run_folders(output_dir)
    if folders is None:
        return follow_run(output_dir)
    return follow_runs(folders, "configuration" if sweep_folders(output_dir) is not None else "run")


def follow_runs(folders: Sequence[str], what: str) -> int:
    """Each folder's bars in turn (the tasks go through them in order); only the last one's end stops tasks."""
    worst = 0
    for i, folder in enumerate(folders):
        name = os.path.basename(folder) if what == "configuration" else folder
        print(f"== {what} {name} ({i + 1} of {len(folders)})", file=sys.stderr)
        last = i == len(folders) - 1
        status = follow_run(folder, last, folders=folders[:i] if last else ())
        if status == 130:
            return status
        worst = max(worst, status)
    return worst


def _cancel_pending(submission: dict[str, Any], states: dict[str, str] | None) -> set[int]:
    """Every block is done: cancel the tasks still pending (they would find nothing to make, but the run
    would wait for a GPU to start them); returns their workers."""
    pending = [t for t in submission["tasks"] if (states or {}).get(t["slurm_id"], "").startswith("PENDING")]
    if not pending:
        return set()
    try:
        cancel([t["slurm_id"] for t in pending])
    except SlurmError as err:
        print(f"warning: {err}", file=sys.stderr)
        return set()
    return {t["worker"] for t in pending}


def show_local_status(output_dir: str) -> int:
    """A local dynamic run (no SLURM submission): each worker's counts, then the leases."""
    workers = sorted(int(n[len("progress_gpu"):-5]) for n in os.listdir(os.path.join(output_dir, layout.LOGS_DIR))
                     if n.startswith("progress_gpu") and n.endswith(".json") and n[len("progress_gpu"):-5].isdigit())
    print(f"Local run in {output_dir} (dynamic schedule): {len(workers)} workers")
    summary = read_json_if_any(os.path.join(output_dir, layout.RUN_SUMMARY_FILE)) or {}
    if not workers and summary.get("num_workers") == 0:  # a rerun that found every image there (local.py)
        print(f"Finished, no worker started: {final_lines(summary)[0]}")
        return exit_status(summary, True)
    labels = {}
    for k in workers:
        p = read_progress(output_dir, k) or {}
        labels[p.get("worker_id")] = f"worker {k}"
        print(f"  worker {k:<3} {p.get('host', '?')} pid {p.get('pid', '?')}: {p.get('generated', 0)} made, "
              f"{p.get('failed', 0)} failed, {p.get('state', '?')}")
    print("\n".join(schedule_named("dynamic").status_lines(output_dir, labels)))
    return 0


def show_status(output_dir: str) -> int:
    folders = sweep_folders(output_dir)
    if folders is not None:
        worst = 0
        for folder in folders:
            print(f"== configuration {os.path.basename(folder)}")
            worst = max(worst, show_status(folder) if os.path.isdir(folder) else 0)
        return worst
    if latest_submission(output_dir) is None and os.path.exists(os.path.join(output_dir, layout.CLAIMS_DIR,
                                                                              RUN_FILE)):
        return show_local_status(output_dir)
    submission = _last_submission(output_dir)
    if not submission["tasks"]:  # a rerun that found every image there
        print(f"SLURM run in {output_dir}: nothing queued: every image was there at {submission['submitted_at']}")
        print(f"  command: {submission['command']}")
        summary, lines = summarize_run(output_dir, submission, [], finished_at=submission["submitted_unix"])
        print("Finished. " + "\n".join(lines))
        return exit_status(summary, True)
    states = _queue_or_none(submission)
    views = task_views(output_dir, submission, states)
    jobs = ("jobs " if len(submission["job_ids"]) > 1 else "job ") + ", ".join(submission["job_ids"])
    print(f"SLURM run in {output_dir}: {len(views)} of {submission['num_workers']} tasks queued "
          f"({submission['mode']} mode) at {submission['submitted_at']}, {jobs}")
    print(f"  command: {submission['command']}")
    for v in views:
        if v["finished"]:
            state = "done" if v["ok"] else f"stopped: {v['message']}"
        else:
            state = v["queue"] or "unknown (squeue did not answer)"
            if v["progress"].get("state") and v["queue"] and v["queue"].startswith("RUNNING"):
                state += f", {v['progress']['state']}"
        failed = v["progress"].get("failed") or 0
        images = f"{v['done']}/{v['total']} images" + (f", {failed} failed" if failed else "")
        print(f"  {v['label']:<16} {v['slurm_id']:<10} {images:<24} {state}")
    others = submission["num_workers"] - len(views)
    if others > 0:
        print(f"  ({others} other tasks had nothing left to make and were not queued)")
    print("\n".join(_schedule(submission).status_lines(output_dir, {v["progress"].get("worker_id"): v["label"]
                                                                     for v in views})))
    base = submission.get("logs_in", output_dir)  # a sweep's tasks log in its top folder
    print(f"Logs: {os.path.join(base, layout.LOGS_DIR)}/worker_gpu<task>.log, "
          f"SLURM output: {os.path.join(base, layout.SUBMITIT_DIR)}/<job id>/")
    if all(v["finished"] for v in views):
        last = max([submission["submitted_unix"]] + [v["progress"].get("updated_at") or 0 for v in views])
        summary, lines = summarize_run(output_dir, submission, views, finished_at=last)
        print("Finished. " + "\n".join(lines))
        return exit_status(summary, all(v["ok"] for v in views))
    print("Still running.\n" + "\n".join(follow_hints(output_dir)))
    return 0


def cancel_run(output_dir: str, workers: Sequence[int] | None = None) -> int:
    submission = _last_submission(output_dir)
    tasks = submission["tasks"]
    if workers:
        if submission["mode"] == "tasks":
            print("error: a tasks-mode job's tasks are cancelled together; leave out --task", file=sys.stderr)
            return 2
        unknown = sorted(set(workers) - {t["worker"] for t in tasks})
        if unknown:
            print(f"error: task {unknown[0]} was not queued by the last submission", file=sys.stderr)
            return 2
        tasks = [t for t in tasks if t["worker"] in workers]
    states = queue_states([t["slurm_id"] for t in tasks])
    alive = [t for t in tasks if t["slurm_id"] in states]
    if not alive:
        print(f"Nothing to cancel: no task of {output_dir} is queued or running.")
        return 0
    # Whole jobs when cancelling everything (one scancel per array), else the array tasks named.
    ids = sorted({t["job_id"] for t in alive}) if not workers else [t["slurm_id"] for t in alive]
    cancelled_at = time.time()
    cancel(ids)
    print(f"Cancelled {', '.join(ids)} (tasks {', '.join(str(t['worker']) for t in alive)}).")
    # submitit's tasks ignore the SIGTERM of a cancel: SLURM kills them KillWait seconds later.
    kill_wait = kill_wait_seconds()
    if kill_wait is not None:
        by = time.strftime("%H:%M:%S", time.localtime(cancelled_at + kill_wait))
        print(f"SLURM stops running tasks by {by} (KillWait {kill_wait} s after the cancel).")
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline and any(t["slurm_id"] in queue_states(ids) for t in alive):
        time.sleep(1)
    left = [t for t in alive if t["slurm_id"] in queue_states(ids)]
    if left:
        print(f"{len(left)} tasks are still ending (a rerun is refused until they have left the queue); "
              f"check with `python submit.py status --output_dir {shlex.quote(output_dir)}`.")
        return 0
    if workers and _schedule(submission).judged_by_folder:
        print("The run's other tasks take over the cancelled tasks' blocks once their leases expire.")
        return 0
    missing = sum(len(missing_images(folder)[0]) for folder in run_folders(output_dir) or [output_dir])
    print(f"Rerun the submit command to make the {missing} image{'s' * (missing != 1)} still missing." if missing
          else "Every image is there: nothing to rerun.")
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"submit.py {argv[0]}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="the --output_dir of the SLURM run")
    if argv[0] == "status":
        parser.add_argument("--wait", action="store_true", help="follow the run with progress bars until it ends")
    else:
        parser.add_argument("--task", type=int, nargs="+", default=None, metavar="K",
                            help="cancel only these tasks (array mode; default: every job of the run)")
    args = parser.parse_args(argv[1:])
    output_dir = os.path.abspath(args.output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        print(f"error: --output_dir {output_dir} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        if argv[0] == "cancel":
            return cancel_run(output_dir, args.task)
        if args.wait:
            return follow(output_dir)
        return show_status(output_dir)
    except T2IError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
