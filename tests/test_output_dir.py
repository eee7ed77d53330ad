"""The output folder's records, locks and atomic writes (no model needed)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import write_prompts
from gen_worker.output import layout
from gen_worker.atomic_files import create_once, replace_json
from gen_worker.worker.png import save_png_once
from gen_worker.prompts import load_samples
from gen_worker.output.lock import OutputDirBusy, RunLock
from gen_worker.output.record import read_manifest
from gen_worker.output.prepare import SettingsMismatch, prepare_output_dir
from gen_worker.spec import JobSpec


def _spec(tmp_path, **changes):
    fields = dict(prompts_csv="p.csv", output_dir=str(tmp_path / "out"), model_path="/m", num_samples=2)
    fields.update(changes)
    return JobSpec(**fields)


def test_image_is_never_overwritten_and_no_temp_is_left(tmp_path):
    path = str(tmp_path / "a.png")
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert save_png_once(red, path)
    first = open(path, "rb").read()
    assert not save_png_once(np.zeros((4, 4, 3), np.uint8), path)
    assert open(path, "rb").read() == first
    assert os.listdir(tmp_path) == ["a.png"]
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), red)


def test_failed_write_leaves_nothing(tmp_path):
    def broken(f):
        f.write(b"\x89PNG partial")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        create_once(str(tmp_path / "a.png"), broken)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf")])
def test_a_record_is_never_written_with_a_number_json_has_not(tmp_path, number):
    # NaN/Infinity are no JSON (jq, JavaScript and GenEval's reader refuse the file): a bug to see, not a record
    path = str(tmp_path / "r.json")
    replace_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        replace_json(path, {"scores": [1.0, number]})
    assert json.load(open(path)) == {"ok": 1} and os.listdir(tmp_path) == ["r.json"]


def test_settings_change_is_refused_unless_allowed(tmp_path):
    samples = load_samples(write_prompts(tmp_path / "p.csv", [("1", "a"), ("2", "b")]), 42)
    prepare_output_dir(_spec(tmp_path), samples).release()
    prepare_output_dir(_spec(tmp_path), samples).release()  # same settings: fine
    with pytest.raises(SettingsMismatch, match=r"num_inference_steps: 20 -> 30.*--allow_settings_change"):
        prepare_output_dir(_spec(tmp_path, num_inference_steps=30), samples)
    prepare_output_dir(_spec(tmp_path, num_inference_steps=30), samples, allow_settings_change=True).release()
    with pytest.raises(SettingsMismatch, match="num_inference_steps: 30 -> 20"):
        prepare_output_dir(_spec(tmp_path), samples)


def test_a_setting_newer_than_the_record_counts_as_its_default(tmp_path):
    samples = load_samples(write_prompts(tmp_path / "p.csv", [("1", "a")]), 42)
    prepare_output_dir(_spec(tmp_path), samples).release()
    path = os.path.join(_spec(tmp_path).output_dir, layout.SETTINGS_FILE)
    record = json.load(open(path))
    del record["settings"]["vae_tiling"]  # a folder made before the setting existed
    open(path, "w").write(json.dumps(record))
    prepare_output_dir(_spec(tmp_path), samples).release()
    with pytest.raises(SettingsMismatch, match="vae_tiling: False -> True"):
        prepare_output_dir(_spec(tmp_path, vae_tiling=True), samples)
    prepare_output_dir(_spec(tmp_path, compile="whole", channels_last=True), samples).release()  # speed: not guarded


def test_changed_prompts_are_refused_but_more_samples_are_fine(tmp_path):
    spec = _spec(tmp_path)
    small = load_samples(write_prompts(tmp_path / "p.csv", [("1", "a"), ("2", "b")]), 42)
    prepare_output_dir(spec, small).release()
    more = load_samples(write_prompts(tmp_path / "p.csv", [("1", "a"), ("2", "b"), ("3", "c")]), 42)
    prepare_output_dir(spec, more).release()
    assert sorted(read_manifest(spec.output_dir)) == [0, 1, 2]
    prepare_output_dir(spec, small).release()  # fewer: the manifest keeps what a larger run made
    assert sorted(read_manifest(spec.output_dir)) == [0, 1, 2]
    changed = load_samples(write_prompts(tmp_path / "p.csv", [("1", "a"), ("2", "z")]), 42)
    with pytest.raises(SettingsMismatch, match="sample 1 was 2: 'b', now 2: 'z'"):
        prepare_output_dir(spec, changed)


def test_stale_temp_files_and_old_reports_are_cleared(tmp_path):
    spec = _spec(tmp_path)
    os.makedirs(spec.output_dir)
    stale = os.path.join(spec.output_dir, ".000001_seed42.png.999.tmp")
    open(stale, "wb").write(b"half")
    open(layout.failed_file(spec.output_dir, 3), "w").write("{}\n")
    samples = load_samples(write_prompts(tmp_path / "p.csv", [("1", "a")]), 42)
    prepare_output_dir(spec, samples).release()
    assert not os.path.exists(stale)
    assert not os.path.exists(layout.failed_file(spec.output_dir, 3))
    previous = os.path.join(spec.output_dir, layout.PREVIOUS_REPORTS_DIR)
    assert [os.listdir(os.path.join(previous, d)) for d in os.listdir(previous)] == [["failed_prompts_gpu3.txt"]]


def test_second_run_is_refused_while_the_first_holds_the_folder(tmp_path):
    folder = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from gen_worker.output.lock import RunLock; l = RunLock(sys.argv[1]); "
        "l.acquire_exclusive(); l.downgrade_to_shared(); print('held', flush=True); sys.stdin.read()"), folder],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirBusy, match=f"in use by another run \\(pid {holder.pid}"):
            RunLock(folder).acquire_exclusive()
        shared = RunLock(folder)
        shared.acquire_shared(timeout=1)  # a worker of the running run may join
        shared.release()
    finally:
        holder.kill()
        holder.wait()
    RunLock(folder).acquire_exclusive()  # the lock died with its holder
