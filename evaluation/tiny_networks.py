"""Tiny random-weight stand-ins for the real feature networks, made offline (tests, `make demo-sweep`).

    python -m evaluation.tiny_networks DIR    # DIR/inception.pt, DIR/clip/, DIR/pickscore/, DIR/hps/, DIR/imagereward/

* `save_tiny_inception` writes a TorchScript file with the calling convention of NVIDIA's
  `inception-2015-12-05.pt` (`net(img, return_features=True)`, float 0..255, resized to 299 inside), so the
  metrics load it through exactly the code path of the real file (`torch.jit.load`).
* `save_tiny_clip` writes a transformers CLIP model folder (model, tokenizer, image processor) with
  `save_pretrained`; the tokenizer is the tiny pipelines' byte-level one (gen_worker/tiny_models/text.py).
* `save_tiny_hps` / `save_tiny_imagereward` write the real checkpoints' formats (an open_clip state dict in
  `HPS_v2.1_compressed.pt`, a BLIP + head state dict in `ImageReward.pt`) with random tensors of tiny shapes,
  so the scorers load them through the key mappings of evaluation/preference.py as they load the real files.
Their scores exercise the whole flow and move with the images, but mean nothing about image quality.
"""
from __future__ import annotations

import argparse
import json
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


def _randn(*shape: int, std: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape) * std


def _layer_norm(prefix: str, width: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 1.0 + _randn(width, std=0.05), f"{prefix}.bias": _randn(width, std=0.05)}


def _linear(prefix: str, n_in: int, n_out: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _randn(n_out, n_in, std=n_in ** -0.5), f"{prefix}.bias": _randn(n_out, std=0.05)}


def tiny_open_clip_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the keys and shapes of an open_clip ViT CLIP of model config ``cfg`` (ViT-H-14.json's
    format): what ``model.state_dict()`` of open_clip's ``CLIP`` holds."""
    torch.manual_seed(seed)
    v, t, embed = cfg["vision_cfg"], cfg["text_cfg"], cfg["embed_dim"]
    grid = v["image_size"] // v["patch_size"]
    sd: dict[str, torch.Tensor] = {
        "positional_embedding": _randn(t["context_length"], t["width"], std=0.02),
        "text_projection": _randn(t["width"], embed, std=t["width"] ** -0.5),
        "logit_scale": torch.tensor(4.6052),
        "token_embedding.weight": _randn(t["vocab_size"], t["width"], std=0.5),
        **_layer_norm("ln_final", t["width"]),
        "visual.class_embedding": _randn(v["width"], std=0.5),
        "visual.positional_embedding": _randn(grid * grid + 1, v["width"], std=0.1),
        "visual.proj": _randn(v["width"], embed, std=v["width"] ** -0.5),
        "visual.conv1.weight": _randn(v["width"], 3, v["patch_size"], v["patch_size"], std=0.1),
        **_layer_norm("visual.ln_pre", v["width"]), **_layer_norm("visual.ln_post", v["width"]),
    }
    for prefix, width, layers in (("transformer", t["width"], t["layers"]), ("visual.transformer", v["width"], v["layers"])):
        for i in range(layers):
            b = f"{prefix}.resblocks.{i}"
            sd.update({f"{b}.attn.in_proj_weight": _randn(3 * width, width, std=width ** -0.5),
                       f"{b}.attn.in_proj_bias": _randn(3 * width, std=0.05),
                       **_linear(f"{b}.attn.out_proj", width, width), **_layer_norm(f"{b}.ln_1", width),
                       **_layer_norm(f"{b}.ln_2", width), **_linear(f"{b}.mlp.c_fc", width, 4 * width),
                       **_linear(f"{b}.mlp.c_proj", 4 * width, width)})
    return sd


