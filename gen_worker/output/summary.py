"""The end of a run: summary.json from the workers' summaries, and the last lines users read."""
import os
import shlex
import statistics
import time
from typing import Any, Sequence

from gen_worker.output import layout
from gen_worker.atomic_files import read_json_if_any, replace_json
from gen_worker.output.record import existing_images, read_manifest


def missing_images(output_dir: str) -> tuple[list[str], int]:
    """The images the folder's manifest.csv lists that are not on disk (in manifest order), and how many it
    lists (none without a manifest)."""
    on_disk = existing_images(output_dir)
    listed = [row["file_name"] for row in read_manifest(output_dir).values()]
    return [name for name in listed if name not in on_disk], len(listed)


def read_worker_summary(output_dir: str, worker_index: int) -> dict[str, Any] | None:
    return read_json_if_any(layout.summary_file(output_dir, worker_index))


def write_run_summary(output_dir: str, file_names: Sequence[str], workers: Sequence[dict[str, Any]], started: float,
                      command: str, interrupted: bool = False, finished: float | None = None,
                      schedule: str = "static", judged_by_folder: bool = False, already_there: int | None = None,
                      logs_in: str | None = None, on_disk: set[str] | None = None) -> dict[str, Any]:
    """file_names: every sample's image name; workers: one dict per worker with at least 'label'
    and 'exit_code' (None while unknown), and 'worker_index' when not its position.
    schedule: its name, recorded; judged_by_folder: the schedule's (schedule/interface.py): the folder decides
    whether the run succeeded, and images on disk when it started (already_there) belong to no worker.

    finished: when the run ended (default: now), for a summary written after the fact.
    logs_in: the folder whose logs/ holds the workers' logs, when not output_dir (a sweep's top folder).
    on_disk: the images on disk now, when the caller knows (no worker ran: a million names are not listed twice).
    An empty `workers`: none was started, every image was there (already_there, whatever the schedule).
    """
    on_disk = existing_images(output_dir) if on_disk is None else on_disk
    missing = [name for name in file_names if name not in on_disk]
    per_worker = []
    for position, info in enumerate(workers):
        k = info.get("worker_index", position)
        summary = read_worker_summary(output_dir, k) or {"worker_index": k, "state": "no summary (crashed?)", **info}
        per_worker.append({**info, **summary})
    totals = {key: sum(w.get(key) or 0 for w in per_worker)
              for key in ("generated", "skipped", "failed", "constant_images", "nsfw_flagged", "blocks_taken_over")}
    if (judged_by_folder or not workers) and already_there is not None:
        totals["skipped"] = already_there
    indices = [w["worker_index"] for w in per_worker]
    resume_check = read_json_if_any(os.path.join(output_dir, layout.RESUME_CHECK_FILE)) or {}
    finished = time.time() if finished is None else finished
    wall = finished - started
    summary = {
        "command": command, "output_dir": output_dir, "logs_in": logs_in or output_dir, "num_workers": len(workers),
        "schedule": schedule, "judged_by_folder": judged_by_folder,
        "num_samples": len(file_names), "missing": len(missing), **totals,
        "failed_files": [os.path.basename(layout.failed_file(output_dir, k))
                         for k in indices if os.path.exists(layout.failed_file(output_dir, k))],
        # Files the resume check moved aside before this run (they were made again), and images it kept whose
        # pixels no hash vouches for (adopted, or made before images carried one).
        "quarantined": resume_check.get("quarantined", []),
        "pixels_unchecked": resume_check.get("pixels_unchecked", 0),
        "interrupted": interrupted, "wall_seconds": round(wall, 3),
        "images_per_second": round(totals["generated"] / wall, 4) if wall > 0 else None,
        **speed_of(per_worker),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished)),
        "workers": per_worker,
    }
    replace_json(os.path.join(output_dir, layout.RUN_SUMMARY_FILE), summary)
    return summary


