"""What t2i-batch knows about each diffusers pipeline class, in one table, without importing torch.

Per class: its family (the tiny_model --arch names), how it runs classifier-free guidance (hence whether
and how --cfg_truncation_step cuts it), whether it is a video pipeline, which models it calls at every
step, and which speed levers it supports; its default guidance scale is read from the installed
diffusers' source, so it follows diffusers' versions. Read by the submitter (before any worker starts,
from the model's model_index.json), by the worker (worker/pipeline.py) and by docs/families.md, whose
tables a test checks against this one; the facts are those of diffusers 0.42, checked against the
installed diffusers by tests/test_family_table.py.
"""
import ast
import json
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from gen_worker.errors import UsageError
from gen_worker.model_check import diffusers_folder, local_folder

# How a pipeline runs classifier-free guidance, hence how the worker switches it off (worker/pipeline.py).
BATCHED = "batched"  # one denoiser call per step on the rows [negative; positive]: the call is cut to its positive half
SEPARATE = "separate"  # one denoiser call per half: guidance scale 1, and the pipeline skips the negative call
NONE = "none"  # no classifier-free guidance to cut (Flux: distilled into the model), or untested: refused

# The models a pipeline may call at every step, in the order the pipelines name them.
DENOISER_NAMES = ("unet", "transformer", "transformer_2")


@dataclass(frozen=True)
class Family:
    pipeline_class: str
    title: str  # how docs/families.md names it
    archs: Tuple[str, ...]  # its tiny_model --arch names
    cfg_truncation: str  # BATCHED, SEPARATE or NONE
    video: Optional[bool]  # called with num_frames, first frame kept; None: as its __call__ says (a class not listed)
    denoisers: Tuple[str, ...]  # those of DENOISER_NAMES it may have: what --compile compiles and truncation cuts
    # Speed levers, one column each; None: not known (a class not listed).
    vae_tiling: Optional[bool]  # its VAE decodes tile by tile (enable_tiling): --vae_tiling
    cache: Optional[Tuple[str, ...]]  # the --cache kinds its denoisers take (diffusers' CacheMixin, enable_cache)
    regional_compile: Optional[bool]  # its denoisers name _repeated_blocks (compile_repeated_blocks): --compile regional
    attention_backend: Optional[bool]  # its attention goes through diffusers' dispatcher: --attention_backend
    quantize: Optional[bool]  # its denoisers load with diffusers' quantization config or layerwise casting: --quantize
    offload: Optional[bool]  # model and group offload (enable_model_cpu_offload, enable_group_offload): --offload


# --cache kinds that run on the family's denoisers in diffusers 0.42 (tried on the tiny models): MagCache needs
# ratios measured per model, which diffusers ships for Flux only; FasterCache takes a call's rows for
# [negative; positive], which neither has (Flux: no negative pass; Wan: separate calls), and fails on both.
FLUX_CACHE = ("first_block", "taylorseer", "magcache", "pab")
WAN_CACHE = ("first_block", "taylorseer", "pab")
FAMILIES = (
    Family("StableDiffusionPipeline", "SD 1.x/2.x", ("sd",), BATCHED, False, ("unet",),
           vae_tiling=True, cache=(), regional_compile=True, attention_backend=False, quantize=True, offload=True),
    Family("StableDiffusionXLPipeline", "SDXL", ("sdxl",), BATCHED, False, ("unet",),
           vae_tiling=True, cache=(), regional_compile=True, attention_backend=False, quantize=True, offload=True),
    Family("StableDiffusion3Pipeline", "SD3 / 3.5", ("sd3",), BATCHED, False, ("transformer",),
           vae_tiling=True, cache=(), regional_compile=False, attention_backend=False, quantize=True, offload=True),
    Family("FluxPipeline", "Flux", ("flux",), NONE, False, ("transformer",),
           vae_tiling=True, cache=FLUX_CACHE, regional_compile=True, attention_backend=True, quantize=True,
           offload=True),
    Family("PixArtSigmaPipeline", "PixArt-Sigma", ("pixart",), BATCHED, False, ("transformer",),
           vae_tiling=True, cache=(), regional_compile=False, attention_backend=False, quantize=True, offload=True),
    Family("SanaPipeline", "Sana", ("sana",), BATCHED, False, ("transformer",),
           vae_tiling=True, cache=(), regional_compile=False, attention_backend=False, quantize=True, offload=True),
    # Wan 2.2 (A14B) adds transformer_2, the low-noise expert; Wan 2.1 has none.
    Family("WanPipeline", "Wan 2.1 / 2.2", ("wan", "wan22"), SEPARATE, True, ("transformer", "transformer_2"),
           vae_tiling=True, cache=WAN_CACHE, regional_compile=True, attention_backend=True, quantize=True,
           offload=True),
)
_BY_CLASS: Dict[str, Family] = {f.pipeline_class: f for f in FAMILIES}


