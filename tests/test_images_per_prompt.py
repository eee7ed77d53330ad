"""--images_per_prompt K: sample i = row*K + k, seed seed_start+i; folders made before K existed stay valid."""
import json
import os

import pytest

from conftest import write_prompts
from gen_worker.output import layout, provenance
from gen_worker.output.record import manifest_sample, read_manifest
from gen_worker.output.prepare import prepare_output_dir
from gen_worker.prompts import PromptsError, load_samples
from gen_worker.errors import UsageError
from gen_worker.spec import JobSpec


def _spec(tmp_path, **changes):
    fields = dict(prompts_csv="p.csv", output_dir=str(tmp_path / "out"), model_path="/m", num_samples=4)
    fields.update(changes)
    return JobSpec(**fields)


def test_k_images_per_prompt_get_consecutive_seeds_and_distinct_names(tmp_path):
    path = write_prompts(tmp_path / "p.csv", [("7", "a cat"), ("x", "a dog")])
    samples = load_samples(path, 42, images_per_prompt=2)
    assert [(s.index, s.row, s.k, s.image_id, s.prompt, s.seed, s.file_name) for s in samples] == [
        (0, 0, 0, "7", "a cat", 42, "000007_seed42.png"), (1, 0, 1, "7", "a cat", 43, "000007_seed43.png"),
        (2, 1, 0, "x", "a dog", 44, "x_seed44.png"), (3, 1, 1, "x", "a dog", 45, "x_seed45.png")]
    assert load_samples(path, 42) == [s for s in load_samples(path, 42, images_per_prompt=1)]
    assert [(s.row, s.k, s.seed) for s in load_samples(path, 42)] == [(0, 0, 42), (1, 0, 43)]  # K=1: as always


def test_num_samples_counts_samples_not_rows(tmp_path):
    path = write_prompts(tmp_path / "p.csv", [("1", "a"), ("2", "b")])
    assert [(s.row, s.k) for s in load_samples(path, 0, 3, images_per_prompt=2)] == [(0, 0), (0, 1), (1, 0)]
    with pytest.raises(PromptsError, match="--num_samples 5 is more than the 2 prompts x 2 images per prompt"):
        load_samples(path, 0, 5, images_per_prompt=2)
    with pytest.raises(UsageError, match="--images_per_prompt must be at least 1"):
        _spec(tmp_path, images_per_prompt=0)


def test_the_manifest_says_row_and_k_and_reads_back(tmp_path):
    samples = load_samples(write_prompts(tmp_path / "p.csv", [("1", "a"), ("2", "b")]), 42, images_per_prompt=2)
    spec = _spec(tmp_path, images_per_prompt=2)
    prepare_output_dir(spec, samples).release()
    rows = read_manifest(spec.output_dir)
    assert [(r["index"], r["row"], r["k"], r["seed"]) for r in rows.values()] == [
        ("0", "0", "0", "42"), ("1", "0", "1", "43"), ("2", "1", "0", "44"), ("3", "1", "1", "45")]
    assert [manifest_sample(r) for r in rows.values()] == samples


def test_a_folder_made_before_images_per_prompt_existed_resumes(tmp_path):
    samples = load_samples(write_prompts(tmp_path / "p.csv", [("1", "a"), ("2", "b")]), 42)
    spec = _spec(tmp_path, num_samples=2)
    prepare_output_dir(spec, samples).release()
    # The records of an older version: no images_per_prompt/layout setting, no row/k columns.
    path = os.path.join(spec.output_dir, layout.SETTINGS_FILE)
    record = json.load(open(path))
    del record["settings"]["images_per_prompt"], record["settings"]["layout"]
    open(path, "w").write(json.dumps(record))
    manifest = os.path.join(spec.output_dir, layout.MANIFEST_FILE)
    open(manifest, "w").write("index,image_id,seed,file_name,prompt\n0,1,42,000001_seed42.png,a\n"
                              "1,2,43,000002_seed43.png,b\n")
    assert [manifest_sample(r) for r in read_manifest(spec.output_dir).values()] == samples
    prepare_output_dir(spec, samples).release()  # no settings change
    # An image made then carries no such settings in its provenance either: still this run's.
    found = provenance.for_sample(spec, samples[1], {})
    for key in ("images_per_prompt", "layout"):
        del found["settings"][key]
    del found["row"], found["k"]
    accepted = [spec.recorded_settings()]
    no_image_record = {}  # made before images carried one
    assert provenance.mismatch(found, no_image_record, samples[1], [None], accepted) is None
    assert "images_per_prompt" in provenance.mismatch(found, no_image_record, samples[1], [None],
                                                      [dict(accepted[0], images_per_prompt=2)])


def test_evaluation_maps_k_images_back_to_their_prompt_with_or_without_the_manifest(tmp_path):
    from evaluation import generated as gen
    path = write_prompts(tmp_path / "p.csv", [("7", "a cat"), ("7", "a dog")])  # one id, two prompts
    samples = load_samples(path, 42, images_per_prompt=3)
    images = [gen.GeneratedImage(str(tmp_path / s.file_name), "000007", s.seed) for s in samples]
    rows = gen.read_prompts_csv(path)
    matched, unmatched = gen.match_prompts(images, rows, seed_start=42, images_per_prompt=3)
    assert not unmatched and [r.prompt for r in matched] == ["a cat"] * 3 + ["a dog"] * 3
    spec = _spec(tmp_path, images_per_prompt=3, num_samples=6)
    prepare_output_dir(spec, samples).release()
    by_name = gen.read_manifest(spec.output_dir)
    assert [(by_name[s.file_name].index, by_name[s.file_name].prompt) for s in samples] == [
        (s.row, s.prompt) for s in samples]
    assert gen.recorded_images_per_prompt(spec.output_dir) == 3
