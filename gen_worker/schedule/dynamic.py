"""--schedule dynamic: workers claim blocks as they go from the queue in the output folder (claims.py).

A late, slow, cancelled, preempted or stuck worker's blocks are made by the others (its lease runs out), so
the folder alone decides a run's success; a run under way can be joined by more workers with the same
prompts and settings. claims/run.json records what a joiner must match, and the run's lease.
"""
import os
from typing import Any, Collection, Iterator, Mapping, Optional, Sequence

from gen_worker.atomic_files import read_json_if_any, replace_json
from gen_worker.output.record import read_settings_record
from gen_worker.prompts import Sample
from gen_worker.schedule.claims import RUN_FILE, BlockQueue, claims_dir, done_blocks, leases, reserve_worker_indices
from gen_worker.schedule.interface import CannotJoin
from gen_worker.spec import MAX_LEASE_SECONDS, JobSpec, recorded_defaults

# Once every block is done, the workers still running get this long to end on their own before the
# submitter stops them (a worker with nothing left ends within a second; one stuck in a GPU call never does).
FINISH_GRACE_SECONDS = 5.0


def _run_record(spec: JobSpec) -> dict[str, object]:
    """What a joining submitter's run must share with the run under way."""
    return {"samples_fingerprint": spec.samples_fingerprint, "num_samples": spec.num_samples,
            "batch_size": spec.batch_size, "block_size": spec.block_size()}


def run_lease(output_dir: str, default: float) -> float:
    """The lease of the dynamic run in output_dir (its first submitter's --lease_seconds), else `default`."""
    lease = (read_json_if_any(os.path.join(claims_dir(output_dir), RUN_FILE)) or {}).get("lease_seconds")
    if isinstance(lease, (int, float)) and not isinstance(lease, bool) and 0 < lease <= MAX_LEASE_SECONDS:
        return float(lease)
    return default


def blocks_left(output_dir: str, file_names: Sequence[str], batch_size: int, on_disk: Collection[str]) -> set[int]:
    """The blocks of a dynamic run not finished: neither marked done nor with every image in `on_disk`
    (a block complete when the run started is skipped, never marked). Once a block is finished it stays so:
    a caller that polls keeps the set and takes done_blocks() away from it."""
    starts = range(0, len(file_names), batch_size)
    left = {b for b, i in enumerate(starts) if not all(name in on_disk for name in file_names[i:i + batch_size])}
    return left - done_blocks(output_dir)


def every_block_done(left: Mapping[str, set[int]]) -> bool:
    """left: {folder: its blocks_left()}; each set loses the blocks marked done since the last look."""
    for folder, blocks in left.items():
        if blocks:
            blocks -= done_blocks(folder)
    return not any(left.values())


def stopped_late(how: str) -> str:
    """What the submitter says of a worker it stopped once every block was done (stuck: its blocks were taken over)."""
    return f"was still running {FINISH_GRACE_SECONDS:.0f} s after every block was done: {how}"


class DynamicShare:
    """Every block of the run, claimed one by one; the bar counts what this worker makes of what is missing."""

    def __init__(self, spec: JobSpec, samples: Sequence[Sample], on_disk: set[str]) -> None:
        self._spec = spec
        self._blocks = {b: list(samples[i:i + spec.block_size()])
                        for b, i in enumerate(range(0, len(samples), spec.block_size()))}
        self._complete = {b for b, block in self._blocks.items() if all(s.file_name in on_disk for s in block)}
        self._complete |= done_blocks(spec.output_dir)
        self.total = sum(s.file_name not in on_disk for s in samples)
        self.on_disk = 0  # no image is this worker's until it makes it
        self.lease = run_lease(spec.output_dir, spec.lease_seconds)  # a joiner's own --lease_seconds does not count
        self._queue: Optional[BlockQueue] = None

    def nothing_to_make(self) -> bool:
        return len(self._complete) == len(self._blocks)

    def open(self) -> dict[str, Any]:
        self._queue = BlockQueue(self._spec.output_dir, len(self._blocks), self.lease)
        return {"worker_id": self._queue.worker, "lease_seconds": self.lease}

    def blocks(self) -> Iterator[tuple[int, list[Sample]]]:
        assert self._queue is not None, "open() first"
        return ((b, self._blocks[b]) for b in self._queue.blocks(self._complete))

    def block_done(self, block: int) -> None:
        if self._queue is not None:
            self._queue.done(block)

    def beat(self) -> None:
        if self._queue is not None:
            self._queue.beat()

    def close(self, made: int) -> dict[str, Any]:
        self.total = made  # its share is known now: what it made (the bar ends at 100%)
        if self._queue is None:
            return {}
        self._queue.close()
        return {"blocks_claimed": self._queue.claimed, "blocks_taken_over": self._queue.taken_over}