def speed_of(workers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run's speed from its workers' (worker/loop.py): the median worker's seconds per image and denoiser
    seconds per image, the largest peak of GPU memory (None where no worker measured one: CPU runs)."""
    def median(key: str) -> float | None:
        values = [w[key] for w in workers if w.get(key) is not None]
        return statistics.median(values) if values else None
    peaks = [w["peak_gpu_memory_bytes"] for w in workers if w.get("peak_gpu_memory_bytes") is not None]
    return {"seconds_per_image": median("seconds_per_image"),
            "denoiser_seconds_per_image": median("denoiser_seconds_per_image"),
            "peak_gpu_memory_bytes": max(peaks) if peaks else None}


def final_lines(summary: dict[str, Any], rerun_hint: bool = True) -> list[str]:
    """What the user reads last: what was made, what went wrong, and (rerun_hint) what to run next."""
    out = summary["output_dir"]
    lines = [f"{summary['num_samples'] - summary['missing']}/{summary['num_samples']} images in {out} "
             f"({summary['generated']} generated, {summary['skipped']} already there) in "
             f"{summary['wall_seconds']:.1f} s, {summary['images_per_second'] or 0:.2f} images/s"]
    if summary.get("quarantined"):
        lines.append(f"{len(summary['quarantined'])} files under image names were damaged or not made by this run: "
                     f"moved to {os.path.join(out, layout.QUARANTINE_DIR)} (reasons: "
                     f"{os.path.join(out, layout.RESUME_CHECK_FILE)}) and made again")
    if summary.get("pixels_unchecked"):
        lines.append(f"{summary['pixels_unchecked']} images kept carry no hash of their pixels (adopted, or made by a "
                     "t2i-batch older than provenance format 2): edits to them cannot be detected")
    taken_over = summary.get("blocks_taken_over") or 0
    for w in summary["workers"]:
        code = w.get("exit_code")
        log_path = layout.worker_log(summary.get("logs_in", out), w["worker_index"])
        if w.get("stopped"):  # the submitter stopped it once every block was done (stuck in a GPU call?)
            lines.append(f"warning: {w['label']} (worker {w['worker_index']}) {w['stopped']}; log: {log_path}")
        elif code not in (0, None) and not summary["interrupted"]:
            reason = w.get("message") or f"exit code {code}"
            if _by_folder(summary) and not summary["missing"]:
                lines.append(f"warning: {w['label']} (worker {w['worker_index']}) stopped: {reason}; the other "
                             f"workers made its blocks ({taken_over} taken over); log: {log_path}")
            else:
                lines.append(f"{w['label']} (worker {w['worker_index']}) stopped: {reason}; log: {log_path}")
    if summary["failed"]:
        files = ", ".join(os.path.join(out, f) for f in summary["failed_files"])
        lines.append(f"{summary['failed']} samples failed; their prompts and errors: {files}")
    constant = summary.get("constant_images") or 0
    if constant:
        lines.append(f"warning: {constant} image{'s are' if constant > 1 else ' is'} constant (every pixel the same, "
                     f"e.g. all black): their names are in the worker logs ({os.path.join(out, layout.LOGS_DIR)})")
    flagged = summary.get("nsfw_flagged") or 0
    if flagged:
        files = os.path.join(out, "nsfw_flagged_gpu*.txt")
        lines.append(f"{flagged} image{'s' if flagged > 1 else ''} flagged by the safety checker (black): listed in "
                     f"{files}")
    if summary["missing"] and rerun_hint:
        why = "interrupted" if summary["interrupted"] else "not complete"
        lines.append(f"Run {why}: {summary['missing']} images missing. Rerun the same command to make only those:")
        lines.append(f"  {summary['command']}")
    return lines


def _by_folder(summary: dict[str, Any]) -> bool:
    """The folder decides where live workers take over a stopped worker's blocks (the dynamic schedule)."""
    return bool(summary.get("judged_by_folder")) and not summary["interrupted"]


def exit_status(summary: dict[str, Any], workers_ok: bool) -> int:
    """0 only when every image is on disk, no sample failed and every worker ended well (or, where the folder
    decides, its blocks were made by the others); else 1."""
    workers_ok = workers_ok or _by_folder(summary)
    return 0 if summary["missing"] == 0 and summary["failed"] == 0 and workers_ok else 1


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(argv)
