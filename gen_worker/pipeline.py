"""Load a diffusers pipeline once and turn a list of samples into images.

Works for image pipelines (Stable Diffusion family, SD3, Flux, ...) and for text-to-video
pipelines used for one frame (Wan, ...): those are called with num_frames and the first frame
is kept. Each sample gets its own CPU torch.Generator seeded with its seed, so its image does
not depend on which worker makes it, nor on the device the noise is drawn for.
"""
import inspect
import logging

import torch

log = logging.getLogger(__name__)

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class PipelineSetupError(RuntimeError):
    """The model or a setting cannot work at all: no point trying sample after sample."""


def resolve_device(requested):
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineSetupError("--device cuda, but torch sees no CUDA GPU in this process")
    return requested


def _dtype_argument_name():
    # diffusers renamed from_pretrained's torch_dtype to dtype (and warns on the old name).
    from diffusers.utils import deprecation_utils
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def load_pipeline(model_path, dtype, device):
    """Safetensors weights only, and never code from the model folder or the hub."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # per-component bars only clutter the worker log
    try:
        pipe = DiffusionPipeline.from_pretrained(
            model_path, use_safetensors=True, trust_remote_code=False,
            **{_dtype_argument_name(): TORCH_DTYPES[dtype]})
    except (OSError, ValueError, EnvironmentError) as err:
        raise PipelineSetupError(f"cannot load a diffusers pipeline from {model_path}: {err}") from err
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def half_frame_count(num_frames, temporal_factor):
    """Half the latent frames (what costs compute), as a frame count the video VAE accepts.

    A video VAE packs `temporal_factor` frames per latent frame after the first one:
    81 frames -> 21 latent frames -> 11 -> 41 frames (Wan: factor 4).
    """
    latent_frames = (num_frames - 1) // temporal_factor + 1
    return (latent_frames + 1) // 2 * temporal_factor - temporal_factor + 1


def cfg_truncation_callback(step):
    """Switch classifier-free guidance off after `step` denoising steps (callback_on_step_end).

    The callback runs after step i, so it acts at i == step - 1. With guidance off the pipeline
    makes one forward pass per step instead of two. Pipelines that batch the unconditional and
    conditional inputs together (SD family: [uncond, cond]) also need their embeddings cut to the
    conditional half; pipelines with separate passes (Wan) only need the scale.
    """
    def callback(pipe, i, t, tensors):
        if i == step - 1:
            pipe._guidance_scale = 1.0
            if getattr(pipe, "_guidance_scale_2", None) is not None:
                pipe._guidance_scale_2 = 1.0
            batch = tensors["latents"].shape[0]
            for name, value in tensors.items():
                if name != "latents" and torch.is_tensor(value) and value.shape[0] == 2 * batch:
                    tensors[name] = value[batch:]
        return tensors
    return callback


class ImageMaker:
    """Calls the pipeline with the run's settings; `make(samples)` returns one PIL image per sample."""

    def __init__(self, pipe, spec):
        self.pipe = pipe
        self.name = type(pipe).__name__
        params = inspect.signature(pipe.__call__).parameters
        self.is_video = "num_frames" in params
        kwargs = {
            "num_inference_steps": spec.num_inference_steps,
            "guidance_scale": spec.guidance_scale,
            "height": spec.height,
            "width": spec.width,
            "output_type": "pil",
        }
        if self.is_video:
            frames = spec.num_frames
            if spec.enable_half_frame:
                frames = half_frame_count(frames, getattr(pipe, "vae_scale_factor_temporal", 1))
                log.info("--enable_half_frame: %d of %d frames", frames, spec.num_frames)
            kwargs["num_frames"] = frames
        elif spec.enable_half_frame:
            log.warning("--enable_half_frame has no effect: %s makes images, not videos", self.name)
        for option, value in (("negative_prompt", spec.negative_prompt),
                              ("max_sequence_length", spec.max_sequence_length)):
            if value is not None:
                if option not in params:
                    raise PipelineSetupError(f"{self.name} does not take --{option}")
                kwargs[option] = value
        kwargs.update(self._cfg_truncation_kwargs(spec.cfg_truncation_step, spec.num_inference_steps, params))
        self.call_kwargs = kwargs

    def _cfg_truncation_kwargs(self, step, num_steps, params):
        if step is None:
            return {}
        if step >= num_steps:
            log.info("--cfg_truncation_step %d >= %d steps: guidance stays on for every step", step, num_steps)
            return {}
        if step == 0:
            return {"guidance_scale": 1.0}
        if not hasattr(type(self.pipe), "do_classifier_free_guidance") or "callback_on_step_end" not in params:
            raise PipelineSetupError(f"--cfg_truncation_step is not supported for {self.name} "
                                     "(no classifier-free guidance switch or step-end callback)")
        allowed = getattr(self.pipe, "_callback_tensor_inputs", ["latents"])
        wanted = ["latents", "prompt_embeds", "pooled_prompt_embeds", "add_text_embeds", "add_time_ids"]
        return {"callback_on_step_end": cfg_truncation_callback(step),
                "callback_on_step_end_tensor_inputs": [n for n in wanted if n in allowed]}

    def make(self, samples):
        generators = [torch.Generator("cpu").manual_seed(s.seed) for s in samples]
        with torch.inference_mode():
            out = self.pipe(prompt=[s.prompt for s in samples], generator=generators, **self.call_kwargs)
        if self.is_video:
            return [frames[0] for frames in out.frames]
        return list(out.images)
