"""--schedule static: round-robin over blocks of consecutive samples, fixed in advance.

Worker k of N takes blocks k, k+N, k+2N, ... A block is `block_size` consecutive samples and is
generated as one pipeline call, so at a given block size every image is the same whatever N is.
With block_size 1 this is the plain sample round-robin k, k+N, k+2N, ... A late or dead worker's share
waits for it (a rerun makes it); nothing is kept in the output folder, so no one can join.
"""
from typing import Any, Iterator, Optional, Sequence

from gen_worker.schedule.interface import CannotJoin
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec


def worker_blocks(num_samples: int, worker_index: int, num_workers: int, block_size: int = 1) -> list[list[int]]:
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"worker index {worker_index} is not in 0..{num_workers - 1}")
    stride = num_workers * block_size
    return [list(range(start, min(start + block_size, num_samples)))
            for start in range(worker_index * block_size, num_samples, stride)]


def worker_indices(num_samples: int, worker_index: int, num_workers: int, block_size: int = 1) -> list[int]:
    """Every sample index of one worker, in the order it makes them."""
    return [i for block in worker_blocks(num_samples, worker_index, num_workers, block_size) for i in block]


class StaticShare:
    """Worker k's fixed blocks; those complete on disk are skipped."""

    def __init__(self, spec: JobSpec, samples: Sequence[Sample], worker_index: int, num_workers: int,
                 on_disk: set[str]) -> None:
        self._blocks = {b[0] // spec.block_size(): [samples[i] for i in b]
                        for b in worker_blocks(len(samples), worker_index, num_workers, spec.block_size())}
        self._complete = {b for b, block in self._blocks.items() if all(s.file_name in on_disk for s in block)}
        self.total = sum(len(block) for block in self._blocks.values())
        self.on_disk = sum(s.file_name in on_disk for block in self._blocks.values() for s in block)
        self.lease = spec.lease_seconds

    def nothing_to_make(self) -> bool:
        return len(self._complete) == len(self._blocks)

    def open(self) -> dict[str, Any]:
        return {"lease_seconds": self.lease}

    def blocks(self) -> Iterator[tuple[int, list[Sample]]]:
        return iter([(b, block) for b, block in self._blocks.items() if b not in self._complete])

    def block_done(self, block: int) -> None:
        pass

    def beat(self) -> None:
        pass

    def close(self, made: int) -> dict[str, Any]:
        return {}


class StaticSchedule:
    name = "static"
    judged_by_folder = False

    def start(self, spec: JobSpec, num_workers: int) -> list[int]:
        return list(range(num_workers))  # the folder was prepared: no queue of an earlier run is left to join

    def join(self, spec: JobSpec, num_workers: int) -> list[int]:
        raise CannotJoin("it is under way; only --schedule dynamic runs can be joined")

    def shares(self, num_samples: int, batch_size: int, num_workers: int) -> Optional[list[list[int]]]:
        return [worker_indices(num_samples, k, num_workers, batch_size) for k in range(num_workers)]

    def workers_to_start(self, missing: Sequence[bool], batch_size: int, num_workers: int) -> list[int]:
        return [k for k, share in enumerate(self.shares(len(missing), batch_size, num_workers) or [])
                if any(missing[i] for i in share)]

    def blocks_left(self, output_dir: str, file_names: Sequence[str], batch_size: int,
                    on_disk: Sequence[str] | set[str]) -> Optional[set[int]]:
        return None  # no queue to tell: the workers end when their shares are made

    def status_lines(self, output_dir: str, labels: dict[Any, str]) -> list[str]:
        return []  # the tasks' own counts say it all

    def worker_share(self, spec: JobSpec, samples: Sequence[Sample], worker_index: int, num_workers: int,
                     on_disk: set[str]) -> StaticShare:
        return StaticShare(spec, samples, worker_index, num_workers, on_disk)


STATIC = StaticSchedule()
