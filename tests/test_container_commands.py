"""--container without a runtime: the exact command lines each runtime gets, runtime guessing,
binds and path translation, and the errors given before anything starts."""
import os
import signal
import stat
import subprocess

import pytest

from gen_worker.container import runtime as ct
from gen_worker.container.runtime import Container, ContainerError, choose_runtime, check_runtime, prepare
from gen_worker.container.binds import Bind, BindError, check_binds, check_links, check_visible, parse_bind, plan_binds
from gen_worker.local import start_worker
from gen_worker.spec import JobSpec

WORKER = ["-m", "gen_worker.worker", "--spec", "/data/out/logs/spec.json", "--worker_index", "1", "--num_workers", "2"]


def _which(*installed):
    return lambda name: f"/usr/bin/{name}" if name in installed else None


def _fake_tools(tmp_path, monkeypatch, *names, script="#!/bin/sh\nexit 0\n"):
    """Executables named `names` first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        tool = bin_dir / name
        tool.write_text(script)
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _spec(tmp_path, model="org/model", device="cuda"):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    csv = tmp_path / "prompts.csv"
    csv.write_text("prompt\na cat\n")
    return JobSpec(prompts_csv=str(csv), output_dir=str(out), model_path=model, num_samples=1, device=device)


BINDS = [Bind("/data/out", "/data/out"), Bind("/data/p.csv", "/data/p.csv"), Bind("/hf", "/hf")]


@pytest.mark.parametrize("image, installed, expected", [
    ("/images/t2i.sif", ("apptainer", "singularity", "podman"), "apptainer"),
    ("/images/t2i.sif", ("singularity",), "singularity"),
    ("docker://ghcr.io/me/t2i:1", ("apptainer",), "apptainer"),
    ("t2i-batch:latest", ("podman", "docker"), "podman"),
    ("t2i-batch:latest", ("docker",), "docker"),
    ("t2i-batch:latest", (), "podman"),  # then check_runtime says it is not installed
])
def test_runtime_is_guessed_from_the_image(image, installed, expected):
    assert choose_runtime(image, "auto", which=_which(*installed)) == expected
    assert choose_runtime(image, "docker", which=_which(*installed)) == "docker"  # explicit wins


def test_an_existing_image_file_means_apptainer(tmp_path):
    image = tmp_path / "t2i.img"
    image.write_bytes(b"")
    assert choose_runtime(str(image), "auto", which=_which("apptainer", "podman")) == "apptainer"


def test_apptainer_command_line_on_a_gpu():
    box = Container("apptainer", "/images/t2i.sif", BINDS + [Bind("/scratch/models", "/models")],
                    env={"HF_HOME": "/hf"}, gpus=True)
    assert box.prefix("3", name=None) == [
        "apptainer", "exec", "--nv", "--pwd", "/opt/t2i-batch",
        "--bind", "/data/out,/data/p.csv,/hf,/scratch/models:/models",
        "--env=HF_HOME=/hf", "--env=T2I_CONTAINER=/images/t2i.sif", "--env=T2I_HOST_GPU=3",
        "--env=CUDA_VISIBLE_DEVICES=3", "/images/t2i.sif", "python"]


def test_singularity_on_cpu_gets_no_nv_flag():
    box = Container("singularity", "t2i.sif", BINDS[:1], gpus=False)
    assert box.prefix("", name=None) == [
        "singularity", "exec", "--pwd", "/opt/t2i-batch", "--bind", "/data/out",
        "--env=T2I_CONTAINER=t2i.sif", "--env=T2I_HOST_GPU=", "--env=CUDA_VISIBLE_DEVICES=", "t2i.sif", "python"]


def _docker_common(runtime, name, pull=("--pull", "never")):
    return [runtime, "run", "--rm", "--init", "--name", name, "--network", "host", *pull, "--user", "1000:100"]


def test_podman_command_line_on_a_gpu_rootful(monkeypatch):
    monkeypatch.setattr(ct.os, "geteuid", lambda: 0)
    box = Container("podman", "t2i-batch:latest", BINDS[:2], env={"HF_HOME": "/hf"}, uid=1000, gid=100)
    assert box.prefix("5", name="t2i-x", label="/data/out") == [
        *_docker_common("podman", "t2i-x"), "--security-opt", "label=disable",
        "--label", "t2i-batch.output_dir=/data/out",
        "-v", "/data/out:/data/out", "-v", "/data/p.csv:/data/p.csv",
        "-e", "HF_HOME=/hf", "-e", "T2I_CONTAINER=t2i-batch:latest", "-e", "T2I_HOST_GPU=5",
        "-e", "CUDA_VISIBLE_DEVICES=0",
        "-e", "HF_HUB_OFFLINE", "-e", "HF_TOKEN", "-e", "HF_ENDPOINT", "-e", "TRANSFORMERS_OFFLINE",
        "--device", "nvidia.com/gpu=5", "-e", "NVIDIA_VISIBLE_DEVICES=5", "t2i-batch:latest", "python"]


def test_rootless_podman_keeps_the_callers_uid(monkeypatch):
    monkeypatch.setattr(ct.os, "geteuid", lambda: 1000)
    argv = Container("podman", "img", [], uid=1000, gid=100).prefix("0", name="n")
    assert argv[argv.index("--user") + 2] == "--userns=keep-id"


def test_docker_command_line_on_a_gpu_and_on_cpu():
    box = Container("docker", "reg.io/t2i:1", BINDS[:1], uid=1000, gid=100, pull=True)  # SLURM: may pull
    assert box.prefix("GPU-1234", name="t2i-y") == [
        *_docker_common("docker", "t2i-y", pull=()), "--security-opt", "label=disable",
        "-v", "/data/out:/data/out", "-e", "T2I_CONTAINER=reg.io/t2i:1", "-e", "T2I_HOST_GPU=GPU-1234",
        "-e", "CUDA_VISIBLE_DEVICES=0",
        "-e", "HF_HUB_OFFLINE", "-e", "HF_TOKEN", "-e", "HF_ENDPOINT", "-e", "TRANSFORMERS_OFFLINE",
        "--gpus", "device=GPU-1234", "reg.io/t2i:1", "python"]
    cpu = Container("docker", "reg.io/t2i:1", [], gpus=False).prefix("1", name="t2i-z")
    assert "--gpus" not in cpu and "CUDA_VISIBLE_DEVICES=1" in cpu  # nothing mapped: nothing renumbered


def test_remove_command_per_runtime():
    assert Container("podman", "i", []).remove_command(["a", "b"]) == ["podman", "rm", "-f", "--time", "0", "--ignore", "a", "b"]
    assert Container("docker", "i", []).remove_command(["a"]) == ["docker", "rm", "-f", "a"]
    assert Container("apptainer", "i.sif", []).remove_command(["a"]) is None


def test_binds_default_to_the_same_path_and_user_binds_translate():
    user = [Bind("/scratch", "/mnt/scratch")]
    binds = plan_binds(["/data/out", "/data/out/logs", "/scratch/models/sd", "/data/p.csv"], user)
    assert binds == [Bind("/scratch", "/mnt/scratch"), Bind("/data/out", "/data/out"), Bind("/data/p.csv", "/data/p.csv")]
    box = Container("podman", "img", binds)
    spec = JobSpec(prompts_csv="/data/p.csv", output_dir="/data/out", model_path="/scratch/models/sd", num_samples=1)
    inside = box.inside_spec(spec)
    assert (inside.prompts_csv, inside.output_dir, inside.model_path) == ("/data/p.csv", "/data/out", "/mnt/scratch/models/sd")
    assert box.inside_spec(JobSpec(prompts_csv="/data/p.csv", output_dir="/data/out", model_path="org/m",
                                   num_samples=1)).model_path == "org/m"


def test_parse_bind(tmp_path):
    assert parse_bind(str(tmp_path)) == Bind(str(tmp_path), str(tmp_path))
    assert parse_bind(f"{tmp_path}:/data/") == Bind(str(tmp_path), "/data")
    for text, message in [(f"{tmp_path}/nope", "does not exist"), (f"{tmp_path}:data", "DST must be an absolute"),
                          (f"{tmp_path}:/a:/b", "expected SRC or SRC:DST"), (":/a", "expected SRC or SRC:DST")]:
        with pytest.raises(BindError, match=message):
            parse_bind(text)


@pytest.mark.parametrize("binds, message", [
    ([Bind("/data", "/opt")], "would hide the image's /opt/t2i-batch"),
    ([Bind("/etc", "/etc")], "would hide the image's /etc"),
    ([Bind("/", "/")], "would hide the image's /bin"),
    ([Bind("/x", "/proc/x")], "would hide the image's /proc/x"),
    ([Bind("/a", "/data"), Bind("/b", "/data")], "both bound at /data"),
    ([Bind("/a:b", "/a:b")], "split bind specs at ':' and ','"),
])
def test_binds_that_cannot_work_are_refused(binds, message):
    with pytest.raises(BindError, match=message):
        check_binds(binds)


def test_a_user_bind_that_shadows_a_needed_path_is_refused(tmp_path):
    out, other = tmp_path / "out", tmp_path / "other"
    out.mkdir(), other.mkdir()
    shadow = [Bind(str(other), str(out / "logs")), Bind(str(out), str(out))]
    with pytest.raises(BindError, match="hides part of"):
        check_visible(str(out), shadow)
    check_visible(str(out), [Bind(str(out / "logs"), str(out / "logs")), Bind(str(out), str(out))])  # consistent


def test_model_symlinks_must_lead_to_bound_files(tmp_path):
    """A Hugging Face snapshot links to ../../blobs: binding only the snapshot is not enough."""
    blobs, snap = tmp_path / "models--x" / "blobs", tmp_path / "models--x" / "snapshots" / "abc" / "unet"
    blobs.mkdir(parents=True), snap.mkdir(parents=True)
    (blobs / "h1").write_bytes(b"w")
    (snap / "w.safetensors").symlink_to("../../../blobs/h1")
    model = str(snap.parent)
    with pytest.raises(BindError, match=r"links to .*blobs/h1, which the container cannot see; add --container_bind .*blobs"):
        check_links(model, plan_binds([model], []))
    check_links(model, plan_binds([model, str(blobs)], []))
    moved = [Bind(str(tmp_path), "/m")]  # all moved together: the relative links still work
    check_links(model, plan_binds([model], moved))


def test_prepare_checks_and_binds_what_the_worker_needs(tmp_path, monkeypatch):
    _fake_tools(tmp_path, monkeypatch, "apptainer")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    image = tmp_path / "t2i.sif"
    image.write_bytes(b"")
    extra = tmp_path / "extra"
    extra.mkdir()
    spec = _spec(tmp_path)
    box = prepare(str(image), "auto", [f"{extra}:/extra"], spec)
    assert box.runtime == "apptainer" and box.gpus
    assert [(b.src, b.dst) for b in box.binds] == [
        (str(extra), "/extra"), (str(tmp_path / "hf"), str(tmp_path / "hf")),
        (spec.output_dir, spec.output_dir), (spec.prompts_csv, spec.prompts_csv)]
    assert box.env == {"HF_HOME": str(tmp_path / "hf")}  # made for the hub model's download
    assert os.path.isdir(tmp_path / "hf")


def test_prepare_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    spec = _spec(tmp_path, device="cpu")
    with pytest.raises(ContainerError, match="podman is not installed here"):
        prepare("t2i-batch:latest", "auto", [], spec)
    _fake_tools(tmp_path, monkeypatch, "apptainer", "podman")
    with pytest.raises(ContainerError, match="missing.sif: no such image file"):
        prepare(str(tmp_path / "missing.sif"), "auto", [], spec)
    with pytest.raises(ContainerError, match="a .sif image needs --container_runtime apptainer"):
        prepare(str(tmp_path / "missing.sif"), "podman", [], spec)
    with pytest.raises(ContainerError, match="does not exist"):
        prepare("docker://x/y", "apptainer", [str(tmp_path / "nope")], spec)
    with pytest.raises(ContainerError, match=r"docker is not installed here \(not on PATH\); installed: apptainer, podman \(see --container_runtime"):
        prepare("img", "docker", [], spec)


class _Done:
    def __init__(self, returncode, stderr=""):
        self.returncode, self.stderr = returncode, stderr


@pytest.mark.parametrize("answer, message", [
    (_Done(125, "Error: t2i-batch:latest: image not known"), "no such image in podman's local store; build it"),
    (_Done(1, "Error: No such image: t2i-batch:latest"), "no such image in podman's local store"),
    (_Done(1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock"), "does not answer: Cannot connect"),
])
def test_a_local_run_needs_the_image_in_the_store(answer, message):
    calls = []
    run = lambda argv, **kw: calls.append(argv) or answer  # noqa: E731
    with pytest.raises(ContainerError, match=message):
        check_runtime("podman", "t2i-batch:latest", "local", which=_which("podman"), run=run)
    assert calls == [["podman", "image", "inspect", "--format", "{{.Id}}", "t2i-batch:latest"]]
    check_runtime("podman", "t2i-batch:latest", "slurm", which=_which("podman"), run=run)  # nodes may pull
    assert len(calls) == 1


def test_local_worker_command_runs_inside_the_container(tmp_path, monkeypatch):
    """start_worker puts the container's prefix before `-m gen_worker.worker`, gives the translated spec path
    and does not leak this checkout's PYTHONPATH into the image."""
    record = tmp_path / "argv"
    _fake_tools(tmp_path, monkeypatch, "podman", script=f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n'
                                                        f'echo "PYTHONPATH=$PYTHONPATH" >> {record}\n')
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    box = Container("podman", "img", [Bind(str(out), "/data/out")], gpus=False)
    proc = start_worker(str(out / "logs" / "spec.json"), str(out), 1, 2, "1", box, "t2i-w1")
    assert proc.wait(timeout=30) == 0
    argv = record.read_text().splitlines()
    assert ["podman", *argv[:-1]] == box.prefix("1", "t2i-w1", label=str(out)) + WORKER
    assert argv[-1] == "PYTHONPATH="
    assert "CUDA_VISIBLE_DEVICES=1 in podman img (t2i-w1)" in (out / "logs" / "worker_gpu1.log").read_text()


