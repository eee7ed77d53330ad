"""The resume check's memory: which image files were found right, and against what, so that a resume reads
only the files that may have changed (prepare.check_existing_images).

    logs/verified_images.tsv    the last check's verdicts; its first line names the manifest.csv they were
                                checked against (a sha256 of its bytes)
    logs/written_gpu{k}.tsv     what worker k wrote since (each image right by construction)

A line is a file's state (path, size, mtime, ctime, inode: any write changes the ctime, even one that restores
the size and mtime) and what it was verified against: provenance.row_key of its manifest row and
provenance.settings_key of the settings and model it was made with. A line vouches for a file only while the
file is in that state, its manifest row is still that row, and those settings and that model are still ones the
folder accepts: a verification never outlives the records it was checked against.
"""
import hashlib
import os
from typing import Dict, Iterable, NamedTuple, Optional

from gen_worker.output import layout
from gen_worker.atomic_files import replace_file

HEADER = "# t2i-batch verified images; manifest.csv sha256 "
ADOPTED = "adopted"  # the settings key of an adopted image without provenance (its settings are the adoption's)
UNBOUND = "unbound:"  # before the settings key of an image whose provenance has no image record (format 1)


class Entry(NamedTuple):
    state: str
    row_key: str
    settings_key: str
    # True when the line was checked against the manifest that is there now (its row_key needs no recomputing).
    same_manifest: bool


def file_state(output_dir: str, name: str) -> str:
    st = os.stat(os.path.join(output_dir, name))
    return f"{name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t{st.st_ino}"


def line(state: str, row_key: str, settings_key: str) -> str:
    return f"{state}\t{row_key}\t{settings_key}\n"


def manifest_digest(output_dir: str) -> str:
    """sha256 of manifest.csv's bytes ("" when there is none)."""
    try:
        with open(os.path.join(output_dir, layout.MANIFEST_FILE), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return ""


def _entries(path: str, same_manifest: bool, manifest: str) -> Dict[str, Entry]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return {}
    if lines and lines[0].startswith("#"):
        same_manifest = same_manifest and lines[0] == HEADER + manifest
        lines = lines[1:]
    found = {}
    for text in lines:
        fields = text.split("\t")
        if len(fields) == 7:  # older formats (4 fields: no binding) are read again once
            found[fields[0]] = Entry("\t".join(fields[:5]), fields[5], fields[6], same_manifest)
    return found


def load(output_dir: str, manifest: str) -> Dict[str, Entry]:
    """{relative path: Entry} of the last check's verdicts and the workers' lines since (those win: newer)."""
    logs = os.path.join(output_dir, layout.LOGS_DIR)
    entries = _entries(os.path.join(output_dir, layout.VERIFIED_FILE), True, manifest)
    for name in sorted(os.listdir(logs)):
        if name.startswith("written_gpu") and name.endswith(".tsv"):
            entries.update(_entries(os.path.join(logs, name), False, manifest))
    return entries


def vouches(entry: Optional[Entry], state: str, row_key: str, settings_keys: Iterable[str]) -> bool:
    """Whether a cached line still vouches for a file now in `state` whose manifest row has row_key."""
    return entry is not None and entry.state == state and entry.row_key == row_key \
        and entry.settings_key in settings_keys


def save(output_dir: str, manifest: str, lines: Iterable[str]) -> None:
    """The check's verdicts replace the last ones; the workers' lines are folded in (call with the lock held)."""
    replace_file(os.path.join(output_dir, layout.VERIFIED_FILE),
                 (HEADER + manifest + "\n" + "".join(lines)).encode("utf-8"))
    logs = os.path.join(output_dir, layout.LOGS_DIR)
    for name in os.listdir(logs):
        if name.startswith("written_gpu"):
            os.remove(os.path.join(logs, name))