def family(class_name: str) -> Family:
    """The row of a pipeline class. Any other diffusers pipeline still runs, untested: its default guidance
    is read from diffusers all the same, --cfg_truncation_step is refused, it is a video pipeline if its
    __call__ takes num_frames, and --compile compiles whichever of DENOISER_NAMES it has."""
    return _BY_CLASS.get(class_name) or Family(class_name, class_name, (), NONE, None, DENOISER_NAMES,
                                               vae_tiling=None, cache=None, regional_compile=None,
                                               attention_backend=None, quantize=None, offload=None)


def cfg_truncation_refusal(class_name: str) -> Optional[str]:
    """Why --cfg_truncation_step cannot apply to a pipeline class (None: it can)."""
    if family(class_name).cfg_truncation != NONE:
        return None
    supported = sorted(f.pipeline_class for f in FAMILIES if f.cfg_truncation != NONE)
    return (f"--cfg_truncation_step is not supported for {class_name}: it has no classifier-free guidance to "
            f"switch off (supported: {', '.join(supported)})")


def pipeline_class_name(folder: str) -> str:
    """model_index.json's _class_name ("" when it cannot be read)."""
    try:
        with open(os.path.join(folder, "model_index.json"), encoding="utf-8") as f:
            return str(json.load(f).get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def check_cfg_truncation(step: Optional[int], model_path: str) -> None:
    """--cfg_truncation_step on a pipeline without classifier-free guidance (Flux): refused here, before any
    worker starts. A hub model not downloaded yet is checked by the worker, against the same table."""
    folder = local_folder(model_path) if step is not None else None
    class_name = pipeline_class_name(folder) if folder else ""
    refusal = cfg_truncation_refusal(class_name) if class_name else None
    if refusal:
        raise UsageError(refusal)


def guidance_default(class_name: str) -> Optional[float]:
    """The `guidance_scale` default of a diffusers pipeline class's __call__, read from the installed
    diffusers' source (importing diffusers takes seconds); None when it cannot be read."""
    root = diffusers_folder()
    if root is None or not class_name.isidentifier():
        return None
    marker = f"class {class_name}("
    for folder, _, files in os.walk(os.path.join(root, "pipelines")):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    text = f.read()
                if marker not in text:
                    continue
                tree = ast.parse(text)
            except (OSError, SyntaxError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name == class_name:
                    return _guidance_default_in(node)
    return None


def _guidance_default_in(cls: ast.ClassDef) -> Optional[float]:
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__call__":
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg == "guidance_scale" and isinstance(default, ast.Constant) \
                        and isinstance(default.value, (int, float)) and not isinstance(default.value, bool):
                    return float(default.value)
    return None


def pipeline_guidance_default(model_path: str) -> float:
    """--guidance_scale's default: the one of the model's pipeline class (Flux 3.5, SD 7.5, ...), read from
    model_index.json and diffusers' source (no torch). UsageError when it cannot be told here."""
    folder = local_folder(model_path)
    if folder is None:
        raise UsageError(f"--model_path {model_path} is not downloaded yet, so its pipeline's default "
                         "guidance scale cannot be read here: give --guidance_scale")
    class_name = pipeline_class_name(folder)
    found = guidance_default(class_name) if class_name else None
    if found is None:
        raise UsageError(f"cannot read the default guidance scale of {class_name or 'the pipeline'} "
                         f"({model_path}) from the installed diffusers: give --guidance_scale")
    return found
