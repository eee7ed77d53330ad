"""Settings whose default depends on the model or the device: --guidance_scale (the pipeline's own
default, read from diffusers' source) and --dtype auto (what the device runs fast), each recorded as
the value actually used."""
import json
import os
import subprocess
from typing import Any, List

import pytest

from gen_worker import gpus
from gen_worker.errors import UsageError
from gen_worker.families import pipeline_guidance_default
from gen_worker.output import layout
from gen_worker.spec import auto_dtype
from tests.conftest import PROMPTS, run_submit, images_in, write_prompts

SETTINGS = ["--cluster", "local", "--device", "cpu", "--num_inference_steps", "2", "--height", "32",
            "--width", "32"]


def _index(tmp_path: Any, class_name: str) -> str:
    folder = tmp_path / class_name
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return str(folder)


@pytest.mark.parametrize("class_name, expected", [("FluxPipeline", 3.5), ("StableDiffusionPipeline", 7.5),
                                                  ("StableDiffusion3Pipeline", 7.0)])
def test_guidance_default_is_read_from_the_pipeline_class(tmp_path: Any, class_name: str, expected: float) -> None:
    assert pipeline_guidance_default(_index(tmp_path, class_name)) == expected


def test_guidance_default_that_cannot_be_read_is_refused_in_one_line(tmp_path: Any) -> None:
    with pytest.raises(UsageError, match="give --guidance_scale") as err:
        pipeline_guidance_default(_index(tmp_path, "NoSuchPipeline"))
    assert "\n" not in str(err.value)


def test_guidance_default_of_a_hub_id_not_downloaded_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="give --guidance_scale"):
        pipeline_guidance_default("nobody-here/not-a-cached-model")


@pytest.mark.parametrize("device, caps, expected", [
    ("cpu", [], "fp32"), ("cpu", ["9.0"], "fp32"), ("cuda", ["8.0"], "bf16"), ("cuda", ["9.0", "8.6"], "bf16"),
    ("cuda", ["7.5"], "fp16"), ("cuda", ["8.0", "7.0"], "fp16")])
def test_auto_dtype_fits_the_device(device: str, caps: List[str], expected: str) -> None:
    assert auto_dtype(device, caps) == expected


def test_compute_capabilities_come_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[List[str]] = []

    def fake_run(cmd: List[str], **kwargs: Any) -> subprocess.CompletedProcess:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="0, GPU-aaa, 7.5\n1, GPU-bbb, 8.6\n", stderr="")
    monkeypatch.setattr(gpus.subprocess, "run", fake_run)
    assert gpus.compute_capabilities(["1"]) == ["8.6"]
    assert gpus.compute_capabilities(["GPU-aaa", "1"]) == ["7.5", "8.6"]
    assert gpus.compute_capabilities(["7"]) == []


def _settings(out: str) -> dict:
    return json.load(open(os.path.join(out, layout.SETTINGS_FILE)))["settings"]


@pytest.mark.e2e
def test_flux_on_cpu_without_guidance_or_dtype_records_what_it_used(tmp_path: Any) -> None:
    from gen_worker.tiny_model import build
    model = str(tmp_path / "tiny-flux")
    build(model, "flux")
    csv = write_prompts(tmp_path / "p.csv", PROMPTS[:2])
    implicit, explicit = str(tmp_path / "implicit"), str(tmp_path / "explicit")
    result = run_submit("--prompts_csv", csv, "--output_dir", implicit, "--model_path", model, *SETTINGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _settings(implicit)["guidance_scale"] == 3.5 and _settings(implicit)["dtype"] == "fp32"
    result = run_submit("--prompts_csv", csv, "--output_dir", explicit, "--model_path", model, *SETTINGS,
                        "--guidance_scale", "3.5", "--dtype", "fp32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _settings(explicit) == _settings(implicit)
    assert images_in(explicit) == images_in(implicit) and len(images_in(implicit)) == 2
    # an explicit rerun into the implicit run's folder matches its record: nothing to refuse, nothing to make
    result = run_submit("--prompts_csv", csv, "--output_dir", implicit, "--model_path", model, *SETTINGS,
                        "--guidance_scale", "3.5", "--dtype", "fp32")
    assert result.returncode == 0, result.stderr[-3000:]
