"""--layout geneval: <row:05d>/metadata.jsonl + <row:05d>/samples/<k:04d>.png, atomic, resumable, with provenance."""
import json
import os

import pytest

from conftest import FAST, run_submit
from evaluation import generated as gen
from gen_worker.model_check import identify
from gen_worker.output import layout, provenance
from gen_worker.output.record import DamagedOutputDir, existing_images
from gen_worker.output.prepare import prepare_output_dir
from gen_worker.prompts import load_samples
from gen_worker.spec import JobSpec
from gen_worker.worker.loop import run_worker
from gen_worker.worker.pipeline import load_pipeline

GENEVAL = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
    {"tag": "counting", "include": [{"class": "cat", "count": 2}], "exclude": [{"class": "cat", "count": 3}],
     "prompt": "a photo of two cats"},
]
NAMES = [f"{r:05d}/samples/{k:04d}.png" for r in range(3) for k in range(2)]


def _jsonl(path):
    path.write_text("".join(json.dumps(o) + "\n" for o in GENEVAL), encoding="utf-8")
    return str(path)


def _tree(out):
    """{relative path: bytes} of the images and metadata files of a GenEval folder."""
    return {os.path.relpath(os.path.join(d, n), out): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(out) if os.path.relpath(d, out).split(os.sep)[0].isdigit() for n in names}


def test_each_sample_knows_its_path_in_the_layout(tmp_path):
    samples = load_samples(_jsonl(tmp_path / "p.jsonl"), 42, images_per_prompt=2, layout="geneval")
    assert [s.file_name for s in samples] == NAMES
    assert [s.seed for s in samples] == list(range(42, 48))


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd):
    return load_pipeline(tiny_sd, "fp32", "cpu")


def test_geneval_folder_resume_and_quarantine(tmp_path, sd_pipe, tiny_sd):
    path = _jsonl(tmp_path / "evaluation_metadata.jsonl")
    spec = JobSpec(prompts_csv=path, output_dir=str(tmp_path / "out"), model_path=tiny_sd, num_samples=6,
                   num_inference_steps=2, height=64, width=64, dtype="fp32", device="cpu", images_per_prompt=2,
                   layout="geneval", model_identity=identify(tiny_sd))
    samples = load_samples(path, spec.seed_start, images_per_prompt=2, layout="geneval")
    prepare_output_dir(spec, samples).release()
    assert run_worker(spec, 0, 1, pipe=sd_pipe)["generated"] == 6
    out = spec.output_dir
    assert sorted(existing_images(out)) == NAMES
    for row, obj in enumerate(GENEVAL):  # what GenEval's evaluate_images.py reads with json.load
        assert json.load(open(os.path.join(out, f"{row:05d}", "metadata.jsonl"))) == obj
    found = provenance.read(os.path.join(out, NAMES[3]))
    assert (found["index"], found["row"], found["k"], found["seed"], found["prompt"]) == (3, 1, 1, 45, GENEVAL[1]["prompt"])
    assert found["settings"]["layout"] == "geneval" and found["settings"]["images_per_prompt"] == 2
    first = _tree(out)

    # Resume: nothing read again (the worker recorded what it wrote), nothing made again.
    prepare_output_dir(spec, samples).release()
    assert json.load(open(os.path.join(out, layout.RESUME_CHECK_FILE)))["read"] == 0
    assert run_worker(spec, 0, 1, pipe=sd_pipe)["generated"] == 0

    # A damaged nested image and a stale temporary file: moved aside / removed, the image made again.
    damaged = os.path.join(out, NAMES[1])
    with open(damaged, "r+b") as f:
        f.truncate(100)
    stale = os.path.join(out, "00002", "samples", ".0001.png.999.tmp")
    open(stale, "wb").write(b"half")
    prepare_output_dir(spec, samples).release()
    report = json.load(open(os.path.join(out, layout.RESUME_CHECK_FILE)))
    assert [q["file"] for q in report["quarantined"]] == [NAMES[1]]
    assert os.path.isfile(os.path.join(out, report["quarantined"][0]["moved_to"]))
    assert not os.path.exists(stale) and not os.path.exists(damaged)
    assert run_worker(spec, 0, 1, pipe=sd_pipe)["generated"] == 1
    assert _tree(out) == first

    # Evaluation finds the nested images and maps each back to its prompt row.
    images, _ = gen.list_generated_images(out)
    matched, unmatched, rows, _ = gen.match_folder(out, images)
    assert not unmatched and len(rows) == 3
    assert sorted((os.path.relpath(i.path, out), r.index, r.prompt) for i, r in zip(images, matched)) == [
        (name, n // 2, GENEVAL[n // 2]["prompt"]) for n, name in enumerate(NAMES)]


@pytest.mark.e2e
def test_submit_k2_geneval_same_bytes_for_1_and_2_workers_resume_and_reproduce(tmp_path, tiny_sd):
    path = _jsonl(tmp_path / "evaluation_metadata.jsonl")
    trees = []
    for workers in (["0"], ["0", "1"]):
        out = str(tmp_path / f"out{len(workers)}")
        args = ["--cluster", "local", "--gpu_ids", *workers, "--prompts_csv", path, "--output_dir", out,
                "--model_path", tiny_sd, *FAST, "--images_per_prompt", "2", "--layout", "geneval"]
        made = run_submit(*args)
        assert made.returncode == 0, made.stderr[-3000:]
        trees.append(_tree(out))
    assert sorted(n for n in trees[0] if n.endswith(".png")) == NAMES
    assert trees[0] == trees[1]
    again = run_submit(*args)  # the 2-worker folder: everything is there
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))
    assert (summary["missing"], summary["generated"], summary["skipped"]) == (0, 0, 6)
    image = os.path.join(out, NAMES[5])
    made_again = run_submit("reproduce", image, "--output_dir", str(tmp_path / "again"), "--device", "cpu")
    assert made_again.returncode == 0 and "byte-identical" in made_again.stdout, made_again.stderr[-2000:]


def test_a_file_where_a_prompt_folder_goes_is_refused_in_one_line(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl")
    spec = JobSpec(prompts_csv=path, output_dir=str(tmp_path / "out"), model_path="/m", num_samples=3, layout="geneval")
    samples = load_samples(path, spec.seed_start, layout="geneval")
    os.makedirs(os.path.join(spec.output_dir, "00001"))
    open(os.path.join(spec.output_dir, "00001", "samples"), "w").write("not a folder")
    with pytest.raises(DamagedOutputDir, match=r"00001/samples is not a folder; move it away"):
        prepare_output_dir(spec, samples)
    os.remove(os.path.join(spec.output_dir, "00001", "samples"))
    os.makedirs(os.path.join(spec.output_dir, "00002", "metadata.jsonl"))
    with pytest.raises(DamagedOutputDir, match=r"00002/metadata.jsonl is a folder"):
        prepare_output_dir(spec, samples)
