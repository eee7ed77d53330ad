"""--schedule dynamic end to end, local mode: same bytes as static, a killed or hung worker's blocks taken
over, a run joined by a second submitter."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from PIL import Image

from conftest import FAST, REPO, SUBMIT, images_in, run_submit, wait_for, write_prompts
from gen_worker.output import layout
from gen_worker.output.progress import read_progress

pytestmark = pytest.mark.e2e

SLOW = ["--device", "cpu", "--num_inference_steps", "12", "--height", "64", "--width", "64", "--dtype", "fp32"]
PROMPTS = [(str(i), f"prompt number {i}, a photo") for i in range(7)]
FAULTS = os.path.join(REPO, "tests", "fault_injection")  # its sitecustomize hangs a HANG_HERE block's call, and more


def _args(model, csv, out, gpu_ids, settings, *extra):
    return ["--cluster", "local", "--gpu_ids", *gpu_ids, "--prompts_csv", csv, "--output_dir", out,
            "--model_path", model, *settings, *extra]


def _start(*args, env=None):
    return subprocess.Popen([sys.executable, SUBMIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=env)


def _summary(out, k):
    return json.load(open(layout.summary_file(out, k)))


def _progress_shows(out, k, generated):
    progress = read_progress(out, k)  # None until the worker has written it
    return progress is not None and progress["generated"] >= generated


def test_dynamic_images_are_the_static_ones_for_1_and_2_workers(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", PROMPTS)
    made = {}
    for name, gpu_ids, schedule in (("dyn1", ["0"], "dynamic"), ("dyn2", ["0", "1"], "dynamic"),
                                    ("static2", ["0", "1"], "static")):
        out = str(tmp_path / name)
        result = run_submit(*_args(tiny_sd, csv, out, gpu_ids, FAST, "--batch_size", "2", "--schedule", schedule))
        assert result.returncode == 0, result.stderr[-2000:]
        made[name] = images_in(out)
    assert len(made["dyn1"]) == len(PROMPTS)
    assert made["dyn1"] == made["dyn2"] == made["static2"]
    out = str(tmp_path / "dyn2")
    summaries = [_summary(out, k) for k in (0, 1)]
    assert sum(s["blocks_claimed"] for s in summaries) == 4  # blocks [0-1], [2-3], [4-5], [6]
    assert sum(s["generated"] for s in summaries) == len(PROMPTS)
    assert json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))["schedule"] == "dynamic"
    # A rerun of a complete folder: every image is there, no worker is started (local.py).
    again = run_submit(*_args(tiny_sd, csv, out, ["0", "1"], FAST, "--batch_size", "2"))
    summary = json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))
    assert again.returncode == 0 and (summary["num_workers"], summary["skipped"]) == (0, len(PROMPTS))
    assert not any(os.path.exists(layout.summary_file(out, k)) for k in (0, 1))  # the last run's, set aside


def test_a_killed_workers_blocks_are_taken_over_and_the_run_succeeds(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt number {i}, a photo") for i in range(16)])
    out = str(tmp_path / "out")
    submitter = _start(*_args(tiny_sd, csv, out, ["0", "1"], SLOW, "--lease_seconds", "2"))
    wait_for(lambda: _progress_shows(out, 1, 1), what="worker 1's first image")
    os.kill(read_progress(out, 1)["pid"], signal.SIGKILL)
    _, stderr = submitter.communicate(timeout=300)
    assert submitter.returncode == 0, stderr[-3000:]
    assert "warning: GPU 1 (worker 1) stopped: exit code -9; the other workers made its blocks" in stderr
    assert len(images_in(out)) == 16
    for name in images_in(out):  # a killed writer leaves at most a hidden temporary file, never a partial image
        with Image.open(os.path.join(out, name)) as im:
            im.verify()
    assert _summary(out, 0)["blocks_taken_over"] >= 1


def test_a_second_submitter_joins_a_dynamic_run_and_other_settings_are_refused(tiny_sd, tmp_path):
    # The first worker, claiming blocks in order at batch 1, stops before sample 6 until image 7 exists: only the
    # joiner can make it, so the joiner has work whatever the machine's load (it once found every block taken).
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt number {i}, a photo" + " WAIT_HERE" * (i == 6))
                                             for i in range(24)])
    out = str(tmp_path / "out")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, FAULTS]),
               T2I_TEST_WAIT_FOR=os.path.join(out, "7_seed49.png"))
    first = _start(*_args(tiny_sd, csv, out, ["0"], SLOW), env=env)
    try:
        wait_for(lambda: _progress_shows(out, 0, 1), what="the first run's first image")
        status = run_submit("status", "--output_dir", out)
        assert status.returncode == 0 and re.search(r"block \d+ +worker 0: heartbeat seen \d+ s ago", status.stdout), \
            status.stdout + status.stderr
        other = run_submit(*_args(tiny_sd, csv, out, ["1"], SLOW[:-4], "--dtype", "fp32", "--num_inference_steps", "11"))
        assert other.returncode == 2 and "cannot be joined" in other.stderr and "num_inference_steps" in other.stderr
        static = run_submit(*_args(tiny_sd, csv, out, ["1"], SLOW, "--schedule", "static"))
        assert static.returncode == 2 and "only --schedule dynamic runs can be joined" in static.stderr
        joined = run_submit(*_args(tiny_sd, csv, out, ["1"], SLOW))
        assert joined.returncode == 0, joined.stderr[-3000:]
        assert "Joining the run under way" in joined.stderr
    finally:
        if first.poll() is None:
            _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    assert len(images_in(out)) == 24
    made = [_summary(out, k)["generated"] for k in (0, 1)]  # the joiner got the next free index, 1
    assert made[1] > 0 and sum(made) == 24


def _hang_run(tmp_path, tiny_sd, gpu_ids=("0", "1"), **env_changes):
    """8 samples, lease 2 s; the worker that makes sample 7 hangs in its second denoising step (its other threads
    run on) while the other, done with the rest, waits for that block. Returns (result, output folder, the hung
    worker's index). env_changes: more of tests/fault_injection's variables."""
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt number {i}, a photo" + " HANG_HERE" * (i == 7))
                                             for i in range(8)])
    out, hung = str(tmp_path / "out"), tmp_path / "hung"
    # This checkout first: the sitecustomize imports gen_worker before the script's folder is on sys.path.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, FAULTS]), T2I_TEST_HANG_ONCE=str(hung), **env_changes)
    result = run_submit(*_args(tiny_sd, csv, out, list(gpu_ids), FAST, "--lease_seconds", "2"), env=env, timeout=240)
    pid = int(hung.read_text())
    [k] = [k for k in range(len(gpu_ids)) if read_progress(out, k)["pid"] == pid]
    return result, out, k


def _made_once_each(out, count):
    """Every image is there, whole, and was created once: a second copy is counted as skipped, never written."""
    assert len(images_in(out)) == count
    for name in images_in(out):
        with Image.open(os.path.join(out, name)) as im:
            im.verify()
    progress = [read_progress(out, k) for k in (0, 1)]
    assert sum(p["generated"] for p in progress) == count


def test_a_hung_worker_loses_its_block_and_is_stopped_once_every_block_is_done(tiny_sd, tmp_path):
    result, out, k = _hang_run(tmp_path, tiny_sd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"warning: GPU {k} \(worker {k}\) was still running \d+ s after every block was done: killed "
                     r"\(SIGTERM did not end it within \d+ s\); log:", result.stderr), result.stderr[-3000:]
    _made_once_each(out, 8)
    assert _summary(out, 1 - k)["blocks_taken_over"] >= 1
    log = open(layout.worker_log(out, k)).read()
    assert "no progress in this pipeline call for 2 s" in log  # why it lost its block


def test_a_worker_stuck_for_a_while_loses_its_block_and_its_late_images_are_not_written_again(tiny_sd, tmp_path):
    # 5 s: past the lease, and before the submitter would stop it (5 s after every block is done)
    result, out, k = _hang_run(tmp_path, tiny_sd, T2I_TEST_HANG_SECONDS="5")
    assert result.returncode == 0, result.stderr[-3000:]
    _made_once_each(out, 8)
    assert _summary(out, 1 - k)["blocks_taken_over"] >= 1
    assert sum(read_progress(out, w)["skipped"] for w in (0, 1)) == 1  # the second copy


def test_a_worker_stuck_past_its_watchdog_says_where_and_exits(tiny_sd, tmp_path):
    """Alone, no one takes its block over: its own watchdog (3 leases here; at least 5 minutes unless a test
    lowers it) ends it, so that its GPU is freed, and the run says what is missing."""
    result, out, _ = _hang_run(tmp_path, tiny_sd, ["0"], T2I_TEST_WATCHDOG_SECONDS="0")
    assert result.returncode == 1 and "1 images missing" in result.stderr, result.stderr[-3000:]
    log = open(layout.worker_log(out, 0)).read()
    assert re.search(r"ERROR no progress for 6 s in a pipeline call \(a hung GPU call\?\): the worker exits so that "
                     r"its GPU is freed; .*The main thread is at:\n.*sitecustomize.py", log, re.S), log[-3000:]
    assert read_progress(out, 0)["state"] == "error"
    summary = _summary(out, 0)  # written by the watchdog too: what the worker made, and why it ended
    assert summary["state"] == "error" and "no progress for 6 s" in summary["message"], summary
    assert summary["generated"] == 7 and summary["seconds"] > 0, summary
    assert not os.path.exists(os.path.join(out, "claims", "block000007"))  # released: another worker need not wait


def test_a_finished_dynamic_run_leaves_no_per_block_files(tiny_sd, tmp_path):
    prompts = [(str(i), f"prompt number {i}, a photo") for i in range(40)]
    csv = write_prompts(tmp_path / "p.csv", prompts)
    out = str(tmp_path / "out")
    result = run_submit(*_args(tiny_sd, csv, out, ["0", "1"], FAST, "--batch_size", "1", "--schedule", "dynamic"))
    assert result.returncode == 0, result.stderr[-2000:]
    files = [os.path.join(d, n) for d, _, names in os.walk(out) for n in names]
    assert len(images_in(out)) == len(prompts)
    assert len(files) <= len(prompts) + 30, sorted(os.path.relpath(f, out) for f in files)
    assert not [f for f in os.listdir(os.path.join(out, layout.CLAIMS_DIR)) if f.startswith("block")]
    status = subprocess.run([sys.executable, SUBMIT, "status", "--output_dir", out], capture_output=True, text=True)
    assert "Blocks: 40 done, 0 being made" in status.stdout + status.stderr, status.stdout + status.stderr
