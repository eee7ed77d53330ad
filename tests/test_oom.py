"""Out of GPU memory: a block is split in halves and retried, down to single samples (no GPU needed)."""
import torch

from gen_worker.worker.oom import SplitOnOutOfMemory, is_out_of_memory
from gen_worker.prompts import Sample

SAMPLES = [Sample(i, str(i), f"prompt {i}", 42 + i, f"{i:06d}_seed{42 + i}.png") for i in range(12)]


class FakeMaker:
    """Runs out of memory for batches larger than `fits`, or whenever a sample in `too_big` is in the batch."""

    def __init__(self, fits=2, too_big=()):
        self.fits, self.too_big, self.calls = fits, set(too_big), []

    def make(self, samples):
        self.calls.append([s.index for s in samples])
        if len(samples) > self.fits or self.too_big & {s.index for s in samples}:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [f"image {s.index}" for s in samples]


def _split(maker):
    freed = []
    return SplitOnOutOfMemory(maker.make, free_memory=lambda: freed.append(1)), freed


def test_a_block_too_large_is_split_until_it_fits_and_later_blocks_are_split_first(caplog):
    maker = FakeMaker(fits=2)
    make, freed = _split(maker)
    first = make(SAMPLES[:8])
    assert first == [(s, f"image {s.index}") for s in SAMPLES[:8]]
    assert [len(c) for c in maker.calls] == [8, 4, 2, 2, 2, 2]
    assert (make.splits, make.limit, len(freed)) == (3, 3, 2)
    assert "out of memory at batch size 8 (samples [0, 1, 2, 3, 4, 5, 6, 7])" in caplog.text
    assert "may differ in the last bits" in caplog.text
    maker.calls.clear()
    # The next block goes straight to the batch size that fits, in the same halves: no failed call.
    assert make(SAMPLES[8:12]) == [(s, f"image {s.index}") for s in SAMPLES[8:12]]
    assert maker.calls == [[8, 9], [10, 11]]


def test_a_single_sample_that_does_not_fit_fails_alone():
    make, freed = _split(FakeMaker(fits=8, too_big={5}))
    outcomes = make(SAMPLES[4:8])
    assert [s.index for s, _ in outcomes] == [4, 5, 6, 7]
    images = {s.index: r for s, r in outcomes}
    assert isinstance(images[5], torch.cuda.OutOfMemoryError) and images[5].__traceback__ is None
    assert [images[i] for i in (4, 6, 7)] == ["image 4", "image 6", "image 7"]
    assert len(freed) == 3  # at 4, at 2 and at 1 sample


def test_other_errors_fail_the_call_without_splitting():
    def make(samples):
        raise ValueError("bad prompt")
    split = SplitOnOutOfMemory(make, free_memory=lambda: None)
    outcomes = split(SAMPLES[:4])
    assert [type(r) for _, r in outcomes] == [ValueError] * 4
    assert (split.splits, split.limit) == (0, None)


def test_out_of_memory_is_recognised_by_type_and_by_message():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
