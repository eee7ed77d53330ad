"""JobSpec is the one definition of each setting: flags, defaults, checks, the record, the version."""
import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, write_prompts
from gen_worker.errors import UsageError
from gen_worker.flags import flag_fields
from gen_worker.spec import RECORDED_SETTINGS, SPEC_VERSION, JobSpec, SpecVersionError
from gen_worker.worker.loop import run_worker


def _spec(tmp_path, **changes):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a cat")])
    return JobSpec(prompts_csv=csv, output_dir=str(tmp_path / "out"), model_path="m", num_samples=1, **changes)


def test_every_setting_is_a_flag_and_the_recorded_ones_are_declared_on_their_field():
    names = {f.name for f in flag_fields(JobSpec)}
    assert {f.name for f in dataclasses.fields(JobSpec)} - names == {"samples_fingerprint", "model_identity", "spec_version"}
    assert {"model_path", "seed_start", "guidance_scale", "scheduler", "batch_size"} <= set(RECORDED_SETTINGS)
    assert not {"device", "compile", "tf32", "output_dir", "prompts_csv"} & set(RECORDED_SETTINGS)


@pytest.mark.parametrize("changes, message", [
    ({"height": 60}, "--height must be a multiple of 8 (got 60)"),
    ({"guidance_scale": float("nan")}, "--guidance_scale must be a finite number"),
    ({"guidance_scale": float("inf")}, "--guidance_scale must be a finite number"),
    ({"scheduler": "DPMSolver"}, "--scheduler is not a diffusers scheduler class"),
    ({"cpu_threads": 0}, "--cpu_threads must be at least 1"),
    ({"lease_seconds": 1e300}, "--lease_seconds must be at most 86400 (got 1e+300)"),  # its threads' timeouts overflowed
])
def test_a_spec_checks_its_values_where_they_are_declared(tmp_path, changes, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        _spec(tmp_path, **changes)


def test_the_json_round_trip_keeps_every_field_and_the_version(tmp_path):
    spec = _spec(tmp_path, scheduler="DPMSolverMultistepScheduler", guidance_scale=3.0)
    again = JobSpec.from_json(spec.to_json())
    assert again == spec and again.spec_version == SPEC_VERSION


@pytest.mark.e2e
def test_a_worker_refuses_a_spec_from_other_code_in_one_line(tmp_path):
    """A local worker (or one in an older container image) given a spec.json of another version."""
    spec = _spec(tmp_path)
    os.makedirs(spec.output_dir)
    values = json.loads(spec.to_json())
    values["spec_version"] = "0ld0ld0ld0ld"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(values))
    result = subprocess.run([sys.executable, "-m", "gen_worker.worker", "--spec", str(path), "--worker_index", "0",
                             "--num_workers", "1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "spec version 0ld0ld0ld0ld" in last and "rebuild the container image" in last, result.stderr
    assert "Traceback" not in result.stderr


def test_a_pickled_spec_from_before_versions_is_refused(tmp_path):
    """A SLURM job queued by older code is unpickled without the field: not taken for the current version."""
    spec = _spec(tmp_path)
    del spec.__dict__["spec_version"]
    with pytest.raises(SpecVersionError, match="spec version none"):
        run_worker(spec, 0, 1)


def _text_flags():
    """Every flag whose value is text, free (no choices): each must refuse what cannot be written as UTF-8."""
    import typing
    from gen_worker.container.runtime import ContainerOptions
    from gen_worker.slurm.options import SlurmOptions
    for cls in (JobSpec, SlurmOptions, ContainerOptions):
        hints = typing.get_type_hints(cls)
        for f in flag_fields(cls):
            if str in (hints[f.name], *typing.get_args(hints[f.name])) and not f.metadata["choices"]:
                yield cls.__name__, f.name


@pytest.mark.parametrize("options, name", list(_text_flags()))
def test_text_that_is_not_utf8_is_refused_in_one_line_before_anything_is_written(tmp_path, tiny_sd, capfd, monkeypatch,
                                                                                 options, name):
    import signal
    from gen_worker.cli import main
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main's SIGTERM handler: not for pytest
    csv = write_prompts(tmp_path / "p.csv", [("1", "a cat")])
    before = sorted(os.listdir(tmp_path))
    # a byte that is not UTF-8 in argv reaches Python as a lone surrogate (surrogateescape); a path in
    # tmp_path, so that a flag taking a path that accepted it would write nothing outside
    bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/low quality \xff")
    mode = ["--cluster", "slurm"] if options == "SlurmOptions" else ["--gpu_ids", "0"]
    container = ["--container", "image.sif"] if options == "ContainerOptions" and name != "container" else []
    argv = [*mode, "--prompts_csv", csv, "--output_dir", str(tmp_path / "out"), "--model_path", tiny_sd,
            "--device", "cpu", *container, f"--{name}", bad]
    assert main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --{name} is not valid UTF-8 text"), err
    if options != "ContainerOptions":  # checked before the output folder is made
        assert sorted(os.listdir(tmp_path)) == before


def test_a_gpu_id_that_is_not_utf8_is_refused(capfd):
    from gen_worker.cli import build_parser
    from gen_worker.local import check_gpu_ids
    args = build_parser().parse_args(["--prompts_csv", "p", "--output_dir", "o", "--model_path", "m",
                                      "--device", "cpu", "--gpu_ids", "0", os.fsdecode(b"1\xff")])
    with pytest.raises(UsageError, match="--gpu_ids is not valid UTF-8 text"):
        check_gpu_ids(args)
