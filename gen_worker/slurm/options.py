"""The SLURM flags of submit.py (--cluster slurm): one field each, checked where declared.

Nothing here needs a cluster or submitit: the flags are checked before anything is queued; what
only the cluster can tell (partition limits, sbatch --test-only) is checked in submit.py.
"""
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

from gen_worker.errors import UsageError
from gen_worker.flags import at_least, finite, flag, more_than, one_line_each

DEFAULT_GPUS = 8
MIN_TIME_MINUTES = 5  # submitit asks SLURM for a requeue signal 90 s before the end
# sbatch options that decide the one-GPU-per-task layout or the log files, or have their own flag.
MANAGED_SBATCH = {
    "array": "set from --gpus and --array_parallelism", "nodes": "set from --gpus_per_node",
    "ntasks": "set from --gpus", "ntasks-per-node": "set from --gpus_per_node",
    "gpus": "one GPU per task is how t2i-batch runs", "gpus-per-node": "one GPU per task is how t2i-batch runs",
    "gpus-per-task": "one GPU per task is how t2i-batch runs", "gres": "one GPU per task is how t2i-batch runs",
    "output": "logs go under --output_dir", "error": "logs go under --output_dir",
    "open-mode": "logs go under --output_dir", "signal": "submitit's requeue needs it",
    "wrap": "submitit writes the script",
    "partition": "use --partition", "account": "use --account", "qos": "use --qos", "time": "use --time",
    "mem": "use --mem_gb", "mem-per-gpu": "use --mem_gb", "mem-per-cpu": "use --mem_gb",
    "cpus-per-task": "use --cpus_per_task", "constraint": "use --constraint", "exclude": "use --exclude",
    "job-name": "use --job_name",
}


@dataclass
class SlurmOptions:
    gpus: Optional[int] = flag(None, group="run", checks=[at_least(1)],
                               help=f"number of SLURM tasks, one GPU each (slurm mode; default: {DEFAULT_GPUS})")
    slurm_mode: str = flag("array", group="slurm", choices=("array", "tasks"),
                           help="array: a job array of --gpus tasks that start as GPUs free up; "
                                "tasks: one job of --gpus tasks (srun), all starting together")
    gpus_per_node: int = flag(8, group="slurm", checks=[at_least(1)],
                              help="tasks mode: tasks per node (sets the node count)")
    array_parallelism: Optional[int] = flag(None, group="slurm", checks=[at_least(1)],
                                            help="array mode: at most this many tasks run at once (default: no cap)")
    partition: Optional[str] = flag(None, group="slurm", help="partition (default: the cluster's default partition)")
    account: Optional[str] = flag(None, group="slurm", help="account to charge")
    qos: Optional[str] = flag(None, group="slurm", help="quality of service")
    time: Optional[int] = flag(None, group="slurm", checks=[lambda minutes: _time_problem(minutes)],
                               help="time limit per task in minutes (default: 4320 = 3 days, or the partition's "
                                    "limit if lower); a task that runs out is requeued and resumes")
    mem_gb: float = flag(64, group="slurm", checks=[finite, more_than(0)], help="CPU memory per task (per GPU), in GB")
    cpus_per_task: int = flag(8, group="slurm", checks=[at_least(1)], help="CPU cores per task")
    constraint: Optional[str] = flag(None, group="slurm", help="node features, e.g. 'a100|h100'")
    exclude: Optional[str] = flag(None, group="slurm", help="nodes not to use, e.g. 'node[01-03]'")
    job_name: str = flag("t2i-batch", group="slurm", help="SLURM job name")
    slurm_setup: List[str] = flag(group="slurm", repeatable=True, metavar="LINE", checks=[one_line_each],
                                  help="a shell line run before each task, e.g. 'module load cuda' (repeat for more)")
    sbatch_option: List[str] = flag(group="slurm", repeatable=True, metavar="NAME[=VALUE]",
                                    checks=[lambda items: _sbatch_problem(items)],
                                    help="any other sbatch option, passed through, e.g. mail-type=END or "
                                         "reservation=r1 (repeatable)")

    @property
    def num_tasks(self) -> int:
        return self.gpus or DEFAULT_GPUS

    @property
    def sbatch(self) -> Dict[str, Union[str, bool]]:
        return parse_sbatch_options(self.sbatch_option)


def _time_problem(minutes: int) -> Optional[str]:
    return None if minutes >= MIN_TIME_MINUTES else f"is in minutes and must be at least {MIN_TIME_MINUTES}"


def _sbatch_problem(items: List[str]) -> Optional[str]:
    parse_sbatch_options(items)  # raises a UsageError that names the option
    return None


def parse_sbatch_options(items: List[str]) -> Dict[str, Union[str, bool]]:
    """--sbatch_option mail-type=END / --sbatch_option=--requeue -> {"mail-type": "END", "requeue": True}."""
    options: Dict[str, Union[str, bool]] = {}
    for item in items:
        key, has_value, value = item.lstrip("-").partition("=")
        key = key.strip().replace("_", "-")
        if not key:
            raise UsageError(f"--sbatch_option {item!r}: expected NAME=VALUE or NAME")
        if key in MANAGED_SBATCH:
            raise UsageError(f"--sbatch_option {item!r}: --{key} is not passed through ({MANAGED_SBATCH[key]})")
        options[key] = value if has_value else True
    return options


def wait_for_run(wait: Optional[bool]) -> bool:
    """--wait / --no_wait; neither: follow the run when stdout is a terminal."""
    return sys.stdout.isatty() if wait is None else wait
