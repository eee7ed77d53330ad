"""submit.py --cluster local end to end on tiny models, in fresh processes as users run it."""
import csv as csv_module
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from conftest import FAST, PROMPTS, REPO, SUBMIT, images_in, run_submit, wait_for, write_prompts
from gen_worker.output import layout
from gen_worker.output.progress import read_progress

pytestmark = pytest.mark.e2e

WAN = ["--device", "cpu", "--num_inference_steps", "3", "--height", "64", "--width", "64", "--dtype", "bf16",
       "--max_sequence_length", "16"]


STATIC = ["--schedule", "static"]


def _run(model, csv, out, gpu_ids, settings=FAST, extra=()):
    result = run_submit("--cluster", "local", "--gpu_ids", *gpu_ids, "--prompts_csv", csv, "--output_dir", out,
                        "--model_path", model, *settings, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _summaries(out):
    return [json.load(open(layout.summary_file(out, k))) for k in range(json.load(open(
        os.path.join(out, layout.RUN_SUMMARY_FILE)))["num_workers"])]


def _assert_all_valid(out, expected_count):
    names = [n for n in os.listdir(out) if n.endswith(".png")]
    assert len(names) == expected_count
    for name in names:
        with Image.open(os.path.join(out, name)) as im:
            im.verify()
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


@pytest.fixture(scope="module")
def sd_reference(tiny_sd, tmp_path_factory):
    """One worker, all samples: the images every other run must reproduce byte for byte."""
    root = tmp_path_factory.mktemp("sd_ref")
    csv = write_prompts(root / "prompts.csv", PROMPTS)
    out = str(root / "out")
    _run(tiny_sd, csv, out, ["0"])
    return csv, out, images_in(out)


@pytest.mark.parametrize("gpu_ids", [["2", "3"], ["0", "1", "5"]])
def test_sd_images_identical_for_any_number_of_workers(tiny_sd, sd_reference, tmp_path, gpu_ids):
    csv, _, reference = sd_reference
    out = str(tmp_path / "out")
    result = _run(tiny_sd, csv, out, gpu_ids, extra=STATIC)  # per-worker shares (dynamic: test_dynamic_schedule.py)
    assert images_in(out) == reference
    assert sorted(reference) == sorted(f"{int(i):06d}_seed{42 + n}.png" for n, (i, _) in enumerate(PROMPTS))
    summaries = _summaries(out)
    assert [s["cuda_visible_devices"] for s in summaries] == gpu_ids
    assert [s["total"] for s in summaries] == [len(range(k, len(PROMPTS), len(gpu_ids))) for k in range(len(gpu_ids))]
    assert sum(s["generated"] for s in summaries) == len(PROMPTS)
    assert all(s["device"] == "cpu" and s["failed"] == 0 and s["load_seconds"] > 0 for s in summaries)
    run = json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))
    assert (run["generated"], run["missing"], run["failed"]) == (len(PROMPTS), 0, 0)
    for k, gpu in enumerate(gpu_ids):
        total = summaries[k]["total"]
        assert f"GPU {gpu}: 100%" in result.stderr and f"{total}/{total}" in result.stderr
    assert f"success: {summaries[0]['total']}, failed: 0]" in result.stderr


def test_sd_batch_of_3_images_identical_for_1_2_3_workers_and_resume_inside_a_block(tiny_sd, sd_reference, tmp_path):
    csv, _, batch_1 = sd_reference
    outputs = []
    for gpu_ids in (["0"], ["0", "1"], ["0", "1", "2"]):
        out = str(tmp_path / f"out{len(gpu_ids)}")
        _run(tiny_sd, csv, out, gpu_ids, extra=("--batch_size", "3", *STATIC))
        outputs.append(images_in(out))
    assert outputs[0] == outputs[1] == outputs[2]
    # The same files as at batch size 1; their last bits may differ (another batch composition).
    assert sorted(outputs[0]) == sorted(batch_1)
    summaries = _summaries(str(tmp_path / "out3"))
    assert [s["total"] for s in summaries] == [3, 3, 1]  # blocks [0-2], [3-5], [6]
    assert all(s["batch_size"] == 3 and s["warmup_seconds"] > 0 and s["first_image_seconds"] > 0
               and s["import_seconds"] > 0 for s in summaries)
    # Sample 4 is missing: its block [3-5] is made again whole (same batch, same bits), only it is written.
    out = str(tmp_path / "out1")
    os.remove(os.path.join(out, "000004_seed46.png"))
    _run(tiny_sd, csv, out, ["0", "1"], extra=("--batch_size", "3", *STATIC))
    assert images_in(out) == outputs[0]
    summaries = _summaries(out)
    assert (sum(s["generated"] for s in summaries), sum(s["skipped"] for s in summaries)) == (1, len(PROMPTS) - 1)
    refused = run_submit("--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd,
                         *FAST, "--batch_size", "2")
    assert refused.returncode == 2 and "batch_size: 3 -> 2" in refused.stderr


