"""Whether this worker's generation makes progress: what renews its lease, and its own watchdog.

A heartbeat from a thread of its own proves that the process exists, not that it works: a main thread
stuck in a hung CUDA call would hold its block forever. So the main thread brackets each pipeline call
with `calling()` and calls `pulse()` from the pipeline's models (pipeline.py hooks them: every denoiser
step, each text encoder call, the VAE decoder's calls), and a background thread looks every lease/4 s.
The worker made progress since the last look when it was outside a pipeline call meanwhile (claiming,
saving, waiting for the others: not stuck in a GPU call), when pulse() was called, or during a warm-up
call's grace (torch.compile compiles inside the first denoiser call of each shape, for minutes).

Each look that finds progress calls on_progress() (the lease's heartbeat: so a stuck call loses its
block about a lease after its last step). Each look without progress adds lease/4 s to a stall; at
`stall_limit` s, on_stall() is called once (the worker's watchdog). Counting looks, not clock time, keeps
a stopped process (SIGSTOP, a suspended job) or a loaded machine from looking stuck: its looks are late,
and a late look counts no more than one on time. Pure Python, no torch: the block queue's tests use it too.
"""
import contextlib
import logging
import math
import threading
import time
from typing import Callable, Iterator

log = logging.getLogger(__name__)


class ProgressWatch:
    def __init__(self, lease_seconds: float, stall_limit: float = math.inf,
                 on_progress: Callable[[], None] = lambda: None,
                 on_stall: Callable[[float], None] = lambda seconds: None) -> None:
        self.lease = lease_seconds
        self.interval = lease_seconds / 4
        self.stall_limit = stall_limit
        self.on_progress, self.on_stall = on_progress, on_stall
        self.stalled_seconds = 0.0  # looks in a row without progress, in seconds
        self._in_call = False
        self._pulses = 0  # written by the main thread only; the watch's thread compares it with the last look's
        self._seen = 0
        self._grace_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-watch", daemon=True)
        self._thread.start()

    def pulse(self) -> None:
        """The pipeline call went a step further (called from the main thread: only a count, no I/O)."""
        self._pulses += 1

    @contextlib.contextmanager
    def calling(self, grace: float = 0.0) -> Iterator[None]:
        """A pipeline call: from now on progress is pulse()'s, except in its first `grace` seconds."""
        self._grace_until = time.monotonic() + grace
        self._in_call = True
        self.pulse()
        try:
            yield
        finally:
            self._in_call = False
            self.pulse()

    def _progressed(self) -> bool:
        pulses, seen, self._seen = self._pulses, self._seen, self._pulses
        return pulses != seen or not self._in_call or time.monotonic() < self._grace_until

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self._progressed():
                if self.stalled_seconds >= self.lease:
                    log.warning("progress again after %.0f s without", self.stalled_seconds)
                self.stalled_seconds = 0.0
                self.on_progress()
            else:
                before, self.stalled_seconds = self.stalled_seconds, self.stalled_seconds + self.interval
                if before < self.lease <= self.stalled_seconds:
                    log.warning("no progress in this pipeline call for %.0f s (--lease_seconds): the heartbeat is held "
                                "back, so another worker may take over its block", self.stalled_seconds)
                if before < self.stall_limit <= self.stalled_seconds:
                    self.on_stall(self.stalled_seconds)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
