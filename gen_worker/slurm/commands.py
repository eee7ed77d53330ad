"""The SLURM commands the submitter runs: squeue, scancel, scontrol, sinfo, sbatch --test-only.

Each runs in submitit's clean_env() (no SLURM_*/SBATCH_*/SUBMITIT_* variables), like the
submission itself: from inside a SLURM job, a submit must neither inherit nor query that job's
allocation. Nothing here imports torch.
"""
import re
import subprocess
from typing import Iterable

from submitit.helpers import clean_env
from gen_worker.errors import T2IError

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001


class SlurmError(T2IError):
    pass


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def run_slurm(command: list[str], timeout: float = 60,
              stdin_text: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        with clean_env():
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=stdin_text)
    except FileNotFoundError:
        raise SlurmError(f"{command[0]} not found: this machine is not a SLURM submit host") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{command[0]} did not answer within {timeout} s (is slurmctld up?)") from None


def queue_states(slurm_ids: Iterable[str]) -> dict[str, str]:
    """{slurm id: state} of those jobs/array tasks squeue still lists, e.g. {'12_3': 'PENDING (Resources)'}.

    Jobs that ended are simply absent. Raises SlurmError when squeue cannot answer: callers must
    not take that for "nothing is running".
    """
    job_ids = sorted({str(i).split("_")[0] for i in slurm_ids})
    if not job_ids:
        return {}
    out = run_slurm(["squeue", "--noheader", "--array", "--jobs=" + ",".join(job_ids), "--format=%i|%T|%r"])
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every job has ended and been purged
            return {}
        raise SlurmError(f"squeue failed: {_first_line(out.stderr) or f'exit code {out.returncode}'}")
    states: dict[str, str] = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            slurm_id, state, reason = parts
            states[slurm_id] = state if reason in ("", "None") else f"{state} ({reason})"
    return states


def cancel(slurm_ids: Iterable[str]) -> None:
    out = run_slurm(["scancel", *map(str, slurm_ids)])
    if out.returncode != 0:
        raise SlurmError(f"scancel failed: {_first_line(out.stderr) or f'exit code {out.returncode}'}")


def _config_number(name: str) -> int | None:
    """A number from `scontrol show config` (e.g. `KillWait = 30 sec`), None when unknown."""
    out = run_slurm(["scontrol", "show", "config"])
    match = re.search(rf"^{name}\s*=\s*(\d+)", out.stdout, re.M)
    return int(match.group(1)) if out.returncode == 0 and match else None


def max_array_size() -> int:
    """The cluster's MaxArraySize: the largest array index is MaxArraySize - 1."""
    size = _config_number("MaxArraySize")
    return SLURM_DEFAULT_MAX_ARRAY_SIZE if size is None else size


def kill_wait_seconds() -> int | None:
    """KillWait: how long SLURM waits after a cancel's SIGTERM before it kills a job's processes."""
    try:
        return _config_number("KillWait")
    except SlurmError:
        return None


def parse_time_minutes(text: str) -> int | None:
    """SLURM time limits ('7-00:00:00', '1:30:00', '45:00', '90', 'infinite') in minutes; None if unlimited."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def partition_time_limit(partition: str | None = None) -> int | None:
    """MaxTime of the partition (the default one if None), in minutes; None if unlimited or unknown."""
    command = ["sinfo", "--noheader", "--format=%P|%l"] + ([f"--partition={partition}"] if partition else [])
    out = run_slurm(command)
    for line in out.stdout.splitlines():
        name, _, limit = line.strip().partition("|")
        if (partition and name.rstrip("*") == partition) or (not partition and name.endswith("*")):
            try:
                return parse_time_minutes(limit)
            except ValueError:
                return None
    return None


def test_submission(script: str) -> None:
    """sbatch --test-only: SLURM checks the request (partition, account, resources, ...) without queuing it."""
    out = run_slurm(["sbatch", "--test-only"], stdin_text=script)
    if out.returncode != 0:
        errors = [line.strip() for line in out.stderr.splitlines() if line.strip()]
        raise SlurmError("SLURM refuses these options: " + "; ".join(errors[-2:]))
