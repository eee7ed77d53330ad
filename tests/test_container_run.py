"""Real podman containers: workers run inside the image built from containers/ and give the same
bytes as without it, files belong to the caller, Ctrl+C leaves no container behind.

The image is built (or found up to date in podman's layer cache: seconds) from this checkout by
containers/build_image.sh --local-cpu, pinned to this Python's packages so that the numbers and the
PNG bytes are the same. Without podman the tests are skipped, unless T2I_REQUIRE_CONTAINERS=1 (CI).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAST, PROMPTS, REPO, SUBMIT, images_in, run_submit, skip_unless_required, wait_for, write_prompts
from gen_worker.output import layout
from gen_worker.container.runtime import Container
from gen_worker.container.binds import Bind

pytestmark = [pytest.mark.container, pytest.mark.e2e]

IMAGE = os.environ.get("T2I_TEST_IMAGE", "localhost/t2i-batch:test")
BUILD_TIMEOUT_S = 900  # a cold build (debootstrap + PyPI) takes ~5 min here; cached ~3 s


def _podman_missing():
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc; see containers/README.md)"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=120)
    return None if info.returncode == 0 else f"podman does not work here: {info.stderr.strip()[-300:]}"


def _build(*command):
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def image():
    skip_unless_required(_podman_missing(), "T2I_REQUIRE_CONTAINERS")
    _build("containers/build_base_image.sh")  # cached: returns at once when the base exists
    _build("containers/build_image.sh", "--local-cpu", "--pin-from", sys.executable, "-t", IMAGE)
    return IMAGE


def _leftover_containers(out):
    ps = subprocess.run(["podman", "ps", "-a", "-q", "--filter", f"label=t2i-batch.output_dir={out}"],
                        capture_output=True, text=True, timeout=60)
    return ps.stdout.split()


@pytest.fixture(scope="module")
def reference(tiny_sd, tmp_path_factory):
    """Two workers without a container: the bytes every container run must give."""
    root = tmp_path_factory.mktemp("container_ref")
    csv = write_prompts(root / "prompts.csv", PROMPTS)
    out = str(root / "out")
    result = run_submit("--gpu_ids", "0", "1", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    return csv, images_in(out)


def test_local_two_workers_in_podman_give_the_same_bytes_owned_by_the_caller(image, tiny_sd, reference, tmp_path):
    csv, expected = reference
    out = str(tmp_path / "out")
    result = run_submit("--gpu_ids", "0", "1", "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd,
                        *FAST, "--container", image, "--schedule", "static")  # static: each worker's share is known
    assert result.returncode == 0, result.stderr[-3000:]
    assert images_in(out) == expected
    summaries = [json.load(open(layout.summary_file(out, k))) for k in (0, 1)]
    assert [(s["container"], s["host_gpu"], s["generated"]) for s in summaries] == [(image, "0", 4), (image, "1", 3)]
    assert f"in podman {image}" in open(layout.worker_log(out, 0)).read()
    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), os.path.join(root, name)
    assert _leftover_containers(out) == []


def test_a_sweep_in_podman_gives_the_plain_runs_bytes(image, tiny_sd, reference, tmp_path):
    """Every configuration folder and model is seen inside the container; the default guidance's folder
    is the plain run made without a container."""
    csv, expected = reference
    top = tmp_path / "sweep"
    result = run_submit("--gpu_ids", "0", "1", "--prompts_csv", csv, "--output_dir", top, "--model_path", tiny_sd,
                        *FAST, "--container", image, "--sweep", "guidance_scale=2,7.5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert images_in(top / "guidance_scale-7.5") == expected
    assert len(images_in(top / "guidance_scale-2")) == len(expected)
    assert f"in podman {image}" in open(layout.worker_log(str(top), 0)).read()
    assert _leftover_containers(str(top)) == []


def test_files_belong_to_the_uid_given_and_moved_binds_work(image, tmp_path):
    """As root the caller's uid proves nothing: run as another uid, into a folder moved to /data."""
    tmp_path.chmod(0o777)
    box = Container("podman", image, [Bind(str(tmp_path), "/data")], gpus=False, uid=4242, gid=4343)
    argv = box.prefix("", name=f"t2i-test-{os.getpid()}") + ["-c", "open('/data/made', 'w').write('x')"]
    subprocess.run(argv, check=True, timeout=120)
    st = os.stat(tmp_path / "made")
    assert (st.st_uid, st.st_gid) == (4242, 4343)


