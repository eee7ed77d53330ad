"""A no-op rerun over many recorded samples (bench/million.py times a million): it reads no image and starts no
worker, and what the records vouch for is still checked (a damaged image or manifest is caught)."""
import json
import os

import pytest

from bench.million import recorded_folder
from gen_worker import cli, local
from gen_worker.cli import build_parser
from gen_worker.output import layout, provenance
from gen_worker.output.prepare import SettingsMismatch, prepare_output_dir
from gen_worker.plan import build_spec
from gen_worker.slurm.status import show_status

SAMPLES = 20_000


@pytest.fixture()
def recorded(tmp_path, tiny_sd, monkeypatch):
    """(argv, output folder) of a finished run of SAMPLES samples; a worker started or an image read fails the test."""
    csv_path = tmp_path / "prompts.csv"
    csv_path.write_text("image_id,prompt\n" + "".join(f"{i},a photo of object {i}\n" for i in range(SAMPLES)))
    argv = ["--cluster", "local", "--gpu_ids", "0", "--prompts_csv", str(csv_path), "--output_dir",
            str(tmp_path / "out"), "--model_path", tiny_sd, "--device", "cpu", "--dtype", "fp32",
            "--height", "64", "--width", "64"]
    out = recorded_folder(str(tmp_path), argv, links_per_file=SAMPLES - 1)  # the last image: a file of its own
    read = []
    inspect = provenance.inspect
    monkeypatch.setattr(provenance, "inspect", lambda path: read.append(path) or inspect(path))
    monkeypatch.setattr(local, "start_worker", lambda *args, **kwargs: pytest.fail("a worker was started"))
    return argv, out, read


def _report(out):
    with open(os.path.join(out, layout.RESUME_CHECK_FILE), encoding="utf-8") as f:
        return json.load(f)


def test_a_no_op_rerun_reads_no_image_and_starts_no_worker(recorded, capsys):
    argv, out, read = recorded
    for _ in ("the workers' records", "the check's own record"):
        assert cli.main(argv) == 0
        report = _report(out)
        assert (report["checked"], report["read"], report["quarantined"]) == (SAMPLES, 0, [])
        assert read == []
        assert not os.path.exists(layout.written_file(out, 0))  # folded into the check's record
    with open(os.path.join(out, layout.RUN_SUMMARY_FILE), encoding="utf-8") as f:
        summary = json.load(f)
    assert (summary["num_workers"], summary["missing"], summary["skipped"]) == (0, 0, SAMPLES)
    assert f"{SAMPLES}/{SAMPLES} images" in capsys.readouterr().err
    assert show_status(out) == 0  # the local dynamic run's status: finished, no worker
    assert "no worker started" in capsys.readouterr().out


def test_a_damaged_image_or_manifest_is_still_caught(recorded):
    argv, out, read = recorded
    spec, samples = build_spec(build_parser().parse_args(argv))
    damaged = os.path.join(out, samples[-1].file_name)
    st = os.stat(damaged)
    with open(damaged, "r+b") as f:  # damaged in place: the same size, inode and times; only its ctime tells
        f.write(b"\0" * 16)
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))
    prepare_output_dir(spec, samples).release()
    report = _report(out)
    assert report["read"] == 1 and [q["file"] for q in report["quarantined"]] == [samples[-1].file_name]
    assert read == [damaged]

    manifest = os.path.join(out, layout.MANIFEST_FILE)
    with open(manifest, encoding="utf-8") as f:
        text = f.read()
    with open(manifest, "w", encoding="utf-8") as f:
        f.write(text.replace("a photo of object 7\n", "a photo of something else\n"))
    with pytest.raises(SettingsMismatch, match="sample 7 was"):
        prepare_output_dir(spec, samples).release()


def test_the_workers_records_do_not_vouch_for_a_changed_prompt(recorded, tmp_path):
    argv, out, read = recorded
    csv_path = tmp_path / "prompts.csv"
    csv_path.write_text(csv_path.read_text().replace("7,a photo of object 7\n", "7,a photo of something else\n"))
    spec, samples = build_spec(build_parser().parse_args([*argv, "--allow_settings_change"]))
    prepare_output_dir(spec, samples, allow_settings_change=True).release()
    report = _report(out)
    assert report["read"] == 1 and [q["file"] for q in report["quarantined"]] == [samples[7].file_name]