def test_wan_images_identical_for_1_2_3_workers(tiny_wan, tmp_path, prompts_csv):
    outputs = []
    for gpu_ids in (["0"], ["0", "1"], ["0", "1", "2"]):
        out = str(tmp_path / f"out{len(gpu_ids)}")
        _run(tiny_wan, prompts_csv, out, gpu_ids, settings=WAN)
        outputs.append(images_in(out))
    assert len(outputs[0]) == len(PROMPTS)
    assert outputs[0] == outputs[1] == outputs[2]
    sizes = {Image.open(os.path.join(tmp_path, "out1", n)).size for n in outputs[0]}
    assert sizes == {(64, 64)}


def test_resume_makes_only_missing_images(tiny_sd, sd_reference, tmp_path):
    csv, reference_out, reference = sd_reference
    out = str(tmp_path / "out")
    shutil.copytree(reference_out, out)
    deleted = sorted(reference)[1::3]
    for name in deleted:
        os.remove(os.path.join(out, name))
    before = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in reference if n not in deleted}
    _run(tiny_sd, csv, out, ["0", "1"], extra=STATIC)
    assert images_in(out) == reference
    assert before == {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in before}  # untouched
    summaries = _summaries(out)
    assert sum(s["generated"] for s in summaries) == len(deleted)
    assert sum(s["skipped"] for s in summaries) == len(reference) - len(deleted)
    # Nothing left to do: the workers do not even load the model.
    result = _run(tiny_sd, csv, out, ["0", "1"])
    assert all(s["generated"] == 0 and s["load_seconds"] == 0 for s in _summaries(out))
    assert f"{len(reference)}/{len(reference)} images" in result.stderr


