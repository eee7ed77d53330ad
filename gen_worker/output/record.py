"""What an output folder remembers between runs, and the checks a rerun must pass.

generation_settings.json holds the settings that decide the images; manifest.csv holds every
sample (index, id, seed, file, prompt). A rerun into the same folder with other settings or
other prompts would mix two experiments under the same file names: refused unless allowed.
"""
import csv
import io
import json
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from gen_worker.output import layout
from gen_worker.output.atomic_files import replace_file, replace_json
from gen_worker.naming import is_temp_name
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec, recorded_defaults
from gen_worker.errors import T2IError, one_line

if TYPE_CHECKING:
    from gen_worker.output.lock import RunLock

MANIFEST_COLUMNS = ("index", "image_id", "seed", "file_name", "prompt")


class SettingsMismatch(T2IError):
    pass


class DamagedOutputDir(T2IError):
    """A file or folder of the output folder's own layout is not what a run left there."""


def _damaged(path: str, what: str, fix: str = "restore it or move it away (it guards reruns of this folder)"
             ) -> DamagedOutputDir:
    return DamagedOutputDir(f"{path} {what}; {fix}, or use another --output_dir")


def _describe(changes: Sequence[str], limit: int = 4) -> str:
    text = "; ".join(changes[:limit])
    return text + (f"; and {len(changes) - limit} more" if len(changes) > limit else "")


def check_and_record_settings(output_dir: str, spec: JobSpec, allow_change: bool = False) -> None:
    path = os.path.join(output_dir, layout.SETTINGS_FILE)
    new = spec.recorded_settings()
    history: list[dict[str, Any]] = []
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except IsADirectoryError:
            raise _damaged(path, "is a folder") from None
        except ValueError as err:
            raise _damaged(path, f"is empty or not valid JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get("settings", {}), dict):
            raise _damaged(path, "does not hold recorded settings")
        old = {**recorded_defaults(), **record.get("settings", {})}
        history = record.get("history", [])
        changes = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
        if not changes:
            return
        if not allow_change:
            raise SettingsMismatch(
                f"{output_dir} holds images made with other settings ({_describe(changes)}); "
                "use another --output_dir, or pass --allow_settings_change to add to it anyway")
        history.append({"settings": old, "replaced_at": time.strftime("%Y-%m-%d %H:%M:%S")})
    replace_json(path, {"settings": new, "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S"), "history": history})


def read_manifest(output_dir: str) -> dict[int, dict[str, str]]:
    path = os.path.join(output_dir, layout.MANIFEST_FILE)
    if not os.path.exists(path):
        return {}
    if os.path.isdir(path):
        raise _damaged(path, "is a folder")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = {int(row["index"]): row for row in csv.DictReader(f)}
    except (ValueError, KeyError, TypeError, csv.Error) as err:
        raise _damaged(path, f"is not a manifest t2i-batch wrote ({one_line(err)})") from None
    if any(None in (row.get(c) for c in MANIFEST_COLUMNS) for row in rows.values()):
        raise _damaged(path, "is not a manifest t2i-batch wrote (missing columns)")
    return rows


def check_and_write_manifest(output_dir: str, samples: Sequence[Sample], allow_change: bool = False) -> None:
    """Refuse prompts that differ from what earlier runs generated; then record the samples."""
    old = read_manifest(output_dir)
    changes = []
    for s in samples:
        row = old.get(s.index)
        if row is not None and (row["image_id"], row["prompt"]) != (s.image_id, s.prompt):
            changes.append(f"sample {s.index} was {row['image_id']}: {row['prompt'][:40]!r}, "
                           f"now {s.image_id}: {s.prompt[:40]!r}")
    if changes and not allow_change:
        raise SettingsMismatch(
            f"the prompts differ from those {output_dir} was generated with ({_describe(changes, 2)}); "
            "use another --output_dir, or pass --allow_settings_change to add to it anyway")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for s in samples:
        writer.writerow((s.index, s.image_id, s.seed, s.file_name, s.prompt))
    for index in sorted(i for i in old if i >= len(samples)):  # keep rows a larger earlier run made
        writer.writerow(old[index][c] for c in MANIFEST_COLUMNS)
    replace_file(os.path.join(output_dir, layout.MANIFEST_FILE), buffer.getvalue().encode("utf-8"))


def remove_stale_temp_files(output_dir: str) -> None:
    """Delete temporary files left by killed workers (call only while holding the lock exclusively)."""
    for folder in (output_dir, os.path.join(output_dir, layout.LOGS_DIR)):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if is_temp_name(name):
                os.remove(os.path.join(folder, name))


def archive_previous_reports(output_dir: str) -> None:
    """Move the last run's failure lists and summaries to logs/previous/<time>/ (a new run rewrites them)."""
    names = [n for n in os.listdir(output_dir) if layout.is_report_file(n)]
    if not names:
        return
    target = os.path.join(output_dir, layout.PREVIOUS_REPORTS_DIR, time.strftime("%Y%m%d-%H%M%S"))
    suffix = 0
    while os.path.exists(target + (f"-{suffix}" if suffix else "")):
        suffix += 1
    target += f"-{suffix}" if suffix else ""
    os.makedirs(target)
    for name in names:
        os.replace(os.path.join(output_dir, name), os.path.join(target, name))


def existing_images(output_dir: str) -> set[str]:
    """Names of the finished images in the folder (one listing instead of a stat per sample)."""
    return {n for n in os.listdir(output_dir) if n.endswith(".png") and not n.startswith(".")}


def prepare_output_dir(spec: JobSpec, samples: Sequence[Sample], allow_settings_change: bool = False,
                       check: Callable[[], object] | None = None) -> "RunLock":
    """Make the folder ready for a run and return its RunLock, held exclusively.

    Refuses a folder that another run is using, or that holds images of other settings or
    prompts; then clears leftovers of killed workers and moves the last run's reports aside.
    `check()`, if given, runs once the lock is held and before anything changes (it raises to refuse).
    """
    from gen_worker.output.progress import clear_progress
    from gen_worker.output.lock import RunLock

    logs = os.path.join(spec.output_dir, layout.LOGS_DIR)
    if os.path.lexists(logs) and not os.path.isdir(logs):
        raise _damaged(logs, "is not a folder (t2i-batch keeps its logs there)", "move it away")
    os.makedirs(logs, exist_ok=True)
    lock = RunLock(spec.output_dir)
    lock.acquire_exclusive()
    try:
        if check is not None:
            check()
        check_and_record_settings(spec.output_dir, spec, allow_settings_change)
        check_and_write_manifest(spec.output_dir, samples, allow_settings_change)
        remove_stale_temp_files(spec.output_dir)
        archive_previous_reports(spec.output_dir)
        clear_progress(spec.output_dir)
    except BaseException:
        lock.release()
        raise
    return lock
