"""`submit.py pack DIR` and `submit.py unpack DIR`: a finished folder from one output format to the other.

pack turns a finished PNG folder (--output_format png, flat layout: every manifest sample's image there) into
the tar format's shards (output/shards.py): each PNG member is the file's bytes, its JSON member what a worker
writes (the manifest row and the PNG's provenance). unpack writes each PNG member back under its file name.
Either way the originals are removed only once the new files are read back and found byte for byte equal, and
the folder's record says its new format first, so an interrupted pack or unpack is finished by running it again.
The folder is locked (no run may be under way) throughout.
"""
import argparse
import functools
import hashlib
import os
import sys
from typing import IO, Dict, List, Sequence

from gen_worker.atomic_files import create_once, replace_json
from gen_worker.errors import T2IError, UsageError, run_cli
from gen_worker.output import layout, shard_check, shards
from gen_worker.output.lock import RunLock
from gen_worker.output.png_file import DamagedPng
from gen_worker.output.provenance import PNG_KEY, inspect_bytes
from gen_worker.output.record import read_manifest, read_settings_record


class NotFinished(T2IError):
    """The folder is not a finished run of the format to convert from."""


def _write(data: bytes, f: IO[bytes]) -> None:
    f.write(data)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _record_format(output_dir: str, record: Dict, output: Dict) -> None:
    replace_json(os.path.join(output_dir, layout.SETTINGS_FILE), {**record, shard_check.OUTPUT_KEY: output})


def _rows(output_dir: str, record: Dict) -> List[Dict[str, str]]:
    if record.get("settings", {}).get("layout", "flat") != "flat":
        raise NotFinished(f"{output_dir} has the GenEval layout, a folder per prompt: it stays PNG files")
    manifest = read_manifest(output_dir)
    if not manifest:
        raise NotFinished(f"{output_dir} has no {layout.MANIFEST_FILE}: not a t2i-batch output folder")
    return [manifest[i] for i in sorted(manifest)]


def pack(output_dir: str, shard_size: int) -> str:
    record = read_settings_record(output_dir)
    rows = _rows(output_dir, record)
    batch = int(record.get("settings", {}).get("batch_size", 1))
    if shard_size < 1 or shard_size % batch:
        raise UsageError(f"--shard_size {shard_size} must be a multiple of the folder's --batch_size {batch}")
    output = record.get(shard_check.OUTPUT_KEY) or {"format": "png"}
    target = {"format": "tar", "shard_size": shard_size}
    if output not in ({"format": "png"}, target) or "unpacked_from" in output:
        raise NotFinished(f"{output_dir} is already in shards ({output}); `submit.py unpack` first to repack it")
    resuming = output == target  # an interrupted pack: its shards are written, some PNG files are left
    missing = [row["file_name"] for row in rows if not os.path.exists(os.path.join(output_dir, row["file_name"]))]
    if missing and not resuming:
        raise NotFinished(f"{output_dir} is not finished: {len(missing)} of {len(rows)} images are missing (e.g. "
                          f"{missing[0]}); rerun it first (pack keeps only whole runs)")
    if not resuming and shards.shard_files(output_dir):
        raise NotFinished(f"{output_dir} holds shards/ already, though its record says png: move them away")
    os.makedirs(os.path.join(output_dir, shards.SHARDS_DIR), exist_ok=True)
    for start in range(0, len(rows), shard_size) if not resuming else ():
        path = shards.shard_path(output_dir, shards.shard_index(start, shard_size))
        samples = []
        for row in rows[start:start + shard_size]:
            data = _read(os.path.join(output_dir, row["file_name"]))
            try:
                found, _ = inspect_bytes(data)
            except DamagedPng as err:
                raise NotFinished(f"{row['file_name']} is not a whole PNG ({err}): rerun the folder first") from None
            if found is None:
                raise NotFinished(f"{row['file_name']} has no {PNG_KEY} provenance (adopted?): it stays a PNG file")
            samples.append((row["file_name"][:-len(".png")], data, shards.sample_record(row, found)))
        if not shards.write_shard(path, samples):
            raise NotFinished(f"{path} exists already: move it away")
    _check_shards(output_dir, rows, shard_size)
    _record_format(output_dir, record, target)
    _remove_pngs(output_dir, rows)
    return f"packed {len(rows)} images of {output_dir} into {-(-len(rows) // shard_size)} shards of {shard_size}"


