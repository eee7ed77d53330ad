"""The worker: load the pipeline once, then make this worker's share of the samples.

One clear loop, in the spirit of EDM's generate.py: for each block of samples that is not on
disk yet, call the pipeline with one generator per sample, save each image atomically, count,
and report. A sample that raises is written to failed_prompts_gpu{k}.txt and the loop goes on.
"""
import json
import logging
import os
import socket
import time
import traceback

from gen_worker import layout
from gen_worker.atomic_files import replace_json, save_png_once
from gen_worker.progress import WorkerProgress
from gen_worker.prompts import fingerprint, load_samples
from gen_worker.run_lock import RunLock
from gen_worker.run_record import existing_images
from gen_worker.sharding import worker_blocks

log = logging.getLogger(__name__)

# When this many samples failed and none worked, the setup is broken: stop instead of
# logging the same error for every remaining sample.
ABORT_AFTER_FAILURES_WITHOUT_SUCCESS = 5


class WorkerError(RuntimeError):
    pass


def _one_line(err):
    text = f"{type(err).__name__}: {err}"
    return " ".join(text.split())


def record_failure(output_dir, worker_index, sample, err):
    line = {"index": sample.index, "image_id": sample.image_id, "seed": sample.seed,
            "prompt": sample.prompt, "error": _one_line(err)}
    with open(layout.failed_file(output_dir, worker_index), "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")


def _set_torch_threads(threads):
    import torch
    # Fixed per worker: the thread count changes CPU results in the last bit, so it must not
    # depend on how many workers share the machine.
    torch.set_num_threads(threads)


def _environment(device):
    import diffusers
    import torch
    env = {"hostname": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "device": device, "torch": torch.__version__, "diffusers": diffusers.__version__}
    if device == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(0)
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NODEID"):
        if key in os.environ:
            env[key.lower()] = os.environ[key]
    return env


def run_worker(spec, worker_index, num_workers):
    """Make worker `worker_index`'s share of the run; returns the summary (also written to disk)."""
    started = time.time()
    output_dir = spec.output_dir
    progress = WorkerProgress(output_dir, worker_index, num_workers)
    summary = {"worker_index": worker_index, "num_workers": num_workers, "hostname": socket.gethostname(),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
               # In a docker/podman container the GPU is renumbered 0: the submitter passes the host's id.
               "host_gpu": os.environ.get("T2I_HOST_GPU", os.environ.get("CUDA_VISIBLE_DEVICES")),
               "container": os.environ.get("T2I_CONTAINER"), "load_seconds": 0.0,
               "generate_seconds": 0.0}
    lock = RunLock(output_dir)
    lock.acquire_shared()
    try:
        _set_torch_threads(spec.cpu_threads)
        summary.update(_make_images(spec, worker_index, num_workers, progress, summary))
        progress.update(state="done")
    except KeyboardInterrupt:
        progress.update(state="interrupted", message="stopped by a signal")
        raise
    except Exception as err:
        log.error("worker %d failed:\n%s", worker_index, traceback.format_exc())
        progress.update(state="error", message=_one_line(err))
        raise
    finally:
        counts = {k: progress[k] for k in ("total", "generated", "skipped", "failed", "state", "message")}
        summary.update(counts, seconds=round(time.time() - started, 3))
        summary["images_per_second"] = (round(progress["generated"] / summary["generate_seconds"], 4)
                                        if summary["generate_seconds"] else None)
        replace_json(layout.summary_file(output_dir, worker_index), summary)
        lock.release()
    return summary


def _make_images(spec, worker_index, num_workers, progress, summary):
    from gen_worker.pipeline import ImageMaker, load_pipeline, resolve_device

    samples = load_samples(spec.prompts_csv, spec.seed_start, spec.num_samples, spec.id_column, spec.prompt_column)
    if spec.samples_fingerprint and fingerprint(samples) != spec.samples_fingerprint:
        raise WorkerError(f"{spec.prompts_csv} changed after the run was submitted; submit again")
    blocks = [[samples[i] for i in block]
              for block in worker_blocks(len(samples), worker_index, num_workers, spec.batch_size)]
    done = existing_images(spec.output_dir)
    todo = [b for b in blocks if any(s.file_name not in done for s in b)]
    total = sum(len(b) for b in blocks)
    progress.update(state="loading", total=total, skipped=total - sum(len(b) for b in todo))
    device = resolve_device(spec.device)
    info = {"device": device}
    if not todo:
        return info
    info.update(_environment(device))
    load_start = time.time()
    maker = ImageMaker(load_pipeline(spec.model_path, spec.dtype, device), spec)
    info["load_seconds"] = round(time.time() - load_start, 3)
    summary.update(info)
    log.info("worker %d/%d: %s on %s, %d samples to make, %d already on disk",
             worker_index, num_workers, maker.name, device, total - progress["skipped"], progress["skipped"])
    progress.update(state="generating")
    generate_start = time.time()
    for block in todo:
        try:
            images = maker.make(block)
        except Exception as err:  # one bad sample (or OOM) must not stop the run
            log.warning("samples %s failed: %s", [s.index for s in block], _one_line(err))
            for sample in block:
                record_failure(spec.output_dir, worker_index, sample, err)
            progress.add("failed", len(block))
            progress.save()
            if progress["generated"] == 0 and progress["failed"] >= ABORT_AFTER_FAILURES_WITHOUT_SUCCESS:
                raise WorkerError(f"the first {progress['failed']} samples all failed, stopping; "
                                  f"last error: {_one_line(err)}") from err
            continue
        for sample, image in zip(block, images):
            if sample.file_name in done:
                continue  # the rest of a partly finished block: made again only to keep the batch identical
            path = os.path.join(spec.output_dir, sample.file_name)
            progress.add("generated" if save_png_once(image, path) else "skipped")
        info["generate_seconds"] = round(time.time() - generate_start, 3)
        summary.update(info)
        progress.save()
    return info
