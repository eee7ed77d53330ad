"""Evaluation of a --output_format tar folder, and verification before scoring.

The same images of the tiny model, as PNG files and packed into tar shards (output/shards.py's writer), give
the same metrics.json numbers and per-image scores; every image's embedded provenance must match its folder's
record before any network is loaded (--allow_unverified: scored anyway, recorded); `submit.py show` and
`reproduce` take SHARD.tar:STEM."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from _evaluation_helpers import save_tiny_clip, save_tiny_inception, smooth_image, write_generated, write_reference
from conftest import PROMPTS, REPO, run_worker_in_process
from evaluation import metrics, report
from evaluation.errors import EvaluationError
from evaluation.generated import list_generated_images
from gen_worker.output import layout, provenance, shards
from gen_worker.output.record import read_manifest
from gen_worker.pack import pack

ROWS = PROMPTS + [("7.5", "A boat on a lake."), ("8", "A mountain at dawn."), ("9", "A bowl of fruit.")]
SCORES = ("fid", "kid", "kid_std", "kid_subset_size", "clip_score", "cmmd", "intervals")


def pack_swapped(png_folder, tar_folder, swap, shard_size=4):
    """The PNG folder's images as shards (its record and manifest copied) where sample swap[0]'s member holds
    sample swap[1]'s PNG: a foreign image in a shard (`submit.py pack` checks what it packs)."""
    os.makedirs(os.path.join(tar_folder, shards.SHARDS_DIR))
    for name in (layout.SETTINGS_FILE, layout.MANIFEST_FILE):
        shutil.copy(os.path.join(png_folder, name), tar_folder)
    rows = [row for _, row in sorted(read_manifest(png_folder).items())]
    for first in range(0, len(rows), shard_size):
        samples = []
        for row in rows[first:first + shard_size]:
            source = rows[swap[1]]["file_name"] if int(row["index"]) == swap[0] else row["file_name"]
            with open(os.path.join(png_folder, source), "rb") as f:
                png = f.read()
            samples.append((row["file_name"][:-len(".png")], png,
                            shards.sample_record(row, provenance.inspect_bytes(png)[0])))
        assert shards.write_shard(shards.shard_path(tar_folder, first // shard_size), samples)
    return tar_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_sd):
    from gen_worker.worker.pipeline import load_pipeline

    root = tmp_path_factory.mktemp("tar")
    pipe = load_pipeline(tiny_sd, "fp32", "cpu")
    png, _ = run_worker_in_process(root, "png", pipe, tiny_sd, rows=ROWS, num_inference_steps=2)
    made, _ = run_worker_in_process(root, "made_tar", pipe, tiny_sd, rows=ROWS, num_inference_steps=2,
                                    output_format="tar", shard_size=4)
    packed = str(root / "packed")
    shutil.copytree(png, packed)
    pack(packed, 4)  # submit.py pack
    rng = np.random.default_rng(0)
    return {"root": root, "png": png, "tar": made, "packed": packed, "model": tiny_sd,
            "ref": write_reference(str(root / "ref"), [smooth_image(rng) for _ in range(6)]),
            "inception": save_tiny_inception(str(root / "inception.pt")), "clip": save_tiny_clip(str(root / "clip"))}


def _metrics(folders, generated, out, *extra):
    args = ["--generated", generated, "--reference_dir", folders["ref"], "--inception_weights", folders["inception"],
            "--clip_model", folders["clip"], "--out", str(out), "--device", "cpu", "--num_workers", "0",
            "--batch_size", "4", *extra]
    assert metrics.main(args) == 0
    return json.loads(open(out).read())


def test_a_tar_folder_lists_the_same_images_in_the_same_order(folders):
    png, _ = list_generated_images(folders["png"])
    tar, ignored = list_generated_images(folders["tar"])
    assert [g.name for g in tar] == [g.name for g in png] and len(tar) == len(ROWS)
    assert [g.name for g in list_generated_images(folders["packed"])[0]] == [g.name for g in png]
    assert not any(n.endswith(".png") for n in os.listdir(folders["tar"]))  # every image in shards/
    assert "7.5_seed49.png" in [g.name for g in tar]  # the stem's dot is back (its member's key has a comma)
    assert [str(g) for g in tar][:1] == [os.path.join(folders["tar"], "shards", "000000.tar") + ":000001_seed42"]
    assert shards.SHARDS_DIR not in ignored


def test_a_tar_folder_scores_exactly_as_the_same_images_as_pngs(folders, tmp_path):
    from_png = _metrics(folders, folders["png"], tmp_path / "png.json")
    png_scores = open(os.path.join(folders["png"], "scores.csv")).read()
    from_tar = _metrics(folders, folders["tar"], tmp_path / "tar.json")  # made as shards by the worker
    from_packed = _metrics(folders, folders["packed"], tmp_path / "packed.json")  # the PNGs, packed
    assert from_png["fid"] > 0 and from_png["clip_score"] > 0 and from_png["cmmd"] is not None
    assert {k: from_tar[k] for k in SCORES} == {k: from_png[k] for k in SCORES}  # exactly: the same pixels
    assert {k: from_packed[k] for k in SCORES} == {k: from_png[k] for k in SCORES}
    assert from_tar["counts"]["generated_images"] == from_png["counts"]["generated_images"] == len(ROWS)
    assert from_tar["verification"] == from_png["verification"]
    assert from_tar["verification"]["images"] == len(ROWS) and from_tar["verification"]["unverified"] == 0
    assert open(os.path.join(folders["tar"], "scores.csv")).read() == png_scores  # per image, same file names
    built = report.build_report(folders["tar"], str(tmp_path / "tar.json"), None, str(tmp_path / "report"))
    assert built["samples"] and all(os.path.isfile(tmp_path / "report" / s["thumbnails"][0]) for s in built["samples"])


def test_an_image_that_is_not_its_runs_is_refused_before_any_network(folders, tmp_path):
    bad = str(tmp_path / "bad")
    shutil.copytree(folders["png"], bad)
    shutil.copy(os.path.join(bad, "000002_seed44.png"), os.path.join(bad, "000001_seed43.png"))
    tar = pack_swapped(folders["png"], str(tmp_path / "bad_tar"), swap=(1, 2))
    for folder, named in ((bad, os.path.join(bad, "000001_seed43.png")),
                          (tar, os.path.join(tar, "shards", "000000.tar") + ":000001_seed43")):
        args = ["--generated", folder, "--reference_dir", folders["ref"], "--no_clip", "--device", "cpu",
                "--inception_weights", str(tmp_path / "not_loaded.pt"), "--out", str(tmp_path / "m.json")]
        with pytest.raises(EvaluationError) as err:
            metrics.main(args)  # the weights are not there: the verification came first
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{named} is not an image its folder's run made: "), message
        assert "made for another sample" in message and "--allow_unverified" in message
    assert not os.path.exists(tmp_path / "m.json")


def test_allow_unverified_scores_them_and_says_so(folders, tmp_path):
    tar = pack_swapped(folders["png"], str(tmp_path / "bad_tar"), swap=(1, 2))
    result = _metrics(folders, tar, tmp_path / "m.json", "--allow_unverified")
    assert result["verification"]["unverified"] == 1 and result["verification"]["allow_unverified"] is True
    assert result["settings"]["allow_unverified"] is True
    assert any("1 of 10 images not verified" in w and "000001_seed43" in w for w in result["warnings"])
    assert report.main(["--generated", tar, "--metrics", str(tmp_path / "m.json"), "--out_dir",
                        str(tmp_path / "report")]) == 0
    assert "| verified as their run's (provenance) | 9 of 10 (--allow_unverified" in \
        open(tmp_path / "report" / "report.md").read()
    assert json.loads(open(tmp_path / "report" / "report.json").read())["verification"]["unverified"] == 1


def test_images_another_tool_made_are_refused_unless_allowed(folders, tmp_path):
    gen = str(tmp_path / "gen")
    rng = np.random.default_rng(1)
    write_generated(gen, [smooth_image(rng) for _ in range(3)], ["1", "2", "3"], [42, 43, 44])
    args = ["--generated", gen, "--reference_dir", folders["ref"], "--no_clip", "--device", "cpu",
            "--inception_weights", folders["inception"], "--out", str(tmp_path / "m.json"), "--num_workers", "0"]
    with pytest.raises(EvaluationError, match="no generation_settings.json"):
        metrics.main(args)
    assert metrics.main([*args, "--allow_unverified"]) == 0


MEMBER = os.path.join("shards", "000001.tar") + ":000004_seed46"  # sample 4, in the second shard of 4


def test_show_takes_shard_and_stem(folders, capsys):
    from gen_worker.image_tools import main

    member = os.path.join(folders["tar"], MEMBER)
    assert main(["show", member]) == 0
    assert json.loads(capsys.readouterr().out)["prompt"] == ROWS[4][1]
    assert main(["show", member.replace("000004", "000099")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no sample 000099_seed46" in err[0], err


def test_reproduce_takes_shard_and_stem(folders, tmp_path, capsys):
    from gen_worker.image_tools import main

    member = os.path.join(folders["tar"], MEMBER)
    again = str(tmp_path / "again")
    assert main(["reproduce", member, "--output_dir", again, "--device", "cpu"]) == 0
    assert "byte-identical to" in capsys.readouterr().out
    with open(os.path.join(folders["png"], "000004_seed46.png"), "rb") as a, \
            open(os.path.join(again, "000004_seed46.png"), "rb") as b:
        assert a.read() == b.read()


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.usefixtures("slurm_cluster")
def test_scoring_a_tar_folder_on_slurm_gives_the_png_numbers(folders, tmp_path):
    def scored(folder, out, *extra):  # each in a fresh process, as the tasks (this one's thread count: other rounding)
        args = ["--generated", folder, "--reference_dir", folders["ref"], "--inception_weights", folders["inception"],
                "--clip_model", folders["clip"], "--out", str(out), "--device", "cpu", "--num_workers", "0",
                "--batch_size", "4", *extra]
        proc = subprocess.run([sys.executable, "-m", "evaluation.metrics", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    local = scored(folders["png"], tmp_path / "local.json")
    on_slurm = scored(folders["tar"], tmp_path / "slurm.json", "--cluster", "slurm", "--gpus", "2",
                      "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15")
    for key in ("fid", "kid", "clip_score", "cmmd"):
        assert on_slurm[key] == pytest.approx(local[key], rel=1e-12, abs=1e-15), key


def test_a_damaged_shard_is_refused_in_one_line(folders, tmp_path):
    tar = str(tmp_path / "cut")
    shutil.copytree(folders["tar"], tar)
    shard = os.path.join(tar, "shards", "000001.tar")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    with pytest.raises(EvaluationError) as err:
        list_generated_images(tar)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"cannot read shard {shard}: ")
    assert "truncated" in str(err.value)
