"""gen_worker/families.py, the table of what t2i-batch knows about each pipeline class, against the installed
diffusers, tiny_model's families, docs/families.md's tables, and what the worker does with a class not in it."""
import inspect
import os
import re
import subprocess
import sys
import typing
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

from conftest import REPO
from gen_worker.families import DENOISER_NAMES, FAMILIES, NONE, Family, family, guidance_default
from gen_worker.tiny_model import ARCHES


def _components(pipeline_class: type) -> Dict[str, type]:
    """A pipeline class's components (name -> class), from its __init__'s annotations."""
    found = {}
    for name, param in inspect.signature(pipeline_class.__init__).parameters.items():
        kinds = [k for k in typing.get_args(param.annotation) if k is not type(None)] or [param.annotation]
        if isinstance(kinds[0], type):
            found[name] = kinds[0]
    return found


@pytest.mark.parametrize("row", FAMILIES, ids=lambda row: row.pipeline_class)
def test_each_row_is_what_the_installed_diffusers_has(row: Family) -> None:
    import diffusers
    from diffusers.models.cache_utils import CacheMixin
    from diffusers.models.modeling_utils import ModelMixin
    cls = getattr(diffusers, row.pipeline_class)
    components = _components(cls)
    models = {name: kind for name, kind in components.items() if issubclass(kind, ModelMixin) and name != "vae"}
    assert row.denoisers == tuple(models)
    assert row.video == ("num_frames" in inspect.signature(cls.__call__).parameters)
    assert row.vae_tiling == hasattr(components["vae"], "enable_tiling")
    assert bool(row.cache) == all(issubclass(kind, CacheMixin) for kind in models.values())
    assert row.regional_compile == all(bool(kind._repeated_blocks) for kind in models.values())
    assert row.quantize == all(hasattr(kind, "enable_layerwise_casting") for kind in models.values())
    assert row.offload == (hasattr(cls, "enable_model_cpu_offload") and hasattr(cls, "enable_group_offload"))
    assert guidance_default(row.pipeline_class) is not None


def test_the_submitter_reads_the_table_without_importing_torch() -> None:
    code = ("import sys, gen_worker.cli, gen_worker.families, gen_worker.env_settings; "
            "print(sorted({'torch', 'diffusers'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_families_are_those_tiny_model_builds() -> None:
    assert [arch for row in FAMILIES for arch in row.archs] == list(ARCHES)


def _table(heading: str) -> List[str]:
    """The rows of the first table under `heading` in docs/families.md (header and rule left out)."""
    with open(os.path.join(REPO, "docs", "families.md"), encoding="utf-8") as f:
        section = f.read().split(f"\n## {heading}\n")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return rows[2:]


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _doc_row(row: Family) -> str:
    cells = [f"{row.title} ({', '.join(f'`{a}`' for a in row.archs)})", f"`{row.pipeline_class}`",
             f"{guidance_default(row.pipeline_class):g}", row.cfg_truncation, "video" if row.video else "image",
             ", ".join(f"`{d}`" for d in row.denoisers), _yes(row.vae_tiling),
             ", ".join(row.cache or ()) or "no", _yes(row.regional_compile), _yes(row.attention_backend),
             _yes(row.quantize), _yes(row.offload)]
    return "| " + " | ".join(cells) + " |"


def test_the_docs_family_table_is_the_modules() -> None:
    assert _table("Tested families") == [_doc_row(row) for row in FAMILIES]


def test_the_docs_cfg_truncation_table_has_each_class_with_its_layout() -> None:
    said = {}
    for line in _table("CFG truncation"):
        cells = [c.strip() for c in line.strip("|").split("|")]
        said[re.search(r"`(\w+)`", cells[0]).group(1)] = re.match(r"\w+", cells[1]).group()
    assert said == {row.pipeline_class: row.cfg_truncation for row in FAMILIES}


def test_a_class_not_in_the_table_runs_as_any_diffusers_pipeline() -> None:
    other = family("SomeOtherPipeline")
    assert (other.cfg_truncation, other.video, other.denoisers) == (NONE, None, DENOISER_NAMES)


def _renamed(pipe: Any) -> Any:
    """The same pipeline under a class name the table does not have."""
    return type("UntestedPipeline", (type(pipe),), {})(**pipe.components)


@pytest.mark.parametrize("arch, video", [("sd", False), ("wan", True)])
def test_the_worker_runs_a_class_not_in_the_table(arch: str, video: bool, pipes: Callable[[str], Any]) -> None:
    from gen_worker.worker.pipeline import PipelineSetupError, denoisers
    from reference import cfg_truncation as ref
    pipe = pipes(arch)
    untested = _renamed(pipe)
    assert [type(m) for m in denoisers(untested)] == [type(m) for m in denoisers(pipe)]
    maker = ref.maker(untested, arch)
    assert maker.is_video == video
    images = maker.make(ref.SAMPLES)
    assert all(np.array_equal(a, b) for a, b in zip(images, ref.maker(pipe, arch).make(ref.SAMPLES)))
    with pytest.raises(PipelineSetupError, match="not supported for UntestedPipeline"):
        ref.maker(untested, arch, cfg_truncation_step=1)


@pytest.mark.parametrize("arch", [arch for row in FAMILIES for arch in row.archs])
def test_the_attention_backend_column_is_whether_the_denoisers_attention_is_dispatched(
        arch: str, pipes: Callable[[str], Any]) -> None:
    """set_attention_backend changes only processors that go through diffusers' dispatcher (_attention_backend)."""
    from gen_worker.worker.pipeline import denoisers
    pipe = pipes(arch)
    dispatched = [any(hasattr(getattr(m, "processor", None), "_attention_backend") for m in d.modules())
                  for d in denoisers(pipe)]
    assert family(type(pipe).__name__).attention_backend == all(dispatched)


@pytest.mark.parametrize("arch", ["flux", "wan"])
def test_the_cache_kinds_listed_run_and_those_left_out_fail(arch: str, pipes: Callable[[str], Any]) -> None:
    """Each --cache kind of the row runs on the tiny model and switching it off gives back the plain image; the
    kinds left out of the row fail in the installed diffusers (why they are refused). One sample per call:
    FasterCache takes the rows of a call for [negative; positive], so on Wan (guidance in separate calls) it
    runs on two prompts, splitting them as if they were one prompt's halves."""
    from gen_worker.levers import CACHE_KINDS, parse_cache
    from gen_worker.worker.levers import cache_config, switch_off
    from gen_worker.worker.pipeline import denoisers
    from reference import cfg_truncation as ref
    pipe = pipes(arch)
    row = family(type(pipe).__name__)
    one = ref.SAMPLES[:1]
    plain = ref.maker(pipe, arch).make(one)
    for kind in CACHE_KINDS:
        if kind == "magcache" and kind not in row.cache:
            continue  # left out for want of diffusers' ratios of this model (Flux's would run, measuring nothing)
        setting = parse_cache(kind if kind != "first_block" else "first_block:0.5")
        if kind == "magcache":
            setting = type(setting)(kind, {"num_inference_steps": ref.STEPS})
        models = denoisers(pipe)
        try:
            for m in models:
                m.enable_cache(cache_config(setting, pipe))
            ref.maker(pipe, arch).make(one)
            ran = True
        except Exception:
            ran = False
        finally:
            switch_off(models)
        assert ran == (kind in row.cache), kind
        again = ref.maker(pipe, arch).make(one)
        assert all(np.array_equal(a, b) for a, b in zip(plain, again)), kind
