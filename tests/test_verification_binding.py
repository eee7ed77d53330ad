"""A verification never outlives its records, and provenance binds the pixels (issue 17, items 1 and 2).

The resume check trusts a file it read before (or a worker wrote) only while that file is unchanged AND
the manifest row and settings it was checked against are the current ones. Each case below exited 0 with
images of other prompts or settings before the cache lines were bound to what they verified.
"""
import json
import os
import time

import pytest
from PIL import Image, PngImagePlugin

from conftest import PROMPTS, write_prompts
from gen_worker import image_tools
from gen_worker.model_check import identify
from gen_worker.output import layout, provenance, verification_cache
from gen_worker.output.summary import final_lines, write_run_summary
from gen_worker.output.record import read_manifest
from gen_worker.output.prepare import SettingsMismatch, prepare_output_dir
from gen_worker.prompts import load_samples
from gen_worker.spec import JobSpec
from gen_worker.worker.loop import run_worker
from gen_worker.worker.pipeline import load_pipeline

ROWS = PROMPTS[:4]


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd):
    return load_pipeline(tiny_sd, "fp32", "cpu")


def _spec(tmp_path, model, rows=ROWS, name="prompts.csv", **changes):
    prompts = write_prompts(tmp_path / name, rows) if name.endswith(".csv") else _jsonl(tmp_path / name, rows)
    fields = dict(prompts_csv=prompts, output_dir=str(tmp_path / "out"), model_path=model, num_samples=None,
                  num_inference_steps=2, height=64, width=64, dtype="fp32", device="cpu",
                  model_identity=identify(model))
    fields.update(changes)
    samples = load_samples(prompts, 42, images_per_prompt=fields.get("images_per_prompt", 1),
                           layout=fields.get("layout", "flat"))
    fields["num_samples"] = len(samples)
    return JobSpec(**fields), samples


def _jsonl(path, rows):
    path.write_text("".join(json.dumps({"prompt": p, "tag": t}) + "\n" for t, p in rows), encoding="utf-8")
    return str(path)


def _run(spec, samples, pipe, **prepare):
    prepare_output_dir(spec, samples, **prepare).release()
    return run_worker(spec, 0, 1, pipe=pipe)


def _resume_report(spec):
    with open(os.path.join(spec.output_dir, layout.RESUME_CHECK_FILE), encoding="utf-8") as f:
        return json.load(f)


def assert_every_image_matches_its_records(spec):
    """Every image's provenance names its manifest row's sample and the folder's recorded settings."""
    out = spec.output_dir
    manifest = read_manifest(out)
    with open(os.path.join(out, layout.SETTINGS_FILE), encoding="utf-8") as f:
        settings = json.load(f)["settings"]
    assert manifest
    for row in manifest.values():
        found = provenance.read(os.path.join(out, row["file_name"]))
        assert (found["index"], found["image_id"], found["prompt"], found["seed"]) == \
            (int(row["index"]), row["image_id"], row["prompt"], int(row["seed"])), row["file_name"]
        assert found["settings"] == settings, row["file_name"]


def test_a_changed_prompt_is_made_again_even_when_the_image_was_verified_before(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, tiny_sd)
    _run(spec, samples, sd_pipe)
    changed = [("1", "A green tram in the snow.")] + ROWS[1:]
    spec, samples = _spec(tmp_path, tiny_sd, changed)
    summary = _run(spec, samples, sd_pipe, allow_settings_change=True)
    assert summary["generated"] == 1
    report = _resume_report(spec)
    assert [q["file"] for q in report["quarantined"]] == [samples[0].file_name]
    assert "made for another sample (prompt" in report["quarantined"][0]["reason"]
    assert_every_image_matches_its_records(spec)


def test_a_deleted_manifest_does_not_let_changed_prompts_through(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, tiny_sd)
    _run(spec, samples, sd_pipe)
    os.remove(os.path.join(spec.output_dir, layout.MANIFEST_FILE))
    changed = ROWS[:2] + [("9", "A lighthouse on a cliff at dawn.")] + ROWS[3:]
    spec, samples = _spec(tmp_path, tiny_sd, changed)
    # The images say which prompts they were made for: a plain rerun is refused as with the manifest there.
    with pytest.raises(SettingsMismatch, match=r"the prompts differ .*sample 2 was 2: .*now 9: 'A lighthouse"):
        prepare_output_dir(spec, samples)
    assert _run(spec, samples, sd_pipe, allow_settings_change=True)["generated"] == 1
    assert_every_image_matches_its_records(spec)


def test_adopting_a_folder_whose_record_was_deleted_does_not_relabel_its_images(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, tiny_sd)
    _run(spec, samples, sd_pipe)
    os.remove(os.path.join(spec.output_dir, layout.SETTINGS_FILE))
    spec, samples = _spec(tmp_path, tiny_sd, num_inference_steps=3)
    summary = _run(spec, samples, sd_pipe, adopt_existing=True)
    # Made at 2 steps (their provenance says so): not kept as made at 3.
    assert summary["generated"] == 4
    assert {q["reason"] for q in _resume_report(spec)["quarantined"]} == {
        "made with other settings (num_inference_steps)"}
    assert_every_image_matches_its_records(spec)


def test_a_hand_edited_settings_record_is_checked_against_the_images(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, tiny_sd)
    _run(spec, samples, sd_pipe)
    path = os.path.join(spec.output_dir, layout.SETTINGS_FILE)
    record = json.load(open(path))
    record["settings"]["num_inference_steps"] = 3
    json.dump(record, open(path, "w"))
    spec, samples = _spec(tmp_path, tiny_sd, num_inference_steps=3)
    assert _run(spec, samples, sd_pipe)["generated"] == 4
    assert_every_image_matches_its_records(spec)


