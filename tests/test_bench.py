"""The GPU benchmark script runs end to end in its CPU smoke mode (it is otherwise only run on a lent GPU)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e  # the benchmark script in a fresh process, making images (about a minute)


def test_gpu_benchmark_smoke_run_on_cpu(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu_sd15.py"), "--tiny", "--device", "cpu",
                             "--no_compile", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [r["run"] for r in results["runs"]] == [
        "plain loop (batch 1, save each PNG)", "toolkit batch 2", "plain loop (batch 2, save each PNG)",
        "toolkit batch 2 channels_last",
        "pipeline calls alone, as toolkit batch 2 channels_last (no saving)"]
    assert all(r["images_per_s"] > 0 for r in results["runs"])
    assert results["best_toolkit"]["run"].startswith("toolkit") and results["speedup_over_plain_loop"] > 0
    assert results["toolkit_over_plain_loop_same_batch"] > 0
    assert results["runs"][0]["png_kb"] > 0 and results["settings"]["dtype"] == "fp32"
    assert "best toolkit run" in result.stdout
