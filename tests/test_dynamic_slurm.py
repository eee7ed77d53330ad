"""--schedule dynamic on the real test cluster: a cancelled task's blocks are taken over (exit 0,
no resubmission), a second submission joins the run under way, status shows the leases; a hung task loses
its block and is cancelled once every block is done."""
import json
import os
import re
import subprocess

import pytest

from conftest import FAST, REPO, images_in, run_submit, wait_for, write_prompts
from gen_worker.output import layout
from gen_worker.output.progress import read_progress

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.usefixtures("slurm_cluster")]

SLURM = ["--cluster", "slurm", "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15", "--no_wait"]
SLOW = ["--device", "cpu", "--num_inference_steps", "20", "--height", "64", "--width", "64", "--dtype", "fp32"]


def test_a_cancelled_task_is_taken_over_and_a_joining_submission_adds_a_task(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt number {i}, a photo") for i in range(36)])
    out = str(tmp_path / "out")
    args = [*SLURM, "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *SLOW, "--lease_seconds", "5"]
    first = run_submit(*args, "--gpus", "3")
    assert first.returncode == 0, first.stderr
    wait_for(lambda: len(images_in(out)) >= 3, timeout=240, what="three images")
    status = run_submit("status", "--output_dir", out)
    assert re.search(r"block \d+ +task \d \(GPU \d\): heartbeat seen \d+ s ago", status.stdout), status.stdout
    cancel = run_submit("cancel", "--output_dir", out, "--task", "1")
    assert cancel.returncode == 0 and "Cancelled" in cancel.stdout, cancel.stdout + cancel.stderr
    joined = run_submit(*args, "--gpus", "1")
    assert joined.returncode == 0 and "Joining the run under way" in joined.stdout, joined.stdout + joined.stderr
    submissions = json.load(open(os.path.join(out, layout.SLURM_JOBS_FILE)))["submissions"]
    assert [t["worker"] for t in submissions[1]["tasks"]] == [3] and submissions[1]["join"]
    other = run_submit(*[a if a != "20" else "19" for a in args], "--gpus", "1")  # other steps: refused
    assert other.returncode == 2 and "cannot be joined" in other.stderr, other.stderr

    done = run_submit("status", "--output_dir", out, "--wait", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "warning: task 1" in done.stderr and "the other workers made its blocks" in done.stderr
    assert len(images_in(out)) == 36
    summaries = {k: json.load(open(layout.summary_file(out, k))) for k in (0, 2, 3)}
    assert summaries[3]["generated"] > 0  # the joined task
    assert len(json.load(open(os.path.join(out, layout.SLURM_JOBS_FILE)))["submissions"]) == 2  # no resubmission


def test_status_wait_cancels_a_hung_task_once_every_block_of_the_sweep_is_done(tiny_sd, tmp_path):
    """A sweep of two configurations; the first task to make sample 1 of the first hangs in a denoising step
    (tests/fault_injection): its lease runs out, the other task makes its block and the second configuration,
    and `status --wait` cancels the hung task once both are done, instead of waiting for the time limit."""
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt number {i}, a photo" + " HANG_HERE" * (i == 1))
                                             for i in range(6)])
    top, hung = tmp_path / "sweep", tmp_path / "hung"
    faults = os.path.join(REPO, "tests", "fault_injection")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, faults]), T2I_TEST_HANG_ONCE=str(hung))
    submitted = run_submit(*SLURM, "--prompts_csv", csv, "--output_dir", top, "--model_path", tiny_sd, *FAST,
                           "--sweep", "guidance_scale=1.5,4", "--lease_seconds", "3", "--gpus", "2", env=env)
    assert submitted.returncode == 0, submitted.stderr
    done = run_submit("status", "--output_dir", top, "--wait", timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    first, second = top / "guidance_scale-1.5", top / "guidance_scale-4"
    pid = int(hung.read_text())
    [k] = [k for k in (0, 1) if read_progress(first, k)["pid"] == pid]
    last_lines = done.stderr.split("== configuration guidance_scale-4")[-1]  # cancelled once both were done
    assert re.search(rf"warning: task {k} .*\(worker {k}\) was still running \d+ s after every block was done: "
                     "cancelled; log:", last_lines), done.stderr
    assert len(images_in(first)) == 6 and len(images_in(second)) == 6
    assert json.load(open(layout.summary_file(first, 1 - k)))["blocks_taken_over"] >= 1
    job = json.load(open(layout.slurm_task_file(first, k)))["slurm_job_id"]
    wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip() == "",
             timeout=120, what="the hung task to leave the queue")
