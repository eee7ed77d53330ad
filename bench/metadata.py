"""File-system metadata operations per image: what a run costs a shared file system's metadata server.

    .venv/bin/python bench/metadata.py                       # tiny model on CPU, 2 workers, about 10 minutes
    .venv/bin/python bench/metadata.py --images 16 --batch_sizes 8 --schedules dynamic   # one quick case
    .venv/bin/python bench/metadata.py --formats tar --images 32 --shard_size 32          # tar shards (issue 19)

Each case is one whole run (submit.py, local mode, the tiny SD model on CPU, 2 workers) into a fresh folder
under `strace -f` (every process and thread of the run: submitter and workers). Counted are the system
calls that name a path inside the output folder (creates: opens with O_CREAT; links; renames; unlinks and
rmdirs; mkdirs; stats: stat/lstat/statx/access; opens for reading) and every fsync/fdatasync of the run
(they take a file descriptor, not a path: the workers fsync nothing but their output). A run's fixed costs
(records, logs, the resume check) are spread over its images; "per image more" leaves them out: the
operations of a run of 2N images less those of a run of N, per extra image (what a campaign's size costs). "renames+links+creates+unlinks+mkdirs" is the number of name-changing operations per image (the
issue's target at batch 8: at most 4; with --output_format tar, at most 0.05). Of those, the live progress file's
are also shown apart (it is made once per worker and run, then overwritten in place: no new name per write). A tar case writes a shard per
--shard_size images: with --images equal to --shard_size, "per image more" is one shard's operations over its
images (at a shard size of 1000, divide that shard's count by 1000).
"""
import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from gen_worker.tiny_model import build  # noqa: E402

SETTINGS = ["--device", "cpu", "--num_inference_steps", "2", "--height", "64", "--width", "64", "--dtype", "fp32"]
KINDS = {"creat": "create", "link": "link", "linkat": "link", "symlink": "link", "symlinkat": "link",
         "rename": "rename", "renameat": "rename", "renameat2": "rename", "unlink": "unlink", "unlinkat": "unlink",
         "rmdir": "unlink", "mkdir": "mkdir", "mkdirat": "mkdir", "stat": "stat", "lstat": "stat",
         "newfstatat": "stat", "statx": "stat", "access": "stat", "faccessat": "stat", "faccessat2": "stat",
         "open": "open", "openat": "open"}
NAME_CHANGING = ("create", "link", "rename", "unlink", "mkdir")
CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)")


def count_calls(trace: str, folder: str) -> collections.Counter:
    """Metadata operations on paths under `folder` (and every fsync) in an `strace -f` log."""
    counts: collections.Counter = collections.Counter()
    for text in trace.splitlines():
        match = CALL.match(text)
        if not match:
            continue  # "<... resumed>" halves: the call was counted where it started
        call, args = match.groups()
        if call in ("fsync", "fdatasync"):
            counts["fsync"] += 1
            continue
        kind = KINDS.get(call)
        if kind is None or folder not in args:
            continue
        if kind == "open" and "O_CREAT" in args and "O_APPEND" not in args:
            kind = "create"  # (an append to a log creates its name once, then opens it: counted as an open)
        if call == "unlinkat" and "AT_REMOVEDIR" in args:
            kind = "unlink"
        counts[kind] += 1
        if kind in NAME_CHANGING and "progress_gpu" in args:
            counts["progress"] += 1  # the live progress file: a create and a rename per second and worker
    return counts


def traced_run(root: str, model: str, csv_path: str, images: int, batch: int, schedule: str,
               extra: list[str], label: str) -> tuple[collections.Counter, int]:
    """(operation counts, files in the folder) of one run of `images` samples."""
    out = os.path.join(root, f"{label}-{images}")
    log = out + ".strace"
    command = ["strace", "-f", "-qq", "-o", log, "-e",
               "trace=%file,fsync,fdatasync", sys.executable, os.path.join(REPO, "submit.py"),
               "--cluster", "local", "--gpu_ids", "0", "1", "--prompts_csv", csv_path, "--output_dir", out,
               "--model_path", model, "--batch_size", str(batch), "--schedule", schedule, "--num_samples", str(images),
               *SETTINGS, *extra]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{label}: the run failed:\n{result.stderr[-2000:]}")
    with open(log, encoding="utf-8", errors="replace") as f:
        counts = count_calls(f.read(), out)
    return counts, sum(len(names) for _, _, names in os.walk(out))


def one_case(root: str, model: str, csv_path: str, images: int, batch: int, schedule: str,
             extra: list[str], output_format: str = "png", shard_size: int = 1000) -> dict[str, object]:
    """Per image of a run of `images`, and per image more (a run of 2x`images` less one of `images`: what a
    campaign's size costs, without the fixed costs of a run)."""
    label = f"{output_format}-b{batch}-{schedule}" + ("-" + "-".join(extra).replace("--", "") if extra else "")
    extra = extra + (["--output_format", "tar", "--shard_size", str(shard_size)] if output_format == "tar" else [])
    small, files = traced_run(root, model, csv_path, images, batch, schedule, extra, label)
    large, _ = traced_run(root, model, csv_path, 2 * images, batch, schedule, extra, label)
    kinds = (*NAME_CHANGING, "fsync", "stat", "open")
    return {"case": label, "images": images, "files_in_folder": files,
            "name_changing_per_image": round(sum(small[k] for k in NAME_CHANGING) / images, 2),
            "name_changing_per_image_more": round(sum(large[k] - small[k] for k in NAME_CHANGING) / images, 2),
            "progress_per_image_more": round((large["progress"] - small["progress"]) / images, 2),
            "per_image": {k: round(small[k] / images, 2) for k in kinds},
            "per_image_more": {k: round((large[k] - small[k]) / images, 2) for k in kinds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--schedules", nargs="+", default=["static", "dynamic"])
    parser.add_argument("--formats", default="png,tar", help="output formats to run, comma-separated (png,tar)")
    parser.add_argument("--shard_size", type=int, default=1000, help="--output_format tar: samples per shard")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="more submit.py flags for every case (e.g. --output_format tar)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        raise SystemExit("strace is missing: apt-get install strace")
    root = tempfile.mkdtemp(prefix="t2i-metadata-")
    try:
        model = os.path.join(root, "tiny-sd")
        build(model, "sd")
        csv_path = os.path.join(root, "prompts.csv")
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write("image_id,prompt\n" + "".join(f"{i},a photo of object {i}\n" for i in range(2 * args.images)))
        rows = [one_case(root, model, csv_path, args.images, b, s, args.extra, fmt, args.shard_size)
                for fmt in args.formats.split(",") for b in args.batch_sizes for s in args.schedules]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'case':<26}{'files':>7}{'name-chg':>9}" + "".join(f"{k:>8}" for k in rows[0]["per_image"]))
    for row in rows:
        print(f"{row['case']:<26}{row['files_in_folder']:>7}{row['name_changing_per_image']:>9}"
              + "".join(f"{v:>8}" for v in row["per_image"].values()))
        print(f"{'  per image more':<33}{row['name_changing_per_image_more']:>9}"
              + "".join(f"{v:>8}" for v in row["per_image_more"].values())
              + f"   (of which the progress file: {row['progress_per_image_more']})")
    print(f"(per image of a run of {args.images} images with 2 workers, files in its folder; per image more: "
          f"a run of {2 * args.images} less one of {args.images}, per extra image. "
          "name-chg = creates+links+renames+unlinks+mkdirs)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
