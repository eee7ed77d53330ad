"""Tiny, random-weight stand-ins for the real feature networks, and tiny images, made on disk by the tests.

* :func:`save_tiny_inception` writes a TorchScript file with the calling convention of NVIDIA's
  ``inception-2015-12-05.pt`` (``net(img, return_features=True)``, float 0..255, resized to 299 inside), so the
  metrics CLI loads it through exactly the code path it uses for the real file (``torch.jit.load``).
* :func:`save_tiny_clip` writes a transformers CLIP model folder (model, tokenizer, image processor) with
  ``save_pretrained``, built offline: vocab of the 2 special tokens + GPT-2's 256 byte characters (+ ``</w>``).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter


class _TinyInception(torch.nn.Module):
    def __init__(self, num_features: int = 16):
        super().__init__()
        self.feature_scale = 100.0  # random tiny features are small; scaled so that FIDs land in a realistic range
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, kernel_size=7, stride=4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, num_features, kernel_size=5, stride=4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.output = torch.nn.Linear(num_features, 10)

    def forward(
        self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False
    ) -> torch.Tensor:
        x = img.to(torch.float32)
        if x.shape[2] != 299 or x.shape[3] != 299:
            x = F.interpolate(x, size=[299, 299], mode="bilinear", align_corners=False)
        x = (x - 128.0) / 128.0
        features = self.layers(x).reshape(x.shape[0], -1) * self.feature_scale
        if return_features:
            return features
        return torch.softmax(self.output(features), dim=1)


def save_tiny_inception(path: str, num_features: int = 16, seed: int = 0) -> str:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_TinyInception(num_features).eval()).save(path)
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (as used by the CLIP BPE tokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def save_tiny_clip(folder: str, seed: int = 0) -> str:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    os.makedirs(folder, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab_file, merges_file = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(merges_file, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file, merges_file, model_max_length=77)
    image_processor = ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
            patch_size=8,
        ),
        projection_dim=8,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        # Random CLIPs give cosines around 0, and the mean may clamp to 0 (it depends on the transformers
        # version's init). A shared component in both towers' final layer-norm bias, projected the same way,
        # makes every cosine clearly positive while images and prompts still move it.
        shared = torch.ones(16) / 4.0  # unit vector
        model.vision_model.post_layernorm.bias.copy_(4.0 * shared)
        model.text_model.final_layer_norm.bias.copy_(4.0 * shared)
        model.text_projection.weight.copy_(model.visual_projection.weight)
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def smooth_image(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A random, mostly low-frequency RGB image (a blurred random field plus a bright square)."""
    low = rng.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
    arr = np.array(img)
    x, y, s = rng.integers(0, size // 2, size=3)
    arr[y : y + s // 2 + 4, x : x + s // 2 + 4] = rng.integers(150, 256, size=3)
    return Image.fromarray(arr)


def noisy(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, sigma, size=(img.size[1], img.size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def blurred(img: Image.Image, radius: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def write_generated(folder: str, images: list[Image.Image], image_ids: list[str], seeds: list[int]) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for img, image_id, seed in zip(images, image_ids, seeds):
        path = os.path.join(folder, f"{image_id}_seed{seed}.png")
        img.save(path)
        paths.append(path)
    return paths


def make_sweep(root, pipe, model: str, guidance_scales: list[str], rows) -> str:
    """A sweep folder as the contract says: one plain run per guidance scale in root/sweep/<name>/ (same
    prompts and seeds), and sweep.json written with the shared writer. Returns the sweep's top folder."""
    from conftest import run_worker_in_process
    from gen_worker.output.sweep_record import configuration_name, write_sweep_record

    top = os.path.join(str(root), "sweep")
    configurations = []
    for g in guidance_scales:
        overrides = {"guidance_scale": g}
        name = configuration_name(overrides)
        run_worker_in_process(root, os.path.join("sweep", name), pipe, model, rows=rows, num_inference_steps=2,
                              guidance_scale=float(g))
        configurations.append({"name": name, "folder": name, "overrides": overrides})
    write_sweep_record(top, {"guidance_scale": list(guidance_scales)}, configurations)
    return top
