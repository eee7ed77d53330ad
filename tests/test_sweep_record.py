"""sweep.json: the one reader and writer shared by the sweep generator and evaluation/."""
import json
import os

import re

import pytest

from gen_worker.output.sweep_record import (SWEEP_FILE, DamagedSweepRecord, SweepConfiguration, configuration_name,
                                            read_sweep_record, write_sweep_record)


def test_configuration_names_are_readable_stable_and_safe():
    assert configuration_name({"guidance_scale": "1.5"}) == "guidance_scale-1.5"
    assert (configuration_name({"guidance_scale": "1.5", "num_inference_steps": "20"})
            == "guidance_scale-1.5__num_inference_steps-20")
    # the order given is kept (it is the sweep's order of axes)
    assert configuration_name({"num_inference_steps": "20", "guidance_scale": "1.5"}).startswith("num_inference")
    assert configuration_name({"model_path": "/models/sd-1.5/"}) == "model_path-sd-1.5"
    assert configuration_name({"model_path": "stabilityai/sdxl-turbo"}) == "model_path-sdxl-turbo"
    assert re.fullmatch(r"scheduler-DPM___2M-[0-9a-f]{8}", configuration_name({"scheduler": "DPM++ 2M"}))
    # only a *_path setting is a path: a negative prompt with a slash keeps all of it, in one folder name
    assert re.fullmatch(r"negative_prompt-.._.._etc-[0-9a-f]{8}", configuration_name({"negative_prompt": "../../etc"}))
    long = configuration_name({"x": "v" * 400})
    assert len(long) == 200 and long != configuration_name({"x": "v" * 401})
    with pytest.raises(ValueError):
        configuration_name({})


def test_values_that_differ_only_in_characters_a_folder_name_cannot_hold_get_distinct_names(tmp_path):
    values = ["blurry, low quality", "blurry; low quality", "blurry low quality", "模糊", "丑陋", "a\"b\nc"]
    names = [configuration_name({"negative_prompt": v}) for v in values]
    assert len(set(names)) == len(values)
    assert names[0].startswith("negative_prompt-blurry__low_quality-")
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    # sweep.json keeps each value exactly as given
    write_sweep_record(str(tmp_path), {"negative_prompt": values},
                       [{"overrides": {"negative_prompt": v}} for v in values])
    record = read_sweep_record(str(tmp_path))
    assert [c.overrides["negative_prompt"] for c in record.configurations] == values
    assert [c.folder for c in record.configurations] == names


def test_write_then_read(tmp_path):
    axes = {"guidance_scale": ["1.5", "3"], "num_inference_steps": ["4"]}
    configs = [{"overrides": {"guidance_scale": g, "num_inference_steps": "4"}} for g in ("1.5", "3")]
    written = write_sweep_record(str(tmp_path), axes, configs)
    assert sorted(os.listdir(tmp_path)) == [SWEEP_FILE]  # no temporary file left
    record = read_sweep_record(str(tmp_path))
    assert record == written
    assert record.axes == axes
    assert record.configurations[0] == SweepConfiguration(
        name="guidance_scale-1.5__num_inference_steps-4", folder="guidance_scale-1.5__num_inference_steps-4",
        overrides={"guidance_scale": "1.5", "num_inference_steps": "4"})
    assert record.folder("/top", record.configurations[1]) == "/top/guidance_scale-3__num_inference_steps-4"
    # an explicit name and folder are kept
    write_sweep_record(str(tmp_path), {"g": ["1"]}, [{"name": "low", "folder": "runs/low", "overrides": {"g": "1"}}])
    assert read_sweep_record(str(tmp_path)).configurations == [SweepConfiguration("low", "runs/low", {"g": "1"})]


def test_a_plain_run_folder_is_no_sweep(tmp_path):
    assert read_sweep_record(str(tmp_path)) is None


@pytest.mark.parametrize("content, message", [
    ("not json", "is not a sweep record"),
    (json.dumps({"format": "other"}), "is not a sweep record"),
    (json.dumps({"format": "t2i-batch-sweep-v1", "axes": {}, "configurations": []}), "at least one configuration"),
    (json.dumps({"format": "t2i-batch-sweep-v1", "axes": {"g": ["1"]},
                 "configurations": [{"name": "a", "folder": "../out", "overrides": {"g": "1"}}]}), "not a plain relative"),
    (json.dumps({"format": "t2i-batch-sweep-v1", "axes": {"g": ["1"]},
                 "configurations": [{"name": "a", "overrides": {"g": "1"}}, {"name": "a", "overrides": {"g": "2"}}]}),
     "same name"),
])
def test_a_damaged_record_is_one_clear_error(tmp_path, content, message):
    (tmp_path / SWEEP_FILE).write_text(content)
    with pytest.raises(DamagedSweepRecord, match=message):
        read_sweep_record(str(tmp_path))


def test_two_configurations_with_one_folder_name_are_refused(tmp_path):
    # /a/ckpt and /b/ckpt give the same readable name: refused rather than mixed in one folder
    configs = [{"overrides": {"model_path": "/a/ckpt"}}, {"overrides": {"model_path": "/b/ckpt"}}]
    with pytest.raises(DamagedSweepRecord, match="same name"):
        write_sweep_record(str(tmp_path), {"model_path": ["/a/ckpt", "/b/ckpt"]}, configs)
    assert not (tmp_path / SWEEP_FILE).exists()
