"""CPU benchmarks on the tiny random-weight model: one command, prints a table, writes JSON.

    .venv/bin/python bench/run_benchmarks.py                 # about 12 minutes on 2 cores
    .venv/bin/python bench/run_benchmarks.py --quick --out /tmp/r.json   # a 2-minute smoke run

1. toolkit overhead: one worker's images/s (run_worker, in this process, on the loaded pipeline)
   vs the plain loop users write (same pipeline object, same batches and seeds, same torch thread
   count, each PNG saved at once), and vs the pipeline calls alone; interleaved, repeated, median.
2. local scaling: submit.py --cluster local --device cpu with 1 and with 2 workers (1 torch thread each).
3. time to first image of submit.py --cluster local, from the command's start.
4. batch size 1, 4 and 8.
Every run uses 64x64 images, 8 steps, fp32, one torch thread per worker.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from common import (fresh_dir, job_spec, machine, median_and_spread, plain_loop, print_table,  # noqa: E402
                    toolkit_run, write_json, write_prompts)

SETTINGS = dict(num_inference_steps=8, height=64, width=64, dtype="fp32", device="cpu", cpu_threads=1)
SUBMIT_SETTINGS = ["--device", "cpu", "--cpu_threads", "1", "--num_inference_steps", "8", "--height", "64",
                   "--width", "64", "--dtype", "fp32"]


def overhead(pipe, model, work, count, repeats):
    """Toolkit vs plain loop vs pipeline alone: short runs in rotating order, so that drift and the
    load of other processes hit all three alike.

    Wall-clock images/s is what the target is about, but on a shared machine it moves by more
    than the differences sought. The time outside the pipeline calls (wall minus the calls) is
    what a loop adds, measured in every run, and is far less noisy: with the median call time,
    it gives the ratio of images/s the loops would have on a quiet machine."""
    csv = write_prompts(os.path.join(work, "overhead.csv"), count)
    spec = job_spec(csv, os.path.join(work, "overhead"), model, count, **SETTINGS)
    plain_loop(pipe, job_spec(csv, spec.output_dir, model, 2, **SETTINGS), save=False)  # warm-up
    measure = {"toolkit": lambda: toolkit_run(pipe, spec)[0], "plain_loop": lambda: plain_loop(pipe, spec),
               "pipeline_only": lambda: plain_loop(pipe, spec, save=False)}
    names = list(measure)
    runs = {name: {"images_per_second": [], "cpu_seconds_per_image": [], "call_ms_per_image": [],
                   "outside_calls_ms_per_image": []} for name in names}
    load = []
    for r in range(repeats):
        load.append(round(os.getloadavg()[0], 2))
        for name in names[r % 3:] + names[:r % 3]:
            timer = measure[name]()
            for key, value in (("images_per_second", count / timer.wall), ("cpu_seconds_per_image", timer.cpu / count),
                               ("call_ms_per_image", timer.calls / count * 1000),
                               ("outside_calls_ms_per_image", (timer.wall - timer.calls) / count * 1000)):
                runs[name][key].append(value)
    result = {name: {key: median_and_spread(v) for key, v in metrics.items()} for name, metrics in runs.items()}
    for other in ("plain_loop", "pipeline_only"):  # ratios within each round (runs seconds apart)
        result[f"toolkit_over_{other}"] = median_and_spread(
            [t / o for t, o in zip(runs["toolkit"]["images_per_second"], runs[other]["images_per_second"])])
    call = median_and_spread([c for name in names for c in runs[name]["call_ms_per_image"]])["median"]
    outside = {name: result[name]["outside_calls_ms_per_image"]["median"] for name in names}
    result["quiet_machine_estimate"] = {
        "call_ms_per_image": call, "outside_calls_ms_per_image": outside,
        "toolkit_over_plain_loop": round((call + outside["plain_loop"]) / (call + outside["toolkit"]), 4)}
    result["overhead_percent"] = {
        "measured": round((1 - result["toolkit_over_plain_loop"]["median"]) * 100, 2),
        "quiet_machine_estimate": round((1 - result["quiet_machine_estimate"]["toolkit_over_plain_loop"]) * 100, 2)}
    result.update(images_per_run=count, repeats=repeats, batch_size=1, load_average_per_round=load)
    return result


class InstantPipeline:
    """Takes no time: run_worker around it costs only the toolkit's own work per image."""

    def __init__(self, height, width):
        import numpy as np
        self.image = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)

    def __call__(self, prompt, generator, num_inference_steps, guidance_scale, height, width, output_type):
        import numpy as np
        return type("Output", (), {"images": np.stack([self.image] * len(prompt))})


