"""bench/gpu_check.py on a CPU, in this process: the checks it runs on a GPU, on two families."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))


def test_gpu_check_runs_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    import gpu_check
    assert gpu_check.main(["--device", "cpu", "--families", "sd", "flux", "--no_compile"]) == 0
    out = capsys.readouterr().out
    assert "tiny families on cpu" in out and "SD 1.5 benchmark skipped" in out
    table = out[out.index("tiny families on cpu"):].splitlines()
    assert [line.split()[:2] for line in table[3:5]] == [["sd", "fp32"], ["flux", "fp32"]]


def test_gpu_check_fails_when_a_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpu_check
    monkeypatch.setattr(gpu_check, "worker_files", lambda pipe, spec, workers: {"x.png": bytes([workers])})
    assert gpu_check.main(["--device", "cpu", "--families", "flux", "--no_compile"]) == 1
