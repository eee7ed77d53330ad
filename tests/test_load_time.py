"""The settings a worker applies when it loads a pipeline are declared once (`at_load` in spec.py), and a
sweep's pipeline cache (worker/pipeline_cache.py) loads again exactly when one of them changes: checked by
loading the tiny SD pipeline, not against a second list of names."""
import dataclasses
import shutil
from typing import Any, Dict, Set

import pytest

from gen_worker.flags import flag_fields
from gen_worker.spec import LOAD_SETTINGS, JobSpec
from gen_worker.worker.pipeline_cache import PipelineCache


class _Reads:
    """A spec that notes the name of every setting read from it."""

    def __init__(self, spec: JobSpec) -> None:
        self._spec = spec
        self.names: Set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.names.add(name)
        return getattr(self._spec, name)


def _spec(model: str, **changes: Any) -> JobSpec:
    return JobSpec(prompts_csv="p.csv", output_dir="out", model_path=model, dtype="fp32", device="cpu", **changes)


def test_loading_reads_only_settings_declared_at_load(tiny_sd: str) -> None:
    """Every option the load path knows is switched on, so that each of its branches reads its setting."""
    spec = _Reads(_spec(tiny_sd, safety_checker=True, vae_tiling=True, vae_slicing=True, channels_last=True,
                        tf32=True, compile="whole", quantize="fp8"))
    PipelineCache().get(spec, "cpu")
    assert spec.names - set(LOAD_SETTINGS) == set()
    assert {"model_path", "dtype", "compile"} <= spec.names  # the spy sees the reads


def _another_value(tmp_path: Any, model: str) -> Dict[str, Any]:
    """A valid value other than _spec's for every flag of JobSpec (model: tiny Flux, which takes every lever)."""
    return dict(
        prompts_csv="q.csv", output_dir="elsewhere", model_path=str(shutil.copytree(model, tmp_path / "copy")),
        num_samples=3, id_column="id", prompt_column="text", prompts_format="tsv", device="cuda", cpu_threads=2,
        schedule="static", lease_seconds=60.0, seed_start=7, images_per_prompt=2, layout="geneval",
        num_inference_steps=2, guidance_scale=2.0, height=32, width=48, dtype="bf16",
        scheduler="EulerDiscreteScheduler", cfg_truncation_step=1, enable_half_frame=True, num_frames=5,
        negative_prompt="blurry", max_sequence_length=16, batch_size=2, vae_tiling=True, safety_checker=True,
        compile="whole", tf32=True, channels_last=True, vae_slicing=True, cache="first_block:0.5",
        attention_backend="flex", quantize="int8wo", offload="model", shard_size=4, output_format="tar")


def test_the_cache_loads_again_for_a_load_setting_only(tiny_flux: str, tmp_path: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # --offload needs a GPU: its load is checked here, not its moves (nor the device check it would fail).
    from diffusers import DiffusionPipeline
    from gen_worker.worker import pipeline
    monkeypatch.setattr(DiffusionPipeline, "enable_model_cpu_offload", lambda pipe, device: None)
    monkeypatch.setattr(pipeline, "check_device", lambda *args: None)
    changes = _another_value(tmp_path, tiny_flux)
    assert set(changes) == {f.name for f in flag_fields(JobSpec)}  # a new setting gets a value here too
    cache = PipelineCache()
    spec = _spec(tiny_flux)
    cache.get(spec, "cpu")
    reloaded = set()
    for name, value in changes.items():  # one setting more changed at each step
        # --output_format tar takes no --layout geneval (a setting changed before it): flat again with it
        spec = dataclasses.replace(spec, **{name: value}, **({"layout": "flat"} if name == "output_format" else {}))
        loads = cache.loads
        cache.get(spec, "cpu")
        if cache.loads > loads:
            reloaded.add(name)
    assert reloaded == set(LOAD_SETTINGS)
