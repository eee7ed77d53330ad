"""A folder made ready for a run, and the checks a rerun must pass.

A rerun into the same folder with other settings or other prompts would mix two experiments under the same
file names: refused unless allowed. Every file under an image name must be one this run would make (the
resume check, check_existing_images); anything else is quarantined and made again. In the GenEval layout each
prompt row's folder holds its metadata.jsonl.
"""
import csv
import hashlib
import io
import json
import operator
import os
import shutil
import time
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from gen_worker.atomic_files import replace_file, replace_json
from gen_worker.errors import T2IError
from gen_worker.model_check import changed_components
from gen_worker.naming import GENEVAL_METADATA, GENEVAL_SAMPLES, is_temp_name, prompt_folder
from gen_worker.output import layout, provenance, shard_check, shards, verification_cache
from gen_worker.output.lock import RunLock
from gen_worker.output.png_file import DamagedPng
from gen_worker.output.progress import clear_progress
from gen_worker.output.record import (SAMPLE_COLUMNS, damaged, folder_images, manifest_row, manifest_sample,
                                      prompt_folders, read_manifest, read_settings_record)
from gen_worker.output.verification_cache import ADOPTED, UNBOUND
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec, recorded_defaults

class SettingsMismatch(T2IError):
    pass


def _describe(changes: Sequence[str], limit: int = 4) -> str:
    text = "; ".join(changes[:limit])
    return text + (f"; and {len(changes) - limit} more" if len(changes) > limit else "")


def _model_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """How the model's content differs from the one the folder's images were made with (None: same, or unknown)."""
    if not old.get("fingerprint") or not new.get("fingerprint") or old["fingerprint"] == new["fingerprint"]:
        return None
    changed = changed_components(old.get("components", {}), new.get("components", {}))
    return f"model content: {', '.join(changed) or 'files'} changed ({old['fingerprint']} -> {new['fingerprint']})"


def check_and_record_settings(output_dir: str, spec: JobSpec, allow_change: bool = False,
                              adopt_existing: bool = False, samples: Sequence[Sample] = ()) -> list[dict[str, Any]]:
    """Refuse a folder made with other settings or another model; record this run's. Returns the
    settings an image in the folder may have been made with (this run's first, then earlier ones
    that --allow_settings_change added to). An adoption records each adopted image's manifest row
    (row_key): an image without provenance stands only for the sample it was taken in as."""
    path = os.path.join(output_dir, layout.SETTINGS_FILE)
    new = spec.recorded_settings()
    history: list[dict[str, Any]] = []
    record: dict[str, Any] = {}
    if os.path.exists(path):
        record = read_settings_record(output_dir)
        shard_check.check_output_format(output_dir, record, spec)
        old = {**recorded_defaults(), **record.get("settings", {})}
        history = record.get("history", [])
        same_model = bool(spec.model_identity.get("fingerprint")) and (
            record.get("model", {}).get("fingerprint") == spec.model_identity["fingerprint"])
        changes = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new
                   if old.get(k) != new[k] and not (k == "model_path" and same_model)]
        model_change = _model_change(record.get("model", {}), spec.model_identity)
        changes += [model_change] if model_change else []
        if changes and not allow_change:
            raise SettingsMismatch(
                f"{output_dir} holds images made with other settings ({_describe(changes)}); "
                "use another --output_dir, or pass --allow_settings_change to add to it anyway")
        if changes:
            history.append({"settings": old, "model": record.get("model", {}),
                            "replaced_at": time.strftime("%Y-%m-%d %H:%M:%S")})
    else:
        images = folder_images(output_dir)
        if images and not adopt_existing:
            raise SettingsMismatch(
                f"{output_dir} holds {len(images)} images but no {layout.SETTINGS_FILE} (made by another tool "
                "or the original script?): use another --output_dir, or pass --adopt_existing to keep the valid "
                "ones as made with this run's settings")
        if images:
            rows = {s.file_name: provenance.row_key(manifest_row(s)) for s in samples}
            record["adopted"] = {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "files": images,
                                 "rows": {name: rows[name] for name in images if name in rows}}
    replace_json(path, {"settings": new, "model": spec.model_identity, "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                        shard_check.OUTPUT_KEY: shard_check.output_record(spec),
                        "history": history, **({"adopted": record["adopted"]} if "adopted" in record else {})})
    return [new] + [h["settings"] for h in reversed(history)]


