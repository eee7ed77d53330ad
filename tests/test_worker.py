"""The worker loop in-process on the tiny model: out-of-memory splits, write failures, timings."""
import json
import os

import pytest
import torch

from conftest import PROMPTS, images_in, pixels_in, run_worker_in_process
from gen_worker.output import layout
from gen_worker.worker.pipeline import ImageMaker, load_pipeline
from gen_worker.worker.loop import WorkerError

MANY = [(str(i), f"prompt number {i}") for i in range(20)]


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd):
    return load_pipeline(tiny_sd, "fp32", "cpu")


_run = run_worker_in_process


def _failures(out):
    with open(layout.failed_file(out, 0), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_out_of_memory_splits_the_block_and_every_image_is_made(tmp_path, sd_pipe, tiny_sd, monkeypatch, caplog):
    reference_out, _ = _run(tmp_path, "batch2", sd_pipe, tiny_sd, batch_size=2)
    make = ImageMaker.make

    def out_of_memory_above_2(self, samples):
        if len(samples) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return make(self, samples)
    monkeypatch.setattr(ImageMaker, "make", out_of_memory_above_2)
    out, summary = _run(tmp_path, "batch4", sd_pipe, tiny_sd, batch_size=4)
    assert (summary["generated"], summary["failed"], summary["oom_splits"]) == (len(PROMPTS), 0, 2)
    assert "out of memory at batch size 4 (samples [0, 1, 2, 3])" in caplog.text
    # Blocks [0-3] and [4-6] became [0,1] [2,3] [4,5] [6]: the batches of a --batch_size 2 run
    # (the same pixels; the files differ in the batch size they record).
    assert pixels_in(out) == pixels_in(reference_out)


def test_a_failed_write_fails_that_sample_only(tmp_path, sd_pipe, tiny_sd, monkeypatch):
    import gen_worker.worker.loop as worker
    save = worker.save_png_once

    def disk_full_for_sample_2(image, path, text=None):
        if path.endswith("_seed44.png"):
            raise OSError(28, "No space left on device")
        return save(image, path, text)
    monkeypatch.setattr(worker, "save_png_once", disk_full_for_sample_2)
    out, summary = _run(tmp_path, "out", sd_pipe, tiny_sd, batch_size=3)
    assert (summary["generated"], summary["failed"]) == (len(PROMPTS) - 1, 1)
    assert [(f["index"], f["seed"]) for f in _failures(out)] == [(2, 44)]
    assert "No space left on device" in _failures(out)[0]["error"]
    assert len(images_in(out)) == len(PROMPTS) - 1
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_when_no_image_can_be_written_the_worker_stops(tmp_path, sd_pipe, tiny_sd, monkeypatch):
    import gen_worker.worker.loop as worker

    def disk_full(image, path, text=None):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(worker, "save_png_once", disk_full)
    with pytest.raises(WorkerError, match=r"the first \d samples all failed, stopping; last error: OSError"):
        _run(tmp_path, "out", sd_pipe, tiny_sd, rows=MANY)
    summary = json.load(open(layout.summary_file(str(tmp_path / "out"), 0)))
    # Writes lag the pipeline calls: the count is checked after each call, so it may pass 5 a little.
    assert (summary["state"], summary["generated"]) == ("error", 0) and 5 <= summary["failed"] < len(MANY)


def test_summary_reports_start_up_and_generation_separately(tmp_path, sd_pipe, tiny_sd):
    out, summary = _run(tmp_path, "out", sd_pipe, tiny_sd, batch_size=4)
    assert summary["batch_size"] == 4 and summary["generated"] == len(PROMPTS)
    assert 0 < summary["warmup_seconds"] <= summary["generate_seconds"] < summary["seconds"]
    assert 0 < summary["first_image_seconds"] < summary["seconds"]
    assert summary["import_seconds"] >= 0 and summary["writer_wait_seconds"] >= 0
    assert summary["images_per_second"] == pytest.approx(len(PROMPTS) / summary["generate_seconds"], rel=0.01)
    assert json.load(open(layout.summary_file(out, 0)))["first_image_seconds"] == summary["first_image_seconds"]
