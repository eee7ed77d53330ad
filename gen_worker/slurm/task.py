"""What one SLURM task runs (submitit pickles a SlurmTask and calls it inside the job).

Array mode calls task(worker_index); tasks mode calls task() on every rank and the rank picks
its worker. Either way it is worker.run_worker on one GPU, once per spec (a sweep: every
configuration). Checkpointable: on timeout or preemption submitit requeues the job and the task
runs again, skipping the images on disk.
Nothing depends on that requeue: rerunning the submit command resumes the same way.
"""
import logging
import os
import shutil
import socket
import sys
import time
from typing import Any, MutableMapping, Sequence

import submitit

from gen_worker.output import layout
from gen_worker.atomic_files import replace_json
from gen_worker.spec import JobSpec

log = logging.getLogger(__name__)


def bind_one_gpu(environ: MutableMapping[str, str] = os.environ) -> str:
    """Leave this task exactly one GPU in CUDA_VISIBLE_DEVICES; returns it ("" if none).

    With per-task binding (--gpus-per-node=1 arrays, --gpus-per-task=1 jobs, as submitted here)
    SLURM already gives one. If a site's setup shows every task all of the node's GPUs, keep
    the one at this task's position on the node. The value is a node-global index when there are
    no cgroups (not 0): it is used as given, never recomputed from SLURM_LOCALID alone.
    """
    ids = [g.strip() for g in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if len(ids) > 1:
        local = int(environ.get("SLURM_LOCALID", "0"))
        if local >= len(ids):
            raise RuntimeError(f"task {local} on this node sees GPUs {ids}: fewer than the tasks here")
        log.warning("this task sees GPUs %s; keeping GPU %s (local task %d)", ",".join(ids), ids[local], local)
        environ["CUDA_VISIBLE_DEVICES"] = ids[local]
        ids = [ids[local]]
    return ids[0] if ids else ""


def _log_to_worker_file(output_dir: str, worker_index: int) -> None:
    """Worker logs go to submitit's stderr file and, as in local mode, to logs/worker_gpu{k}.log."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.addFilter(lambda record: not record.name.startswith("submitit"))  # it prints its own
    for handler in (to_stderr, logging.FileHandler(layout.worker_log(output_dir, worker_index))):
        handler.setFormatter(formatter)
        root.addHandler(handler)


def _record_task(output_dir: str, worker_index: int, gpu: str) -> dict[str, Any]:
    env = os.environ
    # host_gpu: the host's index, also in a docker/podman container (where the GPU is renumbered 0).
    info = {"worker_index": worker_index, "host": socket.gethostname(), "cuda_visible_devices": gpu,
            "host_gpu": env.get("T2I_HOST_GPU", gpu),
            "slurm_job_id": env.get("SLURM_JOB_ID"), "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
            "array_task_id": env.get("SLURM_ARRAY_TASK_ID"), "procid": env.get("SLURM_PROCID"),
            "restart_count": int(env.get("SLURM_RESTART_COUNT", "0")), "started_at": time.time()}
    replace_json(layout.slurm_task_file(output_dir, worker_index), info)
    return info


class SlurmTask(submitit.helpers.Checkpointable):
    def __init__(self, specs: Sequence[JobSpec], num_workers: int, rank_workers: Sequence[int] | None = None,
                 log_dir: str | None = None) -> None:
        """specs: the run's, or every configuration's of a sweep (made in turn, each model loaded once).
        rank_workers: tasks mode, the worker index of each rank (a rerun queues only some workers).
        log_dir: where logs/worker_gpu{k}.log goes (default: the first spec's folder; a sweep's top folder)."""
        self.specs = list(specs)
        self.num_workers = num_workers
        self.rank_workers = rank_workers
        self.log_dir = log_dir or self.specs[0].output_dir

    def __call__(self, worker_index: int | None = None) -> list[dict[str, Any]]:
        from gen_worker.worker.loop import run_specs

        if worker_index is None:  # tasks mode
            assert self.rank_workers is not None
            worker_index = self.rank_workers[submitit.JobEnvironment().global_rank]
        gpu = bind_one_gpu()
        _log_to_worker_file(self.log_dir, worker_index)
        for spec in self.specs:  # status reads each folder's
            info = _record_task(spec.output_dir, worker_index, gpu)
        log.info("==== SLURM job %s (array %s_%s, rank %s, restart %d) on %s: worker %d/%d, CUDA_VISIBLE_DEVICES=%s",
                 info["slurm_job_id"], info["array_job_id"], info["array_task_id"], info["procid"],
                 info["restart_count"], info["host"], worker_index, self.num_workers, gpu)
        return run_specs(self.specs, worker_index, self.num_workers)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        # submitit requeues with `scontrol requeue`; inside a container it may not exist. Then the
        # job just ends, and rerunning the submit command resumes it.
        if shutil.which("scontrol") is None:
            log.warning("timeout/preemption: scontrol not found, cannot requeue; rerun the submit command to resume")
            return None
        log.warning("timeout/preemption: requeuing; the task resumes with the images on disk")
        return super().checkpoint(*args, **kwargs)
