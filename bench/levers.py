"""The speed levers on the tiny models: time per image and what each does to the pixels, one table.

    python bench/levers.py                        # CPU: tiny Flux and Wan, 8 images each, one thread
    python bench/levers.py --archs flux --images 16 --json levers.json

For each tiny family and lever configuration, the toolkit's own worker loop (run_worker, in this process, on one
loaded pipeline; a load-time lever loads its own) makes the same prompts and seeds; the table gives the worker
summary's seconds_per_image and denoiser_seconds_per_image (medians over the blocks after the first; of those, the
median over --repeats rounds) and, against
the lever-free images, the largest change of an 8-bit pixel value and the share of values changed. Then
--compile whole and --compile regional against eager (the speed-flag rule: the last bit of some values).

The tiny models have random weights and a handful of layers: their times are the loop's and Python's more than
the model's, and their pixel changes say nothing of a real model's quality (the FID and CLIP cost of a lever on
a real model: a --sweep over it, scored by run_full_evaluation.sh; on a GPU, bench/gpu_check.py's lever table).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402 (after the path: the toolkit from this checkout)
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common import fresh_dir, job_spec, print_table, write_prompts  # noqa: E402
from gen_worker.output.prepare import prepare_output_dir  # noqa: E402
from gen_worker.prompts import load_samples  # noqa: E402
from gen_worker.tiny_model import build  # noqa: E402
from gen_worker.worker.loop import run_worker  # noqa: E402
from gen_worker.worker.pipeline import apply_speed_options, load_pipeline  # noqa: E402

# The configurations measured per family: (label, settings). The first is the reference (no lever).
CPU_LEVERS = [("none", {})] + [(f"cache first_block:{t}", {"cache": f"first_block:{t}"})
                               for t in (0.05, 0.1, 0.2, 0.5)] + [("quantize int8wo", {"quantize": "int8wo"})]
COMPILES = [("compile whole", {"compile": "whole"}), ("compile regional", {"compile": "regional"})]
SIZE = 64


def run(model, csv, out, images, device, dtype, steps, size=SIZE, pipe=None, **settings):
    """One worker over `images` samples (`pipe`: loaded, for the levers switched per run); (its summary,
    {file name: pixels as int16})."""
    load = {k: settings[k] for k in ("quantize", "compile", "offload") if k in settings}
    if pipe is None:
        pipe = load_pipeline(model, dtype, "cpu" if "offload" in load else device,
                             quantize=load.get("quantize", "none"))
    spec = job_spec(csv, fresh_dir(out), model, images, device=device, dtype=dtype, num_inference_steps=steps,
                    height=size, width=size, max_sequence_length=16, **settings)
    if load:
        apply_speed_options(pipe, spec, device)
    prepare_output_dir(spec, load_samples(csv, spec.seed_start, images)).release()
    summary = run_worker(spec, 0, 1, pipe=pipe)
    assert summary["generated"] == images and summary["failed"] == 0, summary
    pixels = {n: np.asarray(Image.open(os.path.join(out, n)), dtype=np.int16)
              for n in sorted(os.listdir(out)) if n.endswith(".png")}
    return summary, pixels


def against(reference, pixels):
    """The largest change of an 8-bit value, and the share of values changed, against the reference images."""
    diffs = [np.abs(pixels[n] - reference[n]) for n in reference]
    changed = sum(int((d > 0).sum()) for d in diffs) / sum(d.size for d in diffs)
    return int(max(int(d.max()) for d in diffs)), round(changed, 6)


def measure(arch, levers, work, images, device, dtype, steps, repeats):
    """One row per lever: the medians over `repeats` rounds (each round runs every lever in turn, so that a
    machine busy for a while slows them all alike; the compile levers run once, their warm-up being minutes)."""
    model = os.path.join(work, arch)
    if not os.path.isdir(model):
        build(model, arch)
    csv = write_prompts(os.path.join(work, "prompts.csv"), images)
    shared = load_pipeline(model, dtype, device)
    runs = {label: [] for label, _ in levers}
    changes, reference = {}, None
    for round_ in range(repeats):
        for label, settings in levers:
            if round_ and "compile" in settings:
                continue
            load_time = any(k in settings for k in ("quantize", "compile"))
            summary, pixels = run(model, csv, os.path.join(work, f"{arch}-{label}"), images, device, dtype, steps,
                                  pipe=None if load_time else shared, **settings)
            reference = reference or pixels
            changes.setdefault(label, against(reference, pixels))
            runs[label].append(summary)
    rows = []
    for label, _ in levers:
        def median(key):
            return round(statistics.median(s[key] for s in runs[label]), 4)
        max_diff, changed = changes[label]
        rows.append({"family": arch, "lever": label, "seconds_per_image": median("seconds_per_image"),
                     "denoiser_seconds_per_image": median("denoiser_seconds_per_image"),
                     "warmup_seconds": runs[label][0].get("warmup_seconds"), "runs": len(runs[label]),
                     "max_pixel_diff": max_diff, "values_changed": changed})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["flux", "wan"], choices=["flux", "wan"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the levers (medians)")
    parser.add_argument("--no_compile", action="store_true", help="leave out --compile whole/regional (minutes)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as a worker does by default (--cpu_threads 1)
    levers = CPU_LEVERS + ([] if args.no_compile else COMPILES)
    rows = []
    with tempfile.TemporaryDirectory(prefix="t2i-levers-") as work:
        for arch in args.archs:
            rows += measure(arch, levers, work, args.images, "cpu", "fp32", args.steps, args.repeats)
    columns = ["family", "lever", "seconds_per_image", "denoiser_seconds_per_image", "warmup_seconds", "runs",
               "max_pixel_diff", "values_changed"]
    print_table(f"speed levers, tiny models on the CPU ({args.images} images, {args.steps} steps, 64x64, fp32, "
                "1 thread)", columns, [[r[c] for c in columns] for r in rows])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
