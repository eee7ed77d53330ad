"""--scheduler: a diffusers scheduler class from the model's config, recorded, guarded on rerun.

The setting that proved the single-source settings: its diff touched spec.py (the field) and
worker/pipeline.py (the code that uses it) besides tests and docs.
"""
import json
import os

import pytest

from conftest import FAST, PROMPTS, images_in, run_submit, write_prompts
from gen_worker.output import layout
from gen_worker.spec import JobSpec
from gen_worker.worker.pipeline import ImageMaker, PipelineSetupError, load_pipeline

pytestmark = pytest.mark.e2e

DPM = "DPMSolverMultistepScheduler"


def test_local_run_with_a_scheduler_is_the_same_for_any_worker_count_and_guarded(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:4])
    runs = {}
    for name, extra in (("default", ["--gpu_ids", "0"]), ("dpm1", ["--gpu_ids", "0", "--scheduler", DPM]),
                        ("dpm2", ["--gpu_ids", "0", "1", "--scheduler", DPM])):
        out = str(tmp_path / name)
        result = run_submit("--prompts_csv", csv, "--output_dir", out, "--model_path", tiny_sd, *FAST, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = images_in(out)
    assert len(runs["dpm1"]) == 4 and runs["dpm1"] == runs["dpm2"]
    assert all(runs["dpm1"][n] != runs["default"][n] for n in runs["default"])  # another sampler, other images
    settings = json.load(open(os.path.join(str(tmp_path / "dpm2"), layout.SETTINGS_FILE)))["settings"]
    assert settings["scheduler"] == DPM
    assert f"--scheduler: {DPM} in place of DDIMScheduler" in open(layout.worker_log(str(tmp_path / "dpm2"), 0)).read()
    # Rerun into the same folder without it: refused, naming the change.
    again = run_submit("--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", str(tmp_path / "dpm2"),
                       "--model_path", tiny_sd, *FAST)
    assert again.returncode == 2 and f"scheduler: '{DPM}' -> None" in again.stderr, again.stderr


def test_a_name_diffusers_does_not_have_is_refused_before_any_worker(tiny_sd, tmp_path):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a")])
    result = run_submit("--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", str(tmp_path / "o"),
                        "--model_path", tiny_sd, *FAST, "--scheduler", "DPMPlusPlusScheduler")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --scheduler is not a diffusers scheduler class "
                                     "(e.g. DPMSolverMultistepScheduler) (got DPMPlusPlusScheduler)")


def test_a_scheduler_that_does_not_fit_the_model_is_refused_by_the_worker(tiny_sd, tmp_path):
    pipe = load_pipeline(tiny_sd, "fp32", "cpu")
    spec = JobSpec(prompts_csv="p.csv", output_dir=str(tmp_path), model_path=tiny_sd, num_samples=1,
                   scheduler="FlowMatchEulerDiscreteScheduler")
    with pytest.raises(PipelineSetupError, match="does not fit StableDiffusionPipeline, whose DDIMScheduler"):
        ImageMaker(pipe, spec)
