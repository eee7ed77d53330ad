"""The speed levers' values and refusals (gen_worker/levers.py), read without torch: one refusal per family and
device that cannot use a lever, each a one-line error before any worker starts."""
import json
import os
from typing import Any, Dict

import pytest

from gen_worker import levers
from gen_worker.errors import UsageError
from gen_worker.families import FAMILIES
from gen_worker.levers import ATTENTION_BACKENDS, CACHE_KINDS, cache_options, parse_cache
from gen_worker.spec import JobSpec


def _folder(tmp_path: Any, class_name: str) -> str:
    """A model folder as far as the submitter's table reads it: model_index.json's class."""
    folder = tmp_path / class_name
    folder.mkdir(exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return str(folder)


def _spec(model: str, **levers_given: Any) -> JobSpec:
    fields: Dict[str, Any] = dict(prompts_csv="p.csv", output_dir="out", model_path=model, device="cuda")
    fields.update(levers_given)
    return JobSpec(**fields)


@pytest.mark.parametrize("text, kind, options", [
    ("none", "none", {}),
    ("first_block:0.3", "first_block", {"threshold": 0.3}),
    ("taylorseer", "taylorseer", {}),
    ("taylorseer:cache_interval=3,disable_cache_before_step=1", "taylorseer",
     {"cache_interval": 3, "disable_cache_before_step": 1}),
    ("pab:spatial_attention_block_skip_range=3", "pab", {"spatial_attention_block_skip_range": 3}),
    ("magcache:threshold=0.1", "magcache", {"threshold": 0.1}),
])
def test_cache_values_are_read(text: str, kind: str, options: Dict[str, Any]) -> None:
    setting = parse_cache(text)
    assert (setting.kind, setting.options) == (kind, options)


@pytest.mark.parametrize("text, problem", [
    ("first_block", "takes its threshold: first_block:T"),
    ("first_block:", "takes its threshold"),
    ("first_block:0", "takes a threshold above 0"),
    ("first_block:nan", "takes a threshold above 0"),
    ("teacache", "is not none or one of first_block, taylorseer"),
    ("none:1", "is not none or one of"),
    ("taylorseer:warp=2", "taylorseer has no option warp"),
    ("taylorseer:cache_interval", "expected taylorseer:key=value"),
    ("taylorseer:cache_interval=fast", "taylorseer:cache_interval takes a number or true/false"),
])
def test_bad_cache_values_are_one_line(text: str, problem: str) -> None:
    with pytest.raises(UsageError, match=f"^--cache {problem}.*\\(got {text}\\)$"):
        _spec("-", cache=text)


def test_each_cache_kind_is_a_diffusers_configuration_whose_options_are_read_from_its_source() -> None:
    import diffusers
    for kind, (class_name, _) in CACHE_KINDS.items():
        fields = set(getattr(diffusers, class_name).__dataclass_fields__)
        assert cache_options(kind) == fields, kind


def test_the_attention_backends_are_diffusers_names() -> None:
    from diffusers.models.attention_dispatch import AttentionBackendName
    assert set(ATTENTION_BACKENDS) <= {b.value for b in AttentionBackendName}
    with pytest.raises(UsageError, match="^--attention_backend is not one of diffusers' attention backends"):
        _spec("-", attention_backend="fast")


_FAMILY_REFUSALS = (
    [(row.pipeline_class, {"cache": "first_block:0.1"}, f"--cache first_block is not supported for {row.pipeline_class}")
     for row in FAMILIES if not row.cache]
    + [("WanPipeline", {"cache": "magcache"}, "--cache magcache is not supported for WanPipeline"),
       ("FluxPipeline", {"cache": "fastercache"}, "--cache fastercache is not supported for FluxPipeline")]
    + [(row.pipeline_class, {"attention_backend": "flex"}, "--attention_backend flex is not supported for")
       for row in FAMILIES if not row.attention_backend]
    + [(row.pipeline_class, {"compile": "regional"}, "--compile regional is not supported for")
       for row in FAMILIES if not row.regional_compile])


@pytest.mark.parametrize("class_name, given, refusal", _FAMILY_REFUSALS,
                         ids=[f"{c}-{list(g.values())[0]}" for c, g, _ in _FAMILY_REFUSALS])
def test_a_lever_the_family_cannot_use_is_refused(tmp_path: Any, class_name: str, given: Dict[str, Any],
                                                  refusal: str) -> None:
    with pytest.raises(UsageError, match=f"^{refusal}") as refused:
        _spec(_folder(tmp_path, class_name), **given)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("given", [{"cache": "first_block:0.1"}, {"cache": "pab"}, {"attention_backend": "flex"},
                                   {"compile": "regional"}, {"quantize": "int8wo"}, {"quantize": "fp8"}])
def test_a_lever_the_family_can_use_is_taken(tmp_path: Any, given: Dict[str, Any]) -> None:
    for class_name in ("FluxPipeline", "WanPipeline"):
        _spec(_folder(tmp_path, class_name), device="cpu", **given)


@pytest.mark.parametrize("given, refusal", [
    ({"attention_backend": "flash"}, "--attention_backend flash needs a CUDA GPU, not --device cpu"),
    ({"attention_backend": "_native_cudnn"}, "--attention_backend _native_cudnn needs a CUDA GPU"),
    ({"offload": "model"}, "--offload model moves weights between the CPU and a GPU: it needs a CUDA GPU"),
    ({"offload": "group"}, "--offload group moves weights"),
    ({"quantize": "fp8wo"}, "--quantize fp8wo needs a CUDA GPU"),
])
def test_a_lever_the_cpu_cannot_run_is_refused(tmp_path: Any, given: Dict[str, Any], refusal: str) -> None:
    with pytest.raises(UsageError, match=f"^{refusal}"):
        _spec(_folder(tmp_path, "FluxPipeline"), device="cpu", **given)
    _spec(_folder(tmp_path, "FluxPipeline"), device="cuda", **{**given, "attention_backend": "native"})


def test_a_lever_without_its_package_is_refused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _folder(tmp_path, "FluxPipeline")
    missing = {"flash_attn", "torchao"}
    monkeypatch.setattr(levers.importlib.util, "find_spec", lambda name: None if name in missing else object())
    with pytest.raises(UsageError, match="^--attention_backend flash needs the flash_attn package, not installed"):
        _spec(model, attention_backend="flash")
    with pytest.raises(UsageError, match=r"^--quantize int8wo needs torchao: pip install 't2i-batch\[levers\]'"):
        _spec(model, quantize="int8wo", device="cpu")
    missing.clear()
    _spec(model, attention_backend="flash")  # found (not imported: this test has no flash_attn)


def test_no_lever_reads_no_model_folder(tmp_path: Any) -> None:
    """A spec without levers never reads the model's folder (hub ids not downloaded, tests' "-")."""
    assert levers.refusal(str(tmp_path / "absent"), "cpu") is None
    assert levers.refusal(str(tmp_path / "absent"), "cpu", cache="first_block:0.1") is None  # the worker asks
    assert not os.path.exists(tmp_path / "absent")


def test_compile_alone_is_the_whole_denoiser_and_regional_its_block() -> None:
    import argparse
    from gen_worker.flags import add_flags
    parser = argparse.ArgumentParser()
    groups = {group: parser for group in ("data", "run", "generation", "speed")}
    add_flags(JobSpec, groups, optional=("prompts_csv", "output_dir", "model_path"))
    assert [parser.parse_args(given).compile for given in ([], ["--compile"], ["--compile", "regional"])] == \
        [None, "whole", "regional"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "everything"])


def test_run_full_evaluation_passes_the_levers_by_name() -> None:
    from gen_worker.env_settings import submit_args
    assert submit_args({"COMPILE": "regional", "CACHE": "first_block:0.1", "QUANTIZE": "int8wo"}) == \
        ["--compile", "regional", "--cache", "first_block:0.1", "--quantize", "int8wo"]
    assert submit_args({"COMPILE": "yes"}) == ["--compile"]


def test_a_campaign_file_or_generate_takes_compile_as_a_switch_or_its_mode() -> None:
    from gen_worker import cli
    from gen_worker.named_settings import settings_argv
    parser = cli.build_parser(parser_class=cli.RaisingParser)
    assert [settings_argv(parser, {"compile": value}) for value in (True, False, "regional")] == \
        [["--compile"], [], ["--compile=regional"]]
    assert settings_argv(parser, {"cache": "first_block:0.1"}) == ["--cache=first_block:0.1"]
