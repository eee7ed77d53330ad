"""CLIP score (torchmetrics' convention) and CLIP image embeddings (for CMMD) from one pass of a local
transformers CLIP model.

Convention (torchmetrics ``CLIPScore``): per pair ``100 * cos(image_embedding, text_embedding)``, averaged over
all pairs, and the *average* clamped at 0 (torchmetrics clamps the mean, not each pair; for real CLIP models the
per-pair cosines are practically never negative). The per-pair values are kept (scores.csv, intervals).

* :class:`_TensorFeatures` -- transformers >= 5 returns a ``BaseModelOutputWithPooling`` from
  ``get_image_features`` / ``get_text_features``; we take ``pooler_output`` (the projected embedding), as
  torchmetrics after its issue #3407.
* Prompts are truncated by the tokenizer to the text encoder's limit (77), which keeps the end-of-text token
  CLIP pools on (torchmetrics 1.9 cuts the ids after tokenizing and loses it).
  Images arrive already preprocessed by :class:`ClipImagePreprocess` (the model folder's image processor, run
  per image in the DataLoader workers instead of in the main process) and are only stacked.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

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
    """The feature methods of ``CLIPModel``, with tensors as outputs whatever the transformers version."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _as_tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return _as_tensor(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def tokenize(tokenizer: Any, prompts: Sequence[str], max_length: int) -> Any:
    """Token ids cut to ``max_length`` by the tokenizer itself (the end-of-text token stays)."""
    return tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=max_length)


class ClipScorer:
    """Per-image ``scale * cos(image, prompt)`` and L2-normalised image embeddings, one model call per batch and
    tower. CLIP score: scale 100 (torchmetrics). PickScore: the model's learned ``exp(logit_scale)``, as its
    authors' code scores (Kirstain et al. 2023)."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device | str = "cpu", scale: float = 100.0):
        self.model = _TensorFeatures(model)
        self.tokenizer = tokenizer
        self.max_length = text_max_length(model)
        self.device = device
        self.scale = scale

    def image_embeddings(self, pixel_values: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``[N, D]`` float64, L2-normalised, on the CPU; ``pixel_values`` from :class:`ClipImagePreprocess`."""
        batch = pixel_values if isinstance(pixel_values, torch.Tensor) else torch.stack(list(pixel_values))
        with torch.inference_mode():
            emb = self.model.get_image_features(batch.float().to(self.device)).double()
        return (emb / emb.norm(dim=-1, keepdim=True)).cpu()

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        tok = tokenize(self.tokenizer, prompts, self.max_length)
        with torch.inference_mode():
            emb = self.model.get_text_features(tok["input_ids"].to(self.device),
                                               tok["attention_mask"].to(self.device)).double()
        return (emb / emb.norm(dim=-1, keepdim=True)).cpu()

    def scores(self, image_embeddings: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``scale * cos(image, its prompt)`` per image, float64."""
        return self.scale * (image_embeddings * self.text_embeddings(prompts)).sum(dim=-1)

    def score_images(self, pixel_values: torch.Tensor | Sequence[torch.Tensor], prompts: Sequence[str]) -> torch.Tensor:
        """The preference-scorer interface (evaluation/preference.py): per-image scores from pixels."""
        return self.scores(self.image_embeddings(pixel_values), prompts)


PICKSCORE_CONVENTION = ("PickScore (Kirstain et al. 2023): exp(logit_scale) * cos(image, prompt) with the PickScore_v1 "
                        "CLIP model, each image against its own prompt; the mean over the images")


def pickscore_scorer(model: Any, tokenizer: Any, device: torch.device | str = "cpu") -> ClipScorer:
    return ClipScorer(model, tokenizer, device, scale=float(model.logit_scale.detach().exp()))


def clip_score(per_image: Sequence[float] | torch.Tensor) -> float:
    """The folder's CLIP score from the per-image values: their mean, clamped at 0 (torchmetrics)."""
    values = torch.as_tensor(per_image, dtype=torch.float64)
    return max(float(values.mean()), 0.0)


class ClipImagePreprocess:
    """PIL image -> ``[3, S, S]`` float ``pixel_values`` with the model folder's image processor (picklable)."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, img: Any) -> torch.Tensor:
        return self.image_processor(images=[img], return_tensors="pt")["pixel_values"][0]


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
