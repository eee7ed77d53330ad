"""The resume check's memory: which image files were found right, and against what, so that a resume reads
only the files that may have changed (prepare.check_existing_images).

    logs/verified_images.tsv    the last check's verdicts; its first line names the manifest.csv they were
                                checked against (a sha256 of its bytes)
    logs/written_gpu{k}.tsv     what worker k wrote since (each image right by construction), against the
                                manifest the verdicts' first line names

A line is a file's state (path, size, mtime, ctime, inode: any write changes the ctime, even one that restores
the size and mtime) and what it was verified against: provenance.row_key of its manifest row and
provenance.settings_key of the settings and model it was made with. A line vouches for a file only while the
file is in that state, its manifest row is still that row, and those settings and that model are still ones the
folder accepts: a verification never outlives the records it was checked against.
"""
import hashlib
import os
from typing import Dict, Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple

from gen_worker.output import layout
from gen_worker.atomic_files import replace_file

HEADER = "# t2i-batch verified images; manifest.csv sha256 "
ADOPTED = "adopted"  # the settings key of an adopted image without provenance (its settings are the adoption's)
UNBOUND = "unbound:"  # before the settings key of an image whose provenance has no image record (format 1)


class Entry(NamedTuple):
    text: str  # the line, without its newline: a million lines are kept whole, not split into fields
    # True when the line was checked against the manifest that is there now (its row_key needs no recomputing).
    same_manifest: bool

    @property
    def row_key(self) -> str:
        return self.text.rsplit("\t", 2)[1]

    @property
    def settings_key(self) -> str:
        return self.text.rsplit("\t", 2)[2]


def _state(name: str, st: os.stat_result) -> str:
    return f"{name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t{st.st_ino}"


def file_state(output_dir: str, name: str) -> str:
    return _state(name, os.stat(os.path.join(output_dir, name)))


def file_states(output_dir: str, names: Iterable[str]) -> Iterator[str]:
    """file_state of each name in turn (each looked up from the open folder: no path built per file)."""
    folder = os.open(output_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            yield _state(name, os.stat(name, dir_fd=folder))
    finally:
        os.close(folder)


def text(state: str, row_key: str, settings_key: str) -> str:
    return f"{state}\t{row_key}\t{settings_key}"


def line(state: str, row_key: str, settings_key: str) -> str:
    return text(state, row_key, settings_key) + "\n"


def manifest_digest(output_dir: str) -> str:
    """sha256 of manifest.csv's bytes ("" when there is none)."""
    try:
        with open(os.path.join(output_dir, layout.MANIFEST_FILE), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return ""


def _entries(path: str, manifest: str, bound: Optional[bool] = None) -> Tuple[Dict[str, Entry], bool]:
    """A file's lines, and whether they are bound to the manifest that is there now: `bound`, else whether the
    file's first line names it."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return {}, False
    same_manifest = bool(lines) and lines[0] == HEADER + manifest if bound is None else bound
    lines = lines[1:] if lines and lines[0].startswith("#") else lines
    # 7 fields (older formats, 4 fields: no binding, are read again once)
    return {text[:text.index("\t")]: Entry(text, same_manifest) for text in lines if text.count("\t") == 6}, same_manifest


def load(output_dir: str, manifest: str) -> Dict[str, Entry]:
    """{relative path: Entry} of the last check's verdicts and the workers' lines since (those win: newer).
    The workers wrote theirs after the last check, against the manifest it names (a manifest changes only under
    the folder's exclusive lock, with no worker running; save() removes their files before it names another):
    their lines are bound to it too, their row keys need no recomputing while it is still the manifest."""
    logs = os.path.join(output_dir, layout.LOGS_DIR)
    entries, same_manifest = _entries(os.path.join(output_dir, layout.VERIFIED_FILE), manifest)
    for name in sorted(os.listdir(logs)):
        if name.startswith("written_gpu") and name.endswith(".tsv"):
            entries.update(_entries(os.path.join(logs, name), manifest, same_manifest)[0])
    return entries


def vouches(entry: Optional[Entry], state: str, row_key: str, settings_keys: Iterable[str]) -> bool:
    """Whether a cached line still vouches for a file now in `state` whose manifest row has row_key."""
    if entry is None:
        return False
    vouched = f"{state}\t{row_key}\t"  # the line's start; its settings key follows
    return entry.text.startswith(vouched) and entry.text[len(vouched):] in settings_keys


def save(output_dir: str, manifest: str, texts: Sequence[str]) -> None:
    """The check's verdicts (lines without their newline) replace the last ones; the workers' lines are folded
    in (call with the lock held)."""
    logs = os.path.join(output_dir, layout.LOGS_DIR)
    for name in os.listdir(logs):  # first: a crash in between loses their lines (images read again), never
        if name.startswith("written_gpu"):  # leaves lines of an older manifest under a newer one's name
            os.remove(os.path.join(logs, name))
    replace_file(os.path.join(output_dir, layout.VERIFIED_FILE),
                 "\n".join([HEADER + manifest, *texts, ""]).encode("utf-8"))
