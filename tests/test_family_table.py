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
    assert row.cache == all(issubclass(kind, CacheMixin) for kind in models.values())
    assert row.regional_compile == all(bool(kind._repeated_blocks) for kind in models.values())
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
             ", ".join(f"`{d}`" for d in row.denoisers), _yes(row.vae_tiling), _yes(row.cache),
             _yes(row.regional_compile)]
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