def test_geneval_row_inserted_in_the_middle_remakes_every_later_row(tmp_path, sd_pipe, tiny_sd):
    rows = [("object", "a photo of a bench"), ("colors", "a photo of a red car"), ("count", "a photo of two cats")]
    spec, samples = _spec(tmp_path, tiny_sd, rows, name="meta.jsonl", layout="geneval", images_per_prompt=2)
    _run(spec, samples, sd_pipe)
    inserted = rows[:1] + [("position", "a photo of a dog left of a tree")] + rows[1:]
    spec, samples = _spec(tmp_path, tiny_sd, inserted, name="meta.jsonl", layout="geneval", images_per_prompt=2)
    summary = _run(spec, samples, sd_pipe, allow_settings_change=True)
    assert summary["generated"] == 6  # rows 1 and 2 made again, row 3 new
    for r, (tag, prompt) in enumerate(inserted):
        with open(os.path.join(spec.output_dir, f"{r:05d}", "metadata.jsonl"), encoding="utf-8") as f:
            assert json.load(f) == {"prompt": prompt, "tag": tag}
        for k in range(2):
            found = provenance.read(os.path.join(spec.output_dir, f"{r:05d}", "samples", f"{k:04d}.png"))
            assert found["prompt"] == prompt
    assert_every_image_matches_its_records(spec)


def test_adopted_images_without_provenance_stay_bound_to_their_rows(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, tiny_sd)
    os.makedirs(spec.output_dir)
    for s in samples:  # as the original script left them: no settings record, no provenance
        Image.new("RGB", (64, 64), (10, 20, 30)).save(os.path.join(spec.output_dir, s.file_name))
    assert _run(spec, samples, sd_pipe, adopt_existing=True)["generated"] == 0
    changed = [("1", "A green tram in the snow.")] + ROWS[1:]
    spec, samples = _spec(tmp_path, tiny_sd, changed)
    # The adopted image of row 0 was taken in for its old prompt: it cannot stand for the new one.
    assert _run(spec, samples, sd_pipe, allow_settings_change=True)["generated"] == 1
    assert [q["file"] for q in _resume_report(spec)["quarantined"]] == [samples[0].file_name]


def _rewrite_keeping_provenance(path, change):
    """What an image editor that keeps text chunks does: other pixels, the same t2i-batch chunk."""
    image = Image.open(path)
    info = PngImagePlugin.PngInfo()
    info.add_itxt(provenance.PNG_KEY, image.text[provenance.PNG_KEY])
    change(image.convert("RGB")).save(path, pnginfo=info)


@pytest.mark.parametrize("edit, reason", [
    (lambda image: image.resize((16, 16)), "is 16x16, its provenance says 64x64"),
    (lambda image: Image.new("RGB", image.size), "its pixels are not the ones its provenance was written with (edited after it was made?)"),
])
def test_an_image_edited_with_its_provenance_kept_is_made_again(tmp_path, sd_pipe, tiny_sd, edit, reason, capsys):
    spec, samples = _spec(tmp_path, tiny_sd)
    _run(spec, samples, sd_pipe)
    path = os.path.join(spec.output_dir, samples[1].file_name)
    original = open(path, "rb").read()
    _rewrite_keeping_provenance(path, edit)
    assert image_tools.main(["show", path]) == 1  # show says so too
    assert capsys.readouterr().err == f"warning: {path} {reason}\n"
    assert _run(spec, samples, sd_pipe)["generated"] == 1
    quarantined = _resume_report(spec)["quarantined"]
    assert [(q["file"], q["reason"]) for q in quarantined] == [(samples[1].file_name, reason)]
    assert open(path, "rb").read() == original


def test_the_provenance_names_the_image_it_belongs_to(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, tiny_sd)
    _run(spec, samples, sd_pipe)
    path = os.path.join(spec.output_dir, samples[0].file_name)
    found = provenance.read(path)
    assert found["format"] == 2 and found["image"]["width"] == 64 and found["image"]["height"] == 64
    assert len(found["image"]["sha256"]) == 64
    assert provenance.pixel_mismatch(path) is None


def test_a_rewrite_that_restores_size_and_mtime_still_changes_the_state(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 100)
    before = verification_cache.file_state(str(tmp_path), "a.png")
    st = os.stat(path)
    path.write_bytes(b"y" * 100)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -r` or a careful editor does
    after = verification_cache.file_state(str(tmp_path), "a.png")
    assert before.split("\t")[:3] == after.split("\t")[:3] and before != after  # the ctime moved


def test_images_whose_pixels_no_hash_vouches_for_are_counted_and_said(tmp_path, sd_pipe, tiny_sd):
    spec, samples = _spec(tmp_path, tiny_sd)
    os.makedirs(spec.output_dir)
    for s in samples[:3]:
        Image.new("RGB", (64, 64), (10, 20, 30)).save(os.path.join(spec.output_dir, s.file_name))
    _run(spec, samples, sd_pipe, adopt_existing=True)
    assert _resume_report(spec)["pixels_unchecked"] == 3
    _run(spec, samples, sd_pipe)  # the next resume knows them by their lines, still counted
    assert _resume_report(spec)["read"] == 0 and _resume_report(spec)["pixels_unchecked"] == 3
    run = write_run_summary(spec.output_dir, [s.file_name for s in samples], [], time.time(), "cmd", False)
    assert "3 images kept carry no hash of their pixels (adopted, or made by a t2i-batch older than provenance " \
           "format 2): edits to them cannot be detected" in final_lines(run)
