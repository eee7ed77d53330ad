"""--cfg_truncation_step on every family with classifier-free guidance, against plain references.

For each tiny family (32 px, 3 steps, batch 2, guidance off after step K=2): the denoiser sees 2 x batch rows
per guided step and batch rows after (Wan: two passes of batch rows, then one), and the images equal those of
a reference written here without the toolkit's code:
- SD, SDXL, SD3 and Wan: the pipeline's step-end callback, set by hand: guidance scale 1 after step K, and for
  the batched families the conditional half of each doubled tensor, by the layout written out per family.
- PixArt-Sigma and Sana, which cannot be cut through that callback: a plain wrapper of the transformer's
  forward, with each family's own argument names, that runs the positive rows only after step K.
Byte-identical: the guided steps are the same calls, and after the cut both sides run the denoiser on the
same batch rows (u + g * (c - u) is exactly c when u == c).
"""
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
import torch

from gen_worker.model_check import CFG_TRUNCATION
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec
from gen_worker.worker.pipeline import ImageMaker, PipelineSetupError, denoisers

SAMPLES = [Sample(0, "1", "a red bus", 42, "a.png"), Sample(1, "2", "two cats on a sofa", 43, "b.png")]
STEPS, K = 3, 2
EXTRA = {"sd3": {"max_sequence_length": 16}, "pixart": {"max_sequence_length": 16},
         "sana": {"max_sequence_length": 16}, "wan": {"max_sequence_length": 16}, "wan22": {"max_sequence_length": 16}}
# SDXL: negative micro-conditions unlike the positive ones, so that taking the wrong rows of add_time_ids shows.
CALL_EXTRA: Dict[str, Dict[str, Any]] = {"sdxl": {"negative_original_size": (16, 16),
                                                  "negative_target_size": (16, 16)}}


def _maker(pipe: Any, arch: str, **changes: Any) -> ImageMaker:
    fields = dict(prompts_csv="-", output_dir="-", model_path="-", num_samples=2, num_inference_steps=STEPS,
                  height=32, width=32, dtype="fp32", guidance_scale=5.0, **EXTRA.get(arch, {}))
    fields.update(changes)
    maker = ImageMaker(pipe, JobSpec(**fields))
    maker.call_kwargs.update(CALL_EXTRA.get(arch, {}))
    return maker


def _rows_seen(pipe: Any, called: Any = None) -> tuple[List[int], Callable[[], None]]:
    """Wrap each denoiser's forward to record the rows (batch dimension) of every call (and in `called`,
    a set, the indices of the denoisers called)."""
    rows: List[int] = []
    restores = []
    for index, model in enumerate(denoisers(pipe)):
        original = model.forward

        def counting(*args: Any, _original: Any = original, _index: int = index, **kwargs: Any) -> Any:
            hidden = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
            rows.append(hidden.shape[0])
            if called is not None:
                called.add(_index)
            return _original(*args, **kwargs)
        model.forward = counting
        restores.append(lambda m=model, o=original: setattr(m, "forward", o))
    return rows, lambda: [r() for r in restores]


def _callback_reference(cut: Callable[[Dict[str, Any], int], Dict[str, Any]], names: List[str]) -> Dict[str, Any]:
    def callback(pipe: Any, i: int, t: Any, tensors: Dict[str, Any]) -> Dict[str, Any]:
        if i == K - 1:
            pipe._guidance_scale = 1.0
            if getattr(pipe, "_guidance_scale_2", None) is not None:
                pipe._guidance_scale_2 = 1.0
            tensors = cut(tensors, tensors["latents"].shape[0])
        return tensors
    return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["latents", *names]}


def _positive(names: List[str]) -> Callable[[Dict[str, Any], int], Dict[str, Any]]:
    """torch.cat([negative, positive]): the second half."""
    return lambda tensors, b: {**tensors, **{n: tensors[n][b:] for n in names}}


CALLBACK_REFERENCES: Dict[str, Dict[str, Any]] = {
    "sd": _callback_reference(_positive(["prompt_embeds"]), ["prompt_embeds"]),
    # add_time_ids is torch.cat([negative, positive]).repeat(batch, 1): rows n, p, n, p, ...
    "sdxl": _callback_reference(
        lambda t, b: {**_positive(["prompt_embeds", "add_text_embeds"])(t, b), "add_time_ids": t["add_time_ids"][1::2]},
        ["prompt_embeds", "add_text_embeds", "add_time_ids"]),
    "sd3": _callback_reference(_positive(["prompt_embeds", "pooled_prompt_embeds"]),
                               ["prompt_embeds", "pooled_prompt_embeds"]),
    "wan": _callback_reference(lambda t, b: t, []),  # separate passes: the scale alone
    "wan22": _callback_reference(lambda t, b: t, []),
}


