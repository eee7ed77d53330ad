"""Bad inputs are refused by submit.py with one clear line, before any worker starts."""
import dataclasses
import json
import os
import shutil
import time

import pytest

from conftest import FAST, run_submit, write_prompts
from gen_worker.container.runtime import ContainerOptions
from gen_worker.flags import flag_fields
from gen_worker.slurm.options import SlurmOptions
from gen_worker.spec import JobSpec

pytestmark = pytest.mark.e2e  # each test runs submit.py (it stops before any worker starts)


def _submit(csv, out, model, *extra):
    started = time.monotonic()
    result = run_submit("--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv, "--output_dir", out,
                        "--model_path", model, *FAST, *extra)
    return result, time.monotonic() - started


def _assert_refused(result, seconds, message):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert seconds < 8  # refused by the submitter itself: no worker, no torch import


@pytest.mark.parametrize("content, extra, message", [
    ("image_id,prompt\n1,a cat\n2,\n", (), "empty prompt in data row 1"),
    ("image_id,caption_en\n1,a cat\n", (), "no prompt column"),
    ("", (), "prompts CSV is empty"),
    ("image_id,prompt\n", (), "no data rows"),
    ("image_id,prompt\n1,a\n", ("--num_samples", "5"), "--num_samples 5 is more than the 1 prompts"),
    ("image_id,prompt\n1,a\n", ("--prompt_column", "text_en"), "no column 'text_en'"),
    ("image_id,prompt\n1,a\n", ("--height", "60"), "--height must be a multiple of 8"),
    ("image_id,prompt\n1,a\n", ("--num_inference_steps", "0"), "--num_inference_steps must be at least 1"),
    ("image_id,prompt\n1,a\n", ("--cfg_truncation_step", "-1"), "--cfg_truncation_step must be 0 or more"),
    ("image_id,prompt\n1,a\n", ("--batch_size", "0"), "--batch_size must be at least 1"),
])
def test_bad_prompts_and_settings(tmp_path, tiny_sd, content, extra, message):
    csv = tmp_path / "p.csv"
    csv.write_text(content, encoding="utf-8")
    result, seconds = _submit(str(csv), str(tmp_path / "out"), tiny_sd, *extra)
    _assert_refused(result, seconds, message)
    out = tmp_path / "out"
    assert not out.exists() or not any(n.endswith(".png") for n in os.listdir(out))


def test_missing_and_unreadable_csv(tmp_path, tiny_sd):
    _assert_refused(*_submit(str(tmp_path / "nope.csv"), str(tmp_path / "out"), tiny_sd), "prompts CSV not found")
    (tmp_path / "bin.csv").write_bytes(b"image_id,prompt\n1,\xff\xfe\n")
    _assert_refused(*_submit(str(tmp_path / "bin.csv"), str(tmp_path / "out"), tiny_sd), "not valid UTF-8")


def test_bad_model_paths(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a")])
    out = str(tmp_path / "out")
    _assert_refused(*_submit(csv, out, str(tmp_path / "no-model")), "model folder not found")
    _assert_refused(*_submit(csv, out, str(tmp_path)), "is not a diffusers pipeline folder (no model_index.json)")
    _assert_refused(*_submit(csv, out, csv), "is a file")
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_sd, pickled)
    os.rename(pickled / "unet" / "diffusion_pytorch_model.safetensors", pickled / "unet" / "diffusion_pytorch_model.bin")
    _assert_refused(*_submit(csv, out, str(pickled)), "has only pickled weights")
    env_offline = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = run_submit("--prompts_csv", csv, "--output_dir", out, "--model_path", "someorg/some-model", *FAST,
                        env=env_offline)
    _assert_refused(result, 0, "is not in the local Hugging Face cache")


def test_output_dir_problems(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a")])
    _assert_refused(*_submit(csv, csv, tiny_sd), "exists and is not a folder")
    _assert_refused(*_submit(csv, os.path.join(csv, "out"), tiny_sd), "cannot write to --output_dir")
    _assert_refused(*_submit(csv, "/proc/t2i-out", tiny_sd), "cannot write to --output_dir")


def test_other_settings_into_the_same_folder_are_refused(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "generation_settings.json").write_text(json.dumps({"settings": {"num_inference_steps": 50}}))
    result, seconds = _submit(csv, str(out), tiny_sd)
    _assert_refused(result, seconds, "holds images made with other settings (model_path: None -> ")
    assert "num_inference_steps: 50 -> 3" in result.stderr and "--allow_settings_change" in result.stderr


def test_duplicate_gpu_ids(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a")])
    result = run_submit("--gpu_ids", "0", "0", "--prompts_csv", csv, "--output_dir", str(tmp_path / "o"),
                        "--model_path", tiny_sd, *FAST)
    _assert_refused(result, 0, "--gpu_ids lists a GPU twice")


def test_help_documents_every_flag_with_its_default():
    """Every flag declared on a settings dataclass shows in --help with its default (or says it in words)."""
    result = run_submit("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    text = text[text.index("where to run:"):]  # the option descriptions, not the usage line
    fields = [f for cls in (JobSpec, SlurmOptions, ContainerOptions) for f in flag_fields(cls)]
    assert len(fields) > 40
    for f in fields:
        section = text[text.index(f"--{f.name} "):][:700]
        if f.default is dataclasses.MISSING:
            continue  # required, or repeatable (nothing by default)
        shown = "default:" in f.metadata["help"] or f"(default: {f.default})" in section
        assert shown and "default:" in section, f.name
    for flag, default in [("--cluster", "local"), ("--seed_start", "42"), ("--guidance_scale", "the pipeline's own"),
                          ("--dtype", "auto"), ("--vae_tiling", "False"), ("--gpus", "8")]:
        assert f"default: {default}" in text[text.index(flag + " "):][:700], flag


@pytest.mark.parametrize("extra, message", [
    (("--guidance_scale", "nan"), "--guidance_scale must be a finite number (got nan)"),
    (("--guidance_scale", "inf"), "--guidance_scale must be a finite number (got inf)"),
    (("--seed_start", str(2**64)), f"--seed_start must be at most {2**64 - 1}"),
    (("--seed_start", str(2**64 - 1)), "goes past 18446744073709551615, the largest seed torch's generator takes"),
])
def test_numbers_that_cannot_work_are_refused(tmp_path, tiny_sd, extra, message):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a"), ("2", "b")])
    _assert_refused(*_submit(csv, str(tmp_path / "out"), tiny_sd, *extra), message)


def test_gpu_ids_that_cannot_work_are_refused(tmp_path, tiny_sd):
    csv = write_prompts(tmp_path / "p.csv", [("1", "a")])
    base = ["--prompts_csv", csv, "--output_dir", str(tmp_path / "o"), "--model_path", tiny_sd]
    _assert_refused(run_submit("--gpu_ids", "-1", *base, *FAST), 0, "--gpu_ids -1: GPU ids are 0 or more")
    no_gpu = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # and no nvidia-smi on this machine
    for device in ("cuda", "auto"):
        result = run_submit("--gpu_ids", "0", *base, "--device", device, env=no_gpu)
        _assert_refused(result, 0, "--gpu_ids 0, but no GPU is visible")
