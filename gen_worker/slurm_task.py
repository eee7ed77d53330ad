"""Import shim: SLURM jobs queued before the package layout changed pickled their task as
gen_worker.slurm_task.SlurmTask; a requeue of such a job unpickles it through this name."""
from gen_worker.slurm.task import SlurmTask

__all__ = ["SlurmTask"]
