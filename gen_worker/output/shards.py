"""The tar output format (--output_format tar): WebDataset shards, the one definition of their layout.

    output_dir/shards/000000.tar     samples 0 .. shard_size-1, shards/000001.tar the next shard_size, ...

A shard's number is its first sample index // shard_size (6 digits, more past 999,999). For each sample,
in sample order, two members: `{key}.png`, exactly the bytes of the PNG the png layout would write, and
`{key}.json`, the sample's provenance and its manifest row (UTF-8 JSON, sorted keys). The key is the png
layout's file name without `.png` (`000123_seed42`) with every `.` made `,`: WebDataset splits a member
name at the first dot of its base name, and no file stem holds a comma (naming.file_stem), so the key
maps back to the stem (stem_of). Headers are fixed (mtime 0, uid/gid 0, no user names, mode 0644, GNU
format for long names), so the same samples give the same bytes. A shard is written once, whole, under
a temporary name, and linked to its final name (atomic_files.create_once): never replaced, never
appended to. Reading its index walks the 512-byte headers and seeks over the data.
"""
import io
import json
import os
import re
import tarfile
from typing import IO, Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from gen_worker.atomic_files import create_once
from gen_worker.errors import T2IError

SHARDS_DIR = "shards"
SHARD_SUFFIX = ".tar"
SHARD_DIGITS = 6
_SHARD_NAME = re.compile(r"[0-9]{%d,}\.tar" % SHARD_DIGITS)
BLOCK = 512
_FORMAT = tarfile.GNU_FORMAT  # USTAR limits names to 100 bytes; GNU adds a long-name member only when needed


class DamagedShard(T2IError):
    """Not a whole shard (truncated, corrupt, or members that are not png/json pairs); the message says why."""


class Member(NamedTuple):
    stem: str  # the png layout's stem (dots restored)
    name: str  # the member's name in the tar (`{key}.png`)
    offset: int  # where its data starts in the file
    size: int


def shard_name(index: int) -> str:
    return f"{index:0{SHARD_DIGITS}d}{SHARD_SUFFIX}"


def shard_index(sample_index: int, shard_size: int) -> int:
    return sample_index // shard_size


def shard_path(output_dir: str, index: int) -> str:
    return os.path.join(output_dir, SHARDS_DIR, shard_name(index))


def parse_shard_name(name: str) -> Optional[int]:
    """shard_name's inverse: '000012.tar' -> 12; None for any other name (temporary files included)."""
    return int(name[:-len(SHARD_SUFFIX)]) if _SHARD_NAME.fullmatch(name) else None


def key_of(stem: str) -> str:
    """A WebDataset key for a file stem: no dots (WebDataset's extension starts at the first one)."""
    return stem.replace(".", ",")


def stem_of(key: str) -> str:
    """key_of's inverse (file stems never hold a comma)."""
    return key.replace(",", ".")


