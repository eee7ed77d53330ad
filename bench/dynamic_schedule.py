"""--schedule dynamic against static: makespans on the SLURM test cluster, a cancelled task, a hung worker,
the cost of a claim.

    .venv/bin/python bench/dynamic_schedule.py --part claim            # seconds, no cluster
    .venv/bin/python bench/dynamic_schedule.py --part makespan         # ~4 minutes on the test cluster
    .venv/bin/python bench/dynamic_schedule.py --part cancel           # ~2 minutes on the test cluster
    .venv/bin/python bench/dynamic_schedule.py --part hang             # ~1 minute, local mode
    .venv/bin/python bench/dynamic_schedule.py                          # all four

makespan: 48 prompts, tiny SD model, 64x64, 8 steps, CPU: 4 array tasks with --array_parallelism 3
(the 4th starts when one of the first 3 ends), dynamic vs static, against 3 tasks from the start.
Goal: dynamic at most 1.15x the 3-task run.
cancel: 4 tasks (dynamic, --lease_seconds 10); one array task is cancelled once the run has made
some images. Goal: exit 0 with every image, without resubmission, within the lease (plus SLURM's
KillWait, during which the cancelled task still runs) plus the remaining work.
hang: local mode, 2 workers, --lease_seconds 10; the worker that makes the last sample stops in a denoising
step for good, its other threads running on (tests/fault_injection, as a hung CUDA call). Goal: its block taken
over within the lease plus a quarter (the heartbeat's period) plus the taker's poll, and the run ended, exit 0,
within the block's own time, 5 s (FINISH_GRACE_SECONDS) and 10 s (SIGTERM, then SIGKILL) after that.
claim: ms per claim (link + done marker) on local disk. Goal: under 5 ms.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from common import write_prompts  # noqa: E402
from gen_worker.schedule.claims import BlockQueue  # noqa: E402
from gen_worker.output.record import existing_images  # noqa: E402

SETTINGS = ["--device", "cpu", "--num_inference_steps", "8", "--height", "64", "--width", "64", "--dtype", "fp32",
            "--time", "20"]
NUM_PROMPTS = 48


def claim_cost(folder, blocks=2000):
    queue = BlockQueue(folder, blocks, lease_seconds=120)
    started = time.perf_counter()
    for block in range(blocks):
        assert queue.claim(block)
        queue.done(block)
    seconds = time.perf_counter() - started
    queue.close()
    ms = 1000 * seconds / blocks
    print(f"claim + done marker on local disk ({folder}): {ms:.3f} ms per block over {blocks} blocks "
          f"(goal < 5 ms)")
    return {"ms_per_claim": round(ms, 3), "blocks": blocks}


def submit(*args, timeout=900):
    started = time.monotonic()
    result = subprocess.run([sys.executable, os.path.join(REPO, "submit.py"), *args], capture_output=True, text=True,
                            timeout=timeout, cwd=REPO)
    return result, time.monotonic() - started


def _run(model, csv, out, *extra):
    result, seconds = submit("--cluster", "slurm", "--prompts_csv", csv, "--output_dir", out, "--model_path", model,
                             *SETTINGS, "--wait", *extra)
    if result.returncode != 0:
        sys.exit(f"{out}: exit {result.returncode}\n{result.stderr[-3000:]}")
    return seconds


def makespans(model, csv, root, repeat=1):
    """Interleaved repeats, median each (the test machine's 2 cores are shared: one run can be unlucky)."""
    runs = [("3 tasks from the start (static)", ["--gpus", "3", "--schedule", "static"]),
            ("4 tasks, 3 at a time, static", ["--gpus", "4", "--array_parallelism", "3", "--schedule", "static"]),
            ("4 tasks, 3 at a time, dynamic", ["--gpus", "4", "--array_parallelism", "3", "--schedule", "dynamic"])]
    times = {name: [] for name, _ in runs}
    for r in range(repeat):
        for i, (name, extra) in enumerate(runs):
            seconds = _run(model, csv, os.path.join(root, f"makespan{i}-{r}"), *extra)
            times[name].append(seconds)
            print(f"{name:<34} {seconds:6.1f} s (submit.py --wait, from the command's start)", flush=True)
    results = {name: round(statistics.median(t), 1) for name, t in times.items()}
    if repeat > 1:
        for name, median in results.items():
            print(f"{name:<34} {median:6.1f} s median of {repeat}")
    base = results[runs[0][0]]
    for name, _ in runs[1:]:
        print(f"{name:<34} {results[name] / base:.2f}x the 3-task run (dynamic goal <= 1.15x)")
    return results


def cancelled_task(model, csv, root, lease=10):
    out = os.path.join(root, "cancel")
    result, _ = submit("--cluster", "slurm", "--prompts_csv", csv, "--output_dir", out, "--model_path", model,
                       *SETTINGS, "--gpus", "4", "--lease_seconds", str(lease), "--no_wait")
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    started = time.monotonic()
    while len(existing_images(out)) < 8:
        time.sleep(0.2)
    made_before = len(existing_images(out))
    cancel, _ = submit("cancel", "--output_dir", out, "--task", "1")
    cancelled_at = time.monotonic()
    print(cancel.stdout.strip())
    status, _ = submit("status", "--output_dir", out, "--wait")
    ended = time.monotonic()
    images = len(existing_images(out))
    summaries = [json.load(open(os.path.join(out, n))) for n in sorted(os.listdir(out)) if n.startswith("summary_gpu")]
    taken = sum(s.get("blocks_taken_over") or 0 for s in summaries)
    print(f"cancelled task 1 after {cancelled_at - started:.1f} s ({made_before} images made); the run ended "
          f"{ended - cancelled_at:.1f} s later with exit {status.returncode}, {images}/{NUM_PROMPTS} images, "
          f"{taken} blocks taken over, lease {lease} s, no resubmission")
    print("\n".join(status.stderr.strip().splitlines()[-4:]))
    return {"exit": status.returncode, "images": images, "cancel_after_s": round(cancelled_at - started, 1),
            "end_after_cancel_s": round(ended - cancelled_at, 1), "blocks_taken_over": taken, "lease_s": lease}


def hung_worker(model, root, lease=10):
    out, marker = os.path.join(root, "hang"), os.path.join(root, "hang-marker")
    csv_path = os.path.join(root, "hang-prompts.csv")
    with open(csv_path, "w", encoding="utf-8") as f:  # the last sample hangs its worker
        f.write("image_id,prompt\n" + "".join(f"{i},a photo of object number {i}{' HANG_HERE' * (i == 15)}\n"
                                              for i in range(16)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests", "fault_injection")]),
               T2I_TEST_HANG_ONCE=marker)
    result = subprocess.run([sys.executable, os.path.join(REPO, "submit.py"), "--cluster", "local", "--gpu_ids", "0",
                             "1", "--prompts_csv", csv_path, "--output_dir", out, "--model_path", model,
                             *SETTINGS[:-2], "--lease_seconds", str(lease)], capture_output=True, text=True,
                            timeout=600, cwd=REPO, env=env)
    ended = time.time()
    hung_at = os.stat(marker).st_mtime
    took = [line for k in (0, 1) for line in open(os.path.join(out, "logs", f"worker_gpu{k}.log"))
            if "took over from" in line]
    taken_at = time.mktime(time.strptime(took[0][:19], "%Y-%m-%d %H:%M:%S")) + int(took[0][20:23]) / 1000
    images = len(existing_images(out))
    print(f"hung worker (lease {lease} s): block taken over {taken_at - hung_at:.1f} s after the hang, run ended "
          f"{ended - taken_at:.1f} s after that ({ended - hung_at:.1f} s after the hang), exit {result.returncode}, "
          f"{images}/16 images")
    print("\n".join(line for line in result.stderr.splitlines() if line.startswith("warning")))
    return {"exit": result.returncode, "images": images, "lease_s": lease,
            "take_over_after_hang_s": round(taken_at - hung_at, 1), "end_after_take_over_s": round(ended - taken_at, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "claim", "makespan", "cancel", "hang"), default="all")
    parser.add_argument("--model", help="tiny model folder (default: built in a temporary folder)")
    parser.add_argument("--root", help="folder for the runs; must be visible to the SLURM nodes (default: a temp dir)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--repeat", type=int, default=1, help="makespan: interleaved repeats (median)")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="dynamic-bench-")
    results = {}
    if args.part in ("all", "claim"):
        results["claim"] = claim_cost(os.path.join(root, "claim"))
    if args.part != "claim":
        model = args.model
        if model is None:
            model = os.path.join(root, "tiny-sd")
            subprocess.run([sys.executable, "-m", "gen_worker.tiny_model", model, "--arch", "sd"], check=True,
                           cwd=REPO, capture_output=True)
        csv = write_prompts(os.path.join(root, "prompts.csv"), NUM_PROMPTS)
        if args.part in ("all", "makespan"):
            results["makespan_s"] = makespans(model, csv, root, args.repeat)
        if args.part in ("all", "cancel"):
            results["cancelled_task"] = cancelled_task(model, csv, root)
        if args.part in ("all", "hang"):
            results["hung_worker"] = hung_worker(model, root)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
