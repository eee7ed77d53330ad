"""Where everything lives in an output folder (one place, so every module agrees).

    output_dir/
      {image_id}_seed{seed}.png        the images, nothing else that looks like an image
      <row:05d>/metadata.jsonl, <row:05d>/samples/<k:04d>.png   the same with --layout geneval
                                        (naming.sample_path; Sample.file_name is the relative path)
      shards/000000.tar, ...            the same with --output_format tar: WebDataset shards of --shard_size
                                        samples, {stem}.png and {stem}.json each (output/shards.py)
      generation_settings.json          settings the images were made with (guards reruns)
      manifest.csv                      sample index, row, k, image id, seed, file name, prompt, other columns
      failed_prompts_gpu{k}.txt         one JSON line per failed sample of worker k
      nsfw_flagged_gpu{k}.txt           --safety_checker: one JSON line per image worker k saw flagged
      summary_gpu{k}.json, summary.json per-worker and per-run summaries
      quarantine/<time>/NAME.png.rejected  files that failed the resume check (reasons.json says why)
      logs/                             worker logs, live progress, previous runs' reports
      logs/resume_check.json            what the last resume check found
      logs/verified_images.tsv, logs/written_gpu{k}.tsv   images known good, and what against
                                        (output/verification_cache.py)
      logs/slurm_jobs.json              SLURM mode: the jobs each submission queued
      logs/submitit/<job id>/           SLURM mode: submitit's files and logs, one folder per job
      claims/                           --schedule dynamic: the block queue, leases and heartbeats (schedule/claims.py);
                                        once every block is done, all_done.json instead of the per-block files
"""
import os

SETTINGS_FILE = "generation_settings.json"
MANIFEST_FILE = "manifest.csv"
RUN_SUMMARY_FILE = "summary.json"
LOCK_FILE = ".t2i-batch.lock"
LOGS_DIR = "logs"
PREVIOUS_REPORTS_DIR = os.path.join(LOGS_DIR, "previous")
SLURM_JOBS_FILE = os.path.join(LOGS_DIR, "slurm_jobs.json")
SUBMITIT_DIR = os.path.join(LOGS_DIR, "submitit")
RESUME_CHECK_FILE = os.path.join(LOGS_DIR, "resume_check.json")
VERIFIED_FILE = os.path.join(LOGS_DIR, "verified_images.tsv")  # the resume check's verdicts (verification_cache.py)
QUARANTINE_DIR = "quarantine"
CLAIMS_DIR = "claims"
QUARANTINE_SUFFIX = ".rejected"  # a quarantined image is no *.png: FID tools glob recursively


def failed_file(output_dir: str, worker_index: int) -> str:
    return os.path.join(output_dir, f"failed_prompts_gpu{worker_index}.txt")


def nsfw_flagged_file(output_dir: str, worker_index: int) -> str:
    """Kept across reruns (not a report file): it lists images that stay in the folder."""
    return os.path.join(output_dir, f"nsfw_flagged_gpu{worker_index}.txt")


def summary_file(output_dir: str, worker_index: int) -> str:
    return os.path.join(output_dir, f"summary_gpu{worker_index}.json")


def progress_file(output_dir: str, worker_index: int) -> str:
    return os.path.join(output_dir, LOGS_DIR, f"progress_gpu{worker_index}.json")


def worker_log(output_dir: str, worker_index: int) -> str:
    return os.path.join(output_dir, LOGS_DIR, f"worker_gpu{worker_index}.log")


def written_file(output_dir: str, worker_index: int) -> str:
    """Worker k's record of the images it wrote (name, size, mtime, inode): resume need not read them."""
    return os.path.join(output_dir, LOGS_DIR, f"written_gpu{worker_index}.tsv")


def slurm_task_file(output_dir: str, worker_index: int) -> str:
    """Where a SLURM task records its job ids, host and GPU when it starts."""
    return os.path.join(output_dir, LOGS_DIR, f"slurm_task_gpu{worker_index}.json")


def is_report_file(name: str) -> bool:
    """Per-run reports that a new run replaces (moved to logs/previous/, never deleted)."""
    return name == RUN_SUMMARY_FILE or (
        (name.startswith("failed_prompts_gpu") and name.endswith(".txt"))
        or (name.startswith("summary_gpu") and name.endswith(".json")))