def test_ctrl_c_stops_the_containers_and_removes_them(image, tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt {i}") for i in range(16)])
    out = str(tmp_path / "out")
    slow = ["--device", "cpu", "--num_inference_steps", "12", "--height", "64", "--width", "64", "--dtype", "fp32"]
    submitter = subprocess.Popen([sys.executable, SUBMIT, "--gpu_ids", "0", "1", "--prompts_csv", csv,
                                  "--output_dir", out, "--model_path", tiny_sd, *slow, "--container", image],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)

    def made_an_image():
        assert submitter.poll() is None, "the submitter ended before making an image"
        return os.path.isdir(out) and images_in(out)
    wait_for(made_an_image, timeout=180, what="the first image")
    assert len(_leftover_containers(out)) == 2
    os.killpg(submitter.pid, signal.SIGINT)  # what the terminal does on Ctrl+C
    started = time.monotonic()
    _, stderr = submitter.communicate(timeout=60)
    assert time.monotonic() - started < 20
    assert submitter.returncode == 130 and "Rerun the same command" in stderr
    assert [json.load(open(layout.summary_file(out, k)))["state"] for k in (0, 1)] == ["interrupted"] * 2
    assert _leftover_containers(out) == []
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


@pytest.mark.slurm
def test_slurm_array_in_podman_gives_the_same_bytes_owned_by_the_caller(image, slurm_cluster, tiny_sd, reference,
                                                                       tmp_path):
    """Each array task's python is the image's (submitit's `python` hook): same bytes as without it."""
    csv, expected = reference
    out = str(tmp_path / "out")
    result = run_submit("--cluster", "slurm", "--gpus", "2", "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15",
                        "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *FAST,
                        "--container", image, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert images_in(out) == expected
    summaries = [json.load(open(layout.summary_file(out, k))) for k in (0, 1)]
    assert [s["container"] for s in summaries] == [image, image]
    assert all(s["slurm_job_id"] and s["host_gpu"].isdigit() for s in summaries)
    assert len({s["host_gpu"] for s in summaries}) == 2  # one GPU each, as SLURM gave them
    launcher = os.path.join(out, layout.SUBMITIT_DIR, "container_python.sh")
    assert f"/bin/bash {launcher} -u -m submitit.core._submit" in "".join(
        open(os.path.join(root, n)).read() for root, _, names in os.walk(os.path.join(out, layout.SUBMITIT_DIR))
        for n in names if n.endswith("_submission.sh"))
    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), os.path.join(root, name)
    assert _leftover_containers(out) == []


@pytest.mark.slurm
def test_slurm_cancel_removes_the_tasks_container(image, slurm_cluster, tiny_sd, tmp_path):
    """submitit ignores SIGTERM and SLURM's SIGKILL never reaches a container: the launcher removes it."""
    csv = write_prompts(tmp_path / "p.csv", [(str(i), f"prompt {i}") for i in range(16)])
    out = str(tmp_path / "out")
    slow = ["--device", "cpu", "--num_inference_steps", "20", "--height", "64", "--width", "64", "--dtype", "fp32"]
    result = run_submit("--cluster", "slurm", "--gpus", "1", "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15",
                        "--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *slow,
                        "--container", image, "--no_wait")
    assert result.returncode == 0, result.stderr[-3000:]
    wait_for(lambda: images_in(out), timeout=180, what="the first image", interval=0.2)
    assert len(_leftover_containers(out)) == 1
    assert run_submit("cancel", "--output_dir", out).returncode == 0
    wait_for(lambda: not _leftover_containers(out), timeout=20, what="the cancelled task's container to go",
             interval=0.2)
    assert len(images_in(out)) < 16


def test_scheduler_reaches_the_worker_in_the_image(image, tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "prompts.csv", PROMPTS[:3])
    extra = ["--gpu_ids", "0", "--prompts_csv", csv, "--model_path", tiny_sd, *FAST,
             "--scheduler", "UniPCMultistepScheduler"]
    local = run_submit("--output_dir", str(tmp_path / "local"), *extra)
    boxed = run_submit("--output_dir", str(tmp_path / "boxed"), *extra, "--container", image)
    assert local.returncode == 0 and boxed.returncode == 0, local.stderr[-2000:] + boxed.stderr[-2000:]
    assert images_in(str(tmp_path / "boxed")) == images_in(str(tmp_path / "local"))
    log = open(layout.worker_log(str(tmp_path / "boxed"), 0)).read()
    assert "--scheduler: UniPCMultistepScheduler in place of DDIMScheduler" in log
