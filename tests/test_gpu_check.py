"""bench/gpu_check.py on a CPU, as a user runs it (a fresh process): the checks it runs on a GPU, on two families,
and its exit status 1 when a check fails. bench/ and tests/ do not import each other."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e  # the script in a fresh process, making images (about half a minute)

GPU_CHECK = os.path.join(REPO, "bench", "gpu_check.py")

# Put on the script's path as sitecustomize: each worker run's images are changed by one byte per worker
# count, so "1 vs 2 workers byte-identical" must fail.
BREAK_WORKERS = '''
import gen_worker.worker.loop as loop
_run_worker = loop.run_worker

def run_worker(spec, worker_index, num_workers, **kwargs):
    summary = _run_worker(spec, worker_index, num_workers, **kwargs)
    import os
    for name in os.listdir(spec.output_dir):
        if name.endswith(".png"):
            with open(os.path.join(spec.output_dir, name), "ab") as f:
                f.write(bytes([num_workers]))
    return summary

loop.run_worker = run_worker
'''


def _gpu_check(*args, env=None):
    return subprocess.run([sys.executable, GPU_CHECK, "--device", "cpu", *args, "--no_compile"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)


def test_gpu_check_runs_on_cpu():
    ran = _gpu_check("--families", "sd", "flux")
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = ran.stdout
    assert "tiny families on cpu" in out and "SD 1.5 benchmark skipped" in out
    table = out[out.index("tiny families on cpu"):].splitlines()
    assert [line.split()[:2] for line in table[3:5]] == [["sd", "fp32"], ["flux", "fp32"]]
    levers = out[out.index("speed levers, tiny Flux on cpu"):].splitlines()
    assert [(re.split(r"\s{2,}", line.strip())[0], line.split()[-1]) for line in levers[3:6]] == [
        ("none", "True"), ("cache first_block:0.5", "True"), ("quantize int8wo", "True")]


def test_gpu_check_fails_when_a_check_fails(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BREAK_WORKERS)
    ran = _gpu_check("--families", "flux", env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert ran.returncode == 1, ran.stdout[-2000:] + ran.stderr[-2000:]
