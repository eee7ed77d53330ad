"""The speed levers (--cache, --attention_backend, --quantize, --offload, --compile regional): their values,
read and checked without torch, and what refuses them before any worker starts.

Every lever but --compile changes the pixels, so each is recorded with the folder and sweepable. Which
family can use which lever is families.py's table; what a device or an installed package allows is here.
The worker applies them (worker/levers.py).
"""
import ast
import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from gen_worker.families import family, pipeline_class_name
from gen_worker.model_check import diffusers_folder, local_folder

# --cache KIND[:...]: diffusers' cache configuration of each kind, and the file of diffusers/hooks that defines it.
CACHE_KINDS: Dict[str, Tuple[str, str]] = {
    "first_block": ("FirstBlockCacheConfig", "first_block_cache.py"),
    "taylorseer": ("TaylorSeerCacheConfig", "taylorseer_cache.py"),
    "magcache": ("MagCacheConfig", "mag_cache.py"),
    "pab": ("PyramidAttentionBroadcastConfig", "pyramid_attention_broadcast.py"),
    "fastercache": ("FasterCacheConfig", "faster_cache.py"),
}
NO_CACHE = "none"

# --quantize: the denoiser's weights. int8wo and fp8wo through torchao (diffusers' TorchAoConfig); fp8 stores the
# weights in float8 and computes in --dtype (diffusers' layerwise casting: no package, any device).
QUANTIZE_KINDS = ("none", "int8wo", "fp8wo", "fp8")
TORCHAO_KINDS = {"int8wo": "Int8WeightOnlyConfig", "fp8wo": "Float8WeightOnlyConfig"}
QUANTIZE_NEEDS_CUDA = ("fp8wo",)  # torchao's float8 kernels are CUDA's (compute capability 8.9+)

OFFLOAD_KINDS = ("none", "model", "group")  # enable_model_cpu_offload, enable_group_offload: for a GPU short of memory

# --attention_backend: diffusers' names (AttentionBackendName, checked against the installed diffusers by a test)
# with what each needs: CUDA, and the package it imports. Those not listed are refused.
NEEDS_CUDA, ANY_DEVICE = True, False
ATTENTION_BACKENDS: Dict[str, Tuple[bool, Optional[str]]] = {
    "native": (ANY_DEVICE, None),  # torch's scaled_dot_product_attention, as without the flag
    "_native_math": (ANY_DEVICE, None),
    "flex": (ANY_DEVICE, None),
    "_native_cudnn": (NEEDS_CUDA, None),
    "_native_efficient": (NEEDS_CUDA, None),
    "_native_flash": (NEEDS_CUDA, None),
    "flash": (NEEDS_CUDA, "flash_attn"),
    "flash_varlen": (NEEDS_CUDA, "flash_attn"),
    "_flash_3": (NEEDS_CUDA, "flash_attn_interface"),
    "_flash_varlen_3": (NEEDS_CUDA, "flash_attn_interface"),
    "sage": (NEEDS_CUDA, "sageattention"),
    "sage_varlen": (NEEDS_CUDA, "sageattention"),
    "xformers": (NEEDS_CUDA, "xformers"),
}
DEFAULT_ATTENTION = "native"


@dataclass(frozen=True)
class CacheSetting:
    kind: str  # a key of CACHE_KINDS, or NO_CACHE
    options: Dict[str, Any]  # keyword arguments of its diffusers configuration


def parse_cache(text: str) -> CacheSetting:
    """none | first_block:T | KIND | KIND:key=value,... (ValueError says what is wrong)."""
    kind, _, rest = text.partition(":")
    if kind == NO_CACHE and not rest:
        return CacheSetting(NO_CACHE, {})
    if kind not in CACHE_KINDS:
        raise ValueError(f"is not none or one of {', '.join(CACHE_KINDS)}")
    if kind == "first_block":
        try:
            threshold = float(rest)
        except ValueError:
            raise ValueError("takes its threshold: first_block:T, e.g. first_block:0.1") from None
        if not threshold > 0:
            raise ValueError("takes a threshold above 0 (first_block:0.1)")
        return CacheSetting(kind, {"threshold": threshold})
    options = dict(_option(kind, item) for item in rest.split(",")) if rest else {}
    known = cache_options(kind)
    unknown = sorted(set(options) - known) if known is not None else []
    if unknown:
        raise ValueError(f"{kind} has no option {unknown[0]} (its options: {', '.join(sorted(known or ()))})")
    return CacheSetting(kind, options)