def save_tiny_hps(folder: str, seed: int = 3) -> str:
    """A tiny HPS folder: ``HPS_v2.1_compressed.pt`` (``{"state_dict": open_clip state dict}``, as the real file),
    ``open_clip_config.json`` (its tiny shape; the real folder needs none: ViT-H-14) and a CLIP tokenizer."""
    from evaluation.preference import HPS_FILE, OPEN_CLIP_CONFIG
    from gen_worker.tiny_models.text import clip_tokenizer

    os.makedirs(folder, exist_ok=True)
    tokenizer = clip_tokenizer(folder)
    tokenizer.save_pretrained(folder)
    cfg = {"embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 2, "width": 16, "head_width": 8, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": len(tokenizer), "width": 16, "heads": 2, "layers": 2}}
    with open(os.path.join(folder, OPEN_CLIP_CONFIG), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    torch.save({"state_dict": tiny_open_clip_state_dict(cfg, seed)}, os.path.join(folder, HPS_FILE))
    return folder


TINY_BERT_WORDS = ["a", "an", "the", "of", "on", "in", "with", "square", "field", "number", "red", "blue", "green",
                   "cat", "dog", "photo", ","]


def tiny_imagereward_state_dict(vision_width: int, vision_layers: int, patch: int, image_size: int,
                                med: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the keys and shapes of ImageReward.pt (BLIP ViT ``blip.visual_encoder``, BLIP's BERT
    ``blip.text_encoder`` with cross-attention, the ``mlp.layers`` head), tiny, plus an unused BLIP projection."""
    torch.manual_seed(seed)
    grid = image_size // patch
    v = "blip.visual_encoder"
    sd: dict[str, torch.Tensor] = {
        f"{v}.cls_token": _randn(1, 1, vision_width, std=0.5), f"{v}.pos_embed": _randn(1, grid * grid + 1, vision_width),
        f"{v}.patch_embed.proj.weight": _randn(vision_width, 3, patch, patch, std=0.1),
        f"{v}.patch_embed.proj.bias": _randn(vision_width, std=0.05), **_layer_norm(f"{v}.norm", vision_width),
        **_linear("blip.vision_proj", vision_width, 4),  # in the real file too; not used by the score
    }
    for i in range(vision_layers):
        b = f"{v}.blocks.{i}"
        sd.update({**_layer_norm(f"{b}.norm1", vision_width), **_layer_norm(f"{b}.norm2", vision_width),
                   **_linear(f"{b}.attn.qkv", vision_width, 3 * vision_width),
                   **_linear(f"{b}.attn.proj", vision_width, vision_width),
                   **_linear(f"{b}.mlp.fc1", vision_width, 4 * vision_width),
                   **_linear(f"{b}.mlp.fc2", 4 * vision_width, vision_width)})
    t, h = "blip.text_encoder", med["hidden_size"]
    sd.update({f"{t}.embeddings.word_embeddings.weight": _randn(med["vocab_size"], h, std=0.5),
               f"{t}.embeddings.position_embeddings.weight": _randn(med["max_position_embeddings"], h, std=0.1),
               f"{t}.embeddings.position_ids": torch.arange(med["max_position_embeddings"])[None],
               **_layer_norm(f"{t}.embeddings.LayerNorm", h)})
    for i in range(med["num_hidden_layers"]):
        b = f"{t}.encoder.layer.{i}"
        for att, kv_width in (("attention", h), ("crossattention", vision_width)):
            sd.update({**_linear(f"{b}.{att}.self.query", h, h), **_linear(f"{b}.{att}.self.key", kv_width, h),
                       **_linear(f"{b}.{att}.self.value", kv_width, h), **_linear(f"{b}.{att}.output.dense", h, h),
                       **_layer_norm(f"{b}.{att}.output.LayerNorm", h)})
        sd.update({**_linear(f"{b}.intermediate.dense", h, med["intermediate_size"]),
                   **_linear(f"{b}.output.dense", med["intermediate_size"], h),
                   **_layer_norm(f"{b}.output.LayerNorm", h)})
    width = h
    for index, n in zip((0, 2, 4, 6, 7), (1024, 128, 64, 16, 1)):
        sd.update(_linear(f"mlp.layers.{index}", width, n))
        width = n
    return sd


def save_tiny_imagereward(folder: str, seed: int = 4) -> str:
    """A tiny ImageReward folder: ``ImageReward.pt`` (state dict), ``med_config.json`` (BLIP's BertConfig, tiny)
    and a BERT tokenizer (a tiny word-piece vocabulary; the real folder: bert-base-uncased's)."""
    from transformers import BertTokenizer

    from evaluation.preference import IMAGEREWARD_FILE, IMAGEREWARD_MED_CONFIG

    os.makedirs(folder, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_BERT_WORDS,
             *[c for c in "abcdefghijklmnopqrstuvwxyz0123456789"], *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]]
    vocab_file = os.path.join(folder, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file, model_max_length=512).save_pretrained(folder)
    med = {"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 32, "intermediate_size": 64,
           "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 2,
           "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": len(vocab) + 2,
           "encoder_width": 128, "add_cross_attention": True}  # + 2: BLIP adds [DEC] and [ENC] to the vocabulary
    with open(os.path.join(folder, IMAGEREWARD_MED_CONFIG), "w", encoding="utf-8") as f:
        json.dump(med, f, indent=1)
    # ViT width 128: two heads of 64, as BLIP's ViTs have (the loader infers heads = width // 64)
    torch.save(tiny_imagereward_state_dict(128, 2, 8, 32, med, seed), os.path.join(folder, IMAGEREWARD_FILE))
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.tiny_networks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="writes FOLDER/inception.pt, FOLDER/clip/, FOLDER/pickscore/, FOLDER/hps/ and "
                                       "FOLDER/imagereward/")
    args = parser.parse_args(argv)
    os.makedirs(args.folder, exist_ok=True)
    save_tiny_inception(os.path.join(args.folder, "inception.pt"))
    save_tiny_clip(os.path.join(args.folder, "clip"))
    save_tiny_pickscore(os.path.join(args.folder, "pickscore"))
    save_tiny_hps(os.path.join(args.folder, "hps"))
    save_tiny_imagereward(os.path.join(args.folder, "imagereward"))
    print(f"tiny random-weight Inception, CLIP, PickScore, HPS and ImageReward in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
