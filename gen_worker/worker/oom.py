"""Out of GPU memory in a pipeline call: split the batch in halves and retry, down to one sample.

A split changes the batch composition, so the images of a split block may differ in the last
bits from those of an unsplit run: each split is logged and counted in the worker's summary.
Once a batch size ran out of memory, later batches of that size are split before calling (an
out-of-memory often comes at the VAE decode, after all the denoising work of the call).
"""
import gc
import logging
from typing import Any, Callable, Sequence

from gen_worker.prompts import Sample

log = logging.getLogger(__name__)


def is_out_of_memory(err: BaseException) -> bool:
    import torch
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


# Errors after which the CUDA context is unusable ("sticky"): every later call fails too, so the worker
# stops instead. Lower case, matched in RuntimeError (torch.AcceleratorError) messages; out-of-memory
# (split and retried) is checked first and is never one of them.
STICKY_CUDA_ERRORS = (
    "illegal memory access", "device-side assert", "unspecified launch failure", "misaligned address",
    "illegal instruction", "uncorrectable ecc error", "uncorrectable nvlink error", "launch timed out",
    "hardware stack error", "gpu has fallen off the bus", "cublas_status_execution_failed",
    "cudnn_status_execution_failed")


def is_sticky_cuda_error(err: BaseException) -> bool:
    """A CUDA error that poisons the context (illegal memory access, device-side assert, an Xid fault)."""
    if not isinstance(err, RuntimeError) or is_out_of_memory(err):
        return False
    message = str(err).lower()
    return any(text in message for text in STICKY_CUDA_ERRORS)


def free_gpu_memory() -> None:
    import torch
    gc.collect()  # tensors still held by the failed call's objects
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class SplitOnOutOfMemory:
    """`self(samples)` -> one (sample, image) or (sample, exception) per sample, in order.

    Errors other than out of memory fail the samples of that call only; after a sticky CUDA error
(`sticky`) no call is made any more. After a failed call, `recover()` puts the pipeline back as it
was (an out-of-memory inside an upcast VAE decode leaves the VAE in fp32).
    """

    def __init__(self, make: Callable[[list[Sample]], Sequence[Any]],
                 free_memory: Callable[[], None] = free_gpu_memory,
                 recover: Callable[[], None] = lambda: None) -> None:
        self.make = make
        self.free_memory = free_memory
        self.recover = recover  # after a failed call: undo what it left half done (an upcast VAE)
        self.sticky: BaseException | None = None  # a CUDA error that left the context unusable
        self.limit: int | None = None  # the largest batch size not known to run out of memory
        self.splits = 0

    def __call__(self, samples: list[Sample]) -> list[tuple[Sample, Any]]:
        if self.sticky is not None:  # every call would fail: the worker stops after this block
            return [(s, self.sticky) for s in samples]
        if self.limit is not None and len(samples) > self.limit:
            return self._split(samples)
        try:
            return list(zip(samples, self.make(samples)))
        except Exception as err:
            error = err.with_traceback(None)  # drops the call's frames, and the GPU tensors they hold
        if is_sticky_cuda_error(error):
            self.sticky = error
            return [(s, error) for s in samples]
        if not is_out_of_memory(error):
            self.recover()
            return [(s, error) for s in samples]
        self.free_memory()
        self.recover()
        if len(samples) == 1:
            return [(samples[0], error)]
        self.limit = len(samples) - 1
        log.warning("out of memory at batch size %d (samples %s): splitting it, and any batch larger than %d from "
                    "now on, in halves; split batches may differ in the last bits from an unsplit run (%s)",
                    len(samples), [s.index for s in samples], self.limit, " ".join(str(error).split())[:200])
        return self._split(samples)

    def _split(self, samples: list[Sample]) -> list[tuple[Sample, Any]]:
        self.splits += 1
        half = (len(samples) + 1) // 2
        return self(samples[:half]) + self(samples[half:])
