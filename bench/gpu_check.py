"""GPU validation of every model family, then an SD 1.5 benchmark: one table, a few minutes, no internet.

    python bench/gpu_check.py                               # on one GPU: every tiny family in bf16 and fp16
    python bench/gpu_check.py --sd15 /models/sd-v1-5        # and SD 1.5 from a local diffusers folder
    python bench/gpu_check.py --device cpu --families sd    # the same checks on a CPU (what the test runs)

For each tiny random-weight family (gen_worker.tiny_model) and dtype, on the device:
- images: finite, not constant;
- workers: the toolkit's worker loop (run_worker, in this process, on the same pipeline) as 1 worker and as
  2 workers one after the other: the PNG files byte-identical;
- CFG truncation: the denoiser rows and images equal the plain references of reference/cfg_truncation.py.
Then --compile on the tiny SD model (--no_compile: not): no recompile with a partial last block and the
truncation step, the images beside the eager ones (the "rows" column).
Then the speed levers on the tiny Flux (--no_levers: not): per lever, images/s and peak GPU memory from the worker
summary, and the FID and CLIP score of its images against the lever-free run of the same prompts and seeds
(evaluation/metrics.py; with tiny random networks unless --inception_weights and --clip_model are given: then only
the mechanics are checked, the numbers mean nothing).
With --sd15: the toolkit's worker loop against a plain diffusers loop at the same batch size (bench/common.py).
Exit status 1 when a check fails.
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

try:
    import numpy as np
    import torch
    import diffusers  # noqa: F401
    from common import fresh_dir, job_spec, plain_loop, print_table, rate, toolkit_run, write_prompts
    from gen_worker.output.prepare import prepare_output_dir
    from gen_worker.prompts import load_samples
    from gen_worker.tiny_model import ARCHES, build
    from gen_worker.worker.loop import run_worker
    from gen_worker.output import layout
    from gen_worker.worker.pipeline import apply_speed_options, load_pipeline
    from reference import cfg_truncation as cfg
except ImportError as err:
    sys.exit(f"gpu_check: cannot import {err.name} ({err}): install the toolkit's dependencies "
             "(torch with CUDA, diffusers 0.42, transformers 5) and run from the repository")

SEQUENCE = {"sd3": 16, "flux": 16, "pixart": 16, "sana": 16, "wan": 16, "wan22": 16}


def worker_files(pipe, spec, workers):
    """Run the worker loop as `workers` workers one after the other; {file name: PNG bytes}."""
    fresh_dir(spec.output_dir)
    prepare_output_dir(spec, load_samples(spec.prompts_csv, spec.seed_start, spec.num_samples)).release()
    for k in range(workers):
        summary = run_worker(spec, k, workers, pipe=pipe)
        assert summary["failed"] == 0, summary
    return {n: open(os.path.join(spec.output_dir, n), "rb").read()
            for n in sorted(os.listdir(spec.output_dir)) if n.endswith(".png")}


def check_family(arch, dtype, device, size, steps, work):
    folder = os.path.join(work, f"model-{arch}")
    if not os.path.isdir(folder):
        build(folder, arch)
    pipe = load_pipeline(folder, dtype, device)
    csv = write_prompts(os.path.join(work, "prompts.csv"), 5)
    settings = dict(num_inference_steps=steps, height=size, width=size, dtype=dtype, device=device, batch_size=2,
                    guidance_scale=5.0, max_sequence_length=SEQUENCE.get(arch))
    started = time.perf_counter()
    one = worker_files(pipe, job_spec(csv, os.path.join(work, "one"), folder, 5, **settings), 1)
    two = worker_files(pipe, job_spec(csv, os.path.join(work, "two"), folder, 5, **settings), 2)
    seconds = time.perf_counter() - started
    pixels = [np.asarray(__import__("PIL.Image", fromlist=["open"]).open(os.path.join(work, "one", n)))
              for n in one]
    row = {"family": arch, "dtype": dtype, "images": len(one), "seconds": round(seconds, 2),
           "valid": len(one) == 5 and all(p.std() > 0 for p in pixels), "1 vs 2 workers": one == two}
    if arch == "flux":
        row["cfg truncation"] = "n/a (no CFG)"
        return row
    samples = cfg.SAMPLES
    cut_maker = cfg.maker(pipe, arch, cfg_truncation_step=cfg.K)
    rows, restore = cfg.rows_seen(pipe)
    try:
        cut = [np.asarray(i) for i in cut_maker.make(samples)]
    finally:
        restore()
    reference_maker = cfg.maker(pipe, arch)
    if arch in cfg.CALLBACK_REFERENCES:
        reference_maker.call_kwargs.update(cfg.CALLBACK_REFERENCES[arch])
        reference = [np.asarray(i) for i in reference_maker.make(samples)]
    else:
        restore = cfg.forward_reference(pipe)
        try:
            reference = [np.asarray(i) for i in reference_maker.make(samples)]
        finally:
            restore()
    finite = all(np.isfinite(c).all() for c in cut)
    row["cfg truncation"] = finite and all(np.array_equal(c, r) for c, r in zip(cut, reference))
    row["rows"] = "/".join(map(str, rows))
    return row


def compile_check(dtype, device, work):
    """--compile on the tiny SD model, 5 samples at batch 2 (a partial last block) with --cfg_truncation_step:
    two graphs (2 x batch rows, then batch rows), no recompile; the images beside eager ones."""
    from PIL import Image
    folder = os.path.join(work, "model-sd")
    if not os.path.isdir(folder):
        build(folder, "sd")
    pipe = load_pipeline(folder, dtype, device)
    csv = write_prompts(os.path.join(work, "prompts.csv"), 5)
    settings = dict(num_inference_steps=cfg.STEPS, height=32, width=32, dtype=dtype, device=device, batch_size=2,
                    guidance_scale=5.0, cfg_truncation_step=cfg.K)
    eager = worker_files(pipe, job_spec(csv, os.path.join(work, "eager"), folder, 5, **settings), 1)
    apply_speed_options(pipe, job_spec(csv, work, folder, 5, compile="whole"), device)
    spec = job_spec(csv, os.path.join(work, "compiled"), folder, 5, compile="whole", **settings)
    started = time.perf_counter()
    compiled = worker_files(pipe, spec, 1)
    summary = json.load(open(layout.summary_file(spec.output_dir, 0)))
    diff = max(int(np.abs(np.asarray(Image.open(os.path.join(work, "eager", n)), dtype=np.int16)
                          - np.asarray(Image.open(os.path.join(spec.output_dir, n)), dtype=np.int16)).max())
               for n in eager)
    return {"family": "sd --compile", "dtype": dtype, "images": len(compiled),
            "seconds": round(time.perf_counter() - started, 2), "valid": sorted(compiled) == sorted(eager),
            "1 vs 2 workers": "-", "cfg truncation": summary.get("recompiles") == 0,
            "rows": f"graphs {summary.get('compiled_graphs')}, recompiles {summary.get('recompiles')}, "
                    f"max pixel diff vs eager {diff}"}


# The levers of the table: (label, settings), the first the lever-free reference. On a GPU every lever; on a CPU
# those it can run (levers.py refuses the others).
GPU_LEVERS = [("none", {}), ("cache first_block:0.1", {"cache": "first_block:0.1"}),
              ("cache taylorseer", {"cache": "taylorseer"}), ("attention _native_flash", {"attention_backend": "_native_flash"}),
              ("quantize int8wo", {"quantize": "int8wo"}), ("quantize fp8wo", {"quantize": "fp8wo"}),
              ("quantize fp8", {"quantize": "fp8"}), ("compile regional", {"compile": "regional"}),
              ("offload model", {"offload": "model"}), ("offload group", {"offload": "group"})]
CPU_LEVERS = [("none", {}), ("cache first_block:0.5", {"cache": "first_block:0.5"}),
              ("quantize int8wo", {"quantize": "int8wo"})]


def lever_table(dtype, device, work, inception_weights=None, clip_model=None, images=8):
    """The lever rows: images/s, peak GPU memory, and FID and CLIP score against the lever-free run."""
    from evaluation import metrics
    from evaluation.tiny_networks import save_tiny_clip, save_tiny_inception
    from levers import SIZE, run
    folder = os.path.join(work, "model-flux")
    if not os.path.isdir(folder):
        build(folder, "flux")
    inception_weights = inception_weights or save_tiny_inception(os.path.join(work, "tiny-inception.pt"))
    clip_model = clip_model or save_tiny_clip(os.path.join(work, "tiny-clip"))
    csv = write_prompts(os.path.join(work, "levers.csv"), images)
    shared = load_pipeline(folder, dtype, device)
    rows, reference = [], None
    for label, settings in GPU_LEVERS if device == "cuda" else CPU_LEVERS:
        out = os.path.join(work, "levers", label.replace(" ", "-").replace(":", "_"))
        row = {"lever": label}
        try:
            load_time = any(k in settings for k in ("quantize", "compile", "offload"))
            summary, _ = run(folder, csv, out, images, device, dtype, cfg.STEPS, size=SIZE,
                             pipe=None if load_time else shared, **settings)
            reference = reference or out
            scores = metrics.run(metrics.build_parser().parse_args(
                ["--generated", out, "--reference_dir", reference, "--inception_weights", inception_weights,
                 "--clip_model", clip_model, "--out", os.path.join(work, "levers-metrics.json"), "--device", device,
                 "--num_workers", "0"]))
            row.update(images_per_s=summary["images_per_second"], peak_memory=summary["peak_gpu_memory_bytes"],
                       fid=round(scores["fid"], 6), clip=round(scores["clip_score"], 4), valid=True)
        except Exception as err:  # one lever's failure should not hide the others'
            row["valid"] = f"error: {str(err)[:120]}"
        rows.append(row)
        print(row, flush=True)
    return rows


def sd15_benchmark(path, device, dtype, batch, images, work):
    """The toolkit's worker loop against the plain diffusers loop, same pipeline, same batch size."""
    pipe = load_pipeline(path, dtype, device)
    csv = write_prompts(os.path.join(work, "sd15.csv"), images)
    settings = dict(num_inference_steps=20, height=512, width=512, dtype=dtype, device=device, batch_size=batch,
                    guidance_scale=7.5)
    toolkit_run(pipe, job_spec(csv, os.path.join(work, "warm"), path, batch, **settings))  # warm-up
    timer, _ = toolkit_run(pipe, job_spec(csv, os.path.join(work, "toolkit"), path, images, **settings))
    plain = plain_loop(pipe, job_spec(csv, os.path.join(work, "plain"), path, images, **settings))
    return [{"run": f"SD 1.5 toolkit, batch {batch}", "images_per_s": rate(images, timer.wall)},
            {"run": f"SD 1.5 plain diffusers loop, batch {batch}", "images_per_s": rate(images, plain.wall)}]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--families", nargs="+", default=list(ARCHES), choices=ARCHES)
    parser.add_argument("--dtypes", nargs="+", default=None, choices=("bf16", "fp16", "fp32"),
                        help="default: bf16 fp16 on cuda, fp32 on cpu")
    parser.add_argument("--no_compile", action="store_true", help="leave out the --compile check (minutes on a CPU)")
    parser.add_argument("--no_levers", action="store_true", help="leave out the speed levers' table")
    parser.add_argument("--inception_weights", default=None, help="the lever table's FID network (default: a tiny "
                                                                  "random one: the numbers mean nothing)")
    parser.add_argument("--clip_model", default=None, help="the lever table's CLIP model (default: a tiny random one)")
    parser.add_argument("--sd15", default=None, metavar="PATH", help="a local SD 1.5 diffusers folder to benchmark")
    parser.add_argument("--sd15_batch", type=int, default=8)
    parser.add_argument("--sd15_images", type=int, default=32)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible (--device cpu runs the same checks on the CPU)")
    dtypes = args.dtypes or (["bf16", "fp16"] if args.device == "cuda" else ["fp32"])
    size, steps = 32, cfg.STEPS
    rows = []
    with tempfile.TemporaryDirectory(prefix="t2i-gpu-check-") as work:
        for arch in args.families:
            for dtype in dtypes:
                try:
                    rows.append(check_family(arch, dtype, args.device, size, steps, work))
                except Exception as err:  # one family's failure should not hide the others'
                    rows.append({"family": arch, "dtype": dtype, "valid": f"error: {str(err)[:120]}"})
                print(rows[-1], flush=True)
        if not args.no_compile:
            try:
                rows.append(compile_check(dtypes[0], args.device, work))
            except Exception as err:
                rows.append({"family": "sd --compile", "dtype": dtypes[0], "valid": f"error: {str(err)[:120]}"})
            print(rows[-1], flush=True)
        levers = [] if args.no_levers else lever_table(dtypes[0], args.device, work, args.inception_weights,
                                                         args.clip_model)
        bench = []
        if args.sd15:
            bench = sd15_benchmark(args.sd15, args.device, dtypes[0], args.sd15_batch, args.sd15_images, work)
        else:
            print("--sd15 not given: SD 1.5 benchmark skipped")
    columns = ["family", "dtype", "images", "seconds", "valid", "1 vs 2 workers", "cfg truncation", "rows"]
    print_table(f"tiny families on {args.device}", columns, [[r.get(c, "-") for c in columns] for r in rows])
    if levers:
        lever_columns = ["lever", "images_per_s", "peak_memory", "fid", "clip", "valid"]
        print_table(f"speed levers, tiny Flux on {args.device}, {dtypes[0]} (FID and CLIP against the lever-free "
                    "images)", lever_columns, [[r.get(c, "-") for c in lever_columns] for r in levers])
    if bench:
        print_table("SD 1.5, 512x512, 20 steps", ["run", "images/s"], [[b["run"], b["images_per_s"]] for b in bench])
    failed = [r for r in rows if any(r.get(c) not in (True, "n/a (no CFG)", "-") for c in columns[4:7])]
    failed += [r for r in levers if r["valid"] is not True]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
