"""Background image writing: PNG encoding and disk writes off the GPU's critical path.

The generation loop hands each image to `put` and goes on with the next pipeline call; writer
threads convert, encode and write it (the worker's write function: png.py, then save_png_once)
and report each outcome through `on_done`. The queue is bounded: when the disk is slower than
the GPU, `put` waits (counted in `wait_seconds`) instead of piling images up in memory. The
write function must release the GIL for its heavy work, as numpy, zlib and file I/O do.
"""
import queue
import threading
import time
from typing import Any, Callable

_STOP = object()


class WriterError(RuntimeError):
    """The outcome handler failed (e.g. the progress file cannot be written): the worker must stop."""


class ImageWriter:
    def __init__(self, write: Callable[[Any], Any], on_done: Callable[[Any, Any, Exception | None], object],
                 max_pending: int, threads: int = 2) -> None:
        """write(item) runs in a writer thread; then on_done(item, result, error), error being the
        exception write raised (result None) or None. At most max_pending items wait in the queue."""
        self._write = write
        self._on_done = on_done
        self._queue: queue.Queue[Any] = queue.Queue(max_pending)
        self._fatal: Exception | None = None
        self.wait_seconds = 0.0
        self._threads = [threading.Thread(target=self._run, name=f"image-writer-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def put(self, item: Any) -> None:
        """Queue an item; blocks while the queue is full (the caller then waits for the disk)."""
        self._raise_if_fatal()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            started = time.perf_counter()
            self._queue.put(item)
            self.wait_seconds += time.perf_counter() - started

    def flush(self) -> None:
        """Wait until every queued item has been handled."""
        self._queue.join()
        self._raise_if_fatal()

    def close(self, timeout: float | None = None) -> None:
        """Handle what is queued, then stop the threads. With a timeout (after Ctrl+C), what is
        still queued when it runs out is dropped: a rerun makes it again. A write under way always
        finishes or leaves only its hidden temporary file, never a partial image."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self._threads:
            if not self._put_before(_STOP, deadline):
                self._drop_queued()
                break
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            self._drop_queued()
        self._raise_if_fatal()

    def _put_before(self, item: Any, deadline: float | None) -> bool:
        try:
            self._queue.put(item, timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            return True
        except queue.Full:
            return False

    def _drop_queued(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
                self._queue.task_done()
        except queue.Empty:
            pass
        for _ in self._threads:  # let each thread stop after its current write
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                break

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise WriterError(f"handling a written image failed: {self._fatal}") from self._fatal

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                try:
                    result, error = self._write(item), None
                except Exception as err:  # this item failed; the next ones may not
                    result, error = None, err
                try:
                    self._on_done(item, result, error)
                except Exception as err:
                    self._fatal = self._fatal or err
            finally:
                self._queue.task_done()
