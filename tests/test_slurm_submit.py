"""--cluster slurm against the real one-node cluster of slurm/start_cluster.sh (8 fake GPUs).

Every test submits real jobs with submit.py, as users do, on the tiny model with --device cpu.
Each task pays ~10 s of imports on the 2-core CI machine, so the runs are few and small. CI
starts the cluster with T2I_SLURM_MAX_ARRAY=5, so an 8-task array must be split in two.
"""
import json
import math
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import FAST, REPO, SUBMIT, images_in, run_submit, wait_for, write_prompts
from gen_worker.output import layout
from gen_worker.output.progress import read_progress
from gen_worker.slurm.commands import parse_time_minutes

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.usefixtures("slurm_cluster")]

PROMPTS9 = [(str(i), f"prompt number {i}, a photo of a cat") for i in range(9)]
# Small enough that 8 tasks fit the 16-CPU / 16 GB test node at once.
# --schedule static: these tests follow task k's own share (dynamic: test_dynamic_slurm.py).
SLURM = ["--cluster", "slurm", "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15", "--schedule", "static"]
# 20 steps: ~2 s an image, so a task can be caught between two images.
SLOW = ["--device", "cpu", "--num_inference_steps", "20", "--height", "64", "--width", "64", "--dtype", "fp32"]


def _max_array_size():
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M).group(1))


def _submissions(out):
    return json.load(open(os.path.join(out, layout.SLURM_JOBS_FILE)))["submissions"]


def _in_queue(job_ids):
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i"],
                         capture_output=True, text=True).stdout
    return out.split()


def _progress(out, k):
    return read_progress(out, k) or {}  # {} until the task's worker has written it


def _summaries(out, workers):
    return {k: json.load(open(layout.summary_file(out, k))) for k in workers}


def _assert_one_distinct_gpu_each(summaries):
    gpus = [s["cuda_visible_devices"] for s in summaries.values()]
    assert all(g is not None and g.isdigit() for g in gpus), gpus  # one GPU, as SLURM numbered it
    assert len(set(gpus)) == len(gpus), gpus


def _stamps(out):
    return {n: (os.stat(os.path.join(out, n)).st_ino, os.stat(os.path.join(out, n)).st_mtime_ns) for n in images_in(out)}


@pytest.fixture(scope="module")
def reference(tiny_sd, tmp_path_factory):
    """A local one-worker run: the bytes every SLURM run must reproduce."""
    root = tmp_path_factory.mktemp("slurm_ref")
    csv = write_prompts(root / "prompts.csv", PROMPTS9)
    out = str(root / "out")
    result = run_submit("--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", out,
                        "--model_path", tiny_sd, *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    return csv, images_in(out)


def test_array_of_8_split_by_max_array_size_matches_local_run(tiny_sd, reference, tmp_path):
    csv, expected = reference
    max_array = _max_array_size()
    if os.environ.get("T2I_REQUIRE_SLURM") == "1":
        assert max_array < 8, "CI must start the cluster with T2I_SLURM_MAX_ARRAY=5 so that the array split is tested"
    out = str(tmp_path / "out")
    args = [*SLURM, "--gpus", "8", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *FAST]
    result = run_submit(*args, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert images_in(out) == expected  # every image once, byte for byte the local run's
    [submission] = _submissions(out)
    assert len(submission["job_ids"]) == math.ceil(8 / max_array)  # split, not refused
    assert [t["worker"] for t in submission["tasks"]] == list(range(8))
    for job in submission["job_ids"]:
        assert f"job {job}" in result.stdout
    assert "logs/submitit" in result.stdout
    summaries = _summaries(out, range(8))
    _assert_one_distinct_gpu_each(summaries)
    assert {s["slurm_array_job_id"] for s in summaries.values()} == set(submission["job_ids"])
    assert sum(s["generated"] for s in summaries.values()) == 9
    for k in range(8):
        assert re.search(rf"task {k} \(GPU \d\): 100%", result.stderr)
    run = json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))
    assert (run["missing"], run["generated"], run["num_workers"]) == (0, 9, 8)
    # The same command again: nothing left, nothing queued.
    again = run_submit(*args, "--no_wait")
    assert again.returncode == 0 and "Nothing to submit" in again.stdout, again.stderr
    assert [len(s["tasks"]) for s in _submissions(out)] == [8, 0]  # the rerun is the folder's last run now
    # status judges that rerun, not the first run's tasks (whose summaries it moved to logs/previous/)
    status = run_submit("status", "--output_dir", out)
    assert status.returncode == 0, status.stdout + status.stderr[-3000:]
    assert "nothing queued: every image was there" in status.stdout, status.stdout
    assert "9/9 images" in status.stdout and "(0 generated, 9 already there)" in status.stdout, status.stdout
    assert "warning" not in status.stderr and "stopped" not in status.stdout, status.stdout + status.stderr
    run = json.load(open(os.path.join(out, layout.RUN_SUMMARY_FILE)))
    assert (run["missing"], run["generated"], run["skipped"]) == (0, 0, 9)
    assert {w["state"] for w in run["workers"]} == {"nothing left"}