def _option(kind: str, item: str) -> Tuple[str, Any]:
    """key=value, the value a number or true/false."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ValueError(f"expected {kind}:key=value,...")
    if text.lower() in ("true", "false"):
        return key, text.lower() == "true"
    for kind_of in (int, float):
        try:
            return key, kind_of(text)
        except ValueError:
            pass
    raise ValueError(f"{kind}:{key} takes a number or true/false")


def cache_options(kind: str) -> Optional[frozenset]:
    """The fields of the kind's diffusers configuration, read from diffusers' source (None: unreadable)."""
    class_name, file_name = CACHE_KINDS[kind]
    root = diffusers_folder()
    try:
        with open(os.path.join(root or "", "hooks", file_name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return frozenset(s.target.id for s in node.body
                             if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name))
    return None


def cache_problem(text: str) -> Optional[str]:
    """--cache's check (a flag check: said after the flag's name)."""
    try:
        parse_cache(text)
    except ValueError as err:
        return str(err)
    return None


def attention_backend_problem(name: str) -> Optional[str]:
    if name not in ATTENTION_BACKENDS:
        return f"is not one of diffusers' attention backends t2i-batch knows ({', '.join(ATTENTION_BACKENDS)})"
    return None


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None  # found, not imported (no torch here)


def refusal(model_path: str, device: str, cache: str = NO_CACHE, attention_backend: str = DEFAULT_ATTENTION,
            quantize: str = "none", offload: str = "none", compile: Optional[str] = None) -> Optional[str]:
    """Why the model's pipeline class on a device (cpu, cuda, or auto: not known yet) cannot use these levers, in
    one line; None when it can. A class not in families.py's table, or a model not downloaded yet, is left to the
    worker, which asks again with the class it loaded and the device it runs on."""
    if (cache, attention_backend, quantize, offload, compile) == (NO_CACHE, DEFAULT_ATTENTION, "none", "none", None):
        return None  # no lever: the model folder need not be read
    folder = local_folder(model_path) if model_path else None
    class_name = pipeline_class_name(folder) if folder else ""
    return class_refusal(class_name, device, cache, attention_backend, quantize, offload, compile)


def class_refusal(class_name: str, device: str, cache: str = NO_CACHE, attention_backend: str = DEFAULT_ATTENTION,
                  quantize: str = "none", offload: str = "none", compile: Optional[str] = None) -> Optional[str]:
    """refusal() for a pipeline class ("": unknown)."""
    row = family(class_name) if class_name else None
    known = row is not None and row.cache is not None
    kind = parse_cache(cache).kind
    if kind != NO_CACHE and known:
        assert row is not None and row.cache is not None
        if kind not in row.cache:
            return (f"--cache {kind} is not supported for {class_name} "
                    f"(there: {', '.join(row.cache) if row.cache else 'no cache kind'}; see docs/families.md)")
    if attention_backend != DEFAULT_ATTENTION:
        needs_cuda, package = ATTENTION_BACKENDS[attention_backend]
        if known and row is not None and not row.attention_backend:
            return (f"--attention_backend {attention_backend} is not supported for {class_name}: its attention "
                    "does not go through diffusers' attention dispatcher")
        if needs_cuda and device == "cpu":
            return f"--attention_backend {attention_backend} needs a CUDA GPU, not --device cpu"
        if package and not _installed(package):
            return f"--attention_backend {attention_backend} needs the {package} package, not installed here"
    if quantize != "none" and known and row is not None and not row.quantize:
        return f"--quantize {quantize} is not supported for {class_name}"
    if quantize in QUANTIZE_NEEDS_CUDA and device == "cpu":
        return f"--quantize {quantize} needs a CUDA GPU (compute capability 8.9+), not --device cpu"
    if quantize in TORCHAO_KINDS and not _installed("torchao"):
        return f"--quantize {quantize} needs torchao: pip install 't2i-batch[levers]'"
    if offload != "none" and known and row is not None and not row.offload:
        return f"--offload {offload} is not supported for {class_name}"
    if offload != "none" and device == "cpu":
        return f"--offload {offload} moves weights between the CPU and a GPU: it needs a CUDA GPU, not --device cpu"
    if compile == "regional" and known and row is not None and not row.regional_compile:
        return f"--compile regional is not supported for {class_name}: its denoisers name no repeated blocks"
    return None
