"""The worker: load the pipeline once, then make this worker's share of the samples.

One clear loop, in the spirit of EDM's generate.py: for each block of samples that is not on
disk yet, call the pipeline with one generator per sample and hand the images to writer threads,
which save each one atomically and count it once it is on disk; the next call starts at once.
A sample that raises is written to failed_prompts_gpu{k}.txt and the loop goes on; a block that
runs out of GPU memory is split and retried (oom.py); a CUDA error that leaves the GPU context
unusable (illegal memory access, device-side assert) stops the worker at once. Each image is
checked on the float array the pipeline returned (cheap, no second decode): NaN or Inf fails its sample ("non-finite output"); a
constant image (every pixel the same, e.g. all black) is written but counted and warned about.
"""
import functools
import json
import logging
import os
import socket
import statistics
import sys
import time
import traceback
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from gen_worker.library_logs import quiet_library_noise
from gen_worker.model_check import changed_components, identify
from gen_worker.output import layout, provenance
from gen_worker.atomic_files import replace_json
from gen_worker.worker.image_writer import ImageWriter, WriterError
from gen_worker.worker.oom import SplitOnOutOfMemory
from gen_worker.worker.png import save_png_once, to_uint8
from gen_worker.worker.shard_writer import ShardWriter
from gen_worker.output.progress import WorkerProgress
from gen_worker.prompts import Sample, fingerprint
from gen_worker.output.lock import RunLock
from gen_worker.output import verification_cache
from gen_worker.output.record import existing_images, manifest_row
from gen_worker.worker.watch import ProgressWatch
from gen_worker.schedule import WorkerShare, schedule_of
from gen_worker.errors import T2IError, one_line
from gen_worker.spec import SPEC_VERSION, JobSpec, check_version, spec_samples

if TYPE_CHECKING:
    from gen_worker.worker.pipeline import ImageMaker
    from gen_worker.worker.pipeline_cache import PipelineCache

log = logging.getLogger(__name__)

# When this many samples failed and none worked, the setup is broken: stop instead of
# logging the same error for every remaining sample.
ABORT_AFTER_FAILURES_WITHOUT_SUCCESS = 5
# After Ctrl+C or an error, images still queued for writing get this long (the submitter waits 10 s).
STOP_WRITING_SECONDS = 5
# The watchdog: a pipeline call without progress for this many leases, and at least this long, is stuck
# (a hung CUDA call): the worker exits, freeing its GPU. Well past the lease, after which its block was taken
# over: a slow step is not mistaken for a hung one.
WATCHDOG_LEASES = 3
WATCHDOG_MIN_SECONDS = 300


class WorkerError(T2IError):
    pass


class NonFiniteOutput(T2IError):
    """The pipeline returned NaN or Inf (a broken VAE, fp16 overflow): never written as an image."""


class Made(NamedTuple):
    """One image for the writer threads, with what the generation loop saw in it."""
    sample: Sample
    image: Any
    constant: bool
    nsfw_flagged: bool


def check_image(image: np.ndarray) -> bool:
    """Raises NonFiniteOutput on NaN or Inf; returns whether the image is constant (one pass each)."""
    if not np.isfinite(image).all():
        raise NonFiniteOutput("non-finite output")
    return bool(image.min() == image.max())


def _append_line(path: str, line: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")


def record_failure(output_dir: str, worker_index: int, sample: Sample, err: BaseException) -> None:
    _append_line(layout.failed_file(output_dir, worker_index),
                 {"index": sample.index, "image_id": sample.image_id, "seed": sample.seed,
                  "prompt": sample.prompt, "error": one_line(err)})


def record_nsfw_flagged(output_dir: str, worker_index: int, sample: Sample) -> None:
    _append_line(layout.nsfw_flagged_file(output_dir, worker_index),
                 {"index": sample.index, "image_id": sample.image_id, "seed": sample.seed,
                  "file_name": sample.file_name, "prompt": sample.prompt})


def _set_torch_threads(threads: int) -> None:
    import torch
    # Fixed per worker: the thread count changes CPU results in the last bit, so it must not
    # depend on how many workers share the machine.
    torch.set_num_threads(threads)


def library_versions() -> dict[str, str]:
    """What made the pixels, recorded in every image (the GPU and driver are in the summary)."""
    import diffusers
    import torch
    import transformers
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "t2i-batch spec": SPEC_VERSION}


