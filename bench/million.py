"""A million samples: planning a 1,000,000-row prompts file, and a no-op rerun over 1,000,000 recorded images.

    .venv/bin/python bench/million.py                    # about 5 minutes, 1M directory entries in /tmp
    .venv/bin/python bench/million.py --samples 100000   # a quick run

1. planning: plan.build_spec over the prompts file, as `submit.py` does before anything else (every row read
   and checked, the samples and their fingerprint, the model's fingerprint), in a fresh process.
2. the no-op rerun: `submit.py --cluster local` into a folder holding every image of the run, as after a
   finished run: the settings record, the manifest and each worker's record of what it wrote
   (logs/written_gpu0.tsv, the very lines a worker writes). The images are hard links to a few tiny PNG files
   (a million distinct files would take 4 GB and the time to write them): a no-op rerun must read none of
   them (checked: the resume check's report says 0 read). Timed twice: the first rerun folds the worker's
   record into the check's own (logs/verified_images.tsv), the second reads that one.

Each step runs in a child process: its wall time, CPU time (user + system: what it costs on an idle machine)
and peak memory (ru_maxrss) are what is printed, with the load average before it.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from gen_worker.cli import build_parser  # noqa: E402
from gen_worker.output import layout, provenance, verification_cache  # noqa: E402
from gen_worker.output.prepare import prepare_output_dir  # noqa: E402
from gen_worker.output.record import manifest_row  # noqa: E402
from gen_worker.plan import build_spec  # noqa: E402
from gen_worker.tiny_model import build  # noqa: E402
from gen_worker.worker.png import encode_png  # noqa: E402

LINKS_PER_FILE = 50_000  # ext4 allows 65,000 links to one file
PLAN_CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from gen_worker.cli import build_parser
from gen_worker.plan import build_spec
started = time.time()
spec, samples = build_spec(build_parser().parse_args({argv!r}))
print(len(samples), round(time.time() - started, 2))
"""


def timed_child(command: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, peak memory in MB, CPU seconds, stdout+stderr) of a child process (one at a time: ru_maxrss is the
    largest child's so far, so each step runs in its own grandchild to be measured alone)."""
    probe = ("import resource, subprocess, sys, time; started = time.time(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(round(time.time() - started, 2), "
             "u.ru_maxrss // 1024, round(u.ru_utime + u.ru_stime, 2), r.returncode); "
             "print(r.stdout[-3000:] + r.stderr[-3000:])")
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, cwd=REPO)
    first, _, rest = done.stdout.partition("\n")
    seconds, megabytes, cpu, returncode = first.split()
    if returncode != "0":
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{rest}")
    return float(seconds), float(megabytes), float(cpu), rest


def recorded_folder(root: str, argv: list[str], links_per_file: int = LINKS_PER_FILE) -> str:
    """The run's output folder as a finished run leaves it (its images hard links to tiny PNGs in root, each
    worker's record of what it wrote); returns its path."""
    spec, samples = build_spec(build_parser().parse_args(argv))
    out = spec.output_dir
    prepare_output_dir(spec, samples).release()
    pixels = encode_png(__import__("numpy").zeros((8, 8, 3), dtype="uint8"))
    settings_key = provenance.settings_key(spec.recorded_settings(), spec.model_identity.get("fingerprint"))
    for start in range(0, len(samples), links_per_file):
        source = os.path.join(root, f"source{start}.png")
        with open(source, "wb") as f:
            f.write(pixels)
        for s in samples[start:start + links_per_file]:
            os.link(source, os.path.join(out, s.file_name))
    with open(layout.written_file(out, 0), "w", encoding="utf-8") as f:
        for s in samples:  # after every link: a link changes the ctime of each name of the file
            f.write(verification_cache.line(verification_cache.file_state(out, s.file_name),
                                            provenance.row_key(manifest_row(s)), settings_key))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--root", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="t2i-million-")
    results: dict[str, object] = {"samples": args.samples}
    try:
        model = os.path.join(root, "tiny-sd")
        build(model, "sd")
        csv_path = os.path.join(root, "prompts.csv")
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write("image_id,prompt\n" + "".join(f"{i},a photo of object number {i} on a table, studio light\n"
                                                    for i in range(args.samples)))
        out = os.path.join(root, "out")
        argv = ["--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv_path, "--output_dir", out,
                "--model_path", model, "--device", "cpu", "--dtype", "fp32", "--height", "64", "--width", "64"]
        load = os.getloadavg()[0]  # other jobs on the machine: CPU seconds say what the step alone costs
        seconds, megabytes, cpu, said = timed_child([sys.executable, "-c", PLAN_CHILD.format(repo=REPO, argv=argv)])
        results["planning"] = {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": megabytes, "load_before": load,
                               "samples_and_build_spec_seconds": said.split()}

        started = time.time()
        recorded_folder(root, argv)
        results["setup_seconds"] = round(time.time() - started, 1)

        for label in ("no-op rerun (worker records)", "no-op rerun (check's record)"):
            load = os.getloadavg()[0]
            seconds, megabytes, cpu, said = timed_child([sys.executable, os.path.join(REPO, "submit.py"), *argv])
            report = json.load(open(os.path.join(out, layout.RESUME_CHECK_FILE)))
            assert report["checked"] == args.samples and report["read"] == 0 and not report["quarantined"], report
            results[label] = {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": megabytes, "load_before": load,
                              "resume_check_seconds": report["seconds"]}
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