def json_bytes(record: Dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _header(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_tar(f: IO[bytes], samples: Iterable[Tuple[str, bytes, Dict[str, Any]]]) -> None:
    """Write the shard of `samples` ((stem, png bytes, json record), in sample order) to an open binary file."""
    with tarfile.open(fileobj=f, mode="w", format=_FORMAT) as tar:
        for stem, png, record in samples:
            key = key_of(stem)
            for name, data in ((f"{key}.png", png), (f"{key}.json", json_bytes(record))):
                tar.addfile(_header(name, len(data)), io.BytesIO(data))


def write_shard(path: str, samples: Iterable[Tuple[str, bytes, Dict[str, Any]]]) -> bool:
    """Write a whole shard at `path` atomically; False (nothing written) if a shard is already there."""
    return create_once(path, lambda f: write_tar(f, samples))


def _number(field: bytes, what: str, path: str) -> int:
    if field[:1] == b"\x80":  # GNU base-256 for values too large for octal
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise DamagedShard(f"{path}: corrupt tar header (its {what} is not a number)") from None


def read_index(path: str) -> List[Member]:
    """Every member of a shard (the stem, name, data offset and size), read from the headers alone;
    DamagedShard if the file is not a whole tar archive."""
    members: List[Member] = []
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        pos, long_name = 0, None
        while True:
            f.seek(pos)
            header = f.read(BLOCK)
            if len(header) < BLOCK:
                raise DamagedShard(f"{path}: truncated (no end-of-archive block after {len(members)} members)")
            if header == bytes(BLOCK):
                return members
            if _number(header[148:156], "checksum", path) != sum(header[:148]) + 8 * 32 + sum(header[156:]):
                raise DamagedShard(f"{path}: corrupt tar header at byte {pos} (bad checksum)")
            size = _number(header[124:136], "size", path)
            kind = header[156:157]
            data_at = pos + BLOCK
            if data_at + size > end:
                raise DamagedShard(f"{path}: truncated (member at byte {pos} is cut short)")
            pos = data_at + (size + BLOCK - 1) // BLOCK * BLOCK
            if kind == tarfile.GNUTYPE_LONGNAME:
                f.seek(data_at)
                long_name = f.read(size).split(b"\0", 1)[0].decode("utf-8")
                continue
            if kind not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                raise DamagedShard(f"{path}: holds a member that is not a file (type {kind!r})")
            name = long_name or _ustar_name(header)
            long_name = None
            stem, dot, extension = name.partition(".")
            if not dot or "/" in name:
                raise DamagedShard(f"{path}: member {name!r} is no `key.extension` of a shard")
            members.append(Member(stem_of(stem), name, data_at, size))


def _ustar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0].decode("utf-8")
    prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
    return f"{prefix.decode('utf-8')}/{name}" if prefix else name


def sample_index(path: str) -> List[Tuple[str, Member, Member]]:
    """(stem, png member, json member) for each sample of a shard, in order; DamagedShard if a sample's
    members are not a `.png` followed by its `.json`."""
    members = read_index(path)
    if len(members) % 2:
        raise DamagedShard(f"{path}: {len(members)} members, not png/json pairs")
    out = []
    for png, record in zip(members[0::2], members[1::2]):
        if not (png.name.endswith(".png") and record.name == png.name[:-len(".png")] + ".json"):
            raise DamagedShard(f"{path}: members {png.name!r}, {record.name!r} are not a sample's png and json")
        out.append((png.stem, png, record))
    return out


def read_member(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DamagedShard(f"{path}: truncated (member at byte {offset} is cut short)")
    return data


def iter_samples(path: str) -> Iterator[Tuple[str, bytes, Dict[str, Any]]]:
    """(stem, png bytes, json record) of each sample of a shard, in order."""
    index = sample_index(path)
    with open(path, "rb") as f:
        for stem, png, record in index:
            f.seek(png.offset)
            png_bytes = f.read(png.size)
            f.seek(record.offset)
            try:
                value = json.loads(f.read(record.size).decode("utf-8"))
            except ValueError:
                raise DamagedShard(f"{path}: member {record.name!r} is not JSON") from None
            yield stem, png_bytes, value


def shard_files(output_dir: str) -> List[str]:
    """The shards of a folder, as paths relative to it (`shards/000000.tar`), in order."""
    folder = os.path.join(output_dir, SHARDS_DIR)
    if not os.path.isdir(folder):
        return []
    return [f"{SHARDS_DIR}/{n}" for n in sorted(os.listdir(folder)) if parse_shard_name(n) is not None]


def image_names(output_dir: str) -> set[str]:
    """The png layout's file name of every sample in the folder's whole shards (a damaged shard has none: the
    resume check quarantines it)."""
    names: set[str] = set()
    for shard in shard_files(output_dir):
        try:
            names.update(stem + ".png" for stem, _, _ in sample_index(os.path.join(output_dir, shard)))
        except (DamagedShard, OSError):
            continue
    return names


def sample_record(manifest_row: Dict[str, Any], provenance: Dict[str, Any]) -> Dict[str, Any]:
    """A sample's `.json` member: its manifest row's columns (index, prompt, image_id, seed, the prompts file's
    other columns) as text, as manifest.csv holds them (an empty cell is left out), so that `submit.py pack`
    writes the same from manifest.csv; and, under "t2i-batch", the provenance its PNG carries."""
    columns = {k: text for k, v in manifest_row.items() if (text := "" if v is None else str(v))}
    return {**columns, PROVENANCE_KEY: provenance}


PROVENANCE_KEY = "t2i-batch"  # provenance.PNG_KEY, the same JSON as the PNG's text chunk
