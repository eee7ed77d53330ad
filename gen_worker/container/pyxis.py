"""--container_runtime pyxis (--cluster slurm): each task's srun starts submitit's python inside the image through
SLURM's Pyxis plugin and Enroot, as NVIDIA-based clusters run containers:

    srun ... --container-image=IMAGE --container-mounts=SRC:DST,... --container-workdir=/opt/t2i-batch \\
        --no-container-mount-home --container-env=NAMES python -u -m submitit.core._submit FOLDER

IMAGE is whatever Pyxis takes: a registry image (nvcr.io#nvidia/pytorch:24.05-py3), an Enroot squashfs file
(`enroot import docker://...` makes one) or an image the nodes already hold. The mounts are the binds every
runtime gets (runtime.prepare: the output folder, prompts, model, caches, --container_bind), each SRC:DST. srun
hands the batch script's environment to the task; Pyxis lets the image's own ENV win except for the names given
with --container-env, so those this sets are named there. No launcher script: srun itself is the container runtime.
"""
import shlex
from typing import Any, Dict, List

from gen_worker.container.runtime import IMAGE_WORKDIR, Container


def environment(container: Container) -> Dict[str, str]:
    """What the worker sees inside, as with the other runtimes: the image's name, the bound caches' paths."""
    return dict(container.env, T2I_CONTAINER=container.image)


def srun_parameters(container: Container, setup: List[str]) -> Dict[str, Any]:
    """submitit parameters for the task's srun line; `setup`: the batch script's lines before it."""
    env = environment(container)
    mounts = ",".join(f"{b.src}:{b.dst}" for b in container.binds)
    srun_args = [f"--container-image={container.image}", f"--container-mounts={mounts}",
                 # the image's project, not a checkout in the submit folder; ~/.local's packages stay out
                 f"--container-workdir={IMAGE_WORKDIR}", "--no-container-mount-home",
                 f"--container-env={','.join(env)}"]
    lines = ["unset PYTHONPATH PYTHONHOME  # the image's own Python environment",
             *(f"export {name}={shlex.quote(value)}" for name, value in env.items())]
    return {"srun_args": srun_args, "setup": [*setup, *lines]}
