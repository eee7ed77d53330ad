"""Local workers and SLURM tasks import this checkout's gen_worker, not another one: not one installed,
nor one in the folder the submitter was started from (python -m puts the working folder first on sys.path).

Each launcher's real command and environment are run against a decoy gen_worker, as a user with two
checkouts would have it.
"""
import os
import subprocess
import sys

from submitit.slurm.slurm import _make_sbatch_string

from conftest import REPO

DECOY = "DECOY gen_worker imported"


def _decoy(folder):
    """A folder holding another checkout's gen_worker, whose worker says so."""
    package = folder / "gen_worker"
    (package / "worker").mkdir(parents=True)
    (package / "__init__.py").write_text(f"print({DECOY!r}, __file__)\n")
    (package / "worker" / "__init__.py").write_text("")
    (package / "worker" / "__main__.py").write_text("")
    return str(folder)


def test_a_local_worker_imports_this_checkout_whatever_the_working_folder(tmp_path, monkeypatch):
    from gen_worker import local
    started = {}

    class Recorded:
        def __init__(self, args, **kwargs):
            started.update(args=args, **kwargs)
    monkeypatch.setattr(local.subprocess, "Popen", Recorded)
    decoy = _decoy(tmp_path / "other-checkout")
    monkeypatch.chdir(decoy)
    (tmp_path / "out" / "logs").mkdir(parents=True)
    local.start_worker(str(tmp_path / "out" / "logs" / "spec.json"), str(tmp_path / "out"), 0, 1, "")
    monkeypatch.undo()  # subprocess.Popen itself was replaced
    args = [*started["args"][:started["args"].index("-m")],
            "-c", "import gen_worker.worker, sys; print('imported', gen_worker.__file__)"]
    # -c puts the working folder first on sys.path, as -m does.
    ran = subprocess.run(args, env=started["env"], cwd=started.get("cwd") or decoy, capture_output=True, text=True)
    assert DECOY not in ran.stdout, ran.stdout
    assert ran.stdout.strip() == f"imported {os.path.join(REPO, 'gen_worker', '__init__.py')}", ran.stderr


def test_a_slurm_task_imports_this_checkout_whatever_the_working_folder(tmp_path):
    from gen_worker.slurm.options import SlurmOptions
    from gen_worker.slurm.submit import _parameters
    script = _make_sbatch_string(command="PROBE", folder=str(tmp_path / "submitit" / "%j"),
                                 **_parameters(SlurmOptions(gpus=1), 60, "array", 1))
    setup = script[script.index("# setup"):script.index("# command")]
    probe = f"{sys.executable} -c \"import gen_worker, sys; print('imported', gen_worker.__file__)\""
    # The task starts in the submit folder (sbatch's default), here one with another checkout in it.
    ran = subprocess.run(["bash", "-c", setup + probe], cwd=_decoy(tmp_path / "other-checkout"),
                         env=dict(os.environ, PYTHONPATH=""), capture_output=True, text=True)
    assert DECOY not in ran.stdout, ran.stdout
    assert ran.stdout.strip() == f"imported {os.path.join(REPO, 'gen_worker', '__init__.py')}", ran.stderr
