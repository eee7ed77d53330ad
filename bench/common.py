"""What both benchmark scripts share: the runs being compared, timing helpers, the table and JSON.

The comparisons are made in one process on one pipeline object, so that only the loop around
the pipeline differs: `toolkit_run` is the worker's own loop (run_worker, with everything but
the model load), `plain_loop` is the loop users write (call, then save each PNG synchronously).
"""
import csv
import json
import os
import platform
import shutil
import statistics
import time

from gen_worker.worker.pipeline import ImageMaker
from gen_worker.prompts import load_samples
from gen_worker.output.prepare import prepare_output_dir
from gen_worker.spec import JobSpec
from gen_worker.worker.loop import run_worker


def write_prompts(path, count):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image_id", "prompt"))
        writer.writerows((i, f"a photo of object number {i} on a table, studio light") for i in range(count))
    return str(path)


def job_spec(prompts_csv, output_dir, model_path, num_samples, **settings):
    return JobSpec(prompts_csv=prompts_csv, output_dir=str(output_dir), model_path=model_path,
                   num_samples=num_samples, **settings)


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return str(path)


class Timer:
    """Seconds of a `with` block: wall clock, CPU of all this process's threads, CPU of this thread."""

    def __enter__(self):
        self.wall, self.cpu, self.thread_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.thread_cpu = time.thread_time() - self.thread_cpu


def toolkit_run(pipe, spec):
    """One worker on a fresh folder, as submit.py's worker runs it; returns (Timer, its summary).

    Timer.calls: the seconds spent in ImageMaker.make (the pipeline calls)."""
    fresh_dir(spec.output_dir)
    samples = load_samples(spec.prompts_csv, spec.seed_start, spec.num_samples)
    prepare_output_dir(spec, samples).release()
    spans = []
    make = ImageMaker.make

    def timed_make(self, block):
        started = time.perf_counter()
        try:
            return make(self, block)
        finally:
            spans.append(time.perf_counter() - started)
    ImageMaker.make = timed_make
    try:
        with Timer() as timer:
            summary = run_worker(spec, 0, 1, pipe=pipe)
    finally:
        ImageMaker.make = make
    timer.calls = sum(spans)
    assert summary["generated"] == spec.num_samples and summary["failed"] == 0, summary
    return timer, summary


def plain_loop(pipe, spec, save=True):
    """The loop users write: the same pipeline calls on the same batches, each PNG saved at once.

    Returns a Timer (with .calls: the seconds in the pipeline calls, as for toolkit_run).
    save=False times the pipeline calls alone (the floor for any loop).
    """
    import torch

    fresh_dir(spec.output_dir)
    samples = load_samples(spec.prompts_csv, spec.seed_start, spec.num_samples)
    kwargs = dict(ImageMaker(pipe, spec).call_kwargs, output_type="pil")
    calls = 0.0
    with Timer() as timer:
        for start in range(0, len(samples), spec.batch_size):
            block = samples[start:start + spec.batch_size]
            call_start = time.perf_counter()
            generators = [torch.Generator("cpu").manual_seed(s.seed) for s in block]
            with torch.inference_mode():
                images = pipe(prompt=[s.prompt for s in block], generator=generators, **kwargs).images
            calls += time.perf_counter() - call_start
            if save:
                for sample, image in zip(block, images):
                    image.save(os.path.join(spec.output_dir, sample.file_name))
    timer.calls = calls
    return timer


def rate(count, seconds):
    return round(count / seconds, 4) if seconds else None


def median_and_spread(values):
    """Median, min and max, rounded: what the tables show for repeated measurements."""
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "runs": [round(v, 4) for v in values]}


def machine():
    import diffusers
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "cpu_count": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_table(title, header, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    for row in (header, ["-" * w for w in widths], *rows):
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def write_json(path, results):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"\nwrote {path}")
