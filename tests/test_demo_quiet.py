"""`make demo` prints nothing a new user cannot act on: no library notices, no progress bars of the
libraries' own, in the terminal or the worker logs (issue 18, item 7)."""
import os
import subprocess
import sys

import pytest

from conftest import FAST, REPO, run_submit, write_prompts

pytestmark = pytest.mark.e2e


def test_the_demo_commands_print_only_what_the_user_needs(tmp_path):
    model = str(tmp_path / "model")
    built = subprocess.run([sys.executable, "-m", "gen_worker.tiny_model", model, "--arch", "sd"], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0 and built.stderr == "", built.stderr
    assert built.stdout == f"wrote a tiny random-weight sd pipeline to {model}\n"
    out = str(tmp_path / "out")
    made = run_submit("--gpu_ids", "0", "--prompts_csv", write_prompts(tmp_path / "p.csv", [("1", "a red bus")]),
                      "--output_dir", out, "--model_path", model, *FAST)
    assert made.returncode == 0, made.stderr[-2000:]
    with open(os.path.join(out, "logs", "worker_gpu0.log"), encoding="utf-8") as f:
        log = f.read()
    for text in (made.stderr, log):
        assert "torchvision" not in text and "[transformers]" not in text, text[-2000:]
