"""GPU faults, by fault injection on the CPU: a sticky CUDA error stops the worker at once; an out-of-memory
inside an upcast VAE decode leaves the pipeline usable."""
import json
from typing import Any

import pytest
import torch

from conftest import PROMPTS, run_worker_in_process
from gen_worker.output import layout
from gen_worker.prompts import Sample
from gen_worker.worker.loop import WorkerError
from gen_worker.worker.oom import SplitOnOutOfMemory, is_sticky_cuda_error
from gen_worker.worker.pipeline import ImageMaker, load_pipeline

ILLEGAL_ACCESS = ("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
                  "asynchronously reported at some other API call, so the stacktrace below might be incorrect.")
SAMPLES = [Sample(i, str(i), f"prompt {i}", 42 + i, f"{i:06d}_seed{42 + i}.png") for i in range(8)]


@pytest.mark.parametrize("message", [
    ILLEGAL_ACCESS, "CUDA error: device-side assert triggered", "CUDA error: unspecified launch failure",
    "CUDA error: misaligned address", "CUDA error: an illegal instruction was encountered",
    "CUDA error: uncorrectable ECC error encountered", "CUDA error: the launch timed out and was terminated",
    "CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, m, n, k, ...)`"])
def test_errors_that_poison_the_cuda_context_are_sticky(message: str) -> None:
    assert is_sticky_cuda_error(RuntimeError(message))
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None:
        assert is_sticky_cuda_error(accelerator_error(message))


@pytest.mark.parametrize("err", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory"), RuntimeError("CUDA error: invalid argument"),
    RuntimeError("Input type (c10::BFloat16) and bias type (float) should be the same"),
    ValueError("an illegal memory access in a prompt"), RuntimeError("injected failure for sample 3")])
def test_out_of_memory_and_ordinary_errors_are_not_sticky(err: BaseException) -> None:
    assert not is_sticky_cuda_error(err)


def test_after_a_sticky_error_the_splitter_calls_the_pipeline_no_more() -> None:
    calls: list[list[int]] = []

    def make(samples: list[Sample]) -> list[str]:
        calls.append([s.index for s in samples])
        if len(samples) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        raise RuntimeError(ILLEGAL_ACCESS)
    split = SplitOnOutOfMemory(make, free_memory=lambda: None)
    outcomes = split(SAMPLES[:4])
    assert calls == [[0, 1, 2, 3], [0, 1]]  # not [2, 3]: the context is gone
    assert [s.index for s, _ in outcomes] == [0, 1, 2, 3] and all(r is split.sticky for _, r in outcomes)
    assert split(SAMPLES[4:6]) == [(s, split.sticky) for s in SAMPLES[4:6]] and len(calls) == 2


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd: str) -> Any:
    return load_pipeline(tiny_sd, "fp32", "cpu")


def test_a_sticky_cuda_error_stops_the_worker_at_once(tmp_path: Any, sd_pipe: Any, tiny_sd: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    make = ImageMaker.make
    calls = []

    def illegal_access_from_the_second_call(self: ImageMaker, samples: list[Sample]) -> list[Any]:
        calls.append(len(samples))
        if len(calls) >= 2:
            raise RuntimeError(ILLEGAL_ACCESS)
        return make(self, samples)
    monkeypatch.setattr(ImageMaker, "make", illegal_access_from_the_second_call)
    with pytest.raises(WorkerError, match=r"CUDA error.*: the GPU context is unusable; rerun to resume$"):
        run_worker_in_process(tmp_path, "out", sd_pipe, tiny_sd, batch_size=2)
    out = str(tmp_path / "out")
    assert calls == [2, 2]  # the third block is not tried
    summary = json.load(open(layout.summary_file(out, 0)))
    assert (summary["state"], summary["generated"], summary["failed"]) == ("error", 2, 2)
    with open(layout.failed_file(out, 0), encoding="utf-8") as f:
        failed = [json.loads(line) for line in f]
    assert [f["index"] for f in failed] == [2, 3] and "illegal memory access" in failed[0]["error"]


def test_out_of_memory_in_an_upcast_vae_decode_leaves_the_pipeline_usable(tmp_path: Any, tiny_sd: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = load_pipeline(tiny_sd, "bf16", "cpu")
    decode = pipe.vae.decode
    calls = []

    def upcast_then_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # as SDXL's fp16 decode does: VAE to fp32, then out of memory before the cast back
            pipe.vae.to(torch.float32)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return decode(*args, **kwargs)
    monkeypatch.setattr(pipe.vae, "decode", upcast_then_out_of_memory)
    _, summary = run_worker_in_process(tmp_path, "out", pipe, tiny_sd, batch_size=2, dtype="bf16")
    assert (summary["generated"], summary["failed"], summary["oom_splits"]) == (len(PROMPTS), 0, 3)
    assert pipe.vae.dtype == torch.bfloat16
