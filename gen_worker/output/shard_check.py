"""The resume check of --output_format tar (output/shards.py), and the rule that a folder keeps its format.

A shard counts only whole and right: a tar archive of png/json pairs whose samples are exactly this folder's
manifest rows of its range (shard n: samples n*shard_size ..), in order, each PNG one this run would make
(provenance.made_with, as for a PNG file). Anything else (truncated, foreign, made with other settings, or
missing samples, e.g. one that failed) is quarantined whole, and its samples are made again: a shard is never
appended to. A shard found right is remembered in the verification cache like an image (its file state, a
digest of its rows' row_keys, the settings key), so a no-op rerun opens no shard that did not change.
"""
import hashlib
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple

from gen_worker.errors import T2IError
from gen_worker.output import provenance, shards, verification_cache
from gen_worker.output.png_file import DamagedPng
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec

OUTPUT_KEY = "output"  # in generation_settings.json: {"format": "tar", "shard_size": 1000}
# Which settings key a sample's image was made with (provenance.made_with); NotThisRun if none.
Verify = Callable[[Optional[Dict[str, Any]], Dict[str, Any], Sample], str]


class FormatChange(T2IError):
    """A rerun asks for another output format (or shard size) than the folder's."""


def output_record(spec: JobSpec) -> Dict[str, Any]:
    return {"format": spec.output_format, **({"shard_size": spec.shard_size} if spec.output_format == "tar" else {})}


def check_output_format(output_dir: str, record: Dict[str, Any], spec: JobSpec) -> None:
    """Refuse a rerun in another format than the folder's recorded one (png before the format was recorded):
    never, not even with --allow_settings_change, as one folder would hold two layouts of its samples."""
    old = record.get(OUTPUT_KEY) or {"format": "png"}
    if old == output_record(spec):
        return
    flags = f"--output_format {old.get('format')}" + (f" --shard_size {old['shard_size']}" if "shard_size" in old else "")
    raise FormatChange(f"{output_dir} was made with {flags}: a rerun must use the same (a folder never changes "
                       "format; `submit.py pack` or `unpack` converts a finished one), or use another --output_dir")


def rows_digest(row_keys: Sequence[str]) -> str:
    """What a shard's verification vouches for about its samples: their manifest rows' provenance.row_keys."""
    return hashlib.sha256("\n".join(row_keys).encode()).hexdigest()[:24]


class ManifestLookup(Protocol):
    """The manifest's samples by image name (prepare.ManifestRows)."""

    def names(self) -> Iterable[str]: ...

    def row_key(self, name: str) -> str: ...

    def sample(self, name: str) -> Sample: ...


def check_shards(output_dir: str, manifest: ManifestLookup, shard_size: int,
                 cached: Dict[str, verification_cache.Entry], accepted: set[str], verify: Verify
                 ) -> Tuple[List[str], List[Tuple[str, str]], int]:
    """(verification cache lines of the good shards, (shard, why) of those to quarantine, shards read)."""
    good, rejected, read = [], [], 0
    names = shards.shard_files(output_dir)
    by_index = {manifest.sample(name).index: name for name in manifest.names()} if names else {}
    for name in names:
        number = shards.parse_shard_name(os.path.basename(name))
        assert number is not None
        members = [by_index[i] for i in range(number * shard_size, (number + 1) * shard_size) if i in by_index]
        entry = cached.get(name)
        state = verification_cache.file_state(output_dir, name)
        if not members:
            rejected.append((name, "holds no sample of this folder's manifest (another --shard_size?)"))
            continue
        digest = entry.row_key if entry and entry.same_manifest else rows_digest(
            [manifest.row_key(m) for m in members])
        if verification_cache.vouches(entry, state, digest, accepted):
            assert entry is not None
            good.append(verification_cache.text(state, digest, entry.settings_key))
            continue
        read += 1
        try:
            keys = _verify_shard(os.path.join(output_dir, name), [manifest.sample(m) for m in members], verify)
        except (shards.DamagedShard, DamagedPng) as err:
            rejected.append((name, f"not a whole shard: {err}"))
        except OSError as err:
            rejected.append((name, f"unreadable: {err.strerror}"))
        except provenance.NotThisRun as err:
            rejected.append((name, str(err)))
        else:
            if len(keys) == 1:  # samples made with two accepted settings: checked again next time
                good.append(verification_cache.text(state, digest, keys.pop()))
    return good, rejected, read


def _verify_shard(path: str, samples: Sequence[Sample], verify: Verify) -> set[str]:
    """The settings keys of a shard's samples; NotThisRun if it is not exactly `samples`, each made by this run."""
    stems = [stem for stem, _, _ in shards.sample_index(path)]
    expected = [s.file_name[:-len(".png")] for s in samples]
    if stems != expected:
        missing = len(set(expected) - set(stems))
        raise provenance.NotThisRun(f"holds {len(stems)} samples, not the {len(expected)} of its range in order"
                                    + (f" ({missing} missing: failed when it was made?)" if missing else ""))
    keys = set()
    for (stem, png, record), sample in zip(shards.iter_samples(path), samples):
        found, image = provenance.inspect_bytes(png)
        if record.get("index") != str(sample.index):
            raise provenance.NotThisRun(f"the json member of {stem} is not that of sample {sample.index}")
        keys.add(verify(found, image, sample))
    return keys
