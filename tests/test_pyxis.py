"""--container_runtime pyxis: srun --container-image, refused with --cluster local; the exact srun/sbatch lines
submitit writes into the run's SLURM logs folder; on a cluster without Pyxis the job fails and says why."""
import glob
import os

import pytest

from conftest import FAST, run_submit, write_prompts
from gen_worker import cli
from gen_worker.container.binds import Bind
from gen_worker.container.pyxis import srun_parameters
from gen_worker.container.runtime import Container, ContainerError, prepare
from gen_worker.slurm.status import _ended_reason
from gen_worker.spec import JobSpec


def test_refused_in_one_line_with_cluster_local(tmp_path, capsys):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a cat")])
    out = tmp_path / "out"
    code = cli.main(["--prompts_csv", csv, "--output_dir", str(out), "--model_path", "m", "--container", "img",
                     "--container_runtime", "pyxis"])
    assert code == 2
    assert capsys.readouterr().err == ("error: --container_runtime pyxis starts the image through srun (SLURM's "
                                       "Pyxis plugin): use it with --cluster slurm, or another runtime for local "
                                       "runs\n")
    assert not out.exists()  # refused before the folder is made


def test_prepare_checks_a_squashfs_file_and_makes_its_path_absolute(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    spec = JobSpec(prompts_csv=write_prompts(tmp_path / "p.csv", [("1", "a")]), output_dir=str(out),
                   model_path="org/model", num_samples=1)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ContainerError, match=r"--container missing.sqsh: no such squashfs file \(make one with "
                                             r"enroot import"):
        prepare("missing.sqsh", "pyxis", [], spec, cluster="slurm")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t2i.sqsh").write_bytes(b"")
    container = prepare("t2i.sqsh", "pyxis", [], spec, cluster="slurm")
    assert (container.runtime, container.image) == ("pyxis", str(tmp_path / "t2i.sqsh"))
    registry = prepare("nvcr.io#nvidia/pytorch:24.05-py3", "pyxis", [], spec, cluster="slurm")
    assert registry.image == "nvcr.io#nvidia/pytorch:24.05-py3"  # the nodes pull it: not looked up here


def test_srun_line_mounts_every_bind_and_sets_the_environment():
    container = Container("pyxis", "nvcr.io#me/t2i:1", [Bind("/data/out", "/data/out"), Bind("/hf", "/hf"),
                                                         Bind("/scratch/models", "/models")], {"HF_HOME": "/hf"})
    params = srun_parameters(container, ["module load cuda"])
    assert params["srun_args"] == [
        "--container-image=nvcr.io#me/t2i:1",
        "--container-mounts=/data/out:/data/out,/hf:/hf,/scratch/models:/models",
        "--container-workdir=/opt/t2i-batch", "--no-container-mount-home",
        "--container-env=HF_HOME,T2I_CONTAINER"]
    assert params["setup"] == ["module load cuda", "unset PYTHONPATH PYTHONHOME  # the image's own Python environment",
                               "export HF_HOME=/hf", "export T2I_CONTAINER='nvcr.io#me/t2i:1'"]


def test_a_task_that_srun_refuses_says_so(tmp_path):
    err = tmp_path / "task.err"
    err.write_text("srun: unrecognized option '--container-image=/x/t2i.sqsh'\n"
                   'Try "srun --help" for more information\n')
    assert _ended_reason({"stderr": str(err)}, {}) == (
        "srun refused the task's options: unrecognized option '--container-image=/x/t2i.sqsh' (this cluster's "
        f"srun has no Pyxis plugin) (log: {err})")


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.usefixtures("slurm_cluster")
def test_the_sbatch_script_runs_srun_with_pyxis_and_the_failure_is_reported(tmp_path, tiny_sd):
    """The test cluster has no Pyxis: srun refuses --container-image, and --wait ends with that reason."""
    csv = write_prompts(tmp_path / "p.csv", [("1", "a cat"), ("2", "a dog")])
    out = tmp_path / "out"
    image = tmp_path / "t2i.sqsh"
    image.write_bytes(b"")
    bind = tmp_path / "extra"
    bind.mkdir()
    hf = tmp_path / "hf"
    hf.mkdir()
    result = run_submit("--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *FAST,
                        "--cluster", "slurm", "--gpus", "2", "--cpus_per_task", "1", "--mem_gb", "1", "--time", "15",
                        "--container", image, "--container_runtime", "pyxis", "--container_bind", f"{bind}:/extra",
                        "--wait", timeout=240, env={**os.environ, "HF_HOME": str(hf)})
    assert result.returncode == 1, result.stderr[-3000:]
    reason = f"srun refused the task's options: unrecognized option '--container-image={image}' (this cluster's " \
             "srun has no Pyxis plugin)"
    assert result.stderr.count(reason) >= 2, result.stderr[-3000:]  # each task's line, then the summary's
    [script] = glob.glob(str(out / "logs" / "submitit" / "*" / "*_submission.sh"))
    lines = open(script).read().splitlines()
    # --container_bind first, then the output folder (submitit's is in it), prompts, model, cache, parents first
    mounts = ",".join([f"{bind}:/extra", *(f"{p}:{p}" for p in sorted(map(str, (out, tiny_sd, csv, hf)), key=len))])
    submitit = out / "logs" / "submitit"
    assert lines[lines.index("# command") + 2] == (
        f"srun --unbuffered --output {submitit}/%A_%a/%A_%a_%t_log.out --error {submitit}/%A_%a/%A_%a_%t_log.err "
        f"--container-image={image} --container-mounts={mounts} "
        "--container-workdir=/opt/t2i-batch --no-container-mount-home --container-env=HF_HOME,T2I_CONTAINER "
        f"python -u -m submitit.core._submit {submitit}/%j")
    setup = lines[lines.index("# setup") + 1:lines.index("# command") - 1]
    assert setup[-3:] == ["unset PYTHONPATH PYTHONHOME  # the image's own Python environment",
                          f"export HF_HOME={hf}", f"export T2I_CONTAINER={image}"]
    assert os.path.exists(out / "summary.json")
