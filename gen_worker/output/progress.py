"""Live progress of a worker, as a small JSON file any process can read (local bars, SLURM status)."""
import os
import socket
import threading
import time
from typing import Any

from gen_worker.output import layout
from gen_worker.atomic_files import read_json_if_any, replace_json


# Counts are written at most this often (a write is a create and a rename on the file server: per image,
# they were most of a run's metadata operations); a change of state is written at once.
SAVE_INTERVAL_SECONDS = 1.0


class WorkerProgress:
    """Counts of one worker; `save()` writes them to logs/progress_gpu{k}.json atomically, at most once per
    SAVE_INTERVAL_SECONDS (a save within it is written when it ends); `update()` writes at once.

    The generation loop and the image writer threads both count: `lock` keeps the counts and the
    file writes (which share one temporary name per process) in order.
    """

    def __init__(self, output_dir: str, worker_index: int, num_workers: int) -> None:
        self.lock = threading.RLock()
        self.path = layout.progress_file(output_dir, worker_index)
        self.data: dict[str, Any] = {
            "worker_index": worker_index, "num_workers": num_workers, "state": "starting",
            "total": None, "skipped": 0, "generated": 0, "failed": 0,
            "host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(), "updated_at": None,
            "message": "",
        }
        self._saved_at = float("-inf")  # time.monotonic() of the last write
        self._pending: threading.Timer | None = None  # the write of a save that came too soon

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def update(self, **changes: Any) -> None:
        with self.lock:
            self.data.update(changes)
            self._write()

    def add(self, key: str, amount: int = 1) -> None:
        with self.lock:
            self.data[key] += amount

    def save(self) -> None:
        """Write the counts now, or when SAVE_INTERVAL_SECONDS since the last write are over."""
        with self.lock:
            wait = self._saved_at + SAVE_INTERVAL_SECONDS - time.monotonic()
            if wait <= 0:
                self._write()
            elif self._pending is None:
                self._pending = threading.Timer(wait, self._write_pending)
                self._pending.daemon = True
                self._pending.start()

    def _write_pending(self) -> None:
        with self.lock:
            if self._pending is not None:
                self._write()

    def _write(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self.data["updated_at"] = time.time()
        replace_json(self.path, self.data)
        self._saved_at = time.monotonic()


def read_progress(output_dir: str, worker_index: int) -> dict[str, Any] | None:
    """The last progress a worker wrote, or None if it has not written any yet."""
    return read_json_if_any(layout.progress_file(output_dir, worker_index))


def clear_progress(output_dir: str) -> None:
    folder = os.path.join(output_dir, layout.LOGS_DIR)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith("progress_gpu") and name.endswith(".json"):
                os.remove(os.path.join(folder, name))