def test_cli_refuses_a_missing_sif_before_anything_starts(tmp_path, capsys, monkeypatch):
    from gen_worker.cli import main
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main() in this process: keep pytest's handlers
    spec = _spec(tmp_path, device="cpu")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    code = main(["--gpu_ids", "0", "--prompts_csv", spec.prompts_csv, "--output_dir", spec.output_dir,
                 "--model_path", str(model), "--device", "cpu", "--container", str(tmp_path / "t2i.sif"),
                 "--container_runtime", "apptainer"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --container") and len(err.splitlines()) == 1
    assert main(["--prompts_csv", spec.prompts_csv, "--output_dir", spec.output_dir, "--model_path", str(model),
                 "--container_bind", "/tmp"]) == 2
    assert "--container_bind need --container IMAGE" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(spec.output_dir, "manifest.csv"))  # refused before the folder is touched


def _run_launcher(tmp_path, monkeypatch, box, env):
    """Run the SLURM launcher with a fake runtime that records each call's argv (one line per call)."""
    from gen_worker.container.slurm_launcher import write_launcher
    calls = tmp_path / "calls"
    _fake_tools(tmp_path, monkeypatch, box.runtime, script=f'#!/bin/bash\necho "$(basename $0) $*" >> {calls}\n')
    python = write_launcher(box, "/data/out", str(tmp_path / "submitit"))
    assert python == f"/bin/bash {tmp_path}/submitit/container_python.sh"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": "/checkout", **env}
    done = subprocess.run([*python.split(), "-u", "-m", "submitit.core._submit", "/data/out/logs/submitit/%j"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()


def test_slurm_launcher_podman_gets_the_tasks_gpu_name_and_slurm_env(tmp_path, monkeypatch):
    monkeypatch.setattr(ct.os, "geteuid", lambda: 0)
    box = Container("podman", "t2i:1", [Bind("/data/out", "/data/out")], uid=1000, gid=100, pull=True)
    env = {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "6", "SLURM_JOB_ID": "77", "SLURM_PROCID": "0",
           "SUBMITIT_EXECUTOR": "slurm"}
    run, remove = _run_launcher(tmp_path, monkeypatch, box, env)
    expected = box.prefix("6", "t2i-batch-77-0-0", label="/data/out", visible="0")
    image = expected.index("t2i:1")
    slurm_env = sorted(run.split()[image:-6][1::2])  # the -e NAME flags before the image
    assert run.split()[:image] == expected[:image]
    assert slurm_env == ["SLURM_JOB_GPUS", "SLURM_JOB_ID", "SLURM_PROCID", "SUBMITIT_EXECUTOR"]
    assert run.split()[-6:] == ["t2i:1", "python", "-u", "-m", "submitit.core._submit", "/data/out/logs/submitit/%j"]
    assert "--device nvidia.com/gpu=6" in run and "CUDA_VISIBLE_DEVICES=0" in run and "T2I_HOST_GPU=6" in run
    assert remove == "podman rm -f --time 0 --ignore t2i-batch-77-0-0"  # on exit, whatever happened


def test_slurm_launcher_apptainer_keeps_the_tasks_cuda_visible_devices(tmp_path, monkeypatch):
    box = Container("apptainer", "/s/t2i.sif", [Bind("/data/out", "/data/out")])
    [run] = _run_launcher(tmp_path, monkeypatch, box, {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "3"})
    assert run.split() == box.prefix("3", None, visible="0") + ["-u", "-m", "submitit.core._submit",
                                                                 "/data/out/logs/submitit/%j"]


def test_submitit_folder_stays_at_its_own_path_when_the_output_dir_is_moved(tmp_path, monkeypatch):
    """The sbatch script names submitit's folder by its host path: it must be there inside too."""
    _fake_tools(tmp_path, monkeypatch, "podman")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-cache"))
    spec = _spec(tmp_path, device="cpu")
    folder = os.path.join(spec.output_dir, "logs", "submitit")
    box = prepare("t2i:1", "podman", [f"{spec.output_dir}:/data/out"], spec, "slurm", same_path=[folder])
    assert box.path(folder) == folder and box.inside_spec(spec).output_dir == "/data/out"
    assert box.binds[:2] == [Bind(folder, folder), Bind(spec.output_dir, "/data/out")]
