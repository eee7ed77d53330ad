"""Load a diffusers pipeline once and turn a list of samples into images.

Works for image pipelines (Stable Diffusion family, SD3, Flux, ...) and for text-to-video
pipelines used for one frame (Wan, ...): those are called with num_frames and the first frame
is kept. Each sample gets its own CPU torch.Generator seeded with its seed, so its image does
not depend on which worker makes it, nor on the device the noise is drawn for.
"""
import contextlib
import inspect
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from gen_worker.errors import T2IError
from gen_worker.families import SEPARATE, cfg_truncation_refusal, family
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec
from gen_worker.worker.levers import apply_at_load, check_device, quantization_kwargs
from gen_worker.worker.oom import is_out_of_memory

if TYPE_CHECKING:
    from gen_worker.worker.watch import ProgressWatch

log = logging.getLogger(__name__)

# --compile: a call with a batch shape not compiled yet may spend this long compiling inside one denoiser
# call before its steps show progress (torch.compile of a large denoiser takes minutes; README, "Scheduling").
COMPILE_GRACE_SECONDS = 15 * 60

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


def load_pipeline(model_path: str, dtype: str, device: str, safety_checker: bool = False,
                  quantize: str = "none") -> Any:
    """Safetensors weights only, and never code from the model folder or the hub.

    On a GPU the weights are read straight into GPU memory (device_map), not built on the CPU first.
    A safety checker the folder has is left out unless `safety_checker` (--safety_checker): it
    blackens the images it flags, and evaluations need the model's own output. quantize: --quantize's
    value, the denoisers' weights quantized as they load (worker/levers.py).
    """
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # per-component bars only clutter the worker log
    if dtype == "auto":  # a spec not made by the submitter (which records the dtype it resolves)
        from gen_worker.spec import auto_dtype
        caps = [".".join(map(str, torch.cuda.get_device_capability()))] if device == "cuda" else []
        dtype = auto_dtype(device, caps)
    kwargs: Dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False,
                              _dtype_argument_name(): TORCH_DTYPES[dtype], **quantization_kwargs(model_path, quantize)}
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


def denoisers(pipe: Any) -> List[torch.nn.Module]:
    """The models the denoising loop calls at every step, those of its family's row the pipeline has (Wan 2.2
    has two, Wan 2.1 one): the ones worth compiling, and those guidance truncation cuts."""
    return [m for m in (getattr(pipe, n, None) for n in family(type(pipe).__name__).denoisers)
            if isinstance(m, torch.nn.Module)]


def progress_modules(pipe: Any) -> List[torch.nn.Module]:
    """The models whose calls show that a pipeline call goes on: every component (a denoiser once per step,
    the text encoders, a safety checker) and the VAE's parts (pipelines call vae.decode, not its forward;
    a video VAE's decoder runs once per latent frame, a tiled decode once per tile)."""
    components = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    vae = getattr(pipe, "vae", None)
    return components + (list(vae.children()) if isinstance(vae, torch.nn.Module) else [])


