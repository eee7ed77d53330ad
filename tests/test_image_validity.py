"""Result integrity, in-process: non-finite and constant images, the safety checker, --negative_prompt."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import PROMPTS, images_in, run_worker_in_process
from gen_worker.output import layout
from gen_worker.output.summary import final_lines, write_run_summary
from gen_worker.prompts import Sample, load_samples
from gen_worker.spec import JobSpec
from gen_worker.worker.pipeline import ImageMaker, load_pipeline
from gen_worker.worker.png import to_uint8

ROWS = PROMPTS[:3]


def _run(tmp_path, name, pipe, model, **changes):
    return run_worker_in_process(tmp_path, name, pipe, model, rows=ROWS, num_inference_steps=2, **changes)


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _run_summary(out, n):
    names = [s.file_name for s in load_samples(os.path.join(os.path.dirname(out), "prompts.csv"), 42, n)]
    return write_run_summary(out, names, [{"label": "cpu", "exit_code": 0}], started=0.0, command="submit.py ...")


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd):
    return load_pipeline(tiny_sd, "fp32", "cpu")


@pytest.fixture(scope="module")
def nan_vae_pipe(tiny_sd):
    pipe = load_pipeline(tiny_sd, "fp32", "cpu")
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias.fill_(float("nan"))
    return pipe


@pytest.fixture(scope="module")
def sd_flagging_everything(tiny_sd, tmp_path_factory):
    """The tiny SD with a safety checker that flags every image (as diffusers then returns black ones)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=37, num_attention_heads=2,
                                         num_hidden_layers=1, vocab_size=100,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
                        vision_config=dict(hidden_size=16, intermediate_size=37, num_attention_heads=2,
                                           num_hidden_layers=1, image_size=32, patch_size=8),
                        projection_dim=8)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)
        checker.special_care_embeds_weights.fill_(-10.0)
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    flagged = StableDiffusionPipeline(**{**pipe.components, "safety_checker": checker,
                                         "feature_extractor": extractor}, requires_safety_checker=True)
    folder = str(tmp_path_factory.mktemp("models") / "tiny-sd-safety")
    flagged.save_pretrained(folder, safe_serialization=True)
    return folder


def test_non_finite_images_fail_their_sample_and_are_not_written(tmp_path, nan_vae_pipe, tiny_sd):
    out, summary = _run(tmp_path, "out", nan_vae_pipe, tiny_sd)
    assert (summary["generated"], summary["failed"]) == (0, len(ROWS))
    assert images_in(out) == {}
    assert {f["error"] for f in _lines(layout.failed_file(out, 0))} == {"NonFiniteOutput: non-finite output"}
    assert [f["index"] for f in _lines(layout.failed_file(out, 0))] == [0, 1, 2]


def test_constant_images_are_written_but_counted_and_warned(tmp_path, sd_pipe, tiny_sd, monkeypatch, caplog):
    make = ImageMaker.make

    def black_second_image(self, samples):
        images = make(self, samples)
        return [np.zeros_like(im) if s.index == 1 else im for s, im in zip(samples, images)]
    monkeypatch.setattr(ImageMaker, "make", black_second_image)
    out, summary = _run(tmp_path, "out", sd_pipe, tiny_sd, batch_size=2)
    assert (summary["generated"], summary["failed"], summary["constant_images"]) == (len(ROWS), 0, 1)
    assert len(images_in(out)) == len(ROWS)
    assert "constant image" in caplog.text and "seed43" in caplog.text
    run = _run_summary(out, len(ROWS))
    assert run["constant_images"] == 1
    assert any("1 image is constant" in line for line in final_lines(run))


def test_the_safety_checker_is_left_out_by_default(tmp_path, sd_flagging_everything, caplog):
    caplog.set_level("INFO")
    out, summary = _run(tmp_path, "out", None, sd_flagging_everything)
    assert (summary["generated"], summary["constant_images"], summary["nsfw_flagged"]) == (len(ROWS), 0, 0)
    assert caplog.text.count("safety checker not loaded") == 1
    assert not os.path.exists(layout.nsfw_flagged_file(out, 0))


def test_with_safety_checker_every_flagged_sample_is_listed(tmp_path, sd_flagging_everything):
    out, summary = _run(tmp_path, "out", None, sd_flagging_everything, safety_checker=True)
    assert (summary["generated"], summary["nsfw_flagged"], summary["constant_images"]) == (len(ROWS),) * 3
    assert [f["file_name"] for f in _lines(layout.nsfw_flagged_file(out, 0))] == sorted(images_in(out))
    run = _run_summary(out, len(ROWS))
    assert run["nsfw_flagged"] == len(ROWS)
    assert any(f"{len(ROWS)} images flagged by the safety checker" in line for line in final_lines(run))


SAMPLES = [Sample(0, "1", "a red bus", 42, "1_seed42.png"), Sample(1, "2", "two cats", 43, "2_seed43.png")]


@pytest.mark.parametrize("arch", ["sd", "wan"])
def test_negative_prompt_works_at_batch_2(request, arch):
    model = request.getfixturevalue(f"tiny_{arch}")
    pipe = load_pipeline(model, "fp32", "cpu")
    extra = {"max_sequence_length": 16} if arch == "wan" else {}
    fields = dict(prompts_csv="-", output_dir="-", model_path=model, num_inference_steps=2, height=64, width=64,
                  dtype="fp32", batch_size=2, **extra)
    plain = ImageMaker(pipe, JobSpec(**fields)).make(SAMPLES)
    negative = ImageMaker(pipe, JobSpec(**fields, negative_prompt="blurry")).make(SAMPLES)
    assert len(negative) == 2
    for a, b in zip(plain, negative):
        assert not np.array_equal(to_uint8(a), to_uint8(b))