def test_failed_samples_are_logged_and_retried_by_a_rerun(tiny_sd, sd_reference, tmp_path):
    csv, _, reference = sd_reference
    rows = [(i, p + " FAIL_HERE") if n in (2, 5) else (i, p) for n, (i, p) in enumerate(PROMPTS)]
    bad_csv = write_prompts(tmp_path / "bad.csv", rows)
    out = str(tmp_path / "out")
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "tests", "fault_injection"))
    args = ["--cluster", "local", "--gpu_ids", "0", "1", "--prompts_csv", bad_csv, "--output_dir", out,
            "--model_path", tiny_sd, *FAST]
    result = run_submit(*args, env=env)
    assert result.returncode == 1
    failures = [json.loads(line) for k in (0, 1) if os.path.exists(layout.failed_file(out, k))
                for line in open(layout.failed_file(out, k), encoding="utf-8")]
    assert sorted((f["index"], f["seed"], f["image_id"]) for f in failures) == [(2, 44, "2"), (5, 47, "5")]
    assert all("injected failure" in f["error"] and "FAIL_HERE" in f["prompt"] for f in failures)
    assert "2 samples failed" in result.stderr and "Rerun the same command" in result.stderr
    assert len(images_in(out)) == len(PROMPTS) - 2
    # The rerun (no failure now) makes exactly the two failed samples.
    result = run_submit(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sum(s["generated"] for s in _summaries(out)) == 2
    assert not any(os.path.exists(layout.failed_file(out, k)) for k in (0, 1))
    made = images_in(out)
    assert len(made) == len(PROMPTS)
    unchanged = [n for n in reference if n not in ("000002_seed44.png", "000005_seed47.png")]
    assert {n: made[n] for n in unchanged} == {n: reference[n] for n in unchanged}


def _start(model, csv, out, gpu_ids, settings):
    return subprocess.Popen([sys.executable, SUBMIT, "--cluster", "local", "--gpu_ids", *gpu_ids,
                             "--prompts_csv", csv, "--output_dir", out, "--model_path", model, *settings],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


SLOW = ["--device", "cpu", "--num_inference_steps", "12", "--height", "64", "--width", "64", "--dtype", "fp32"]
MANY = [(str(i), f"prompt number {i}, a photo") for i in range(16)]


def test_kill_9_of_a_worker_loses_nothing_and_a_rerun_completes(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", MANY)
    reference_out = str(tmp_path / "reference")
    _run(tiny_sd, csv, reference_out, ["0"], settings=SLOW)
    out = str(tmp_path / "out")
    submitter = _start(tiny_sd, csv, out, ["0", "1"], SLOW + STATIC)  # dynamic: test_dynamic_schedule.py
    progress = layout.progress_file(out, 1)

    def worker_1_has_made_one():
        try:
            return json.load(open(progress))["generated"] >= 1
        except (OSError, ValueError):
            return False
    wait_for(worker_1_has_made_one, what="worker 1's first image")
    os.kill(json.load(open(progress))["pid"], signal.SIGKILL)
    _, stderr = submitter.communicate(timeout=300)
    assert submitter.returncode == 1
    assert "exit code -9" in stderr and "Rerun the same command" in stderr
    on_disk = images_in(out)
    assert 0 < len(on_disk) < len(MANY)
    _assert_all_valid(out, len(on_disk))
    _run(tiny_sd, csv, out, ["0", "1"], settings=SLOW)
    assert images_in(out) == images_in(reference_out)


def test_ctrl_c_stops_every_worker_promptly_and_leaves_no_partial_file(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", MANY)
    out = str(tmp_path / "out")
    submitter = _start(tiny_sd, csv, out, ["0", "1"], SLOW)
    wait_for(lambda: os.path.isdir(out) and len(images_in(out)) >= 2, what="two images")
    pids = [read_progress(out, k)["pid"] for k in (0, 1)]
    os.killpg(submitter.pid, signal.SIGINT)  # what the terminal does on Ctrl+C
    started = time.monotonic()
    _, stderr = submitter.communicate(timeout=60)
    assert time.monotonic() - started < 20
    assert submitter.returncode == 130
    assert "interrupted" in stderr and "Rerun the same command" in stderr
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    _assert_all_valid(out, len(images_in(out)))
    assert [json.load(open(layout.summary_file(out, k)))["state"] for k in (0, 1)] == ["interrupted"] * 2
    _run(tiny_sd, csv, out, ["0", "1"], settings=SLOW)
    assert len(images_in(out)) == len(MANY)


def test_second_concurrent_run_into_the_same_folder_is_refused(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", MANY)
    out = str(tmp_path / "out")
    first = _start(tiny_sd, csv, out, ["0"], SLOW + STATIC)  # a dynamic run is joined: test_dynamic_schedule.py
    try:
        wait_for(lambda: os.path.exists(layout.progress_file(out, 0)), what="the first run's worker")
        second = run_submit("--gpu_ids", "1", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *SLOW,
                            *STATIC)
        assert second.returncode == 2
        assert "is in use by another run" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.communicate(timeout=60)


def test_unsafe_ids_never_write_outside_the_output_dir(tiny_sd, tmp_path):
    rows = [("../escape", "a cat"), ("a/b", "a dog"), ("x\x1by", "a bird"), ("..", "a fish")]
    csv = write_prompts(tmp_path / "p.csv", rows)
    out = str(tmp_path / "deep" / "out")
    _run(tiny_sd, csv, out, ["0"])
    assert sorted(os.listdir(tmp_path)) == ["deep", "p.csv"]
    assert sorted(os.listdir(tmp_path / "deep")) == ["out"]
    made = images_in(out)
    with open(os.path.join(out, layout.MANIFEST_FILE), encoding="utf-8", newline="") as f:
        mapping = {row["image_id"]: row["file_name"] for row in csv_module.DictReader(f)}
    assert sorted(mapping) == sorted(raw for raw, _ in rows)  # the original ids are recorded
    assert sorted(mapping.values()) == sorted(made)
    assert all("/" not in name and not name.startswith(".") for name in made)


def test_gpu_ids_are_indices_into_cuda_visible_devices(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:2])
    out = str(tmp_path / "out")
    result = run_submit("--gpu_ids", "0", "1", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd,
                        *FAST, "--schedule", "static",  # one image each: both workers surely start
                        env=dict(os.environ, CUDA_VISIBLE_DEVICES="4,5"))
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = _summaries(out)
    assert [s["cuda_visible_devices"] for s in summaries] == ["4", "5"]
    assert [s["gpu_uuid"] for s in summaries] == [None, None]  # CPU workers
    assert "GPU 4: 100%" in result.stderr and "GPU 5: 100%" in result.stderr
