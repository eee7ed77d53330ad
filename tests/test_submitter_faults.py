"""The submitter never dies with a traceback: a full disk, a double Ctrl+C, damaged output folders,
unanswerable squeue. Each ends with one line (and the right exit status). Ids 1 and 1.0: test_prompts.py."""
import os

import pytest

from conftest import FAST, run_submit, write_prompts


def _submit(csv, out, model, *extra, **kwargs):
    return run_submit("--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", out,
                      "--model_path", model, *FAST, *extra, **kwargs)


def _one_error_line(result, status, message):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr


# e. Damaged output folders: one line, exit 2.

@pytest.mark.parametrize("damage, message", [
    ("logs_is_a_file", "logs"),
    ("manifest_is_a_folder", "manifest.csv"),
    ("empty_settings", "generation_settings.json"),
])
def test_damaged_output_folder_is_one_line(tmp_path, tiny_sd, damage, message):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a cat")])
    out = tmp_path / "out"
    out.mkdir()
    if damage == "logs_is_a_file":
        (out / "logs").write_text("not a folder")
    elif damage == "manifest_is_a_folder":
        (out / "manifest.csv").mkdir()
    else:
        (out / "generation_settings.json").write_text("")
    _one_error_line(_submit(csv, out, tiny_sd), 2, message)


def test_status_of_a_file_is_one_line(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    for command in ("status", "cancel"):
        _one_error_line(run_submit(command, "--output_dir", path), 2, str(path))