def fixed_cost(model, work, count, repeats):
    """The toolkit's own cost per image, with the pipeline taken out: not blurred by the pipeline's noise.

    main thread: what delays the next pipeline call; all threads: with the writer threads' PNG work."""
    csv = write_prompts(os.path.join(work, "fixed.csv"), count)
    spec = job_spec(csv, os.path.join(work, "fixed"), model, count, **SETTINGS)
    pipe = InstantPipeline(SETTINGS["height"], SETTINGS["width"])
    toolkit_run(pipe, spec)
    timers = [toolkit_run(pipe, spec)[0] for _ in range(repeats)]
    return {"wall_ms_per_image": median_and_spread([t.wall / count * 1000 for t in timers]),
            "main_thread_cpu_ms_per_image": median_and_spread([t.thread_cpu / count * 1000 for t in timers]),
            "all_threads_cpu_ms_per_image": median_and_spread([t.cpu / count * 1000 for t in timers]),
            "images_per_run": count, "repeats": repeats}


def batch_sizes(pipe, model, work, count, repeats):
    csv = write_prompts(os.path.join(work, "batch.csv"), count)
    runs = {b: [] for b in (1, 4, 8)}
    for r in range(repeats):
        for b in (sorted(runs) if r % 2 == 0 else sorted(runs, reverse=True)):
            spec = job_spec(csv, os.path.join(work, f"batch{b}"), model, count, batch_size=b, **SETTINGS)
            runs[b].append(count / toolkit_run(pipe, spec)[0].wall)
    return {str(b): dict(median_and_spread(v), images=count) for b, v in runs.items()}


def submit(model, csv, out, workers, count):
    """submit.py --cluster local as a user runs it; returns (seconds to the first PNG, total seconds)."""
    fresh_dir(out)
    command = [sys.executable, os.path.join(REPO, "submit.py"), "--cluster", "local", "--gpu_ids",
               *map(str, range(workers)), "--prompts_csv", csv, "--output_dir", out, "--model_path", model,
               "--num_samples", str(count), *SUBMIT_SETTINGS]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None:
        if first is None and glob.glob(os.path.join(out, "*.png")):
            first = time.perf_counter() - started
        time.sleep(0.02)
    total = time.perf_counter() - started
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    return first, total


def _summaries(out):
    run = json.load(open(os.path.join(out, "summary.json")))
    return run, [json.load(open(os.path.join(out, f"summary_gpu{k}.json"))) for k in range(run["num_workers"])]


def scaling(model, work, count, repeats):
    csv = write_prompts(os.path.join(work, "scaling.csv"), count)
    runs = {1: [], 2: []}
    for r in range(repeats):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            out = os.path.join(work, f"scaling{workers}")
            load = round(os.getloadavg()[0], 2)
            _, total = submit(model, csv, out, workers, count)
            run, workers_summaries = _summaries(out)
            runs[workers].append({
                "load_average": load,
                "end_to_end": count / total,
                # Each worker's own rate while generating, summed: start-up (imports, load) left out.
                "generating": sum(w["generated"] / w["generate_seconds"] for w in workers_summaries),
            })
    result = {}
    for workers, values in runs.items():
        result[f"{workers}_workers"] = {key: median_and_spread([v[key] for v in values]) for key in values[0]}
    for key in ("end_to_end", "generating"):
        one, two = (result[f"{w}_workers"][key]["median"] for w in (1, 2))
        result[f"efficiency_{key}"] = round(two / (2 * one), 3)
    result["images"] = count
    return result


