"""The interface both schedules implement (static.py, dynamic.py): what the submitter, `status` and the worker
loop ask of a schedule (gen_worker/schedule/__init__.py says which is which)."""
from typing import Any, Iterator, Optional, Protocol, Sequence

from gen_worker.errors import T2IError
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec


class CannotJoin(T2IError):
    """A run under way that more workers cannot join (static, other prompts or settings)."""


class WorkerShare(Protocol):
    """What one worker makes of one run, as the worker loop goes through it."""
    total: int  # the worker's progress bar: samples it is to make or find made
    on_disk: int  # of those, already on disk when it started
    lease: float  # the lease its progress watch keeps (worker/watch.py)

    def nothing_to_make(self) -> bool:
        """Every block is on disk or made by others: the worker ends before loading anything."""

    def open(self) -> dict[str, Any]:
        """Start (the model is loaded): returns summary fields."""

    def blocks(self) -> Iterator[tuple[int, list[Sample]]]:
        """(block index, its samples) to make, in order (claimed one by one where the schedule claims)."""

    def block_done(self, block: int) -> None:
        """Every image of the block is written or recorded as failed (the writer threads call it)."""

    def beat(self) -> None:
        """The worker made progress (its progress watch calls it)."""

    def close(self, made: int) -> dict[str, Any]:
        """Stop (release what is not done); `made`: samples the worker counted. Returns summary fields,
        the progress bar's final total among them."""


class Schedule(Protocol):
    name: str
    # Whether the folder alone decides a run's success (a stopped worker's blocks are made by the others),
    # so that images on disk when the run started belong to no worker.
    judged_by_folder: bool

    def start(self, spec: JobSpec, num_workers: int) -> list[int]:
        """A new run into a prepared folder (locked exclusively): the workers' indices."""

    def join(self, spec: JobSpec, num_workers: int) -> list[int]:
        """More workers for the run under way (count 0: the checks only); CannotJoin if it cannot be."""

    def shares(self, num_samples: int, batch_size: int, num_workers: int) -> Optional[list[list[int]]]:
        """Each worker's sample indices where they are fixed in advance; None where workers claim as they go."""

    def workers_to_start(self, missing: Sequence[bool], batch_size: int, num_workers: int) -> list[int]:
        """The workers worth starting, given which samples are missing (by index)."""

    def blocks_left(self, output_dir: str, file_names: Sequence[str], batch_size: int,
                    on_disk: Sequence[str] | set[str]) -> Optional[set[int]]:
        """The run's blocks not done yet, for a submitter that waits for them (None: the schedule cannot tell,
        its workers end when their shares are made)."""

    def status_lines(self, output_dir: str, labels: dict[Any, str]) -> list[str]:
        """`status`'s lines about the run beyond each worker's counts (labels: worker id -> its label)."""

    def worker_share(self, spec: JobSpec, samples: Sequence[Sample], worker_index: int, num_workers: int,
                     on_disk: set[str]) -> WorkerShare:
        """What worker `worker_index` of `num_workers` makes of the run."""
