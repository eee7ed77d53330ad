"""One run at a time per output folder, with an advisory flock on output_dir/.t2i-batch.lock.

The submitter takes the lock exclusively while it checks and prepares the folder, then keeps
it shared; every worker holds it shared while it writes. A second submitter asking for it
exclusively is refused while any of them is alive, so two runs never write the same folder.
A lock dies with its process, so a crash never leaves the folder locked.
"""
import fcntl
import json
import logging
import os
import socket
import time

from gen_worker.output.layout import LOCK_FILE
from gen_worker.errors import T2IError

log = logging.getLogger(__name__)


class OutputDirBusy(T2IError):
    pass


class RunLock:
    def __init__(self, output_dir: str) -> None:
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def _flock(self, mode: int) -> bool:
        try:
            fcntl.flock(self._open(), mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as err:  # e.g. a network file system mounted without lock support
            log.warning("cannot lock %s (%s); concurrent runs into this folder are not prevented",
                        self.path, err.strerror)
            return True

    def acquire_exclusive(self) -> None:
        fd = self._open()
        if not self._flock(fcntl.LOCK_EX):
            raise OutputDirBusy(
                f"{os.path.dirname(self.path)} is in use by another run ({self._holder()}); "
                "wait for it to finish or stop it first")
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as err:  # a full disk: name the file
            err.filename = self.path
            raise

    def downgrade_to_shared(self) -> None:
        self._flock(fcntl.LOCK_SH)

    def acquire_shared(self, timeout: float = 60.0) -> None:
        """For workers: wait while a submitter holds it exclusively (it only checks the folder)."""
        deadline = time.monotonic() + timeout
        while not self._flock(fcntl.LOCK_SH):
            if time.monotonic() > deadline:
                raise OutputDirBusy(f"{os.path.dirname(self.path)} is locked by another run ({self._holder()})")
            time.sleep(0.5)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                info = json.loads(f.read() or "{}")
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"
