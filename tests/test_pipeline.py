"""The pipeline layer on the tiny models, in-process: seeds, CFG truncation, video frames."""
import numpy as np
import pytest
import torch

from gen_worker.worker.pipeline import ImageMaker, PipelineSetupError, apply_speed_options, half_frame_count, load_pipeline
from gen_worker.worker.png import to_uint8
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec

SAMPLES = [Sample(0, "1", "a red bus", 42, "000001_seed42.png"), Sample(1, "2", "two cats", 43, "000002_seed43.png")]


def _spec(model, **changes):
    fields = dict(prompts_csv="-", output_dir="-", model_path=model, num_samples=2, num_inference_steps=4,
                  height=64, width=64, dtype="fp32", max_sequence_length=None)
    fields.update(changes)
    return JobSpec(**fields)


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd):
    torch.set_num_threads(1)
    return load_pipeline(tiny_sd, "fp32", "cpu")


@pytest.fixture(scope="module")
def wan_pipe(tiny_wan):
    return load_pipeline(tiny_wan, "fp32", "cpu")


def _count_denoiser_rows(pipe, denoiser_name):
    """Wrap the denoiser's forward to record the batch size of every call."""
    denoiser = getattr(pipe, denoiser_name)
    rows = []
    original = denoiser.forward

    def counting(*args, **kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        rows.append(sample.shape[0])
        return original(*args, **kwargs)
    denoiser.forward = counting
    return rows, lambda: setattr(denoiser, "forward", original)


def _pixels(images):
    """8-bit pixels of make()'s float images, as the worker saves them."""
    return [to_uint8(im).astype(np.int16) for im in images]


def test_each_sample_has_its_own_seed(sd_pipe):
    maker = ImageMaker(sd_pipe, _spec("-"))
    both = _pixels(maker.make(SAMPLES))
    alone = _pixels(maker.make(SAMPLES[1:]))
    assert both[0].shape == (64, 64, 3)
    assert not np.array_equal(both[0], both[1])
    assert np.abs(both[1] - alone[0]).max() <= 1  # same seed, same image (batching may flip a last bit)
    assert np.array_equal(_pixels(maker.make(SAMPLES[1:]))[0], alone[0])


@pytest.mark.parametrize("pipe_name, denoiser", [("sd_pipe", "unet"), ("wan_pipe", "transformer")])
def test_cfg_truncation_changes_output_and_halves_later_steps(request, pipe_name, denoiser):
    pipe = request.getfixturevalue(pipe_name)
    extra = {"max_sequence_length": 16} if pipe_name == "wan_pipe" else {}
    full = ImageMaker(pipe, _spec("-", **extra))
    cut = ImageMaker(pipe, _spec("-", cfg_truncation_step=2, **extra))
    rows, restore = _count_denoiser_rows(pipe, denoiser)
    try:
        full_images = _pixels(full.make(SAMPLES))
        full_rows = sum(rows)
        rows.clear()
        cut_images = _pixels(cut.make(SAMPLES))
        cut_rows = sum(rows)
    finally:
        restore()
    # 4 steps x 2 samples x (cond + uncond) = 16 rows; cut after 2 steps: 2*2*2 + 2*2*1 = 12.
    assert (full_rows, cut_rows) == (16, 12)
    assert any(not np.array_equal(a, b) for a, b in zip(full_images, cut_images))
    # The pipeline resets its guidance at each call: the next full run is unaffected.
    assert all(np.array_equal(a, b) for a, b in zip(full_images, _pixels(full.make(SAMPLES))))


def test_cfg_truncation_at_zero_means_no_guidance(sd_pipe):
    zero = ImageMaker(sd_pipe, _spec("-", cfg_truncation_step=0))
    no_cfg = ImageMaker(sd_pipe, _spec("-", guidance_scale=1.0))
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(zero.make(SAMPLES)), _pixels(no_cfg.make(SAMPLES))))


def test_video_pipeline_saves_first_frame_and_half_frame(wan_pipe, caplog):
    maker = ImageMaker(wan_pipe, _spec("-", max_sequence_length=16))
    assert maker.is_video and maker.call_kwargs["num_frames"] == 1
    images = maker.make(SAMPLES)
    assert [im.shape for im in images] == [(64, 64, 3), (64, 64, 3)]
    assert ImageMaker(wan_pipe, _spec("-", num_frames=9, enable_half_frame=True)).call_kwargs["num_frames"] == 5
    assert ImageMaker(wan_pipe, _spec("-", num_frames=81, enable_half_frame=True)).call_kwargs["num_frames"] == 41
    assert [half_frame_count(n, 4) for n in (1, 5, 9, 17, 81)] == [1, 1, 5, 9, 41]


def test_half_frame_on_an_image_pipeline_says_it_does_nothing(sd_pipe, caplog):
    maker = ImageMaker(sd_pipe, _spec("-", enable_half_frame=True))
    assert "num_frames" not in maker.call_kwargs
    assert "no effect" in caplog.text


def test_options_a_pipeline_does_not_take_are_refused(sd_pipe):
    with pytest.raises(PipelineSetupError, match="does not take --max_sequence_length"):
        ImageMaker(sd_pipe, _spec("-", max_sequence_length=16))


def test_only_safetensors_are_loaded(tiny_sd, tmp_path):
    import shutil
    copy = tmp_path / "pickled"
    shutil.copytree(tiny_sd, copy)
    unet = copy / "unet"
    state = __import__("safetensors.torch", fromlist=["load_file"]).load_file(unet / "diffusion_pytorch_model.safetensors")
    torch.save(state, unet / "diffusion_pytorch_model.bin")
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(PipelineSetupError, match="cannot load"):
        load_pipeline(str(copy), "fp32", "cpu")


def test_speed_options_are_applied_and_change_only_the_last_bits(tiny_sd, sd_pipe):
    torch.set_num_threads(1)
    pipe = load_pipeline(tiny_sd, "fp32", "cpu")  # its own copy: the options change the modules
    spec = _spec("-", channels_last=True, vae_slicing=True, tf32=True)
    assert apply_speed_options(pipe, spec, "cpu") == ["vae_slicing", "channels_last"]  # no TF32 on a CPU
    assert pipe.vae.use_slicing and not pipe.vae.use_tiling
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    fast = _pixels(ImageMaker(pipe, spec).make(SAMPLES))
    plain = _pixels(ImageMaker(sd_pipe, _spec("-")).make(SAMPLES))
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(fast, plain))
    assert apply_speed_options(pipe, _spec("-", compile="whole"), "cpu") == ["compile"]
    assert hasattr(pipe.unet.forward, "_torchdynamo_orig_callable")  # compiled at its first call


def test_speed_options_a_model_cannot_use_are_reported(wan_pipe, caplog):
    assert apply_speed_options(wan_pipe, _spec("-", channels_last=True), "cpu") == []
    assert "--channels_last has no effect" in caplog.text


@pytest.mark.parametrize("device_map, loads_straight", [("cpu", True), ("nonsense", False)])
def test_loading_straight_to_the_device_and_the_fallback(tiny_sd, monkeypatch, caplog, device_map, loads_straight):
    import gen_worker.worker.pipeline as pipeline
    # On a GPU, device_map="cuda"; here the same path is taken with "cpu", and with a map that fails.
    monkeypatch.setattr(pipeline, "_device_map", lambda device: {"device_map": device_map})
    pipe = load_pipeline(tiny_sd, "fp32", "cpu")
    assert pipe.unet.device.type == "cpu"
    assert ("loading on the CPU first" in caplog.text) != loads_straight
