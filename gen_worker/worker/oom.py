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


def free_gpu_memory() -> None:
    import torch
    gc.collect()  # tensors still held by the failed call's objects
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class SplitOnOutOfMemory:
    """`self(samples)` -> one (sample, image) or (sample, exception) per sample, in order.

    Errors other than out of memory fail the samples of that call only.
    """

    def __init__(self, make: Callable[[list[Sample]], Sequence[Any]],
                 free_memory: Callable[[], None] = free_gpu_memory) -> None:
        self.make = make
        self.free_memory = free_memory
        self.limit: int | None = None  # the largest batch size not known to run out of memory
        self.splits = 0

    def __call__(self, samples: list[Sample]) -> list[tuple[Sample, Any]]:
        if self.limit is not None and len(samples) > self.limit:
            return self._split(samples)
        try:
            return list(zip(samples, self.make(samples)))
        except Exception as err:
            error = err.with_traceback(None)  # drops the call's frames, and the GPU tensors they hold
        if not is_out_of_memory(error):
            return [(s, error) for s in samples]
        self.free_memory()
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