class ManifestRows:
    """The manifest as just written, by image name: this run's samples (no dict per row: a million rows as dicts
    take gigabytes), and the rows a larger earlier run made, as text. `digest`: manifest.csv's sha256."""

    def __init__(self, samples: Sequence[Sample], kept: Iterable[dict[str, str]], digest: str) -> None:
        self.samples = {s.file_name: s for s in samples}
        self.kept = {row["file_name"]: row for row in kept}
        self.digest = digest

    def __contains__(self, name: str) -> bool:
        return name in self.samples or name in self.kept

    def row_key(self, name: str) -> str:
        s = self.samples.get(name)
        return provenance.row_key(manifest_row(s) if s is not None else self.kept[name])

    def sample(self, name: str) -> Sample:
        s = self.samples.get(name)
        return s if s is not None else manifest_sample(self.kept[name])

    def names(self) -> Iterator[str]:
        yield from self.samples
        yield from self.kept


def _manifest_bytes(samples: Sequence[Sample], kept: Sequence[dict[str, Any]]) -> bytes:
    """manifest.csv: a row per sample (manifest_row's columns, without a dict per sample), then the kept rows."""
    base = operator.attrgetter(*SAMPLE_COLUMNS)
    extra_names: dict[tuple[str, ...], tuple[str, ...]] = {}  # a sample's extra columns -> their manifest names
    for s in samples:
        names = tuple(n for n, _ in s.extra)
        if names not in extra_names:
            extra_names[names] = tuple(manifest_row(s))[len(SAMPLE_COLUMNS):]
    columns = list(dict.fromkeys([*SAMPLE_COLUMNS, *(c for names in extra_names.values() for c in names),
                                  *(c for row in kept for c in row)]))
    extra_columns = columns[len(SAMPLE_COLUMNS):]
    positions = {names: [extra_columns.index(c) for c in named] for names, named in extra_names.items()}

    def sample_rows() -> Iterator[Sequence[Any]]:
        for s in samples:
            cells = [""] * len(extra_columns)
            for position, (_, value) in zip(positions[tuple(n for n, _ in s.extra)], s.extra):
                cells[position] = value
            yield (*base(s), *cells)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    if extra_columns:
        writer.writerows(sample_rows())
    else:  # the usual prompts file: id and prompt only
        writer.writerows(map(base, samples))
    writer.writerows([row.get(c, "") for c in columns] for row in kept)
    return buffer.getvalue().encode("utf-8")


def check_and_write_manifest(output_dir: str, samples: Sequence[Sample], allow_change: bool = False
                             ) -> ManifestRows:
    """Refuse prompts that differ from what earlier runs generated; then record the samples. Returns the rows
    written (not read back: a million rows take seconds)."""
    path = os.path.join(output_dir, layout.MANIFEST_FILE)
    new = _manifest_bytes(samples, [])
    try:
        with open(path, "rb") as f:
            same = f.read() == new  # a rerun of the same prompts: nothing to compare row by row
    except (FileNotFoundError, IsADirectoryError):
        same = False
    if same:
        return ManifestRows(samples, [], hashlib.sha256(new).hexdigest())
    old = read_manifest(output_dir)
    made_for = old or _samples_said_by_images(output_dir)  # a deleted manifest: the images still say
    changes = []
    for s in samples:
        row = made_for.get(s.index)
        if row is not None and (row["image_id"], row["prompt"]) != (s.image_id, s.prompt):
            changes.append(f"sample {s.index} was {row['image_id']}: {row['prompt'][:40]!r}, "
                           f"now {s.image_id}: {s.prompt[:40]!r}")
    if changes and not allow_change:
        raise SettingsMismatch(
            f"the prompts differ from those {output_dir} was generated with ({_describe(changes, 2)}); "
            "use another --output_dir, or pass --allow_settings_change to add to it anyway")
    kept = [old[i] for i in sorted(old) if i >= len(samples)]  # keep rows a larger earlier run made
    new = _manifest_bytes(samples, kept) if kept else new
    replace_file(path, new)
    return ManifestRows(samples, kept, hashlib.sha256(new).hexdigest())


def _samples_said_by_images(output_dir: str) -> dict[int, dict[str, str]]:
    """{index: {image_id, prompt}} as the folder's images' provenance says (for a folder whose manifest is gone;
    images that are damaged or carry none are left to the resume check)."""
    said = {}
    for name in folder_images(output_dir):
        try:
            found = provenance.read(os.path.join(output_dir, name))
        except (DamagedPng, OSError):
            continue
        if found is not None and isinstance(found.get("index"), int):
            said[found["index"]] = {"image_id": str(found.get("image_id")), "prompt": str(found.get("prompt"))}
    return said