def test_tasks_mode_submitted_from_inside_a_job(tiny_sd, reference, tmp_path):
    """One job of 3 srun tasks, one GPU each. Submitted from inside another job (with --mem):
    without a clean environment its SLURM_MEM_PER_NODE would make the inner srun fail. And from a
    folder holding another gen_worker (another checkout): the tasks must not import that one."""
    csv, expected = reference
    out = str(tmp_path / "out")
    decoy = tmp_path / "other_checkout"
    (decoy / "gen_worker").mkdir(parents=True)
    (decoy / "gen_worker" / "__init__.py").write_text('raise ImportError("the decoy gen_worker was imported")\n')
    submit = [sys.executable, SUBMIT, *SLURM, "--slurm_mode", "tasks", "--gpus", "3", "--prompts_csv", csv,
              "--output_dir", out, "--model_path", tiny_sd, *FAST, "--no_wait"]
    outer_log = tmp_path / "outer.log"
    subprocess.run(["sbatch", "--wait", "--mem=500M", "--cpus-per-task=1", "--time=5", f"--output={outer_log}",
                    f"--chdir={decoy}", "--wrap", subprocess.list2cmdline(submit)], check=True, timeout=120,
                   capture_output=True)
    assert "Submitted 3 SLURM tasks (tasks mode" in outer_log.read_text(), outer_log.read_text()
    result = run_submit("status", "--output_dir", out, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert images_in(out) == expected
    [submission] = _submissions(out)
    assert len(submission["job_ids"]) == 1 and [t["rank"] for t in submission["tasks"]] == [0, 1, 2]
    summaries = _summaries(out, range(3))
    _assert_one_distinct_gpu_each(summaries)
    assert [s["slurm_procid"] for s in summaries.values()] == ["0", "1", "2"]


def test_status_cancel_requeue_and_resubmission(tiny_sd, tmp_path):
    """3 array tasks of 4 images, 2 at a time. While they run: a rerun (SLURM or local) is refused;
    pending task 2 is cancelled; task 0 gets submitit's preemption signal (checkpoint + `scontrol
    requeue`) after its first image and resumes where it stopped. The rerun then queues only task 2,
    which makes its images; no other image is touched. (A task is cancelled while pending because a
    running one keeps working for SLURM's KillWait: submitit ignores SIGTERM so that it can requeue.)"""
    rows = [(str(i), f"prompt {i}, a photo of a dog") for i in range(12)]
    csv = write_prompts(tmp_path / "p.csv", rows)
    out = str(tmp_path / "out")
    args = [*SLURM, "--gpus", "3", "--array_parallelism", "2", "--prompts_csv", csv, "--output_dir", out,
            "--model_path", tiny_sd, *SLOW]
    first = run_submit(*args)  # not a terminal: does not wait
    assert first.returncode == 0, first.stderr
    assert "status --output_dir" in first.stdout and "cancel --output_dir" in first.stdout
    [submission] = _submissions(out)
    ids = {t["worker"]: t["slurm_id"] for t in submission["tasks"]}

    refused = run_submit(*args)
    assert refused.returncode == 2 and "still queued or running" in refused.stderr, refused.stderr
    assert len(_submissions(out)) == 1
    local = run_submit("--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", out,
                       "--model_path", tiny_sd, *SLOW)
    assert local.returncode == 2 and "still queued or running" in local.stderr, local.stderr

    status = run_submit("status", "--output_dir", out)
    assert status.returncode == 0 and "Still running" in status.stdout, status.stdout
    assert re.search(r"task 2 +\S+ +0/4 images +PENDING", status.stdout), status.stdout
    cancel = run_submit("cancel", "--output_dir", out, "--task", "2")
    assert cancel.returncode == 0 and f"Cancelled {ids[2]}" in cancel.stdout, cancel.stdout + cancel.stderr

    wait_for(lambda: _progress(out, 0).get("generated", 0) >= 1, timeout=240, what="task 0's first image")
    # What a timeout or preemption does: submitit's signal, checkpoint, `scontrol requeue`.
    subprocess.run(["scancel", "--signal=USR2", ids[0]], check=True)
    status = run_submit("status", "--output_dir", out)
    assert re.search(r"task 0 \(GPU \d\) +\S+ +[1-4]/4 images +(?!done)", status.stdout), status.stdout
    wait_for(lambda: not _in_queue(submission["job_ids"]), timeout=240, what="the jobs to end", interval=0.2)

    assert json.load(open(layout.slurm_task_file(out, 0)))["restart_count"] >= 1  # requeued, and ran again
    resumed = json.load(open(layout.summary_file(out, 0)))
    assert resumed["state"] == "done" and resumed["skipped"] >= 1 and resumed["generated"] + resumed["skipped"] == 4
    status = run_submit("status", "--output_dir", out)
    assert status.returncode == 1, status.stdout
    assert re.search(r"task 2 .*stopped: left the queue without starting", status.stdout), status.stdout
    assert re.search(r"task 1 \(GPU \d\) +\S+ +4/4 images +done", status.stdout), status.stdout
    task2_files = {r["file_name"] for r in _manifest_rows(out) if int(r["index"]) % 3 == 2}
    before = _stamps(out)
    assert sorted(set(before)) == sorted({r["file_name"] for r in _manifest_rows(out)} - task2_files)

    rerun = run_submit(*args, "--wait")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr[-3000:]
    assert [t["worker"] for t in _submissions(out)[-1]["tasks"]] == [2]
    after = _stamps(out)
    assert len(after) == 12
    assert {n: after[n] for n in before} == before  # not one existing image rewritten
    assert set(after) - set(before) == task2_files
    assert json.load(open(layout.summary_file(out, 2)))["generated"] == 4


def _manifest_rows(out):
    import csv
    with open(os.path.join(out, layout.MANIFEST_FILE), encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_ctrl_c_detaches_and_cancel_stops_everything(tiny_sd, tmp_path):
    # 12 images a task: far more than a task could make in SLURM's KillWait after the cancel.
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt {i}, a photo of a bird") for i in range(24)])
    out = str(tmp_path / "out")
    log = tmp_path / "submit.stderr"
    with open(log, "w") as stderr_file:
        waiting = subprocess.Popen([sys.executable, SUBMIT, *SLURM, "--slurm_mode", "tasks", "--gpus", "2",
                                    "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *SLOW,
                                    "--wait"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr_file,
                                   start_new_session=True)
    # Its progress bars are drawn as it starts following the jobs: then Ctrl+C detaches.
    drawn = lambda: re.search(r"task 1\b.*%\|", log.read_text(errors="replace"))  # noqa: E731
    wait_for(drawn, timeout=240, what="the progress bars")
    os.killpg(waiting.pid, signal.SIGINT)
    waiting.wait(timeout=60)
    stderr = log.read_text()
    assert waiting.returncode == 130, stderr
    assert "Detached" in stderr and "status --output_dir" in stderr and "cancel --output_dir" in stderr
    [submission] = _submissions(out)
    assert _in_queue(submission["job_ids"])  # still queued or running
    cancel = run_submit("cancel", "--output_dir", out)
    assert cancel.returncode == 0 and "Cancelled" in cancel.stdout, cancel.stdout + cancel.stderr
    assert not _in_queue(submission["job_ids"])
    again = run_submit("cancel", "--output_dir", out)
    assert again.returncode == 0 and "Nothing to cancel" in again.stdout
    status = run_submit("status", "--output_dir", out)
    assert len(re.findall(r"^  task \d.*stopped: ", status.stdout, re.M)) == 2, status.stdout
    assert "Rerun the same command" in status.stdout


def _default_partition_max_minutes():
    """The default partition's MaxTime in minutes, as scontrol reports it (None: unlimited)."""
    out = subprocess.run(["scontrol", "show", "partition", "--oneliner"], capture_output=True, text=True,
                         check=True).stdout
    [line] = [line for line in out.splitlines() if " Default=YES " in f" {line} "]
    return parse_time_minutes(re.search(r"\bMaxTime=(\S+)", line).group(1))


@pytest.mark.parametrize("extra, message", [
    (["--partition", "nosuchpartition"], "SLURM refuses these options"),
    (["--time", "LIMIT+1"], "--time {over} is more than the {limit} minutes the default partition allows"),
    (["--sbatch_option", "constraint=nosuchfeature"], "--constraint is not passed through (use --constraint)"),
    (["--constraint", "nosuchfeature"], "SLURM refuses these options"),
    (["--gpu_ids", "0", "1"], "--gpu_ids is for --cluster local"),
    (["--time", "2"], "--time is in minutes and must be at least 5"),
])
def test_bad_slurm_options_are_refused_before_anything_is_queued(tiny_sd, tmp_path, extra, message):
    if "LIMIT+1" in extra:  # the cluster's own limit: not every cluster has the test cluster's 7 days
        limit = _default_partition_max_minutes()
        if limit is None:
            pytest.skip("the default partition has no time limit")
        extra = [str(limit + 1) if a == "LIMIT+1" else a for a in extra]
        message = message.format(over=limit + 1, limit=limit)
    csv = write_prompts(tmp_path / "p.csv", PROMPTS9[:2])
    out = str(tmp_path / "out")
    result = run_submit(*SLURM, "--gpus", "2", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd,
                        *FAST, *extra)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert not os.path.exists(os.path.join(out, layout.SLURM_JOBS_FILE))
    assert not os.path.isdir(out) or not images_in(out)


def test_setup_lines_run_and_a_task_that_cannot_start_says_why(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", PROMPTS9[:2])
    out = str(tmp_path / "out")
    result = run_submit(*SLURM, "--gpus", "2", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd,
                        *FAST, "--slurm_setup", "echo setup ran >&2",
                        "--slurm_setup", "echo 'module: cuda/99 not found' >&2; exit 3", "--wait")
    assert result.returncode == 1, result.stderr
    for k in (0, 1):
        assert f"task {k} (worker {k}) stopped: left the queue without starting: module: cuda/99 not found" \
            in result.stderr
    assert "Rerun the same command" in result.stderr
    assert "setup ran" in open(_submissions(out)[0]["tasks"][0]["stderr"]).read()


def test_scheduler_reaches_the_tasks(tiny_sd, tmp_path):
    """--scheduler goes through the pickled spec: the array's images are the local run's."""
    csv = write_prompts(tmp_path / "prompts.csv", PROMPTS9[:4])
    extra = ["--prompts_csv", csv, "--model_path", tiny_sd, *FAST, "--scheduler", "EulerDiscreteScheduler"]
    local = run_submit("--cluster", "local", "--gpu_ids", "0", "--output_dir", str(tmp_path / "local"), *extra)
    assert local.returncode == 0, local.stderr[-2000:]
    result = run_submit(*SLURM, "--gpus", "2", "--output_dir", str(tmp_path / "slurm"), *extra, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert images_in(str(tmp_path / "slurm")) == images_in(str(tmp_path / "local"))
    assert "--scheduler: EulerDiscreteScheduler in place of DDIMScheduler" in open(
        layout.worker_log(str(tmp_path / "slurm"), 1)).read()
