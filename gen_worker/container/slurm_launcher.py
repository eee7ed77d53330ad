"""--cluster slurm --container: the `python` that submitit's sbatch script runs, inside the image.

submitit runs `srun ... {python} -u -m submitit.core._submit {folder}` in each task. Here that
python is `/bin/bash launcher.sh`, a script written next to submitit's files at submit time. It
runs the image's python with the task's own GPU (read from the task's environment at run time)
and SLURM_*/SUBMITIT_* passed in (submitit needs them); for docker/podman under a container name
unique per task and restart, removed when the task ends, however it ends.
"""
import os
import shlex
from typing import Iterable

from gen_worker.atomic_files import replace_file
from gen_worker.container.runtime import Container, is_apptainer

# Values only the running task knows: placeholder in the command line -> shell variable.
PLACEHOLDERS = {"@GPU@": "gpu", "@VISIBLE@": "visible", "@NAME@": "name"}

_TASK_GPU = '''# The task's GPU. With one GPU in the job, SLURM_STEP_GPUS/SLURM_JOB_GPUS hold its host index even
# where cgroups renumber CUDA_VISIBLE_DEVICES to 0; docker/podman need the host's index.
visible=${CUDA_VISIBLE_DEVICES:-}
gpu=$visible
allocated=${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}
case $allocated in ""|*,*) ;; *) gpu=$allocated ;; esac
'''

_DOCKER = '''name=t2i-batch-${{SLURM_JOB_ID:-$$}}-${{SLURM_PROCID:-0}}-${{SLURM_RESTART_COUNT:-0}}
# submitit, and the worker's records, read SLURM_* and SUBMITIT_*: pass them by name.
passed=()
for var in $(compgen -e); do
    case $var in SLURM_*|SUBMITIT_*) passed+=(-e "$var") ;; esac
done
child=
# A `run` client killed outright leaves its container running: remove it when this task ends.
trap '{remove} >/dev/null 2>&1' EXIT
# SLURM signals every process of the step: the client hands each signal to the container, and
# this script only has to outlive them. But on scancel or the time limit, SIGTERM is ignored by
# submitit in the task, and the SIGKILL that follows (KillWait later) would reach this script and
# the client but not the container: so remove the container at once, as that SIGKILL would.
trap '{remove} >/dev/null 2>&1' TERM INT
trap ':' HUP USR1 USR2
{run} ${{passed[@]+"${{passed[@]}}"}} {image_python} "$@" &
child=$!
while true; do
    wait $child
    status=$?
    kill -0 $child 2>/dev/null || break
done
exit $status
'''


def _word(arg: str) -> str:
    """One shell word; placeholders become double-quoted shell variables."""
    out: list[str] = []
    rest = arg
    while rest:
        hits = [(rest.find(p), p) for p in PLACEHOLDERS if p in rest]
        if not hits:
            out.append(shlex.quote(rest))
            break
        at, placeholder = min(hits)
        if at:
            out.append(shlex.quote(rest[:at]))
        out.append(f'"${PLACEHOLDERS[placeholder]}"')
        rest = rest[at + len(placeholder):]
    return "".join(out) or "''"


def _command(argv: Iterable[str]) -> str:
    return " ".join(_word(a) for a in argv)


def launcher_script(container: Container, label: str) -> str:
    """The bash script's text: the image's python, given the script's own arguments."""
    argv = container.prefix("@GPU@", "@NAME@", label=label, visible="@VISIBLE@")
    head = ["#!/bin/bash", f"# Written by t2i-batch's submit.py: submitit's python, inside {container.image}.",
            "set -u", "unset PYTHONPATH PYTHONHOME  # the image's own Python environment", _TASK_GPU]
    if is_apptainer(container.runtime):
        return "\n".join(head + [f'exec {_command(argv)} "$@"', ""])
    remove = container.remove_command(["@NAME@"])
    assert remove is not None  # docker/podman
    body = _DOCKER.format(remove=_command(remove), run=_command(argv[:-2]),
                          image_python=_command(argv[-2:]))
    return "\n".join(head) + body


def write_launcher(container: Container, output_dir: str, folder: str) -> str:
    """Write the launcher into `folder` (one the nodes share); returns submitit's `python` value."""
    path = os.path.join(folder, "container_python.sh")
    os.makedirs(folder, exist_ok=True)
    replace_file(path, launcher_script(container, output_dir).encode("utf-8"))
    return f"/bin/bash {shlex.quote(path)}"