def write_prompt_folders(output_dir: str, samples: Sequence[Sample]) -> None:
    """GenEval layout: each prompt row's folder, its metadata.jsonl (the row as one JSON object, rewritten only
    when it changed) and its samples/ folder, made before any worker writes an image there."""
    for s in {s.row: s for s in samples}.values():  # one sample per row
        folder = os.path.join(output_dir, prompt_folder(s.row))
        images_dir = os.path.join(folder, GENEVAL_SAMPLES)
        try:
            os.makedirs(images_dir, exist_ok=True)
        except FileExistsError:
            raise damaged(images_dir if os.path.isdir(folder) else folder, "is not a folder", "move it away") from None
        path, data = os.path.join(folder, GENEVAL_METADATA), (s.metadata + "\n").encode("utf-8")
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise damaged(path, "is a folder", "move it away") from None
        replace_file(path, data)


def remove_stale_temp_files(output_dir: str) -> None:
    """Delete temporary files left by killed workers (call only while holding the lock exclusively)."""
    listing = os.listdir(output_dir)  # once: a million names take a second to list
    nested = [os.path.join(output_dir, f, sub) for f in prompt_folders(output_dir, listing)
              for sub in ("", GENEVAL_SAMPLES)]
    for folder in [output_dir, os.path.join(output_dir, layout.LOGS_DIR), os.path.join(output_dir, shards.SHARDS_DIR)
                   ] + nested:
        if not os.path.isdir(folder):
            continue
        for name in listing if folder == output_dir else os.listdir(folder):
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


def _adoption_holds(adopted: dict[str, Any], name: str, row_key: str) -> bool:
    """An adopted image without provenance stands for the manifest row it was adopted as (any row, for an
    adoption recorded before rows were)."""
    if name not in adopted.get("files", ()):
        return False
    rows = adopted.get("rows")
    return rows is None or rows.get(name) == row_key


def check_existing_images(spec: JobSpec, accepted_settings: list[dict[str, Any]],
                          manifest_rows: ManifestRows | None = None) -> dict[str, Any]:
    """Keep only images this folder's run would make: every file under an image name must be a whole
    PNG whose provenance matches its own pixels, its manifest sample, the model and the recorded
    settings (or be one that --adopt_existing took in for that sample). Anything else is moved to
    quarantine/ (never deleted; renamed so that no *.png glob finds it) and made again. Returns the
    check's report (logs/resume_check.json).

    A file found right before, or written by a worker, is not read again while its verification_cache line
    still vouches for it: the same file, the same manifest row, settings and a model the folder still accepts.
    A changed prompts file, settings record or manifest (edited, deleted, --allow_settings_change,
    --adopt_existing) thus re-reads the images it concerns; a resume over 30,000 unchanged images takes a
    second, not a disk's read of them all."""
    out = spec.output_dir
    # manifest_rows: the manifest just written (not read back: a million rows take seconds).
    rows = manifest_rows or ManifestRows([], read_manifest(out).values(), verification_cache.manifest_digest(out))
    manifest = rows.digest
    cached = verification_cache.load(out, manifest)
    settings_record = read_settings_record(out)
    adopted = settings_record.get("adopted", {})
    # This run's model, and those that --allow_settings_change added to the folder before.
    fingerprints = [spec.model_identity.get("fingerprint")] + [
        h.get("model", {}).get("fingerprint") for h in settings_record.get("history", [])]
    keys = {(i, f): provenance.settings_key(s, f) for i, s in enumerate(accepted_settings) for f in fingerprints}
    accepted = set(keys.values()) | {UNBOUND + key for key in keys.values()}
    accepted_or_adopted = accepted | {ADOPTED}

    def verify(found: dict[str, Any] | None, image: dict[str, Any], sample: Sample) -> str:
        """The settings key an image was made with (UNBOUND: its provenance has no pixel record); NotThisRun."""
        key = keys[provenance.made_with(found, image, sample, fingerprints, accepted_settings)]
        return key if found and "image" in found else UNBOUND + key

    started, rejected, names, good, read, unbound = time.time(), [], folder_images(out), [], 0, 0
    for name, state in zip(names, verification_cache.file_states(out, names)):
        listed, entry = name in rows, cached.get(name)
        row_key = "" if not listed else entry.row_key if entry and entry.same_manifest else rows.row_key(name)
        settings_keys = accepted_or_adopted if adopted and _adoption_holds(adopted, name, row_key) else accepted
        if listed and verification_cache.vouches(entry, state, row_key, settings_keys):
            assert entry is not None
            key, same_line = entry.settings_key, entry.text
        else:
            same_line = None
            read += 1
            try:
                found, image = provenance.inspect(os.path.join(out, name))
                if not listed:
                    raise provenance.NotThisRun("not a sample of this folder's manifest")
                if found is None and ADOPTED in settings_keys:
                    key = ADOPTED
                else:
                    key = verify(found, image, rows.sample(name))
            except DamagedPng as err:
                rejected.append((name, f"not a whole PNG: {err}"))
                continue
            except OSError as err:
                rejected.append((name, f"unreadable: {err.strerror}"))
                continue
            except provenance.NotThisRun as err:
                rejected.append((name, str(err)))
                continue
        unbound += key == ADOPTED or key.startswith(UNBOUND)
        good.append(same_line or verification_cache.text(state, row_key, key))  # (the same line: no new string)
    # --output_format tar: each shard checked whole, like one image (output/shard_check.py)
    shard_lines, shard_rejected, shards_read = shard_check.check_shards(
        out, rows, spec.shard_size, cached, accepted, verify)
    good += shard_lines
    rejected += shard_rejected
    report = {"checked": len(names), "read": read, "seconds": round(time.time() - started, 3),
              "shards_checked": len(shard_lines) + len(shard_rejected), "shards_read": shards_read,
              "pixels_unchecked": unbound, "quarantined": _quarantine(out, rejected)}
    verification_cache.save(out, manifest, good)
    replace_json(os.path.join(out, layout.RESUME_CHECK_FILE), report)
    return report


