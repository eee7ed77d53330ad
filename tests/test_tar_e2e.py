"""--output_format tar end to end (issue 19): 2 CPU workers write whole shards, a rerun is a no-op reading only
shard indexes, a truncated shard is quarantined and made again, the PNG members are the png format's files byte
for byte, and `submit.py pack` / `unpack` convert a finished folder both ways."""
import hashlib
import json
import os
import shutil
import tarfile

import pytest

from conftest import FAST, PROMPTS, images_in, run_submit, write_prompts
from gen_worker.output import layout, shards

pytestmark = pytest.mark.e2e

TAR = ["--output_format", "tar", "--shard_size", "2"]


def _submit(model, csv, out, *extra):
    result = run_submit("--cluster", "local", "--gpu_ids", "0", "1", "--prompts_csv", csv, "--output_dir", out,
                        "--model_path", model, *FAST, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _members(out):
    """{stem: png bytes} over every shard, failing on a sample found twice; and the shard names."""
    found, names = {}, sorted(os.listdir(os.path.join(out, shards.SHARDS_DIR)))
    for name in names:
        for stem, png, record in shards.iter_samples(os.path.join(out, shards.SHARDS_DIR, name)):
            assert stem not in found, f"{stem} is in two shards"
            assert record["t2i-batch"]["index"] == int(record["index"])
            found[stem] = png
    return found, names


@pytest.fixture(scope="module")
def runs(tiny_sd, tmp_path_factory):
    root = tmp_path_factory.mktemp("tar")
    csv = write_prompts(root / "prompts.csv", PROMPTS)
    tar, png = str(root / "tar"), str(root / "png")
    _submit(tiny_sd, csv, tar, *TAR)
    _submit(tiny_sd, csv, png, "--schedule", "static")
    return csv, tar, png


def test_shards_hold_the_png_formats_files_and_resume_remakes_a_truncated_one(tiny_sd, runs):
    csv, out, png_out = runs
    members, names = _members(out)
    files = images_in(png_out)
    assert names == ["000000.tar", "000001.tar", "000002.tar", "000003.tar"]  # 7 samples, 2 a shard
    assert {stem + ".png": data for stem, data in members.items()} == files  # byte for byte, same pixels
    assert sorted(os.listdir(out)).count("shards") == 1 and not [n for n in os.listdir(out) if n.endswith(".png")]

    _submit(tiny_sd, csv, out, *TAR)  # a no-op: the shards' cache lines vouch for them, none is opened
    check = json.load(open(os.path.join(out, layout.RESUME_CHECK_FILE)))
    assert (check["shards_checked"], check["shards_read"], check["quarantined"]) == (4, 0, [])
    assert json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))["generated"] == 0

    shard, foreign = (os.path.join(out, shards.SHARDS_DIR, n) for n in ("000001.tar", "000002.tar"))
    before, foreign_before = open(shard, "rb").read(), open(foreign, "rb").read()
    with open(shard, "r+b") as f:
        f.truncate(len(before) // 3)
    shutil.copyfile(os.path.join(out, shards.SHARDS_DIR, "000000.tar"), foreign)  # whole, but other samples
    _submit(tiny_sd, csv, out, *TAR, "--schedule", "static")
    check = json.load(open(os.path.join(out, layout.RESUME_CHECK_FILE)))
    assert [q["file"] for q in check["quarantined"]] == ["shards/000001.tar", "shards/000002.tar"]
    assert "truncated" in check["quarantined"][0]["reason"]
    assert "not the 2 of its range" in check["quarantined"][1]["reason"]
    assert all(os.path.exists(os.path.join(out, q["moved_to"])) for q in check["quarantined"])
    assert open(shard, "rb").read() == before and open(foreign, "rb").read() == foreign_before  # made again
    assert json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))["generated"] == 4
    members, _ = _members(out)
    assert {stem + ".png": data for stem, data in members.items()} == files

    with tarfile.open(shard) as tar:  # Python's tarfile reads it (webdataset: tests/test_shards.py)
        assert [m.name for m in tar.getmembers()] == ["000002_seed44.png", "000002_seed44.json",
                                                      "000003_seed45.png", "000003_seed45.json"]


def test_a_folder_keeps_its_format(tiny_sd, runs):
    csv, out, png_out = runs
    for folder, extra in ((out, ["--output_format", "png"]), (out, ["--output_format", "tar", "--shard_size", "4"]),
                          (png_out, TAR)):
        result = run_submit("--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", folder,
                            "--model_path", tiny_sd, *FAST, *extra, "--allow_settings_change")
        assert result.returncode == 2 and "a folder never changes format" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_pack_and_unpack_round_trip_byte_for_byte(runs, tmp_path):
    _, out, png_out = runs
    folder = str(tmp_path / "folder")
    shutil.copytree(png_out, folder)
    sums = {n: hashlib.sha256(data).hexdigest() for n, data in images_in(folder).items()}
    last = sorted(sums)[-1]
    os.rename(os.path.join(folder, last), str(tmp_path / "aside.png"))
    refused = run_submit("pack", folder, "--shard_size", "2")
    assert refused.returncode == 2 and "not finished" in refused.stderr and len(refused.stderr.splitlines()) == 1
    os.rename(str(tmp_path / "aside.png"), os.path.join(folder, last))

    packed = run_submit("pack", folder, "--shard_size", "2")
    assert packed.returncode == 0, packed.stderr
    assert images_in(folder) == {}  # the PNG files are gone once the shards were read back equal
    for name in os.listdir(os.path.join(out, shards.SHARDS_DIR)):  # the same shards a tar run writes
        assert open(os.path.join(folder, "shards", name), "rb").read() == \
            open(os.path.join(out, "shards", name), "rb").read()

    unpacked = run_submit("unpack", folder)
    assert unpacked.returncode == 0, unpacked.stderr
    assert {n: hashlib.sha256(data).hexdigest() for n, data in images_in(folder).items()} == sums
    assert not os.path.exists(os.path.join(folder, shards.SHARDS_DIR))
