"""Live progress of a worker, as a small JSON file any process can read (local bars, SLURM status)."""
import json
import os
import socket
import threading
import time
import zlib
from typing import Any

from gen_worker.output import layout
from gen_worker.atomic_files import replace_file


# Counts are written at most this often; a change of state is written at once.
SAVE_INTERVAL_SECONDS = 1.0
# A reader that catches a write half done (its checksum does not match) reads again this often, then gives up.
READ_ATTEMPTS, READ_PAUSE_SECONDS = 5, 0.01


class WorkerProgress:
    """Counts of one worker; `save()` writes them to logs/progress_gpu{k}.json, at most once per
    SAVE_INTERVAL_SECONDS (a save within it is written when it ends); `update()` writes at once.

    The file is made atomically once, then overwritten in place: a create and a rename per write were most
    of a tar run's metadata operations (docs/output-at-scale.md). Each write carries a checksum of its
    content, so that read_progress never takes a write half done for counts.

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
        self._fd: int | None = None  # the file, once made
        self._size = 0  # its length: a shorter write is padded with spaces (JSON whitespace), never truncated

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
        self._store(encode(self.data))
        self._saved_at = time.monotonic()

    def _store(self, content: bytes) -> None:
        if self._fd is None:
            replace_file(self.path, content)
            self._fd = os.open(self.path, os.O_WRONLY)
        else:
            os.pwrite(self._fd, content.ljust(self._size), 0)
        self._size = max(self._size, len(content))

    def close(self) -> None:
        with self.lock:
            if self._pending is not None:
                self._write()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def encode(data: dict[str, Any]) -> bytes:
    """The file's content: data as JSON, with the CRC-32 of that JSON text as its last key."""
    body = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return (body[:-1] + f', "crc32": "{zlib.crc32(body.encode()):08x}"}}\n').encode()


def decode(content: bytes) -> dict[str, Any] | None:
    """The data of a whole write; None for a write half done (or a damaged file)."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not isinstance(data, dict) or "crc32" not in data:
        return data if isinstance(data, dict) else None  # written whole by an earlier version (a rename)
    crc = data.pop("crc32")
    body = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return data if crc == f"{zlib.crc32(body.encode()):08x}" else None


def read_progress(output_dir: str, worker_index: int) -> dict[str, Any] | None:
    """The last progress a worker wrote, or None if it has not written any yet."""
    for attempt in range(READ_ATTEMPTS):
        try:
            with open(layout.progress_file(output_dir, worker_index), "rb") as f:
                data = decode(f.read())
        except FileNotFoundError:
            return None
        if data is not None:
            return data
        time.sleep(READ_PAUSE_SECONDS)
    return None


def clear_progress(output_dir: str) -> None:
    folder = os.path.join(output_dir, layout.LOGS_DIR)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith("progress_gpu") and name.endswith(".json"):
                os.remove(os.path.join(folder, name))
