import csv
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBMIT = os.path.join(REPO, "submit.py")

# Small and fast on 2 CPU cores; every e2e run uses the same settings so outputs are comparable.
FAST = ["--device", "cpu", "--num_inference_steps", "3", "--height", "64", "--width", "64", "--dtype", "fp32"]


def write_prompts(path, rows, header=("image_id", "prompt")):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


PROMPTS = [
    ("1", "A red double-decker bus driving down a city street."),
    ("1", "A bus on a street, with people waiting at the stop."),
    ("2", 'Two cats on a sofa, one "very" fluffy, the other asleep.'),
    ("3", "Un café au lait et un croissant, à Paris."),
    ("4", "夕暮れの富士山 (Mount Fuji at sunset)."),
    ("5", "A kitchen with white cabinets,\na fridge and a window."),
    ("6", "A dog catching a frisbee in a park."),
]


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    from gen_worker.tiny_model import build
    folder = str(tmp_path_factory.mktemp("models") / "tiny-sd")
    build(folder, "sd")
    return folder


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory):
    from gen_worker.tiny_model import build
    folder = str(tmp_path_factory.mktemp("models") / "tiny-wan")
    build(folder, "wan")
    return folder


@pytest.fixture()
def prompts_csv(tmp_path):
    return write_prompts(tmp_path / "prompts.csv", PROMPTS)


def run_worker_in_process(tmp_path, name, pipe, model, rows=PROMPTS, **changes):
    """Prepare tmp_path/name and run worker 0 of 1 there in this process (pipe: loaded, or None to load
    the model); returns (output folder, worker summary)."""
    from gen_worker.output.record import prepare_output_dir
    from gen_worker.prompts import load_samples
    from gen_worker.spec import JobSpec
    from gen_worker.worker.loop import run_worker

    csv = write_prompts(tmp_path / "prompts.csv", rows)
    fields = dict(prompts_csv=csv, output_dir=str(tmp_path / name), model_path=model, num_samples=len(rows),
                  num_inference_steps=3, height=64, width=64, dtype="fp32", device="cpu")
    fields.update(changes)
    spec = JobSpec(**fields)
    prepare_output_dir(spec, load_samples(csv, spec.seed_start)).release()
    return spec.output_dir, run_worker(spec, 0, 1, pipe=pipe)


def run_submit(*args, timeout=600, **kwargs):
    """Run submit.py in a fresh process, as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, SUBMIT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kwargs)


def images_in(folder):
    """{file name: bytes} of the finished images in a folder."""
    return {n: open(os.path.join(folder, n), "rb").read()
            for n in sorted(os.listdir(folder)) if n.endswith(".png") and not n.startswith(".")}


def slurm_unavailable_reason():
    """Why no SLURM cluster can be used here, or None when one answers with a usable node."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM commands on PATH (start a test cluster with slurm/start_cluster.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo does not answer ({err})"
    if out.returncode != 0:
        return f"sinfo fails: {out.stderr.strip()[:200]} (start one with slurm/start_cluster.sh)"
    if not any(s in ("idle", "mixed", "allocated") for s in out.stdout.split()):
        return f"no usable SLURM node (sinfo states: {' '.join(out.stdout.split()) or 'none'})"
    return None


def skip_unless_required(reason, required_by):
    """Skip with the reason; but fail when CI sets required_by=1 (it must never skip these tests)."""
    if reason:
        if os.environ.get(required_by) == "1":
            pytest.fail(f"{required_by}=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Skips a test that needs a SLURM cluster when none answers; fails instead under T2I_REQUIRE_SLURM=1 (CI)."""
    skip_unless_required(slurm_unavailable_reason(), "T2I_REQUIRE_SLURM")
