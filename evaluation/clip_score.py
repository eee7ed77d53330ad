"""CLIP score with torchmetrics' ``CLIPScore`` and a local transformers CLIP model.

Convention (torchmetrics): per pair ``100 * cos(image_embedding, text_embedding)``, averaged over all pairs,
and the *average* clamped at 0 (torchmetrics clamps the mean, not each pair; for real CLIP models the
per-pair cosines are practically never negative, so this equals the mean of ``100 * max(cos, 0)``).

Two thin adapters keep torchmetrics 1.9 working and correct:

* :class:`_TensorFeatures` -- transformers >= 5 returns a ``BaseModelOutputWithPooling`` from
  ``get_image_features`` / ``get_text_features``; torchmetrics 1.9.0 expects a tensor (torchmetrics issue #3407,
  fixed upstream after 1.9.0). We hand it ``pooler_output`` (the projected embedding).
* :class:`_TruncatingProcessor` -- torchmetrics tokenizes without truncation and then cuts the ids at 77,
  which drops the end-of-text token that CLIP pools on; we truncate in the tokenizer instead (keeps it).
  Images arrive already preprocessed by :class:`ClipImagePreprocess` (the model folder's image processor, run
  per image in the DataLoader workers instead of in the main process) and are only stacked.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torchmetrics.multimodal.clip_score import CLIPScore

SCORE_CONVENTION = ("torchmetrics CLIPScore: 100 * cos(image, prompt) averaged over the images, the mean clamped "
                    "at 0; each image against its own prompt; prompts cut to the text encoder's token limit")


def _as_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"unexpected CLIP feature output {type(out).__name__}")


class _TensorFeatures(torch.nn.Module):
    """The subset of ``CLIPModel`` torchmetrics uses, with tensors as feature outputs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _as_tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return _as_tensor(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


class _TruncatingProcessor:
    """Called by torchmetrics as ``processor(text=...)`` or ``processor(images=...)``."""

    def __init__(self, tokenizer: Any, image_processor: Any, max_length: int):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_length = max_length

    def __call__(self, text: Sequence[str] | None = None, images: Any = None, return_tensors: str = "pt", **_: Any):
        if text is not None:
            return self.tokenizer(
                list(text), return_tensors=return_tensors, padding=True, truncation=True, max_length=self.max_length
            )
        return {"pixel_values": torch.stack([im.float() for im in images])}


class ClipImagePreprocess:
    """PIL image -> ``[3, S, S]`` float ``pixel_values`` with the model folder's image processor (picklable)."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, img: Any) -> torch.Tensor:
        return self.image_processor(images=[img], return_tensors="pt")["pixel_values"][0]


def make_clip_metric(model: Any, tokenizer: Any, image_processor: Any, device: torch.device | str = "cpu") -> CLIPScore:
    adapted = _TensorFeatures(model)
    processor = _TruncatingProcessor(tokenizer, image_processor, text_max_length(model))
    return CLIPScore(model_name_or_path=lambda: (adapted, processor)).to(device)


def update_clip(metric: CLIPScore, pixel_values: torch.Tensor | Sequence[torch.Tensor], prompts: Sequence[str]) -> None:
    """``pixel_values`` from :class:`ClipImagePreprocess`, ``[N, 3, S, S]``; moved to the metric's device first,
    because torchmetrics runs the model on the device the images are on."""
    device = metric.score.device
    imgs = [im.to(device) for im in pixel_values]
    with torch.inference_mode():
        metric.update(imgs, list(prompts))


def compute_clip(metric: CLIPScore) -> float:
    with torch.inference_mode():
        return float(metric.compute())


def text_max_length(model: Any) -> int:
    """The text encoder's token limit (77 for CLIP), begin and end tokens included."""
    return int(getattr(model.config.text_config, "max_position_embeddings", 77))


def count_long_prompts(tokenizer: Any, prompts: Sequence[str], max_length: int) -> int:
    """How many prompts the tokenizer used for scoring makes longer than ``max_length`` tokens (they are cut)."""
    if not prompts:
        return 0
    ids = tokenizer(list(prompts), truncation=False, padding=False, verbose=False)["input_ids"]  # no "too long" log
    return sum(len(x) > max_length for x in ids)


def describe_preprocessing(image_processor: Any) -> str:
    """What the CLIP image processor does to an image, in words (for metrics.json and the report)."""
    def get(d: Any, key: str) -> Any:
        return getattr(d, key, None) if not isinstance(d, dict) else d.get(key)

    from PIL import Image

    steps = []
    if getattr(image_processor, "do_resize", True):
        size = image_processor.size
        edge = get(size, "shortest_edge")
        target = f"shortest side to {edge} px" if edge else f"to {get(size, 'height')}x{get(size, 'width')} px"
        resample = getattr(image_processor, "resample", None)
        method = Image.Resampling(int(resample)).name.lower() if resample is not None else "default"
        steps.append(f"resize {target} (PIL {method}, aspect kept)")
    if getattr(image_processor, "do_center_crop", False):
        crop = image_processor.crop_size
        steps.append(f"centre crop {get(crop, 'height')}x{get(crop, 'width')}")
    steps.append("rescale and normalise with its mean and std")
    return f"{type(image_processor).__name__} of the model folder: " + "; ".join(steps)
