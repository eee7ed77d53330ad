"""The submitter never dies with a traceback: a full disk, a double Ctrl+C, damaged output folders,
unanswerable squeue. Each ends with one line (and the right exit status). Ids 1 and 1.0: test_prompts.py."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAST, SUBMIT, REPO, run_submit, write_prompts

pytestmark = pytest.mark.e2e  # submit.py in fresh processes


def _submit(csv, out, model, *extra, **kwargs):
    return run_submit("--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", out,
                      "--model_path", model, *FAST, *extra, **kwargs)


def _one_error_line(result, status, message):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr


# a. A full disk while the submitter writes its records: one line naming the file, exit 1, hint.

@pytest.fixture()
def small_tmpfs(tmp_path):
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder):
    """Fill the file system up to its last byte."""
    fd = os.open(os.path.join(folder, "filler.bin"), os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("earlier_run, failing_file", [(False, ".t2i-batch.lock"), (True, "generation_settings.json")])
def test_disk_full_while_recording_is_one_line_exit_1(tmp_path, tiny_sd, small_tmpfs, earlier_run, failing_file):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a cat"), ("2", "a dog")])
    out = small_tmpfs / "out"
    out.mkdir()
    if earlier_run:  # its lock file has room for the new holder's line: the settings are the first to fail
        (out / ".t2i-batch.lock").write_text(" " * 200)
    earlier = {"000001_seed0.png": b"an image made by an earlier run"}
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    _fill(small_tmpfs)
    # --adopt_existing: a folder of images without a settings record is otherwise refused before any write.
    result = _submit(csv, out, tiny_sd, "--adopt_existing")
    _one_error_line(result, 1, "No space left on device")
    assert f"error: {out / failing_file}: No space left on device" in result.stderr, result.stderr
    assert "rerun the same command" in result.stderr.lower() and "submit.py" in result.stderr, result.stderr
    assert {n: (out / n).read_bytes() for n in earlier} == earlier


def test_a_failed_record_write_names_its_file(small_tmpfs):
    from gen_worker.atomic_files import replace_json
    _fill(small_tmpfs)
    path = str(small_tmpfs / "summary.json")
    with pytest.raises(OSError) as raised:
        replace_json(path, {"x": "y" * 10000})
    assert raised.value.filename == path and not os.path.exists(path)


# b. Two Ctrl+C during a local run: exit 130, no traceback.

def test_double_ctrl_c_exits_130_without_traceback(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt {i}") for i in range(8)])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, SUBMIT, "--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv,
                             "--output_dir", str(out), "--model_path", tiny_sd, *FAST],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "logs" / "worker_gpu0.log"
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Rerun the same command" in stderr, stderr


# c. A local run into a folder with recorded SLURM jobs that squeue cannot check.

def _record_slurm_jobs(out):
    (out / "logs").mkdir(parents=True)
    task = {"worker": 0, "slurm_id": "12_0", "job_id": "12", "rank": 0, "stdout": "", "stderr": ""}
    (out / "logs" / "slurm_jobs.json").write_text(json.dumps({"submissions": [
        {"submitted_at": "2026-11-28 08:00:00", "submitted_unix": 0, "command": "python submit.py",
         "mode": "array", "num_workers": 1, "num_samples": 1, "batch_size": 1, "job_ids": ["12"],
         "tasks": [task]}]}))


def test_recorded_slurm_jobs_without_squeue_are_refused_unless_ignored(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a cat")])
    out = tmp_path / "out"
    _record_slurm_jobs(out)
    no_slurm = tmp_path / "bin"
    no_slurm.mkdir()
    env = dict(os.environ, PATH=str(no_slurm))
    _one_error_line(_submit(csv, out, tiny_sd, env=env), 2, "--ignore_recorded_slurm_jobs")
    # With the flag the SLURM check passes: the next check (a container flag without --container) refuses.
    result = _submit(csv, out, tiny_sd, "--ignore_recorded_slurm_jobs", "--container_runtime", "podman", env=env)
    _one_error_line(result, 2, "--container")
    result = run_submit("--cluster", "slurm", "--ignore_recorded_slurm_jobs", "--prompts_csv", csv,
                        "--output_dir", out, "--model_path", tiny_sd)
    _one_error_line(result, 2, "--ignore_recorded_slurm_jobs")


def test_ignore_flag_is_in_help():
    assert "--ignore_recorded_slurm_jobs" in run_submit("--help").stdout


# e. Damaged output folders: one line, exit 2.

@pytest.mark.parametrize("damage, message", [
    ("logs_is_a_file", "logs"),
    ("manifest_is_a_folder", "manifest.csv"),
    ("empty_settings", "generation_settings.json"),
])
def test_damaged_output_folder_is_one_line(tmp_path, tiny_sd, damage, message):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a cat")])
    out = tmp_path / "out"
    out.mkdir()
    if damage == "logs_is_a_file":
        (out / "logs").write_text("not a folder")
    elif damage == "manifest_is_a_folder":
        (out / "manifest.csv").mkdir()
    else:
        (out / "generation_settings.json").write_text("")
    _one_error_line(_submit(csv, out, tiny_sd), 2, message)


def test_status_of_a_file_is_one_line(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    for command in ("status", "cancel"):
        _one_error_line(run_submit(command, "--output_dir", path), 2, str(path))


# d. cancel says when the tasks will have stopped (submitit's tasks ignore SIGTERM: SLURM kills them KillWait later).

def test_cancel_says_when_the_tasks_will_have_stopped(tmp_path, monkeypatch, capsys):
    from gen_worker.slurm import status
    out = tmp_path / "out"
    _record_slurm_jobs(out)
    cancelled = []
    monkeypatch.setattr(status, "queue_states", lambda ids: {"12_0": "COMPLETING"})  # never leaves the queue
    monkeypatch.setattr(status, "cancel", cancelled.extend)
    monkeypatch.setattr(status, "kill_wait_seconds", lambda: 30)
    monkeypatch.setattr(status, "CANCEL_WAIT_SECONDS", 0)
    assert status.cancel_run(str(out)) == 0
    text = capsys.readouterr().out
    assert cancelled == ["12"]
    assert "KillWait 30 s" in text and "by " in text, text
    assert "still" in text and "status --output_dir" in text, text


@pytest.mark.slurm
def test_kill_wait_is_read_from_the_cluster(slurm_cluster):
    """The value the running cluster's slurm.conf sets (slurm/start_cluster.sh writes KillWait=5)."""
    from gen_worker.slurm.commands import kill_wait_seconds
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    conf_file = re.search(r"^SLURM_CONF\s*=\s*(\S+)", config, re.M).group(1)
    with open(conf_file, encoding="utf-8") as f:
        configured = int(re.search(r"^KillWait=(\d+)", f.read(), re.M).group(1))
    assert kill_wait_seconds() == configured


@pytest.mark.parametrize("stdout, returncode, expected", [
    ("JobAcctGatherType       = (null)\nKillWait                = 45 sec\nKillOnBadExit = 0\n", 0, 45),
    ("JobAcctGatherType       = (null)\n", 0, None),  # not said: unknown, not 0
    ("", 1, None),  # scontrol failed
])
def test_kill_wait_parsing(monkeypatch, stdout, returncode, expected):
    from gen_worker.slurm import commands
    monkeypatch.setattr(commands, "run_slurm",
                        lambda command, **kw: subprocess.CompletedProcess(command, returncode, stdout, ""))
    assert commands.kill_wait_seconds() == expected
