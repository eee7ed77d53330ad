"""Load a diffusers pipeline once and turn a list of samples into images.

Works for image pipelines (Stable Diffusion family, SD3, Flux, ...) and for text-to-video
pipelines used for one frame (Wan, ...): those are called with num_frames and the first frame
is kept. Each sample gets its own CPU torch.Generator seeded with its seed, so its image does
not depend on which worker makes it, nor on the device the noise is drawn for.
"""
import inspect
import logging
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from gen_worker.errors import T2IError
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec

log = logging.getLogger(__name__)

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class PipelineSetupError(T2IError):
    """The model or a setting cannot work at all: no point trying sample after sample."""


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineSetupError("--device cuda, but torch sees no CUDA GPU in this process")
    return requested


def _dtype_argument_name() -> str:
    # diffusers renamed from_pretrained's torch_dtype to dtype (and warns on the old name).
    from diffusers.utils import deprecation_utils
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _has_safety_checker(model_path: str) -> bool:
    """Whether the pipeline's model_index.json lists a safety checker (SD 1.x/2.x folders)."""
    from diffusers import DiffusionPipeline
    try:
        config = DiffusionPipeline.load_config(model_path)
    except (OSError, ValueError, EnvironmentError):
        return False  # from_pretrained says what is wrong
    value = config.get("safety_checker")  # [library, class], or [null, null] when saved without one
    return isinstance(value, (list, tuple)) and bool(value) and value[0] is not None


