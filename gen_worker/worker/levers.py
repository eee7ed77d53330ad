"""The speed levers (gen_worker/levers.py) applied by the worker.

At load (a new value is a new load, like a new dtype): --quantize (torchao through diffusers' quantization config,
or float8 layerwise casting), --offload, --compile regional. Per configuration, on the loaded pipeline: --cache and
--attention_backend, switched on for one configuration and off after it (`switched`), so that a sweep's next
configuration, which shares the loaded pipeline, never inherits them.
"""
import contextlib
import json
import logging
import os
from typing import Any, Dict, Iterator, Sequence

import torch

from gen_worker.errors import UsageError
from gen_worker.families import family
from gen_worker.model_check import local_folder
from gen_worker.levers import DEFAULT_ATTENTION, NO_CACHE, TORCHAO_KINDS, CacheSetting, class_refusal, parse_cache
from gen_worker.spec import JobSpec

log = logging.getLogger(__name__)


def check_device(class_name: str, device: str, spec: JobSpec) -> None:
    """The submitter's refusal of the load-time levers again, with the class loaded and the device resolved (a
    SLURM node's --device auto); `switched` does it for the others."""
    problem = class_refusal(class_name, device, quantize=spec.quantize, offload=spec.offload, compile=spec.compile)
    if problem:
        raise UsageError(problem)


def quantization_kwargs(model_path: str, quantize: str) -> Dict[str, Any]:
    """from_pretrained's quantization_config for --quantize int8wo/fp8wo: the denoisers the folder has, by torchao."""
    if quantize not in TORCHAO_KINDS:
        return {}
    import torchao.quantization  # type: ignore[import-untyped]
    from diffusers import PipelineQuantizationConfig, TorchAoConfig
    try:
        with open(os.path.join(local_folder(model_path) or model_path, "model_index.json"), encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError):
        index = {}
    # A component saved as [null, null] is absent (Wan 2.1's transformer_2).
    names = [n for n in family(str(index.get("_class_name", ""))).denoisers
             if isinstance(index.get(n), list) and index[n][0] is not None] or ["transformer"]
    make = getattr(torchao.quantization, TORCHAO_KINDS[quantize])
    return {"quantization_config": PipelineQuantizationConfig(
        quant_mapping={name: TorchAoConfig(make()) for name in names})}


def apply_at_load(pipe: Any, models: Sequence[torch.nn.Module], spec: JobSpec, device: str) -> list:
    """--quantize fp8, --offload and --compile regional on a freshly loaded pipeline; the names of those applied."""
    applied = []
    if spec.quantize != "none":
        applied.append(f"quantize {spec.quantize}")
    if spec.quantize == "fp8":
        for m in models:  # weights stored in float8, each layer cast up to its compute dtype as it runs
            m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=m.dtype)
    if spec.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
        applied.append("offload model")
    elif spec.offload == "group":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1)
        applied.append("offload group")
    return applied


def cache_config(setting: CacheSetting, pipe: Any) -> Any:
    """diffusers' configuration of a --cache kind, with the options given and what the kind cannot do without."""
    import diffusers
    from gen_worker.levers import CACHE_KINDS
    options = dict(setting.options)
    if setting.kind == "magcache":
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS  # the only ratios diffusers ships (families.py)
        options.setdefault("mag_ratios", FLUX_MAG_RATIOS)
    if setting.kind in ("pab", "fastercache"):
        options.setdefault("current_timestep_callback", lambda: pipe.current_timestep)
    if setting.kind == "pab":
        options.setdefault("spatial_attention_block_skip_range", 2)  # diffusers' example; None skips nothing
    return getattr(diffusers, CACHE_KINDS[setting.kind][0])(**options)


@contextlib.contextmanager
def switched(pipe: Any, models: Sequence[torch.nn.Module], spec: JobSpec) -> Iterator[None]:
    """--cache and --attention_backend on the denoisers for the duration of the block, and off after it."""
    device = str(getattr(pipe, "_execution_device", "")).split(":")[0]  # where it runs, offloaded or not
    problem = class_refusal(type(pipe).__name__, device, spec.cache,
                            spec.attention_backend)
    if problem:
        raise UsageError(problem)
    setting = parse_cache(spec.cache)
    try:
        if setting.kind != NO_CACHE:
            if setting.kind == "magcache":
                setting = CacheSetting(setting.kind, {"num_inference_steps": spec.num_inference_steps,
                                                      **setting.options})
            for m in models:
                m.enable_cache(cache_config(setting, pipe))
            log.info("--cache %s on %d denoiser(s)", spec.cache, len(models))
        if spec.attention_backend != DEFAULT_ATTENTION:
            for m in models:
                m.set_attention_backend(spec.attention_backend)
            log.info("--attention_backend %s", spec.attention_backend)
        yield
    finally:
        switch_off(models)


def switch_off(models: Sequence[torch.nn.Module]) -> None:
    """No cache and the default attention on every denoiser (safe to call on a pipeline without either)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    for m in models:
        if getattr(m, "is_cache_enabled", False):
            m.disable_cache()
        if any(getattr(getattr(sub, "processor", None), "_attention_backend", None) is not None
               for sub in m.modules()):
            m.reset_attention_backend()
    # set_attention_backend also sets the process's active backend, which processors left unset use.
    _AttentionBackendRegistry._active_backend = _DEFAULT_ACTIVE_BACKEND


def _default_active_backend() -> Any:
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    return _AttentionBackendRegistry._active_backend


_DEFAULT_ACTIVE_BACKEND = _default_active_backend()
