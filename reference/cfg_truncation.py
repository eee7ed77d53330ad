"""Plain references for --cfg_truncation_step, written without the toolkit's truncation code: what the tests
(tests/test_cfg_truncation.py) and the GPU check (bench/gpu_check.py) compare the toolkit's images against.

- SD, SDXL, SD3 and Wan: the pipeline's step-end callback, set by hand: guidance scale 1 after step K, and for
  the batched families the conditional half of each doubled tensor, by the layout written out per family.
- PixArt-Sigma and Sana, which cannot be cut through that callback: a plain wrapper of the transformer's
  forward, with each family's own argument names, that runs the positive rows only after step K.
"""
from typing import Any, Callable, Dict, List

import torch

from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec
from gen_worker.worker.pipeline import ImageMaker, denoisers

SAMPLES = [Sample(0, "1", "a red bus", 42, "a.png"), Sample(1, "2", "two cats on a sofa", 43, "b.png")]
STEPS, K = 3, 2
EXTRA = {"sd3": {"max_sequence_length": 16}, "pixart": {"max_sequence_length": 16},
         "sana": {"max_sequence_length": 16}, "wan": {"max_sequence_length": 16}, "wan22": {"max_sequence_length": 16}}
# SDXL: negative micro-conditions unlike the positive ones, so that taking the wrong rows of add_time_ids shows.
CALL_EXTRA: Dict[str, Dict[str, Any]] = {"sdxl": {"negative_original_size": (16, 16),
                                                  "negative_target_size": (16, 16)}}


def maker(pipe: Any, arch: str, **changes: Any) -> ImageMaker:
    """The toolkit's ImageMaker for the tiny `arch` at the references' settings (32 px, STEPS steps, guidance 5)."""
    fields = dict(prompts_csv="-", output_dir="-", model_path="-", num_samples=2, num_inference_steps=STEPS,
                  height=32, width=32, dtype="fp32", guidance_scale=5.0, **EXTRA.get(arch, {}))
    fields.update(changes)
    made = ImageMaker(pipe, JobSpec(**fields))
    made.call_kwargs.update(CALL_EXTRA.get(arch, {}))
    return made


def rows_seen(pipe: Any, called: Any = None) -> tuple[List[int], Callable[[], None]]:
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


def callback_reference(cut: Callable[[Dict[str, Any], int], Dict[str, Any]], names: List[str]) -> Dict[str, Any]:
    def callback(pipe: Any, i: int, t: Any, tensors: Dict[str, Any]) -> Dict[str, Any]:
        if i == K - 1:
            pipe._guidance_scale = 1.0
            if getattr(pipe, "_guidance_scale_2", None) is not None:
                pipe._guidance_scale_2 = 1.0
            tensors = cut(tensors, tensors["latents"].shape[0])
        return tensors
    return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["latents", *names]}


def positive(names: List[str]) -> Callable[[Dict[str, Any], int], Dict[str, Any]]:
    """torch.cat([negative, positive]): the second half."""
    return lambda tensors, b: {**tensors, **{n: tensors[n][b:] for n in names}}


CALLBACK_REFERENCES: Dict[str, Dict[str, Any]] = {
    "sd": callback_reference(positive(["prompt_embeds"]), ["prompt_embeds"]),
    # add_time_ids is torch.cat([negative, positive]).repeat(batch, 1): rows n, p, n, p, ...
    "sdxl": callback_reference(
        lambda t, b: {**positive(["prompt_embeds", "add_text_embeds"])(t, b), "add_time_ids": t["add_time_ids"][1::2]},
        ["prompt_embeds", "add_text_embeds", "add_time_ids"]),
    "sd3": callback_reference(positive(["prompt_embeds", "pooled_prompt_embeds"]),
                               ["prompt_embeds", "pooled_prompt_embeds"]),
    "wan": callback_reference(lambda t, b: t, []),  # separate passes: the scale alone
    "wan22": callback_reference(lambda t, b: t, []),
}


def forward_reference(pipe: Any) -> Callable[[], None]:
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
