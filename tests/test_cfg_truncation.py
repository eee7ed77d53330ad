"""--cfg_truncation_step on every family with classifier-free guidance, against plain references.

For each tiny family (32 px, 3 steps, batch 2, guidance off after step K=2): the denoiser sees 2 x batch rows
per guided step and batch rows after (Wan: two passes of batch rows, then one), and the images equal those of
a reference written without the toolkit's truncation code (reference/cfg_truncation.py: a step-end callback
set by hand, or for PixArt-Sigma and Sana a plain wrapper of the transformer's forward).
Byte-identical: the guided steps are the same calls, and after the cut both sides run the denoiser on the
same batch rows (u + g * (c - u) is exactly c when u == c).
"""
from typing import Any, Callable, List

import numpy as np
import pytest

from gen_worker.families import BATCHED, SEPARATE, family
from gen_worker.worker.pipeline import PipelineSetupError
from reference import cfg_truncation as ref




def _pixels(images: List[Any]) -> List[np.ndarray]:
    return [np.asarray(im) for im in images]


@pytest.mark.parametrize("arch", ["sd", "sdxl", "sd3", "pixart", "sana", "wan", "wan22"])
def test_cfg_truncation_matches_a_plain_reference(arch: str, pipes: Callable[[str], Any]) -> None:
    pipe = pipes(arch)
    row = family(type(pipe).__name__)
    assert arch in row.archs and row.cfg_truncation in (BATCHED, SEPARATE)
    separate = row.cfg_truncation == SEPARATE
    called: set[int] = set()
    rows, restore = ref.rows_seen(pipe, called)
    try:
        cut = _pixels(ref.maker(pipe, arch, cfg_truncation_step=ref.K).make(ref.SAMPLES))
    finally:
        restore()
    b = len(ref.SAMPLES)
    guided, unguided = ([b, b], [b]) if separate else ([2 * b], [b])
    assert rows == guided * ref.K + unguided * (ref.STEPS - ref.K)
    assert called == set(range(len(ref.denoisers(pipe))))  # Wan 2.2: both transformers, on both sides of the boundary

    reference_maker = ref.maker(pipe, arch)
    if arch in ref.CALLBACK_REFERENCES:
        reference_maker.call_kwargs.update(ref.CALLBACK_REFERENCES[arch])
        reference = _pixels(reference_maker.make(ref.SAMPLES))
    else:
        restore = ref.forward_reference(pipe)
        try:
            reference = _pixels(reference_maker.make(ref.SAMPLES))
        finally:
            restore()
    assert all(np.array_equal(a, r) for a, r in zip(cut, reference))
    full = _pixels(ref.maker(pipe, arch).make(ref.SAMPLES))
    assert any(not np.array_equal(a, f) for a, f in zip(cut, full))  # the cut changed something


def test_sdxl_wrong_time_ids_rows_would_show(pipes: Callable[[str], Any]) -> None:
    """The SDXL reference can fail: the second half of add_time_ids (n, p rows) gives other images."""
    pipe = pipes("sdxl")
    right = ref.maker(pipe, "sdxl")
    right.call_kwargs.update(ref.CALLBACK_REFERENCES["sdxl"])
    wrong = ref.maker(pipe, "sdxl")
    wrong.call_kwargs.update(ref.callback_reference(ref.positive(["prompt_embeds", "add_text_embeds", "add_time_ids"]),
                                                 ["prompt_embeds", "add_text_embeds", "add_time_ids"]))
    assert any(not np.array_equal(a, w) for a, w in zip(_pixels(right.make(ref.SAMPLES)), _pixels(wrong.make(ref.SAMPLES))))


def test_flux_refuses_cfg_truncation_in_the_worker_too(pipes: Callable[[str], Any]) -> None:
    with pytest.raises(PipelineSetupError, match="FluxPipeline: it has no classifier-free guidance"):
        ref.maker(pipes("flux"), "flux", cfg_truncation_step=1, max_sequence_length=16)


@pytest.mark.parametrize("class_name, refused", [("FluxPipeline", True), ("StableDiffusionXLPipeline", False)])
def test_the_submitter_refuses_cfg_truncation_from_model_index(tmp_path: Any, class_name: str, refused: bool) -> None:
    import json
    from gen_worker.errors import UsageError
    from gen_worker.families import check_cfg_truncation
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    check_cfg_truncation(None, str(tmp_path))  # not asked for: nothing to check
    if refused:
        with pytest.raises(UsageError, match=f"not supported for {class_name}"):
            check_cfg_truncation(2, str(tmp_path))
    else:
        check_cfg_truncation(2, str(tmp_path))


def test_no_guidance_to_cut_leaves_every_call_alone(pipes: Callable[[str], Any]) -> None:
    """--guidance_scale 1: the pipeline makes no doubled rows, so the truncation has nothing to cut."""
    pipe = pipes("sd")
    rows, restore = ref.rows_seen(pipe)
    try:
        cut = _pixels(ref.maker(pipe, "sd", guidance_scale=1.0, cfg_truncation_step=1).make(ref.SAMPLES))
    finally:
        restore()
    assert rows == [len(ref.SAMPLES)] * ref.STEPS
    assert all(np.array_equal(a, b) for a, b in zip(cut, _pixels(ref.maker(pipe, "sd", guidance_scale=1.0).make(ref.SAMPLES))))


@pytest.mark.e2e
def test_submit_refuses_cfg_truncation_for_flux_before_any_worker(tmp_path: Any) -> None:
    import time
    from conftest import FAST, run_submit, write_prompts
    from gen_worker.tiny_model import build
    build(str(tmp_path / "flux"), "flux")
    csv = write_prompts(tmp_path / "prompts.csv", [("1", "a cat")])
    started = time.monotonic()
    result = run_submit("--cluster", "local", "--gpu_ids", "0", "--prompts_csv", csv, "--output_dir",
                        str(tmp_path / "out"), "--model_path", str(tmp_path / "flux"), *FAST,
                        "--cfg_truncation_step", "2")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cfg_truncation_step is not supported for FluxPipeline" in lines[0], result.stderr
    assert time.monotonic() - started < 8  # the submitter's own check: no worker, no torch import
