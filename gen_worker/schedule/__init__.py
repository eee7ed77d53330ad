"""Which worker makes which block of samples: the two schedules behind one interface.

Block b is samples [b*B, (b+1)*B) (B = --batch_size) under both schedules and is made in one pipeline call,
so a sample's image is the same whatever the schedule and the number of workers. With --output_format tar a
block is a shard (B = --shard_size, JobSpec.block_size), made by one worker in pipeline calls of --batch_size.

    static.py    --schedule static: worker k of N makes blocks k, k+N, ... (fixed shares)
    dynamic.py   --schedule dynamic: workers claim blocks as they go from a queue in the output folder,
                 take over a dead or stuck worker's, and a run under way can be joined
    claims.py    that queue on the shared file system: claims, leases, heartbeats
    interface.py what a schedule answers (Schedule) and what a worker's share of a run is (WorkerShare)

The submitter (plan.py, local.py, slurm/), the worker (worker/loop.py) and `status` ask schedule_of(spec) or
schedule_named(name) and never test which schedule it is.
"""
from gen_worker.schedule.dynamic import DYNAMIC
from gen_worker.schedule.interface import CannotJoin, Schedule, WorkerShare
from gen_worker.schedule.static import STATIC
from gen_worker.spec import JobSpec

__all__ = ["CannotJoin", "Schedule", "WorkerShare", "schedule_named", "schedule_of"]
_BY_NAME = {s.name: s for s in (STATIC, DYNAMIC)}


def schedule_named(name: str) -> Schedule:
    """The schedule of that --schedule name (a run's records keep the name)."""
    return _BY_NAME[name]


def schedule_of(spec: JobSpec) -> Schedule:
    return _BY_NAME[spec.schedule]
