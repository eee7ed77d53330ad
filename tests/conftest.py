import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

pytest_plugins = ["pytester"]  # test_test_tiers.py runs the conftest checks in a pytest of their own

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


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    from gen_worker.tiny_model import build
    folder = str(tmp_path_factory.mktemp("models") / "tiny-flux")
    build(folder, "flux")
    return folder


@pytest.fixture(scope="session")
def pipes(tmp_path_factory):
    """arch -> its tiny pipeline (tiny_model.build), loaded on the CPU once per session."""
    import torch
    from gen_worker.tiny_model import build
    from gen_worker.worker.pipeline import load_pipeline
    torch.set_num_threads(1)
    loaded = {}

    def get(arch):
        if arch not in loaded:
            folder = str(tmp_path_factory.mktemp("models") / arch)
            build(folder, arch)
            loaded[arch] = load_pipeline(folder, "fp32", "cpu")
        return loaded[arch]
    return get


@pytest.fixture()
def prompts_csv(tmp_path):
    return write_prompts(tmp_path / "prompts.csv", PROMPTS)


def run_worker_in_process(tmp_path, name, pipe, model, rows=PROMPTS, **changes):
    """Prepare tmp_path/name and run worker 0 of 1 there in this process (pipe: loaded, or None to load
    the model); returns (output folder, worker summary)."""
    from gen_worker.model_check import identify
    from gen_worker.output.prepare import prepare_output_dir
    from gen_worker.prompts import load_samples
    from gen_worker.spec import JobSpec
    from gen_worker.worker.loop import run_worker

    csv = write_prompts(tmp_path / "prompts.csv", rows)
    fields = dict(prompts_csv=csv, output_dir=str(tmp_path / name), model_path=model, num_samples=len(rows),
                  num_inference_steps=3, height=64, width=64, dtype="fp32", device="cpu",
                  model_identity=identify(model))
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


def pixels_in(folder):
    """{file name: decoded pixels} of the finished images: what the picture is, whatever the PNG's text says."""
    from PIL import Image
    return {name: Image.open(os.path.join(folder, name)).tobytes() for name in images_in(folder)}


def wait_for(condition, timeout=120, what="the condition", interval=0.05):
    """Poll condition() until it returns something true (returned); fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# slurm/start_cluster.sh names its cluster so; the tests submit to no other (see slurm_unavailable_reason).
TEST_CLUSTER_NAME = "t2i_batch_test"
ANY_CLUSTER_ENV = "T2I_SLURM_TEST_ANY_CLUSTER"


def slurm_unavailable_reason(run=subprocess.run, which=shutil.which, environ=os.environ):
    """Why the SLURM tests cannot run here, or None when the project's test cluster answers with a usable node.

    Another cluster that answers (a site's real one, a colleague's) is refused: the tests would queue
    jobs on it and assume this project's settings. T2I_SLURM_TEST_ANY_CLUSTER=1 allows it on purpose.
    """
    if which("sinfo") is None or which("sbatch") is None or which("scontrol") is None:
        return "no SLURM commands on PATH (start a test cluster with slurm/start_cluster.sh)"
    try:
        config = run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=10)
        out = run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"SLURM does not answer ({err})"
    if config.returncode != 0:
        return f"scontrol show config fails: {config.stderr.strip()[:200]} (start one with slurm/start_cluster.sh)"
    match = re.search(r"^ClusterName\s*=\s*(\S+)", config.stdout, re.M)
    name = match.group(1) if match else "(none)"
    if name != TEST_CLUSTER_NAME and environ.get(ANY_CLUSTER_ENV) != "1":
        return (f"the SLURM cluster that answers here is {name!r}, not this project's test cluster "
                f"{TEST_CLUSTER_NAME!r} (slurm/start_cluster.sh): its tests would queue jobs on it. "
                f"Set {ANY_CLUSTER_ENV}=1 to run them there anyway")
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
    """Skips a test that needs the project's SLURM test cluster when it does not answer (or another cluster
    does); fails instead under T2I_REQUIRE_SLURM=1 (CI)."""
    skip_unless_required(slurm_unavailable_reason(), "T2I_REQUIRE_SLURM")


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium for the report screenshot test: skips without it; fails instead under
    T2I_REQUIRE_CHROMIUM=1 (CI installs it)."""
    from evaluation.screenshot_report import find_browser
    browser = find_browser()
    skip_unless_required(None if browser else "no Chromium on PATH (apt-get install -y chromium)",
                         "T2I_REQUIRE_CHROMIUM")
    return browser


# ---------------------------------------------------------------- test tiers (markers: pyproject.toml)
# `make test-fast` (pytest -m "not e2e and not slurm and not container") must start no worker: two cheap
# checks keep the marks honest. Neither sees grandchildren (run_full_evaluation.sh's submit.py).

TOOLKIT_MODULES = ("gen_worker", "gen_worker.__main__", "gen_worker.worker", "gen_worker.slurm_task")


def starts_the_toolkit(args):
    """Whether a command line (as given to Popen) runs submit.py, `python -m gen_worker` or a worker."""
    if isinstance(args, (str, bytes, os.PathLike)):
        try:
            args = shlex.split(os.fsdecode(args))
        except ValueError:
            args = [os.fsdecode(args)]
    args = [os.fsdecode(a) for a in args]
    if not args:
        return False
    if os.path.basename(args[0]) == "t2i-batch":
        return True
    if not (os.path.basename(args[0]).startswith("python") or args[0] == sys.executable):
        return False  # e.g. a (fake) container runtime: the container tier covers real ones
    return (any(os.path.basename(a) == "submit.py" for a in args[1:])
            or any(a == "-m" and b in TOOLKIT_MODULES for a, b in zip(args[1:], args[2:])))


@pytest.fixture(autouse=True)
def _e2e_mark_is_honest(request, monkeypatch):
    """Fails a test not marked e2e that starts submit.py or a worker in a fresh process."""
    execute = getattr(subprocess.Popen, "_execute_child", None)
    if request.node.get_closest_marker("e2e") or execute is None:
        yield
        return

    def checked(self, args, *rest, **kwargs):
        if starts_the_toolkit(args):
            pytest.fail(f"{request.node.nodeid} starts submit.py or a worker but is not marked e2e "
                        f"(pytest.mark.e2e; make test-fast must start none): {args!r}"[:600], pytrace=False)
        return execute(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", checked)
    yield


def pytest_collection_modifyitems(config, items):
    """A test that uses the SLURM cluster must be marked slurm, or `-m "not slurm"` would still run it."""
    unmarked = [item.nodeid for item in items
                if "slurm_cluster" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("slurm")]
    if unmarked:
        raise pytest.UsageError("these tests use the slurm_cluster fixture but are not marked slurm "
                                "(pytest.mark.slurm): " + ", ".join(unmarked))