def _quarantine(output_dir: str, rejected: list[tuple[str, str]]) -> list[dict[str, str]]:
    if not rejected:
        return []
    folder = os.path.join(output_dir, layout.QUARANTINE_DIR, time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(folder, exist_ok=True)
    moved = []
    for name, why in rejected:
        target = os.path.join(folder, name + layout.QUARANTINE_SUFFIX)
        os.makedirs(os.path.dirname(target), exist_ok=True)  # GenEval layout: <row>/samples/ kept inside
        os.replace(os.path.join(output_dir, name), target)
        moved.append({"file": name, "reason": why, "moved_to": os.path.relpath(target, output_dir)})
    with open(os.path.join(folder, "reasons.json"), "w", encoding="utf-8") as f:
        json.dump(moved, f, indent=2, ensure_ascii=False)
    return moved


class PreparedRun(NamedTuple):
    """One output folder ready for a run's workers: a plain run, or one configuration of a sweep."""
    spec: JobSpec
    samples: Sequence[Sample]
    lock: RunLock  # held exclusively (a new run), or shared when joining a run under way


def forget_block_queue(output_dir: str) -> None:
    """The last run's block queue (--schedule dynamic, claims/): its done blocks may have failed samples, and
    its heartbeats and worker indices are of workers gone (call with the folder locked exclusively)."""
    shutil.rmtree(os.path.join(output_dir, layout.CLAIMS_DIR), ignore_errors=True)


def prepare_output_dir(spec: JobSpec, samples: Sequence[Sample], allow_settings_change: bool = False,
                       check: Callable[[], object] | None = None, adopt_existing: bool = False) -> RunLock:
    """Make the folder ready for a run and return its RunLock, held exclusively.

    Refuses a folder that another run is using, or that holds images of other settings or
    prompts; then clears leftovers of killed workers and moves the last run's reports aside.
    `check()`, if given, runs once the lock is held and before anything changes (it raises to refuse).
    """
    logs = os.path.join(spec.output_dir, layout.LOGS_DIR)
    if os.path.lexists(logs) and not os.path.isdir(logs):
        raise damaged(logs, "is not a folder (t2i-batch keeps its logs there)", "move it away")
    os.makedirs(logs, exist_ok=True)
    lock = RunLock(spec.output_dir)
    lock.acquire_exclusive()
    try:
        if check is not None:
            check()
        accepted = check_and_record_settings(spec.output_dir, spec, allow_settings_change, adopt_existing, samples)
        manifest_rows = check_and_write_manifest(spec.output_dir, samples, allow_settings_change)
        if spec.layout == "geneval":
            write_prompt_folders(spec.output_dir, samples)
        check_existing_images(spec, accepted, manifest_rows)
        remove_stale_temp_files(spec.output_dir)
        archive_previous_reports(spec.output_dir)
        clear_progress(spec.output_dir)
        forget_block_queue(spec.output_dir)
    except BaseException:
        lock.release()
        raise
    return lock
