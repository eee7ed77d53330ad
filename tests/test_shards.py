"""The shard format (gen_worker/output/shards.py): what tarfile and webdataset read, fixed bytes, the index from
headers, and the typed error for a truncated or corrupt shard."""
import os
import tarfile

import numpy as np
import pytest

from gen_worker.output import shards
from gen_worker.worker.png import encode_png


def _samples(n, long_stem=False):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        stem = ("x" * 100 + f".{i}" if long_stem else f"{i:06d}.v2") + f"_seed{i + 40}"
        png = encode_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        out.append((stem, png, {"index": i, "prompt": f"a photo {i} ü"}))
    return out


def _write(tmp_path, samples, name="000000.tar"):
    path = str(tmp_path / shards.SHARDS_DIR / name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert shards.write_shard(path, samples)
    return path


def test_names_and_keys():
    assert shards.shard_name(shards.shard_index(2345, 1000)) == "000002.tar"
    assert shards.parse_shard_name("000002.tar") == 2 and shards.parse_shard_name("1234567.tar") == 1234567
    assert shards.parse_shard_name(".000002.tar.12.tmp") is None and shards.parse_shard_name("2.tar") is None
    assert shards.key_of("a.b_seed1") == "a,b_seed1" and shards.stem_of("a,b_seed1") == "a.b_seed1"


@pytest.mark.parametrize("long_stem", [False, True])
def test_tarfile_reads_every_member_in_order(tmp_path, long_stem):
    samples = _samples(3, long_stem)
    path = _write(tmp_path, samples)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"{shards.key_of(s)}.{e}" for s, _, _ in samples for e in ("png", "json")]
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" and m.mode == 0o644 for m in members)
        assert tar.extractfile(members[2]).read() == samples[1][1]
    assert list(shards.iter_samples(path)) == samples
    index = shards.read_index(path)
    assert [m.stem for m in index] == [s for s, _, _ in samples for _ in range(2)]
    assert shards.read_member(path, index[4].offset, index[4].size) == samples[2][1]


def test_webdataset_reads_the_samples(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    samples = _samples(3)
    path = _write(tmp_path, samples)
    got = list(webdataset.WebDataset(path, shardshuffle=False))
    assert [shards.stem_of(s["__key__"]) for s in got] == [s for s, _, _ in samples]
    assert [s["png"] for s in got] == [p for _, p, _ in samples]
    decoded = list(webdataset.WebDataset(path, shardshuffle=False).decode())
    assert [s["json"] for s in decoded] == [r for _, _, r in samples]


def test_same_samples_same_bytes_and_never_overwritten(tmp_path):
    first = _write(tmp_path / "a", _samples(2))
    second = _write(tmp_path / "b", _samples(2))
    assert open(first, "rb").read() == open(second, "rb").read()
    before = open(first, "rb").read()
    assert not shards.write_shard(first, _samples(1))
    assert open(first, "rb").read() == before
    assert os.listdir(os.path.dirname(first)) == ["000000.tar"]  # no temporary file left


def test_truncated_or_corrupt_shards_are_told(tmp_path):
    path = _write(tmp_path, _samples(3))
    data = open(path, "rb").read()
    end_of_data = shards.read_index(path)[-1].offset + shards.read_index(path)[-1].size
    for cut in (0, 100, 512, 1500, end_of_data - 1, end_of_data):
        open(path, "wb").write(data[:cut])
        with pytest.raises(shards.DamagedShard, match="truncated"):
            shards.read_index(path)
    corrupt = bytearray(data)
    corrupt[10] ^= 1  # inside the first member's name: its checksum no longer holds
    open(path, "wb").write(bytes(corrupt))
    with pytest.raises(shards.DamagedShard, match="checksum"):
        shards.read_index(path)


def test_members_that_are_no_sample_pairs_are_told(tmp_path):
    path = str(tmp_path / "odd.tar")
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(__file__, arcname="a.png")
    with pytest.raises(shards.DamagedShard, match="pairs"):
        shards.sample_index(path)


@pytest.mark.parametrize("changes, refusal", [
    ({"output_format": "tar", "layout": "geneval"}, "--layout geneval"),
    ({"output_format": "tar", "batch_size": 3, "shard_size": 1000}, "must be a multiple of --batch_size 3"),
])
def test_settings_a_tar_run_cannot_take_are_refused(changes, refusal):
    from gen_worker.errors import UsageError
    from gen_worker.spec import JobSpec
    with pytest.raises(UsageError, match=refusal):
        JobSpec(prompts_csv="p.csv", output_dir="out", model_path="m", **changes)
    assert JobSpec(prompts_csv="p.csv", output_dir="out", model_path="m", batch_size=3).block_size() == 3  # png
    assert JobSpec(prompts_csv="p.csv", output_dir="out", model_path="m", output_format="tar", batch_size=4,
                   shard_size=8).block_size() == 8
