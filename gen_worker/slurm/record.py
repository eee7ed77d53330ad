"""logs/slurm_jobs.json: what each SLURM submission into an output folder queued.

    {"submissions": [{"submitted_at": ..., "submitted_unix": ..., "command": ..., "mode": "array",
                      "num_workers": 8, "num_samples": 5000, "batch_size": 1, "job_ids": ["12", "13"],
                      "tasks": [{"worker": 0, "slurm_id": "12_0", "job_id": "12", "rank": 0,
                                 "stdout": ..., "stderr": ...}, ...]}, ...]}

A task is one worker index: an array task ("12_3") or one rank of a multi-task job ("14", rank 2).
status, cancel, --wait and reruns all start from here; the last submission is "the run", together
with the submissions that joined it (--schedule dynamic, "join": true, their tasks' new worker indices).
"""
import os
from typing import Any

from gen_worker.output import layout
from gen_worker.atomic_files import read_json_if_any, replace_json
from gen_worker.slurm.commands import SlurmError, queue_states
from gen_worker.errors import T2IError


# A submission's key, in each of its folders' records: every folder its tasks go through, in order (the runs of
# a campaign file queued as one submission); absent for one run or a sweep (whose top folder lists its own).
TOGETHER = "together"


class SlurmJobsAlive(T2IError):
    pass


def record_path(output_dir: str) -> str:
    return os.path.join(output_dir, layout.SLURM_JOBS_FILE)


def read_submissions(output_dir: str) -> list[dict[str, Any]]:
    return (read_json_if_any(record_path(output_dir)) or {}).get("submissions", [])


def latest_submission(output_dir: str) -> dict[str, Any] | None:
    """The last run: its submission, with the tasks of the submissions that joined it ("join": true)."""
    submissions = read_submissions(output_dir)
    if not submissions:
        return None
    start = max([i for i, s in enumerate(submissions) if not s.get("join")] or [0])
    run = dict(submissions[start])
    for joined in submissions[start + 1:]:
        run["tasks"] = run["tasks"] + joined["tasks"]
        run["job_ids"] = run["job_ids"] + [j for j in joined["job_ids"] if j not in run["job_ids"]]
        # the run's tasks are those it asked for and those that joined it (else status says "2 of 1 tasks")
        run["num_workers"] = run.get("num_workers", 0) + joined.get("num_workers", 0)
    return run


def add_submission(output_dir: str, submission: dict[str, Any]) -> None:
    submissions = read_submissions(output_dir)
    replace_json(record_path(output_dir), {"submissions": submissions + [submission]})


def all_slurm_ids(output_dir: str) -> list[str]:
    return sorted({t["slurm_id"] for s in read_submissions(output_dir) for t in s["tasks"]})


def alive_slurm_ids(output_dir: str) -> list[str]:
    """Recorded tasks that squeue still lists (queued, running, requeued, completing)."""
    ids = all_slurm_ids(output_dir)
    states = queue_states(ids)
    return [i for i in ids if i in states]


def refuse_if_jobs_alive(output_dir: str, unknown_ok_flag: str | None = None, unknown_ok: bool = False) -> None:
    """Refuse to start a run while SLURM jobs of an earlier submission may still write here.

    When squeue cannot answer (no SLURM commands on this machine, controller down) the run is
    refused too; a local run names `unknown_ok_flag`, with which (unknown_ok=True) it goes on.
    """
    if not os.path.exists(record_path(output_dir)):
        return
    try:
        alive = alive_slurm_ids(output_dir)
    except SlurmError as err:
        if unknown_ok:
            return
        jobs = ", ".join(sorted({i.split("_")[0] for i in all_slurm_ids(output_dir)}))
        hint = (f"; if you know they have ended, pass {unknown_ok_flag}" if unknown_ok_flag else "")
        raise SlurmJobsAlive(
            f"cannot check whether the SLURM jobs recorded in {output_dir} (job {jobs}) still run: {err}{hint}") from None
    if alive:
        jobs = ", ".join(sorted({i.split("_")[0] for i in alive}))
        raise SlurmJobsAlive(
            f"{output_dir} has SLURM jobs still queued or running (job {jobs}); follow them with "
            f"`python submit.py status --output_dir {output_dir}`, or stop them with "
            f"`python submit.py cancel --output_dir {output_dir}`, then rerun")
