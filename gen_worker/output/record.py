"""What an output folder remembers between runs, read back: the settings record, the manifest, the images.

generation_settings.json holds the settings that decide the images; manifest.csv holds every sample (index,
row, k, id, seed, file, prompt, then the prompts file's other columns). Plain readers, used by the submitter,
the workers, `status` and evaluation/ alike; preparing a folder for a run (the checks a rerun must pass) is
output/prepare.py.
"""
import csv
import json
import os
from typing import Any

from gen_worker.errors import T2IError, one_line
from gen_worker.naming import GENEVAL_SAMPLES, is_nested_image_path
from gen_worker.output import layout, shards
from gen_worker.prompts import Sample

MANIFEST_COLUMNS = ("index", "image_id", "seed", "file_name", "prompt")  # in every manifest
# Written since --images_per_prompt: the prompt row and which of its images (absent: row = index, k = 0).


SAMPLE_COLUMNS = ("index", "row", "k", "image_id", "seed", "file_name", "prompt")


EXTRA_PREFIX = "extra_"  # a prompts-file column named like a manifest column gets this prefix


class DamagedOutputDir(T2IError):
    """A file or folder of the output folder's own layout is not what a run left there."""


def damaged(path: str, what: str, fix: str = "restore it or move it away (it guards reruns of this folder)"
             ) -> DamagedOutputDir:
    return DamagedOutputDir(f"{path} {what}; {fix}, or use another --output_dir")


def prompt_folders(output_dir: str, listing: list[str] | None = None) -> list[str]:
    """The GenEval layout's <row:05d> folders (relative names); listing: the folder's, if listed already."""
    return sorted(n for n in (os.listdir(output_dir) if listing is None else listing)
                  if n.isascii() and n.isdigit() and len(n) >= 5 and os.path.isdir(os.path.join(output_dir, n)))


def folder_images(output_dir: str) -> list[str]:
    """Every finished image, as a path relative to the folder: flat ones directly in it, GenEval ones in
    <row>/samples/ (both are looked for: a folder holds one layout, its recorded one)."""
    listing = os.listdir(output_dir)  # once: a million names take seconds to list
    names = [n for n in listing if n.endswith(".png") and not n.startswith(".")]
    for folder in prompt_folders(output_dir, listing):
        samples = os.path.join(output_dir, folder, GENEVAL_SAMPLES)
        if os.path.isdir(samples):
            names += [path for path in (f"{folder}/{GENEVAL_SAMPLES}/{n}" for n in os.listdir(samples))
                      if is_nested_image_path(path)]
    return sorted(names)


def read_settings_record(output_dir: str) -> dict[str, Any]:
    """generation_settings.json; DamagedOutputDir (one line) when it cannot be read."""
    path = os.path.join(output_dir, layout.SETTINGS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except IsADirectoryError:
        raise damaged(path, "is a folder") from None
    except ValueError as err:
        raise damaged(path, f"is empty or not valid JSON ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings", {}), dict):
        raise damaged(path, "does not hold recorded settings")
    return record


def read_manifest(output_dir: str) -> dict[int, dict[str, str]]:
    path = os.path.join(output_dir, layout.MANIFEST_FILE)
    if not os.path.exists(path):
        return {}
    if os.path.isdir(path):
        raise damaged(path, "is a folder")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = {int(row["index"]): row for row in csv.DictReader(f)}
    except (ValueError, KeyError, TypeError, csv.Error) as err:
        raise damaged(path, f"is not a manifest t2i-batch wrote ({one_line(err)})") from None
    if any(None in (row.get(c) for c in MANIFEST_COLUMNS) for row in rows.values()):
        raise damaged(path, "is not a manifest t2i-batch wrote (missing columns)")
    return rows


def manifest_row(s: Sample) -> dict[str, Any]:
    row: dict[str, Any] = {"index": s.index, "row": s.row, "k": s.k, "image_id": s.image_id, "seed": s.seed,
                           "file_name": s.file_name, "prompt": s.prompt}
    for name, value in s.extra:
        while name in row:
            name = EXTRA_PREFIX + name
        row[name] = value
    return row


def manifest_sample(row: dict[str, str]) -> Sample:
    """The sample a manifest row describes (row and k: index and 0 in a manifest from before they existed)."""
    index = int(row["index"])
    return Sample(index, row["image_id"], row["prompt"], int(row["seed"]), row["file_name"],
                  int(row.get("row") or index), int(row.get("k") or 0))


def existing_images(output_dir: str) -> set[str]:
    """Relative paths of the finished images in the folder (one listing instead of a stat per sample); with
    --output_format tar, the file names of the samples in its shards (read from their headers)."""
    return set(folder_images(output_dir)) | shards.image_names(output_dir)