def gpu_uuid(properties: Any) -> str | None:
    """The GPU's UUID as nvidia-smi -L writes it ("GPU-..."; a MIG instance's own), None where torch has none."""
    uuid = getattr(properties, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _environment(device: str) -> dict[str, Any]:
    import torch
    env = {"hostname": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "device": device, **library_versions()}
    env["gpu_uuid"] = None
    if device == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(0)
        env["gpu_uuid"] = gpu_uuid(torch.cuda.get_device_properties(0))
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NODEID"):
        if key in os.environ:
            env[key.lower()] = os.environ[key]
    return env


def run_worker(spec: JobSpec, worker_index: int, num_workers: int, pipe: Any = None,
               pipelines: "PipelineCache | None" = None) -> dict[str, Any]:
    """Make worker `worker_index`'s share of the run; returns the summary (also written to disk).

    pipe: a pipeline already loaded (and set up with apply_speed_options) to use instead of loading
    spec.model_path: benchmarks reuse one across runs. pipelines: where to load it from otherwise (a
    sweep's worker passes one cache to all its configurations, so that each model is loaded once).
    """
    check_version(getattr(spec, "spec_version", None))  # a job queued by other code, an older image
    started = time.time()
    output_dir = spec.output_dir
    progress = WorkerProgress(output_dir, worker_index, num_workers)
    summary: dict[str, Any] = {
        "worker_index": worker_index, "num_workers": num_workers, "hostname": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        # In a docker/podman container the GPU is renumbered 0: the submitter passes the host's id.
        "host_gpu": os.environ.get("T2I_HOST_GPU", os.environ.get("CUDA_VISIBLE_DEVICES")),
        "container": os.environ.get("T2I_CONTAINER"), "batch_size": spec.batch_size,
        "import_seconds": 0.0, "load_seconds": 0.0, "generate_seconds": 0.0,
        "constant_images": 0, "nsfw_flagged": 0}
    lock = RunLock(output_dir)
    lock.acquire_shared()
    try:
        _make_images(spec, worker_index, num_workers, progress, summary, started, pipe, pipelines)
        progress.update(state="done")
    except KeyboardInterrupt:
        progress.update(state="interrupted", message="stopped by a signal")
        raise
    except Exception as err:
        log.error("worker %d failed:\n%s", worker_index, traceback.format_exc())
        progress.update(state="error", message=one_line(err))
        raise
    finally:
        _write_summary(output_dir, worker_index, progress, summary, started)
        progress.close()
        lock.release()
    return summary


def _write_summary(output_dir: str, worker_index: int, progress: WorkerProgress, summary: dict[str, Any],
                   started: float) -> None:
    """summary_gpu{k}.json: the summary so far with the progress counts (when the worker ends, or its watchdog)."""
    counts = {k: progress[k] for k in ("total", "generated", "skipped", "failed", "state", "message")}
    summary.update(counts, seconds=round(time.time() - started, 3))
    summary["images_per_second"] = (round(progress["generated"] / summary["generate_seconds"], 4)
                                    if summary["generate_seconds"] else None)
    replace_json(layout.summary_file(output_dir, worker_index), summary)


def run_specs(specs: Sequence[JobSpec], worker_index: int, num_workers: int) -> list[dict[str, Any]]:
    """Worker `worker_index`'s share of every spec in turn (a sweep's configurations), grouped so that each
    model is loaded once; returns their summaries. A failed one stops the worker: a rerun resumes."""
    from gen_worker.worker.pipeline_cache import PipelineCache, in_load_order
    pipelines = PipelineCache()
    return [run_worker(spec, worker_index, num_workers, pipelines=pipelines) for spec in in_load_order(specs)]


class _Outcomes:
    """Counts each sample's outcome; called by the generation loop and by the writer threads."""

    def __init__(self, spec: JobSpec, worker_index: int, progress: WorkerProgress, summary: dict[str, Any],
                 started: float) -> None:
        self.output_dir, self.worker_index, self.progress = spec.output_dir, worker_index, progress
        # What this worker's images are verified against by making them (prepare.check_existing_images).
        self.settings_key = provenance.settings_key(spec.recorded_settings(), spec.model_identity.get("fingerprint"))
        self.summary, self.started = summary, started
        self.last_error = ""  # one line
        self.blocks = _PendingBlocks()
        # --output_format tar: the shards being gathered (their verification lines are the shard writer's)
        self.shards = ShardWriter(spec, worker_index, self.settings_key) if spec.output_format == "tar" else None

    def failed(self, failures: Sequence[tuple[Sample, BaseException]]) -> None:
        """failures: (sample, exception) pairs."""
        with self.progress.lock:
            for sample, err in failures:
                record_failure(self.output_dir, self.worker_index, sample, err)
            self.progress.add("failed", len(failures))
            self.progress.save()
        self.last_error = one_line(failures[-1][1])
        log.warning("samples %s failed: %s", [s.index for s, _ in failures], self.last_error)

    def written(self, item: Made, created: bool | None, error: Exception | None) -> None:
        """The image writer's report on one item."""
        try:
            self._written(item, created, error)
        finally:
            self.blocks.reported(item.sample)

    def _written(self, item: Made, created: bool | None, error: Exception | None) -> None:
        if error is not None:
            self.failed([(item.sample, error)])
            return
        with self.progress.lock:
            self.progress.add("generated" if created else "skipped")
            self.progress.save()
            if created and self.shards is None:  # a resume need not read it again (prepare.check_existing_images)
                line = verification_cache.line(verification_cache.file_state(self.output_dir, item.sample.file_name),
                                               provenance.row_key(manifest_row(item.sample)), self.settings_key)
                with open(layout.written_file(self.output_dir, self.worker_index), "a", encoding="utf-8") as f:
                    f.write(line)
            if created and item.constant:
                self.summary["constant_images"] += 1
                log.warning("constant image (every pixel the same, e.g. all black): %s (sample %d)",
                            item.sample.file_name, item.sample.index)
            if created and item.nsfw_flagged:
                self.summary["nsfw_flagged"] += 1
                record_nsfw_flagged(self.output_dir, self.worker_index, item.sample)
        self.summary.setdefault("first_image_seconds", round(time.time() - self.started, 3))

    def nothing_works(self, writer: ImageWriter) -> bool:
        if self.progress["generated"] or self.progress["failed"] < ABORT_AFTER_FAILURES_WITHOUT_SUCCESS:
            return False
        writer.flush()  # images still queued may yet be written
        return self.progress["generated"] == 0


class _PendingBlocks:
    """Blocks whose images the writer threads have not all reported yet; `on_done(block)` runs once
    every image of a block is written or failed (dynamic schedule: the block's .done marker; tar: its shard).
    A block (a shard) may be made in several pipeline calls: it is done after its last one."""

    def __init__(self, on_done: Callable[[int], object] = lambda block: None) -> None:
        self.on_done = on_done
        self._lock = threading.Lock()
        self._left: dict[int, int] = {}
        self._open: set[int] = set()  # blocks with pipeline calls still to come
        self._block_of: dict[str, int] = {}

    def made(self, block: int, queued: Sequence[Sample], last: bool = True) -> None:
        """Call before the images are queued for writing; last: the block's last pipeline call."""
        with self._lock:
            self._left[block] = self._left.get(block, 0) + len(queued)
            self._block_of.update((s.file_name, block) for s in queued)
            (self._open.discard if last else self._open.add)(block)
            finished = last and self._left[block] == 0
            if finished:
                del self._left[block]
        if finished:
            self.on_done(block)

    def reported(self, sample: Sample) -> None:
        with self._lock:
            block = self._block_of.pop(sample.file_name, None)
            if block is None:
                return
            self._left[block] -= 1
            finished = self._left[block] == 0 and block not in self._open
            if finished:
                del self._left[block]
        if finished:
            self.on_done(block)


def _import_diffusers() -> None:
    """Import diffusers' pipelines up front, so that their cost is reported apart from loading."""
    quiet_library_noise()
    import diffusers
    diffusers.DiffusionPipeline  # noqa: B018 (diffusers imports lazily: this is the slow part)


def _make_images(spec: JobSpec, worker_index: int, num_workers: int, progress: WorkerProgress,
                 summary: dict[str, Any], started: float, pipe: Any = None,
                 pipelines: "PipelineCache | None" = None) -> None:
    """Generate into the output folder; fills `summary` as it goes (so it is right after a crash too)."""
    samples = spec_samples(spec)
    if spec.samples_fingerprint and fingerprint(samples) != spec.samples_fingerprint:
        raise WorkerError(f"{spec.prompts_csv} changed after the run was submitted; submit again")
    done = existing_images(spec.output_dir)
    share = schedule_of(spec).worker_share(spec, samples, worker_index, num_workers, done)
    if share.nothing_to_make():  # exit at once, before importing torch (a late task)
        progress.update(total=share.total, skipped=share.on_disk)
        return
    _check_model_unchanged(spec)
    progress.update(state="loading", total=share.total, skipped=share.on_disk)
    import_start = time.time()
    from gen_worker.worker.pipeline import ImageMaker, resolve_device
    from gen_worker.worker.pipeline_cache import PipelineCache
    _set_torch_threads(spec.cpu_threads)
    device = summary["device"] = resolve_device(spec.device)
    _import_diffusers()
    summary["import_seconds"] = round(time.time() - import_start, 3)
    summary.update(_environment(device))
    load_start = time.time()
    if pipe is None:
        pipelines = pipelines or PipelineCache()
        loads = pipelines.loads
        pipe = pipelines.get(spec, device)
        summary.update(speed_options=pipelines.speed_options, pipeline_reused=pipelines.loads == loads)
    maker = ImageMaker(pipe, spec)
    summary["load_seconds"] = round(time.time() - load_start, 3)
    log.info("worker %d/%d: %s on %s, batch size %d, speed options %s: %d samples to make, %d already on disk",
             worker_index, num_workers, maker.name, device, spec.batch_size, summary.get("speed_options"),
             progress["total"] - share.on_disk, share.on_disk)
    progress.update(state="generating")
    outcomes = _Outcomes(spec, worker_index, progress, summary, started)
    opened = share.open()
    summary.update(opened)
    if "worker_id" in opened:
        progress.update(worker_id=opened["worker_id"])
    outcomes.blocks.on_done = share.block_done
    def write_summary() -> None:
        _write_summary(spec.output_dir, worker_index, progress, summary, started)
    if outcomes.shards is not None:
        shard_writer = outcomes.shards

        def shard_done(block: int) -> None:  # the block is a shard: written before it counts as done
            shard_writer.finish(block)
            share.block_done(block)
        outcomes.blocks.on_done = shard_done
    maker.watch = ProgressWatch(share.lease, max(WATCHDOG_LEASES * share.lease, WATCHDOG_MIN_SECONDS),
                                on_progress=share.beat,
                                on_stall=lambda seconds: _stuck(progress, share, seconds, write_summary))
    from gen_worker.worker.levers import switched
    from gen_worker.worker.pipeline import denoisers
    try:
        with switched(pipe, denoisers(pipe), spec):  # --cache, --attention_backend: this configuration's only
            _generate(spec, maker, share.blocks(), done, outcomes, summary)
    finally:
        maker.watch.stop()
        maker.watch = None
        summary.update(share.close(made=sum(progress[k] for k in ("generated", "skipped", "failed"))))
        progress.update(total=share.total)


def _stuck(progress: WorkerProgress, share: WorkerShare, seconds: float, write_summary: Callable[[], None]) -> None:
    """The watchdog, on the progress watch's thread: the main thread has been stuck in a pipeline call for
    `seconds` (a hung CUDA call, a GPU fault). Say where, release the block, write the summary, and end the
    process, so that its GPU is freed even when no one waits for the run (a SLURM task). The main thread
    cannot be unwound."""
    try:
        frame = sys._current_frames().get(threading.main_thread().ident or 0)
        where = "".join(traceback.format_stack(frame)[-8:]).rstrip() if frame else "(unknown)"
        message = (f"no progress for {seconds:.0f} s in a pipeline call (a hung GPU call?): the worker exits so that "
                   "its GPU is freed; if a denoising step can take this long, raise --lease_seconds")
        log.error("%s. The main thread is at:\n%s", message, where)
        share.close(made=0)  # others may take its block at once
        if progress.lock.acquire(timeout=10):  # a writer thread stuck on the disk would hold it
            try:
                progress.update(state="error", message=message)
                write_summary()
            finally:
                progress.lock.release()
    except Exception:  # best effort: nothing may keep the process from ending
        log.exception("while stopping after no progress")
    finally:
        logging.shutdown()
        os._exit(1)


def _check_model_unchanged(spec: JobSpec) -> None:
    """The model's files are the ones the run was submitted with (a SLURM task may start hours later)."""
    expected = spec.model_identity.get("fingerprint")
    if not expected:
        return
    now = identify(spec.model_path)
    if now.get("fingerprint") != expected:
        changed = changed_components(spec.model_identity.get("components", {}), now.get("components", {}))
        raise WorkerError(f"the model at {spec.model_path} changed since the run was submitted "
                          f"({', '.join(changed) or 'its files'}): submit again to check it")


class _Speed:
    """The summary's speed, beside its quality: seconds_per_image and denoiser_seconds_per_image, medians over the
    blocks after the first (its warm-up: compiling, caches; None with one block), and the GPU's peak memory."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        self.per_image: list[tuple[float, float]] = []  # (seconds, denoiser seconds) per image, block by block
        self.blocks = 0
        if summary.get("device") == "cuda":  # this run's peak, not an earlier configuration's of a sweep
            import torch
            torch.cuda.reset_peak_memory_stats()

    def block(self, images: int, seconds: float, denoiser_seconds: float) -> None:
        self.blocks += 1
        if images:
            self.per_image.append((seconds / images, denoiser_seconds / images))

    def record(self) -> None:
        """Into the summary, once the loop ends (medians per block would cost a sort of every block so far)."""
        if not self.blocks:
            return
        after_first = self.per_image[1:]
        self.summary.update(
            seconds_per_image=round(statistics.median(s for s, _ in after_first), 6) if after_first else None,
            denoiser_seconds_per_image=round(statistics.median(d for _, d in after_first), 6) if after_first else None,
            peak_gpu_memory_bytes=_peak_gpu_memory(self.summary.get("device")))


def _peak_gpu_memory(device: str | None) -> int | None:
    if device != "cuda":
        return None
    import torch
    return int(torch.cuda.max_memory_allocated())


def _pipeline_calls(todo: Iterable[tuple[int, list[Sample]]], batch_size: int
                    ) -> Iterator[tuple[int, list[Sample], bool]]:
    """(block index, the samples of one pipeline call, whether it is the block's last): a block is one call, or
    with --output_format tar a shard's calls (the same batches, so the same images, as the png format)."""
    for index, block in todo:
        for start in range(0, len(block), batch_size):
            yield index, block[start:start + batch_size], start + batch_size >= len(block)


def _generate(spec: JobSpec, maker: "ImageMaker", todo: Iterable[tuple[int, list[Sample]]], done: set[str],
              outcomes: _Outcomes, summary: dict[str, Any]) -> None:
    """The loop: one pipeline call per block, while writer threads save the images of the last ones.
    todo: (block index, samples); dynamic scheduling claims each block as the loop asks for it."""
    versions = library_versions()

    def save(item: Made) -> bool:
        made = provenance.for_sample(spec, item.sample, versions)
        if outcomes.shards is not None:
            return outcomes.shards.add(item.sample, to_uint8(item.image), made)
        return save_png_once(to_uint8(item.image), os.path.join(spec.output_dir, item.sample.file_name),
                             functools.partial(provenance.png_text, made))

    def checked(sample: Sample, image: Any) -> Made | Exception:
        try:
            constant = check_image(image)
        except NonFiniteOutput as err:
            return err
        return Made(sample, image, constant, sample.index in maker.nsfw_flagged)

    make = SplitOnOutOfMemory(maker.make, recover=maker.restore_dtypes)
    # Two blocks of images may wait: the GPU never waits for the disk unless the disk is slower.
    writer = ImageWriter(save, outcomes.written, max_pending=max(4, 2 * spec.batch_size))
    generate_start = time.time()
    speed = _Speed(summary)
    finished = False
    try:
        for index, block, last in _pipeline_calls(todo, spec.batch_size):
            call_start, denoiser_before = time.time(), maker.clock.seconds
            results = [(s, r if isinstance(r, Exception) else checked(s, r)) for s, r in make(block)
                       if s.file_name not in done]  # the rest of a partly made block is made only to keep the batch
            maker.nsfw_flagged.clear()
            summary.setdefault("warmup_seconds", round(time.time() - call_start, 3))  # the first call
            speed.block(len(block), time.time() - call_start, maker.clock.seconds - denoiser_before)
            failures = [(s, r) for s, r in results if isinstance(r, Exception)]
            if failures:
                outcomes.failed(failures)
            outcomes.blocks.made(index, [s for s, made in results if isinstance(made, Made)], last)
            for _, made in results:
                if isinstance(made, Made):
                    writer.put(made)
            summary.update(generate_seconds=round(time.time() - generate_start, 3), oom_splits=make.splits,
                           writer_wait_seconds=round(writer.wait_seconds, 3), **maker.compile_stats())
            if make.sticky is not None:  # every later call would fail too
                raise WorkerError(f"stopping after a CUDA error on samples {[s.index for s, _ in failures]} "
                                  f"({one_line(make.sticky)[:300]}): the GPU context is unusable; rerun to resume")
            if outcomes.nothing_works(writer):
                raise WorkerError(f"the first {outcomes.progress['failed']} samples all failed, stopping; "
                                  f"last error: {outcomes.last_error}")
        finished = True
    finally:
        # Done: write every image. Stopped (Ctrl+C, error): what is not written within seconds is dropped.
        try:
            writer.close(timeout=None if finished else STOP_WRITING_SECONDS)
        except WriterError:
            if finished:
                raise  # else the error that stopped the loop is the one to report
        summary.update(generate_seconds=round(time.time() - generate_start, 3),
                       writer_wait_seconds=round(writer.wait_seconds, 3))
        speed.record()