@contextlib.contextmanager
def on_every_call(modules: Sequence[torch.nn.Module], callback: Callable[[], None]) -> Iterator[None]:
    """callback() before and after each call of each module, for the duration of the block."""
    def hook(*args: Any) -> None:
        callback()  # and None: the call's inputs and output stay as they are
    handles = [h for m in modules for h in (m.register_forward_pre_hook(hook), m.register_forward_hook(hook))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class DenoiserClock:
    """Seconds spent inside the denoisers' forward during a block (forward hooks); on a GPU each end waits for
    the queued kernels (synchronize), so that the time is the GPU's, not that of launching them."""

    def __init__(self, modules: Sequence[torch.nn.Module], cuda: bool) -> None:
        self.modules, self.cuda, self.seconds, self._start = modules, cuda, 0.0, 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _before(self, *args: Any) -> None:
        self._start = self._now()

    def _after(self, *args: Any) -> None:
        self.seconds += self._now() - self._start

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Adds to `seconds` (all the calls so far: a block split on running out of memory is several calls)."""
        handles = [h for m in self.modules
                   for h in (m.register_forward_pre_hook(self._before), m.register_forward_hook(self._after))]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _is_2d_convolutional(model: torch.nn.Module) -> bool:
    params = list(model.parameters())
    return any(p.dim() == 4 for p in params) and not any(p.dim() == 5 for p in params)


def apply_speed_options(pipe: Any, spec: JobSpec, device: str) -> List[str]:
    """Apply the speed flags and load-time levers; returns the names of those that took effect."""
    check_device(type(pipe).__name__, device, spec)
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
    models = denoisers(pipe)
    if spec.channels_last:
        # Only 2-D convolutions have a channels-last layout (a 3-D video VAE or a transformer has none).
        changed = [m for m in (*models, vae) if m is not None and _is_2d_convolutional(m)]
        for m in changed:
            m.to(memory_format=torch.channels_last)
        if changed:
            applied.append("channels_last")
        else:
            log.warning("--channels_last has no effect: %s has no 2-D convolutional model", type(pipe).__name__)
    applied += apply_at_load(pipe, models, spec, device)
    if spec.compile and not models:
        raise PipelineSetupError(f"--compile: {type(pipe).__name__} has no unet or transformer to compile")
    if spec.compile == "regional":
        for m in models:  # one graph for the block class all the repeats share: seconds, not minutes
            m.compile_repeated_blocks(dynamic=False)
        applied.append("compile regional")
    elif spec.compile:
        for m in models:
            # The forward, not the module: the truncation hooks (CondHalfOnly) stay eager Python around it.
            # Static shapes: ImageMaker pads every call to --batch_size rows, so each denoiser compiles one
            # graph per row count it sees (2 x batch with guidance, batch after --cfg_truncation_step), all in
            # the first call. Not a dynamic batch dimension: torch specializes sizes 0 and 1 (a batch of 1 would
            # recompile anyway), and the static graphs are those of a full block, the common case.
            m.forward = torch.compile(m.forward, dynamic=False)
        applied.append("compile")
    return applied


def compiled_graphs() -> int:
    """Graphs torch.compile has made in this process (torch._dynamo's own count)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def half_frame_count(num_frames: int, temporal_factor: int) -> int:
    """Half the latent frames (what costs compute), as a frame count the video VAE accepts.

    A video VAE packs `temporal_factor` frames per latent frame after the first one:
    81 frames -> 21 latent frames -> 11 -> 41 frames (Wan: factor 4).
    """
    latent_frames = (num_frames - 1) // temporal_factor + 1
    return (latent_frames + 1) // 2 * temporal_factor - temporal_factor + 1


def guidance_off_callback(step: int) -> Callable[..., Dict[str, Any]]:
    """Pipelines with separate guidance passes (Wan): guidance scale 1 after `step` steps, both stages' scales
    for Wan 2.2 (guidance_scale_2, used below its boundary timestep). The step-end callback runs after step i,
    so it acts at i == step - 1; the pipeline then skips the unconditional pass."""
    def callback(pipe: Any, i: int, t: Any, tensors: Dict[str, Any]) -> Dict[str, Any]:
        if i == step - 1:
            pipe._guidance_scale = 1.0
            if getattr(pipe, "_guidance_scale_2", None) is not None:
                pipe._guidance_scale_2 = 1.0
        return tensors
    return callback


class CondHalfOnly:
    """Pipelines that batch guidance (SD, SDXL, SD3, PixArt-Sigma, Sana): from the denoiser's call `step` on
    (one call per step), run it on the positive rows only and hand back their output for both halves.

    The pipeline still builds [negative; positive] rows, but its guidance u + g * (c - u) with u == c is c
    exactly: the step the pipeline makes without guidance, at the cost of one pass instead of two. This works
    at the denoiser, not through the step-end callback, because PixArt-Sigma has no such callback and Sana's
    does not hand over its doubled attention mask. Every tensor argument with the doubled row count is cut to
    its positive half by the pipelines' layout, torch.cat([negative, positive]), except SDXL's time ids
    (added_cond_kwargs["time_ids"]): cat([negative, positive]) repeated per sample, so every second row.
    """

    def __init__(self, models: Sequence[torch.nn.Module], step: int) -> None:
        self.models, self.step, self.calls, self.cut, self.doubled = models, step, 0, False, 0

    @contextlib.contextmanager
    def hooked(self, batch: int) -> Iterator[None]:
        """Hooks on the denoisers for one pipeline call of `batch` prompts (the pipeline stays as it was for
        anyone else). Only calls on 2 x batch rows are cut: a call without guidance is left alone."""
        self.calls, self.doubled = 0, 2 * batch
        handles = [h for m in self.models for h in (m.register_forward_pre_hook(self._before, with_kwargs=True),
                                                     m.register_forward_hook(self._after, with_kwargs=True))]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _before(self, module: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        self.calls += 1
        hidden = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        rows = int(hidden.shape[0]) if isinstance(hidden, torch.Tensor) else 0
        self.cut = self.calls > self.step and rows == self.doubled
        if not self.cut:
            return None
        return tuple(self._half(a, rows, "") for a in args), {k: self._half(v, rows, k) for k, v in kwargs.items()}

    def _half(self, value: Any, rows: int, name: str) -> Any:
        if isinstance(value, dict):
            return {k: self._half(v, rows, k) for k, v in value.items()}
        if not torch.is_tensor(value) or value.dim() == 0 or value.shape[0] != rows:
            return value
        return value[1::2] if name == "time_ids" else value[rows // 2:]

    def _after(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        if not self.cut:
            return None
        if torch.is_tensor(output):
            return torch.cat([output, output])
        return (torch.cat([output[0], output[0]]), *output[1:])


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
    `watch`: the worker's progress watch (watch.py), told of each call and of its models' calls.
    """

    def __init__(self, pipe: Any, spec: JobSpec) -> None:
        self.pipe = pipe
        self.name = type(pipe).__name__
        self.family = family(self.name)
        self.nsfw_flagged: set[int] = set()
        vae = getattr(pipe, "vae", None)
        self.vae_dtype = getattr(vae, "dtype", None)
        if spec.scheduler:
            use_scheduler(pipe, spec.scheduler)
        params = inspect.signature(pipe.__call__).parameters
        self.is_video = self.family.video if self.family.video is not None else "num_frames" in params
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
        self.truncation: Optional[CondHalfOnly] = None
        kwargs.update(self._cfg_truncation_kwargs(spec.cfg_truncation_step, spec.num_inference_steps))
        self.call_kwargs = kwargs
        # --compile: every call padded to --batch_size rows, so that the compiled graphs never see a new shape.
        self.pad_to = spec.batch_size if spec.compile else 0
        self.compile = spec.compile
        self.warmup_graphs: Optional[int] = None  # graphs compiled by the end of the first successful call
        self.watch: Optional["ProgressWatch"] = None
        self._compiled_rows: set[int] = set()  # --compile: the row counts of the calls that went through
        self.clock = DenoiserClock(denoisers(pipe), cuda=torch.cuda.is_available())

    def _cfg_truncation_kwargs(self, step: Optional[int], num_steps: int) -> Dict[str, Any]:
        if step is None:
            return {}
        refusal = cfg_truncation_refusal(self.name)  # the submitter checks it too, from model_index.json
        if refusal:
            raise PipelineSetupError(refusal)
        if step >= num_steps:
            log.info("--cfg_truncation_step %d >= %d steps: guidance stays on for every step", step, num_steps)
            return {}
        if step == 0:
            return {"guidance_scale": 1.0}
        if self.family.cfg_truncation == SEPARATE:
            return {"callback_on_step_end": guidance_off_callback(step)}
        self.truncation = CondHalfOnly(denoisers(self.pipe), step)
        return {}

    @contextlib.contextmanager
    def _watched(self, rows: int) -> Iterator[None]:
        """One call, as the worker's progress watch sees it; a shape --compile has not compiled yet gets a grace."""
        if self.watch is None:
            yield
            return
        grace = COMPILE_GRACE_SECONDS if self.compile and rows not in self._compiled_rows else 0.0
        with self.watch.calling(grace), on_every_call(progress_modules(self.pipe), self.watch.pulse):
            yield

    def compile_stats(self) -> Dict[str, int]:
        """--compile, for the summary: graphs compiled, and those compiled after the first call (recompiles:
        a new batch shape, which padding avoids but for out-of-memory splits)."""
        if not self.compile:
            return {}
        graphs = compiled_graphs()
        return {"compiled_graphs": graphs, "recompiles": graphs - (self.warmup_graphs or graphs)}

    def restore_dtypes(self) -> None:
        """After a failed call: the VAE back in the pipeline's dtype. With fp16, SDXL upcasts its VAE to
        fp32 for decoding and casts it back after; an error in between would leave every later call
        failing with a dtype mismatch."""
        vae = getattr(self.pipe, "vae", None)
        if vae is not None and self.vae_dtype is not None and vae.dtype != self.vae_dtype:
            log.warning("the failed call left the VAE in %s: back to %s", vae.dtype, self.vae_dtype)
            vae.to(dtype=self.vae_dtype)

    def make(self, samples: Sequence[Sample]) -> List[Any]:
        rows = padded(samples, self.pad_to)
        generators = [torch.Generator("cpu").manual_seed(s.seed) for s in rows]
        kwargs = dict(self.call_kwargs)
        if "negative_prompt" in kwargs:  # one per prompt: SD-family pipelines refuse a str with a list of prompts
            kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(rows)
        cutting = self.truncation.hooked(len(rows)) if self.truncation else contextlib.nullcontext()
        try:
            with torch.inference_mode(), cutting, self._watched(len(rows)), self.clock.timing():
                out = self.pipe(prompt=[s.prompt for s in rows], generator=generators, **kwargs)
        except Exception as err:
            if self.pad_to and is_out_of_memory(err):
                # Padding the halves the splitter makes would run out of memory again: unpadded from now on
                # (each new batch shape then compiles once, counted in the summary's recompiles).
                log.warning("--compile: out of memory at %d rows, no more padding to --batch_size", len(rows))
                self.pad_to = 0
            raise
        if self.compile and self.warmup_graphs is None:
            self.warmup_graphs = compiled_graphs()
        self._compiled_rows.add(len(rows))
        flags = getattr(out, "nsfw_content_detected", None) or []
        self.nsfw_flagged.update(s.index for s, flagged in zip(samples, flags) if flagged)
        images = [frames[0] for frames in out.frames] if self.is_video else list(out.images)
        return images[:len(samples)]  # the padding rows' images are dropped


def padded(samples: Sequence[Sample], size: int) -> List[Sample]:
    """`samples` and, up to `size` rows, copies of the last one (its prompt and seed, own generators: each
    sample's noise comes from its own generator, so the real samples' noise is untouched). Only the batch
    composition changes, which may move the last bits of the real images. Blocks are fixed by sample index
    (batch_size consecutive samples), so a padded partial block is the same block, padded the same way,
    whatever the number of workers: images stay the same for any number of GPUs."""
    return [*samples, *[samples[-1]] * max(0, size - len(samples))] if samples else []