def load_pipeline(model_path: str, dtype: str, device: str, safety_checker: bool = False) -> Any:
    """Safetensors weights only, and never code from the model folder or the hub.

    On a GPU the weights are read straight into GPU memory (device_map), not built on the CPU first.
    A safety checker the folder has is left out unless `safety_checker` (--safety_checker): it
    blackens the images it flags, and evaluations need the model's own output.
    """
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # per-component bars only clutter the worker log
    if dtype == "auto":  # a spec not made by the submitter (which records the dtype it resolves)
        from gen_worker.spec import auto_dtype
        caps = [".".join(map(str, torch.cuda.get_device_capability()))] if device == "cuda" else []
        dtype = auto_dtype(device, caps)
    kwargs: Dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False,
                              _dtype_argument_name(): TORCH_DTYPES[dtype]}
    if _has_safety_checker(model_path):
        if safety_checker:
            log.info("--safety_checker: the model's safety checker is on; the images it flags come back black")
        else:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
            log.info("safety checker not loaded: images are the model's own output (--safety_checker keeps it)")
    reports = _LoadReports()
    logging.getLogger("transformers").addHandler(reports)
    try:
        pipe = None
        if _device_map(device):
            try:
                pipe = DiffusionPipeline.from_pretrained(model_path, **kwargs, **_device_map(device))
            except Exception as err:  # e.g. pipelines made of pipelines take no device_map
                log.warning("cannot load straight to %s (%s); loading on the CPU first", device, err)
        if pipe is None:
            pipe = DiffusionPipeline.from_pretrained(model_path, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        raise PipelineSetupError(f"cannot load a diffusers pipeline from {model_path}: {err}") from err
    finally:
        logging.getLogger("transformers").removeHandler(reports)
    _check_complete(pipe, model_path, reports.missing)
    pipe.to(device)  # whatever device_map left on the CPU
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _LoadReports(logging.Handler):
    """transformers initialises weights missing from a checkpoint at random and says so only in a
    log record (its LOAD REPORT): collect [(model class, keys)] of the MISSING ones."""

    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.missing: List[Tuple[str, List[str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.ANSI.sub("", record.getMessage())
        if " LOAD REPORT" not in text:
            return
        keys = [line.split("|")[0].strip() for line in text.splitlines() if re.search(r"\|\s*MISSING\s*\|", line)]
        if keys:
            self.missing.append((text.split(" LOAD REPORT")[0].split()[-1], keys))


def _check_complete(pipe: Any, model_path: str, missing: List[Tuple[str, List[str]]]) -> None:
    """Every weight of every component came from the model's files: none left on the meta device
    (diffusers, for keys its files lack) nor freshly initialised (transformers)."""
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            empty = [n for n, t in (*component.named_parameters(), *component.named_buffers()) if t.is_meta]
            if empty:
                raise PipelineSetupError(f"{model_path}: the {name} weights lack {', '.join(empty[:3])}"
                                         f"{' and more' if len(empty) > 3 else ''}: a partial or damaged checkpoint")
    for cls, keys in missing:
        names = [n for n, c in pipe.components.items() if type(c).__name__ == cls] or [cls]
        raise PipelineSetupError(f"{model_path}: the {names[0]} weights lack {', '.join(keys[:3])}"
                                 f"{' and more' if len(keys) > 3 else ''}: a partial or damaged checkpoint "
                                 "(transformers would run it with random weights there)")


def _device_map(device: str) -> Dict[str, str]:
    return {"device_map": device} if device != "cpu" else {}


def denoiser(pipe: Any) -> Optional[torch.nn.Module]:
    """The model the denoising loop calls at every step: the one worth compiling."""
    for name in ("unet", "transformer"):
        model = getattr(pipe, name, None)
        if model is not None:
            return model
    return None


def _is_2d_convolutional(model: torch.nn.Module) -> bool:
    params = list(model.parameters())
    return any(p.dim() == 4 for p in params) and not any(p.dim() == 5 for p in params)


def apply_speed_options(pipe: Any, spec: JobSpec, device: str) -> List[str]:
    """Apply the speed flags at load time; returns the names of those that took effect."""
    applied = []
    if spec.tf32 and device == "cuda":
        torch.set_float32_matmul_precision("high")  # matmuls; cuDNN convolutions use TF32 by default
        applied.append("tf32")
    vae = getattr(pipe, "vae", None)
    for flag, method in (("vae_slicing", "enable_slicing"), ("vae_tiling", "enable_tiling")):
        if getattr(spec, flag):
            if hasattr(vae, method):
                getattr(vae, method)()
                applied.append(flag)
            else:
                log.warning("--%s has no effect: %s has no VAE that supports it", flag, type(pipe).__name__)
    model = denoiser(pipe)
    if spec.channels_last:
        # Only 2-D convolutions have a channels-last layout (a 3-D video VAE or a transformer has none).
        changed = [m for m in (model, vae) if m is not None and _is_2d_convolutional(m)]
        for m in changed:
            m.to(memory_format=torch.channels_last)
        if changed:
            applied.append("channels_last")
        else:
            log.warning("--channels_last has no effect: %s has no 2-D convolutional model", type(pipe).__name__)
    if spec.compile:
        if model is None:
            raise PipelineSetupError(f"--compile: {type(pipe).__name__} has no unet or transformer to compile")
        model.compile()  # in place: the pipeline keeps its module; compiling happens at the first call
        applied.append("compile")
    return applied


def half_frame_count(num_frames: int, temporal_factor: int) -> int:
    """Half the latent frames (what costs compute), as a frame count the video VAE accepts.

    A video VAE packs `temporal_factor` frames per latent frame after the first one:
    81 frames -> 21 latent frames -> 11 -> 41 frames (Wan: factor 4).
    """
    latent_frames = (num_frames - 1) // temporal_factor + 1
    return (latent_frames + 1) // 2 * temporal_factor - temporal_factor + 1


def cfg_truncation_callback(step: int) -> Callable[..., Dict[str, Any]]:
    """Switch classifier-free guidance off after `step` denoising steps (callback_on_step_end).

    The callback runs after step i, so it acts at i == step - 1. With guidance off the pipeline
    makes one forward pass per step instead of two. Pipelines that batch the unconditional and
    conditional inputs together (SD family: [uncond, cond]) also need their embeddings cut to the
    conditional half; pipelines with separate passes (Wan) only need the scale.
    """
    def callback(pipe: Any, i: int, t: Any, tensors: Dict[str, Any]) -> Dict[str, Any]:
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


def use_scheduler(pipe: Any, name: str) -> None:
    """--scheduler: that diffusers class in place of the model's, made from the model's scheduler
    config (its noise schedule, shift, ...). Only classes the model's scheduler lists as compatible."""
    import diffusers
    current = type(pipe.scheduler).__name__
    compatible = sorted({c.__name__ for c in getattr(pipe.scheduler, "compatibles", [])} | {current})
    if not hasattr(diffusers, name):
        raise PipelineSetupError(f"--scheduler {name}: diffusers {diffusers.__version__} has no such scheduler")
    if name not in compatible:
        raise PipelineSetupError(f"--scheduler {name} does not fit {type(pipe).__name__}, whose {current} "
                                 f"is compatible with: {', '.join(compatible)}")
    pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config)
    log.info("--scheduler: %s in place of %s", name, current)


class ImageMaker:
    """Calls the pipeline with the run's settings; `make(samples)` returns one image per sample.

    The images are HxWxC float arrays in [0, 1] (output_type "np"): the worker turns them into
    8-bit pixels and PNG files in its writer threads (png.py), off the GPU's critical path.
    `nsfw_flagged`: the indices of the samples a safety checker flagged (the worker takes them out).
    """

    def __init__(self, pipe: Any, spec: JobSpec) -> None:
        self.pipe = pipe
        self.name = type(pipe).__name__
        self.nsfw_flagged: set[int] = set()
        vae = getattr(pipe, "vae", None)
        self.vae_dtype = getattr(vae, "dtype", None)
        if spec.scheduler:
            use_scheduler(pipe, spec.scheduler)
        params = inspect.signature(pipe.__call__).parameters
        self.is_video = "num_frames" in params
        kwargs: Dict[str, Any] = {
            "num_inference_steps": spec.num_inference_steps,
            "height": spec.height,
            "width": spec.width,
            "output_type": "np",
        }
        if spec.guidance_scale is not None:  # None (a spec not made by the submitter): the pipeline's own
            kwargs["guidance_scale"] = spec.guidance_scale
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

    def _cfg_truncation_kwargs(self, step: Optional[int], num_steps: int,
                               params: Mapping[str, inspect.Parameter]) -> Dict[str, Any]:
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
        if "prompt_attention_mask" in params and "prompt_attention_mask" not in allowed:
            # Sana doubles its attention mask under guidance but does not hand it to the callback: the
            # mask would stay doubled after the cut (wrong images with 2 heads, an error with more).
            raise PipelineSetupError(f"--cfg_truncation_step is not supported for {self.name}: its doubled "
                                     "attention mask cannot be cut back at the step-end callback")
        wanted = ["latents", "prompt_embeds", "pooled_prompt_embeds", "add_text_embeds", "add_time_ids",
                  "prompt_attention_mask"]
        return {"callback_on_step_end": cfg_truncation_callback(step),
                "callback_on_step_end_tensor_inputs": [n for n in wanted if n in allowed]}

    def restore_dtypes(self) -> None:
        """After a failed call: the VAE back in the pipeline's dtype. With fp16, SDXL upcasts its VAE to
        fp32 for decoding and casts it back after; an error in between would leave every later call
        failing with a dtype mismatch."""
        vae = getattr(self.pipe, "vae", None)
        if vae is not None and self.vae_dtype is not None and vae.dtype != self.vae_dtype:
            log.warning("the failed call left the VAE in %s: back to %s", vae.dtype, self.vae_dtype)
            vae.to(dtype=self.vae_dtype)

    def make(self, samples: Sequence[Sample]) -> List[Any]:
        generators = [torch.Generator("cpu").manual_seed(s.seed) for s in samples]
        kwargs = dict(self.call_kwargs)
        if "negative_prompt" in kwargs:  # one per prompt: SD-family pipelines refuse a str with a list of prompts
            kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(samples)
        with torch.inference_mode():
            out = self.pipe(prompt=[s.prompt for s in samples], generator=generators, **kwargs)
        flags = getattr(out, "nsfw_content_detected", None) or []
        self.nsfw_flagged.update(s.index for s, flagged in zip(samples, flags) if flagged)
        if self.is_video:
            return [frames[0] for frames in out.frames]
        return list(out.images)
