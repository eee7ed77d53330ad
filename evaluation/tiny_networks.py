"""Tiny random-weight stand-ins for the real feature networks, made offline (tests, `make demo-sweep`).

    python -m evaluation.tiny_networks DIR    # DIR/inception.pt, DIR/clip/ and DIR/pickscore/

* `save_tiny_inception` writes a TorchScript file with the calling convention of NVIDIA's
  `inception-2015-12-05.pt` (`net(img, return_features=True)`, float 0..255, resized to 299 inside), so the
  metrics load it through exactly the code path of the real file (`torch.jit.load`).
* `save_tiny_clip` writes a transformers CLIP model folder (model, tokenizer, image processor) with
  `save_pretrained`; the tokenizer is the tiny pipelines' byte-level one (gen_worker/tiny_models/text.py).
Their scores exercise the whole flow and move with the images, but mean nothing about image quality.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F


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


def save_tiny_clip(folder: str, seed: int = 0) -> str:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor
    from gen_worker.tiny_models.text import clip_tokenizer

    os.makedirs(folder, exist_ok=True)
    tokenizer = clip_tokenizer(folder)
    image_processor = ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
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


def save_tiny_pickscore(folder: str, seed: int = 2) -> str:
    """A tiny PickScore folder: a CLIP model (PickScore_v1 is one) with its tokenizer and image processor in one
    folder, as the real one is saved; its learned temperature ``logit_scale`` is what PickScore scales by."""
    return save_tiny_clip(folder, seed=seed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.tiny_networks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="writes FOLDER/inception.pt, FOLDER/clip/ and FOLDER/pickscore/")
    args = parser.parse_args(argv)
    os.makedirs(args.folder, exist_ok=True)
    save_tiny_inception(os.path.join(args.folder, "inception.pt"))
    save_tiny_clip(os.path.join(args.folder, "clip"))
    save_tiny_pickscore(os.path.join(args.folder, "pickscore"))
    print(f"tiny random-weight Inception, CLIP and PickScore in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
