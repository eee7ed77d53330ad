"""A worker of a sweep loads each model once and goes through every configuration that uses it.

Configurations that differ only in call settings (guidance, steps, truncation, size, scheduler...)
share one loaded pipeline; a different value of a setting applied at load (declared `at_load` in
spec.py: the model, dtype, safety checker, VAE tiling, ...) is a new load, and the one before is
dropped first (GPU memory holds one model).
"""
import gc
from typing import Any, Dict, List, Sequence, Tuple

from gen_worker.spec import LOAD_SETTINGS, JobSpec

LoadKey = Tuple[Any, ...]


def load_key(spec: JobSpec) -> LoadKey:
    """The settings applied when a pipeline is loaded; the others are applied at every call."""
    return tuple(getattr(spec, name) for name in LOAD_SETTINGS)


class PipelineCache:
    def __init__(self) -> None:
        self._key: LoadKey | None = None
        self._pipe: Any = None
        self._scheduler: Any = None
        self.speed_options: List[str] = []
        self.loads = 0

    def get(self, spec: JobSpec, device: str) -> Any:
        from gen_worker.worker.pipeline import apply_speed_options, load_pipeline
        key = load_key(spec)
        if key != self._key:
            self.drop()
            # --offload: loaded on the CPU, then moved to the GPU a component (or a block) at a time
            load_device = "cpu" if spec.offload != "none" else device
            self._pipe = load_pipeline(spec.model_path, spec.dtype, load_device, spec.safety_checker, spec.quantize)
            self.speed_options = apply_speed_options(self._pipe, spec, device)
            self._scheduler, self._key = self._pipe.scheduler, key
            self.loads += 1
        self._pipe.scheduler = self._scheduler  # an earlier configuration's --scheduler replaced it
        return self._pipe

    def drop(self) -> None:
        if self._pipe is None:
            return
        self._pipe = self._scheduler = self._key = None
        gc.collect()
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def in_load_order(specs: Sequence[JobSpec]) -> List[JobSpec]:
    """The specs grouped by load key (stable, first appearance first), so each model is loaded once."""
    first: Dict[LoadKey, int] = {}
    for i, s in enumerate(specs):
        first.setdefault(load_key(s), i)
    return sorted(specs, key=lambda s: first[load_key(s)])