class DynamicSchedule:
    name = "dynamic"
    judged_by_folder = True

    def start(self, spec: JobSpec, num_workers: int) -> list[int]:
        os.makedirs(claims_dir(spec.output_dir), exist_ok=True)  # the folder was prepared: an empty queue
        replace_json(os.path.join(claims_dir(spec.output_dir), RUN_FILE),
                     {**_run_record(spec), "lease_seconds": spec.lease_seconds})
        return reserve_worker_indices(spec.output_dir, num_workers)

    def join(self, spec: JobSpec, num_workers: int) -> list[int]:
        found = read_json_if_any(os.path.join(claims_dir(spec.output_dir), RUN_FILE))
        if found is None:
            raise CannotJoin("it is under way with --schedule static, which cannot be joined")
        if {k: found.get(k) for k in _run_record(spec)} != _run_record(spec):
            raise CannotJoin("it is under way with other prompts or another batch or shard size; wait for it to finish")
        record = read_settings_record(spec.output_dir)
        recorded = {**recorded_defaults(), **record.get("settings", {})}
        same_model = record.get("model", {}).get("fingerprint") == spec.model_identity.get("fingerprint")
        changed = sorted(k for k, v in spec.recorded_settings().items()
                         if recorded.get(k) != v and not (k == "model_path" and same_model))
        changed += [] if same_model else ["model content"]
        if changed:
            raise CannotJoin(f"it is under way with other settings ({', '.join(changed)}); wait for it to finish")
        return reserve_worker_indices(spec.output_dir, num_workers)

    def shares(self, num_samples: int, batch_size: int, num_workers: int) -> Optional[list[list[int]]]:
        return None

    def workers_to_start(self, missing: Sequence[bool], batch_size: int, num_workers: int) -> list[int]:
        return list(range(num_workers)) if any(missing) else []  # any worker claims any block

    def blocks_left(self, output_dir: str, file_names: Sequence[str], batch_size: int,
                    on_disk: Sequence[str] | set[str]) -> Optional[set[int]]:
        return blocks_left(output_dir, file_names, batch_size, on_disk)

    def status_lines(self, output_dir: str, labels: dict[Any, str]) -> list[str]:
        """Who holds which block of the dynamic queue, and how fresh their heartbeat looks."""
        held = leases(output_dir)
        done = len(done_blocks(output_dir))
        lines = [f"Blocks: {done} done, {len(held)} being made"]
        for lease in held:
            holder = str(lease["holder"])
            beat = lease["heartbeat_age"]
            seen = "no heartbeat file" if beat is None else f"heartbeat seen {beat:.0f} s ago"
            since = "" if lease["claimed_ago"] is None else f", claimed {lease['claimed_ago']:.0f} s ago"
            who = labels.get(holder, holder) or "a claim naming no worker (expired)"
            lines.append(f"  block {lease['block']:<6} {who}: {seen}{since}")
        return lines

    def worker_share(self, spec: JobSpec, samples: Sequence[Sample], worker_index: int, num_workers: int,
                     on_disk: set[str]) -> DynamicShare:
        return DynamicShare(spec, samples, on_disk)


DYNAMIC = DynamicSchedule()