def time_to_first_image(model, work, count, repeats):
    csv = write_prompts(os.path.join(work, "first.csv"), count)
    out = os.path.join(work, "first")
    runs = []
    for _ in range(repeats):
        first, total = submit(model, csv, out, 1, count)
        _, (worker,) = _summaries(out)
        runs.append({"first_image": first, "total": total, **{k: worker[k] for k in (
            "import_seconds", "load_seconds", "warmup_seconds", "first_image_seconds")}})
    return {key: median_and_spread([r[key] for r in runs]) for key in runs[0]} | {"images": count}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "results_cpu.json"), help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats: a smoke run, not a measurement")
    args = parser.parse_args(argv)
    import torch

    from gen_worker.worker.pipeline import load_pipeline
    from gen_worker.tiny_model import build

    torch.set_num_threads(1)
    quick = args.quick
    results = {"command": " ".join([os.path.relpath(sys.executable, REPO), *sys.argv]), "machine": machine(),
               "settings": SETTINGS, "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory(prefix="t2i-bench-") as work:
        model = os.path.join(work, "tiny-sd")
        build(model, "sd")
        pipe = load_pipeline(model, "fp32", "cpu")
        print("1/4 toolkit overhead ...", flush=True)
        results["overhead"] = overhead(pipe, model, work, 4 if quick else 16, 3 if quick else 9)
        results["overhead"]["instant_pipeline"] = fixed_cost(model, work, 16 if quick else 64, 2 if quick else 5)
        print("2/4 local scaling ...", flush=True)
        results["scaling"] = scaling(model, work, 6 if quick else 24, 1 if quick else 3)
        print("3/4 time to first image ...", flush=True)
        results["time_to_first_image"] = time_to_first_image(model, work, 2 if quick else 4, 1 if quick else 3)
        print("4/4 batch sizes ...", flush=True)
        results["batch_sizes"] = batch_sizes(pipe, model, work, 8 if quick else 16, 1 if quick else 2)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report(results)
    write_json(args.out, results)


def _m(entry, digits=2):
    return f"{entry['median']:.{digits}f} ({entry['min']:.{digits}f}-{entry['max']:.{digits}f})"


def report(results):
    m = results["machine"]
    print(f"\n{m['cpu']}, {m['cpu_count']} cores, torch {m['torch']}, diffusers {m['diffusers']}; load average "
          f"{m['load_average_at_start']} at start, {m['load_average_at_end']} at end; median (min-max)")
    o = results["overhead"]
    rows = []
    for name, label in (("pipeline_only", "pipeline calls only (no saving)"),
                        ("plain_loop", "plain loop (call, save PNG)"), ("toolkit", "toolkit worker (run_worker)")):
        r = o[name]
        rows.append([label, _m(r["images_per_second"]), _m(r["call_ms_per_image"], 0),
                     _m(r["outside_calls_ms_per_image"], 1), _m(r["cpu_seconds_per_image"], 3)])
    print_table(f"1. Toolkit overhead: one worker, batch 1, {o['images_per_run']} images a run, {o['repeats']} runs "
                f"each (load average {min(o['load_average_per_round'])}-{max(o['load_average_per_round'])})",
                ["loop", "images/s", "in calls ms/image", "outside calls ms/image", "CPU s/image"], rows)
    q = o["quiet_machine_estimate"]
    print(f"  toolkit/plain loop images/s: measured {_m(o['toolkit_over_plain_loop'], 3)} (overhead "
          f"{o['overhead_percent']['measured']:+.1f}%); from the time outside the calls: "
          f"{q['toolkit_over_plain_loop']:.4f} (overhead {o['overhead_percent']['quiet_machine_estimate']:+.2f}%)")
    f = o["instant_pipeline"]
    print(f"  with an instant pipeline (the toolkit's own work, {f['images_per_run']} images): "
          f"{_m(f['main_thread_cpu_ms_per_image'])} ms CPU per image in the generation loop "
          f"({f['main_thread_cpu_ms_per_image']['median'] / q['call_ms_per_image']:.2%} of a "
          f"{q['call_ms_per_image']:.0f} ms pipeline call), {_m(f['all_threads_cpu_ms_per_image'])} ms with the "
          f"writer threads, {_m(f['wall_ms_per_image'])} ms wall")
    s = results["scaling"]
    loads = [x for w in (1, 2) for x in s[f"{w}_workers"]["load_average"]["runs"]]
    print_table(f"2. Local scaling: submit.py, {s['images']} images, 1 torch thread per worker "
                f"(load average {min(loads)}-{max(loads)})",
                ["workers", "images/s end to end", "images/s generating"],
                [[w, _m(s[f"{w}_workers"]["end_to_end"]), _m(s[f"{w}_workers"]["generating"])] for w in (1, 2)]
                + [["efficiency", s["efficiency_end_to_end"], s["efficiency_generating"]]])
    t = results["time_to_first_image"]
    print_table(f"3. Time to first image: submit.py, 1 worker, {t['images']} images (seconds)",
                ["first PNG on disk", "whole run", "worker: imports", "load", "first call", "first image"],
                [[_m(t["first_image"]), _m(t["total"]), _m(t["import_seconds"]), _m(t["load_seconds"]),
                  _m(t["warmup_seconds"]), _m(t["first_image_seconds"])]])
    b = results["batch_sizes"]
    print_table(f"4. Batch size: toolkit worker, {b['1']['images']} images", ["batch size", "images/s"],
                [[size, _m(entry)] for size, entry in b.items()])


if __name__ == "__main__":
    main()