def _check_shards(output_dir: str, rows: Sequence[Dict[str, str]], shard_size: int) -> None:
    """Every shard holds its samples in order, each PNG member equal to the file of that name still there."""
    for start in range(0, len(rows), shard_size):
        path = shards.shard_path(output_dir, shards.shard_index(start, shard_size))
        expected = [row["file_name"][:-len(".png")] for row in rows[start:start + shard_size]]
        members = list(shards.iter_samples(path))
        if [stem for stem, _, _ in members] != expected:
            raise NotFinished(f"{path} does not hold samples {start}.. in order: move it away and run again")
        for stem, png, _ in members:
            file = os.path.join(output_dir, stem + ".png")
            if os.path.exists(file) and _sha(_read(file)) != _sha(png):
                raise NotFinished(f"{file} differs from its member in {path}: nothing removed; look into it")


def _remove_pngs(output_dir: str, rows: Sequence[Dict[str, str]]) -> None:
    for row in rows:
        try:
            os.remove(os.path.join(output_dir, row["file_name"]))
        except FileNotFoundError:
            pass


def unpack(output_dir: str) -> str:
    record = read_settings_record(output_dir)
    rows = _rows(output_dir, record)
    output = record.get(shard_check.OUTPUT_KEY) or {"format": "png"}
    # an interrupted unpack: recorded png, every image written and checked, some shards left
    resuming = output.get("format") == "png" and "unpacked_from" in output
    if output.get("format") != "tar" and not resuming:
        raise NotFinished(f"{output_dir} is not in shards (its format is {output.get('format')})")
    shard_size = int(output["shard_size"] if not resuming else output["unpacked_from"])
    if not resuming:
        names = shards.image_names(output_dir)
        missing = [row["file_name"] for row in rows if row["file_name"] not in names]
        if missing:
            raise NotFinished(f"{output_dir} is not finished: {len(missing)} of {len(rows)} samples are in no whole "
                              f"shard (e.g. {missing[0]}); rerun it first")
        for start in range(0, len(rows), shard_size):
            shard = shards.shard_path(output_dir, shards.shard_index(start, shard_size))
            for stem, png, _ in shards.iter_samples(shard):
                create_once(os.path.join(output_dir, stem + ".png"), functools.partial(_write, png))
        _check_shards(output_dir, rows, shard_size)
        _record_format(output_dir, record, {"format": "png", "unpacked_from": shard_size})
    for shard in shards.shard_files(output_dir):
        os.remove(os.path.join(output_dir, shard))
    os.rmdir(os.path.join(output_dir, shards.SHARDS_DIR))
    _record_format(output_dir, record, {"format": "png"})
    return f"unpacked {len(rows)} images of {output_dir} from their shards"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"submit.py {argv[0]}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="a finished output folder (no run under way)")
    if argv[0] == "pack":
        parser.add_argument("--shard_size", type=int, default=1000,
                            help="samples per shard, a multiple of the folder's --batch_size (default: 1000)")
    args = parser.parse_args(argv[1:])

    def run(_: object) -> int:
        output_dir = os.path.abspath(args.output_dir)
        if not os.path.isdir(output_dir):
            raise UsageError(f"{output_dir} is not a folder")
        lock = RunLock(output_dir)
        lock.acquire_exclusive()
        try:
            print(pack(output_dir, args.shard_size) if argv[0] == "pack" else unpack(output_dir))
        finally:
            lock.release()
        return 0
    return run_cli(run, [])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