def _forward_reference(pipe: Any) -> Callable[[], None]:
    """PixArt-Sigma and Sana: transformer(latents, encoder_hidden_states, encoder_attention_mask, timestep, ...),
    each torch.cat([negative, positive]); after K calls, the positive rows only, their output for both."""
    model = pipe.transformer
    original = model.forward
    calls = [0]

    def forward(hidden: torch.Tensor, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor,
                timestep: torch.Tensor, **rest: Any) -> Any:
        calls[0] += 1
        if calls[0] <= K:
            return original(hidden, encoder_hidden_states=encoder_hidden_states,
                            encoder_attention_mask=encoder_attention_mask, timestep=timestep, **rest)
        b = hidden.shape[0] // 2
        out = original(hidden[b:], encoder_hidden_states=encoder_hidden_states[b:],
                       encoder_attention_mask=encoder_attention_mask[b:], timestep=timestep[b:], **rest)
        return (torch.cat([out[0], out[0]]),)
    model.forward = forward
    return lambda: setattr(model, "forward", original)


def _pixels(images: List[Any]) -> List[np.ndarray]:
    return [np.asarray(im) for im in images]


@pytest.mark.parametrize("arch", ["sd", "sdxl", "sd3", "pixart", "sana", "wan", "wan22"])
def test_cfg_truncation_matches_a_plain_reference(arch: str, pipes: Callable[[str], Any]) -> None:
    pipe = pipes(arch)
    assert type(pipe).__name__ in CFG_TRUNCATION
    separate = CFG_TRUNCATION[type(pipe).__name__] == "separate"
    called: set[int] = set()
    rows, restore = _rows_seen(pipe, called)
    try:
        cut = _pixels(_maker(pipe, arch, cfg_truncation_step=K).make(SAMPLES))
    finally:
        restore()
    b = len(SAMPLES)
    guided, unguided = ([b, b], [b]) if separate else ([2 * b], [b])
    assert rows == guided * K + unguided * (STEPS - K)
    assert called == set(range(len(denoisers(pipe))))  # Wan 2.2: both transformers, on both sides of the boundary

    reference_maker = _maker(pipe, arch)
    if arch in CALLBACK_REFERENCES:
        reference_maker.call_kwargs.update(CALLBACK_REFERENCES[arch])
        reference = _pixels(reference_maker.make(SAMPLES))
    else:
        restore = _forward_reference(pipe)
        try:
            reference = _pixels(reference_maker.make(SAMPLES))
        finally:
            restore()
    assert all(np.array_equal(a, r) for a, r in zip(cut, reference))
    full = _pixels(_maker(pipe, arch).make(SAMPLES))
    assert any(not np.array_equal(a, f) for a, f in zip(cut, full))  # the cut changed something


def test_sdxl_wrong_time_ids_rows_would_show(pipes: Callable[[str], Any]) -> None:
    """The SDXL reference can fail: the second half of add_time_ids (n, p rows) gives other images."""
    pipe = pipes("sdxl")
    right = _maker(pipe, "sdxl")
    right.call_kwargs.update(CALLBACK_REFERENCES["sdxl"])
    wrong = _maker(pipe, "sdxl")
    wrong.call_kwargs.update(_callback_reference(_positive(["prompt_embeds", "add_text_embeds", "add_time_ids"]),
                                                 ["prompt_embeds", "add_text_embeds", "add_time_ids"]))
    assert any(not np.array_equal(a, w) for a, w in zip(_pixels(right.make(SAMPLES)), _pixels(wrong.make(SAMPLES))))


def test_flux_refuses_cfg_truncation_in_the_worker_too(pipes: Callable[[str], Any]) -> None:
    with pytest.raises(PipelineSetupError, match="FluxPipeline: it has no classifier-free guidance"):
        _maker(pipes("flux"), "flux", cfg_truncation_step=1, max_sequence_length=16)


@pytest.mark.parametrize("class_name, refused", [("FluxPipeline", True), ("StableDiffusionXLPipeline", False)])
def test_the_submitter_refuses_cfg_truncation_from_model_index(tmp_path: Any, class_name: str, refused: bool) -> None:
    import json
    from gen_worker.errors import UsageError
    from gen_worker.spec import check_cfg_truncation
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
    rows, restore = _rows_seen(pipe)
    try:
        cut = _pixels(_maker(pipe, "sd", guidance_scale=1.0, cfg_truncation_step=1).make(SAMPLES))
    finally:
        restore()
    assert rows == [len(SAMPLES)] * STEPS
    assert all(np.array_equal(a, b) for a, b in zip(cut, _pixels(_maker(pipe, "sd", guidance_scale=1.0).make(SAMPLES))))


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
