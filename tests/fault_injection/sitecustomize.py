"""Loaded at start-up by workers the tests start with this folder on PYTHONPATH.

Makes every sample whose prompt contains FAIL_HERE raise, as a bad prompt or an OOM would, so the
tests can check what the toolkit does with failing samples without a special hook in its code.

A hung GPU call: the first worker to make a block with a HANG_HERE prompt, when T2I_TEST_HANG_ONCE names
a file that does not exist yet, creates that file (holding its pid) and its main thread stops for good in
the denoiser's second step (the file's mtime: when), while the process's other threads run on. SIGTERM does not end it (a hung CUDA
call never returns to Python, where the handler would run): only SIGKILL does. T2I_TEST_HANG_SECONDS=N
ends the hang after N seconds instead (a stall that passes). T2I_TEST_WATCHDOG_SECONDS=N lowers the
watchdog's floor (worker/loop.py WATCHDOG_MIN_SECONDS, minutes) to N seconds.

Two workers in a set order: a block with a WAIT_HERE prompt waits, before its pipeline call, until the file
T2I_TEST_WAIT_FOR names exists (at most 100 s, under the default 120 s lease), e.g. an image only another
worker can make.
"""
import os
import time

import gen_worker.worker.pipeline as pipeline

_make = pipeline.ImageMaker.make


def _first_to_hang():
    """The marker file's path if this process is the first to hang, else None."""
    path = os.environ.get("T2I_TEST_HANG_ONCE")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY) if path else None
    except FileExistsError:
        return None
    if fd is None:
        return None
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return path


def _hang(marker):
    os.utime(marker)
    until = time.monotonic() + float(os.environ.get("T2I_TEST_HANG_SECONDS", "inf"))
    while time.monotonic() < until:
        try:
            time.sleep(min(1.0, until - time.monotonic()))
        except KeyboardInterrupt:  # the worker's SIGTERM handler: a hung call would never have run it
            pass


def _wait_for_file(path, seconds=100.0):
    until = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < until:
        time.sleep(0.2)


def _make_or_fail(self, samples):
    for sample in samples:
        if "FAIL_HERE" in sample.prompt:
            raise RuntimeError(f"injected failure for sample {sample.index}")
    if any("WAIT_HERE" in s.prompt for s in samples) and os.environ.get("T2I_TEST_WAIT_FOR"):
        _wait_for_file(os.environ["T2I_TEST_WAIT_FOR"])
    marker = any("HANG_HERE" in s.prompt for s in samples) and _first_to_hang()
    if not marker:
        return _make(self, samples)
    calls = []

    def second_step(module, args):
        calls.append(1)
        if len(calls) == 2:
            _hang(marker)
    hooks = [m.register_forward_pre_hook(second_step) for m in pipeline.denoisers(self.pipe)]
    try:
        return _make(self, samples)
    finally:
        for hook in hooks:
            hook.remove()


pipeline.ImageMaker.make = _make_or_fail
if "T2I_TEST_WATCHDOG_SECONDS" in os.environ:
    import gen_worker.worker.loop as loop
    loop.WATCHDOG_MIN_SECONDS = float(os.environ["T2I_TEST_WATCHDOG_SECONDS"])
