"""Preference scorers -- PickScore, HPS v2.1, ImageReward -- from local folders, through one code path:
each gives a picklable image preprocess (run in the DataLoader workers) and ``score_images(pixel_values,
prompts)`` -> one float64 score per image against its own prompt. Only torch and transformers are needed: the
HPS (open_clip) and ImageReward (BLIP) checkpoints are mapped onto transformers' CLIP and BLIP modules.

* PickScore (Kirstain et al. 2023): ``exp(logit_scale) * cos``, a transformers CLIP folder (clip_score.py).
* HPS v2.1 (Wu et al. 2023): open_clip ViT-H-14 fine-tuned, ``HPS_v2.1_compressed.pt`` (``{"state_dict": ...}``
  of the open_clip model). Score ``100 * cos(image, prompt)``, the HPSv2 benchmark's (hpsv2/evaluation.py;
  ``hpsv2.score()`` returns the cosine itself, ours / 100). Preprocess as hpsv2 ``img_score.py``
  (``light_augmentation=True`` -> ``ResizeMaxSize``): RGB to float, longest side resized to 224 (torch bicubic
  with antialias on the float tensor), zero padding to a square (before normalising), OpenAI CLIP mean/std.
  Differences from the hpsv2 package, both small: it runs under fp16 autocast (we compute in the model's float32),
  and it tokenises with open_clip's tokenizer (ftfy text fixing) where we use the folder's transformers CLIP
  tokenizer of the same vocabulary (the same ids for ordinary text; context 77, end-of-text kept when cut).
* ImageReward v1.0 (Xu et al. 2023): BLIP ViT-L/16 + BERT-base with cross-attention to the image, the [CLS]
  state through a linear 768-1024-128-64-16-1 head (no activations: ImageReward.py comments them out),
  normalised by the constants of ImageReward.py. Prompt: bert-base-uncased tokens, padded/cut to 35.
  Preprocess: shortest side to 224 (PIL bicubic), centre crop 224, OpenAI CLIP mean/std.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.errors import EvaluationError
from evaluation.scores_file import PREFERENCE_SCORES

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, used by open_clip and ImageReward alike
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

NAMES = PREFERENCE_SCORES  # score columns; flag --NAME_model


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def _to_float(img: Any) -> torch.Tensor:
    """PIL RGB -> ``[3, H, W]`` float32 in [0, 1] (torchvision's ToTensor)."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


# --- HPS v2.1 ------------------------------------------------------------------------------------------------

HPS_FILE = "HPS_v2.1_compressed.pt"
HPS_URL = "https://huggingface.co/xswu/HPSv2 (file HPS_v2.1_compressed.pt)"
HPS_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
OPEN_CLIP_CONFIG = "open_clip_config.json"
# open_clip's model_configs/ViT-H-14.json (as in hpsv2/src/open_clip): used when the folder has no open_clip_config.json
VIT_H_14 = {"embed_dim": 1024,
            "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}
HPS_CONVENTION = ("HPS v2.1 (Wu et al. 2023): 100 * cos(image, prompt) with the HPS_v2.1 open_clip ViT-H-14, as the "
                  "HPSv2 benchmark (hpsv2.score() returns the cosine, ours / 100); each image against its own prompt; "
                  "the mean over the images")
HPS_RESIZE = ("hpsv2 img_score.py: longest side to 224 (torch bicubic, antialias, on the float image), zero padding "
              "to 224x224 (aspect kept, nothing cropped), OpenAI CLIP mean/std")


class HpsPreprocess:
    """PIL image -> ``[3, S, S]``: hpsv2's ``ResizeMaxSize`` (longest side to S, centred zero padding), normalised.
    An image whose longest side already is S is padded too (hpsv2 would hand the network a non-square tensor)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Any) -> torch.Tensor:
        x = _to_float(img)
        h, w = x.shape[1:]
        scale = self.size / float(max(h, w))
        if scale != 1.0:
            nh, nw = round(h * scale), round(w * scale)
            x = F.interpolate(x[None], size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)[0]
        pad_h, pad_w = self.size - x.shape[1], self.size - x.shape[2]
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
        return _normalise(x)


_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
          "attn.out_proj": "self_attn.out_proj"}
_TOP = {"logit_scale": "logit_scale", "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias"}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_RESBLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def clip_state_dict_from_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip ViT CLIP state dict with the key names and layouts of transformers' ``CLIPModel``: the
    fused attention ``in_proj`` is split into q/k/v, the projections (``x @ proj``) become Linear weights."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _TOP:
            out[_TOP[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
        elif (m := _RESBLOCK.match(key)) is not None:
            tower = "vision_model" if m.group(1) else "text_model"
            prefix, rest = f"{tower}.encoder.layers.{m.group(2)}.", m.group(3)
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{name}.{kind}"] = part.contiguous()
            elif rest == "attn_mask" or key == "attn_mask":
                continue  # the causal mask buffer some open_clip versions save; CLIPModel builds its own
            else:
                module, _, param = rest.rpartition(".")
                if module not in _BLOCK:
                    raise EvaluationError(f"unexpected open_clip key {key} in the HPS checkpoint (not a ViT CLIP)")
                out[f"{prefix}{_BLOCK[module]}.{param}"] = value
        elif key == "attn_mask":
            continue
        else:
            raise EvaluationError(f"unexpected open_clip key {key} in the HPS checkpoint (not a ViT CLIP)")
    return out


def clip_config_from_open_clip(cfg: dict[str, Any], eos_token_id: int, pad_token_id: int) -> Any:
    """transformers ``CLIPConfig`` of an open_clip ViT model config (model_configs/*.json format)."""
    from transformers import CLIPConfig

    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    return CLIPConfig(
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=t["width"], intermediate_size=4 * t["width"],
                         num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                         max_position_embeddings=t["context_length"], hidden_act="gelu",  # nn.GELU, no quick_gelu
                         bos_token_id=0, eos_token_id=eos_token_id, pad_token_id=pad_token_id),
        vision_config=dict(hidden_size=v["width"], intermediate_size=4 * v["width"], num_hidden_layers=v["layers"],
                           num_attention_heads=v["width"] // v["head_width"], image_size=v["image_size"],
                           patch_size=v["patch_size"], hidden_act="gelu"),
        projection_dim=cfg["embed_dim"],
    )


def _load_checkpoint(path: str, what: str) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EvaluationError(f"cannot read the {what} checkpoint {path}: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise EvaluationError(f"{path} is not a {what} checkpoint (no state dict in it)")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Every parameter from the file (buffers such as position_ids are the model's own), nothing left over."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise EvaluationError(f"{path} does not fit the expected architecture: {str(exc).splitlines()[-1].strip()}") \
            from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise EvaluationError(f"{path} does not fit the expected architecture: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")


def _tokenizer(folder: str, what: str, get_it: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(f"cannot load the {what} tokenizer from {folder}: {first} -- {get_it}") from None


def check_hps_folder(folder: str | None) -> None:
    if not folder or not os.path.isfile(os.path.join(folder, HPS_FILE)) \
            or not os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        raise EvaluationError(
            f"HPS v2.1 folder not found (needs {HPS_FILE} and tokenizer_config.json): {folder} -- put {HPS_FILE} from "
            f"{HPS_URL} in DIR and, on a machine with internet, run AutoTokenizer.from_pretrained('{HPS_TOKENIZER}')"
            f".save_pretrained(DIR); pass DIR with --hps_model")


def load_hps_model(folder: str) -> tuple[Any, Any, dict[str, Any]]:
    """``(CLIPModel with the HPS weights, tokenizer, open_clip config)`` from a checked HPS folder."""
    from transformers import CLIPModel

    cfg_path = os.path.join(folder, OPEN_CLIP_CONFIG)
    cfg = VIT_H_14
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    tokenizer = _tokenizer(folder, "HPS", f"save the {HPS_TOKENIZER} tokenizer there")
    config = clip_config_from_open_clip(cfg, tokenizer.eos_token_id, tokenizer.pad_token_id or 0)
    path = os.path.join(folder, HPS_FILE)
    model = CLIPModel(config).eval()
    _load_strict(model, clip_state_dict_from_open_clip(_load_checkpoint(path, "HPS")), path)
    return model, tokenizer, cfg


# --- ImageReward -------------------------------------------------------------------------------------------

IMAGEREWARD_FILE = "ImageReward.pt"
IMAGEREWARD_MED_CONFIG = "med_config.json"
IMAGEREWARD_URL = "https://huggingface.co/THUDM/ImageReward (files ImageReward.pt and med_config.json)"
IMAGEREWARD_MEAN = 0.16717362830052426  # ImageReward.py (v1.0): the head's output is normalised by these
IMAGEREWARD_STD = 1.0333394966054072
IMAGEREWARD_MAX_TOKENS = 35  # ImageReward.py: padding="max_length", truncation, max_length=35
IMAGEREWARD_SIZE = 224
IMAGEREWARD_CONVENTION = ("ImageReward v1.0 (Xu et al. 2023): BLIP ViT-L image tokens cross-attended by the prompt's "
                          "BERT encoder, [CLS] through the linear head, (r - 0.16717) / 1.03334 as ImageReward.py; each "
                          "image against its own prompt (cut to 35 tokens); the mean over the images")
IMAGEREWARD_RESIZE = "ImageReward.py: shortest side to 224 (PIL bicubic), centre crop 224x224, OpenAI CLIP mean/std"
_HEAD_SIZES = (1024, 128, 64, 16, 1)


class ImageRewardPreprocess:
    """PIL image -> ``[3, S, S]`` as torchvision ``Resize(S, BICUBIC)`` + ``CenterCrop(S)`` on a PIL image."""

    def __init__(self, size: int = IMAGEREWARD_SIZE):
        self.size = size

    def __call__(self, img: Any) -> torch.Tensor:
        from PIL import Image

        img = img.convert("RGB")
        w, h = img.size
        s = self.size
        if (w, h) != (s, s):  # torchvision: the short side to s, the long side int(s * long / short)
            size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
            img = img.resize(size, Image.Resampling.BICUBIC)
            w, h = img.size
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return _normalise(_to_float(img.crop((left, top, left + s, top + s))))


class ImageRewardNet(torch.nn.Module):
    """BLIP's image encoder and cross-attending text encoder (transformers' BLIP modules) and ImageReward's head."""

    def __init__(self, vision_config: Any, text_config: Any):
        from transformers import BlipTextModel, BlipVisionModel

        super().__init__()
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        layers: list[torch.nn.Module] = []
        width = text_config.hidden_size
        for i, n in enumerate(_HEAD_SIZES):  # Linear, Dropout, ... as ImageReward's MLP (same indices)
            layers.append(torch.nn.Linear(width, n))
            if i < 3:
                layers.append(torch.nn.Dropout(0.0))
            width = n
        self.mlp = torch.nn.Module()
        self.mlp.layers = torch.nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image = self.vision(pixel_values=pixel_values).last_hidden_state
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image,
                         encoder_attention_mask=torch.ones(image.shape[:-1], dtype=torch.long, device=image.device),
                         is_decoder=False).last_hidden_state
        reward = self.mlp.layers(text[:, 0, :].float())[:, 0]
        return (reward - IMAGEREWARD_MEAN) / IMAGEREWARD_STD


_VIT = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv", "attn.proj": "self_attn.projection",
        "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_VIT_TOP = {"cls_token": "vision.embeddings.class_embedding", "pos_embed": "vision.embeddings.position_embedding",
            "patch_embed.proj.weight": "vision.embeddings.patch_embedding.weight",
            "patch_embed.proj.bias": "vision.embeddings.patch_embedding.bias",
            "norm.weight": "vision.post_layernorm.weight", "norm.bias": "vision.post_layernorm.bias"}
_VIT_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def imagereward_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ImageReward.pt's keys as :class:`ImageRewardNet`'s. The text encoder's names already are transformers'
    (its BLIP port keeps med.py's). Keys of other BLIP parts (projections, ITM head) are not used for the score
    and are left out, as ImageReward's own ``load_state_dict(strict=False)`` leaves the unused ones."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            rest = key.removeprefix("blip.visual_encoder.")
            if rest in _VIT_TOP:
                out[_VIT_TOP[rest]] = value
            elif (m := _VIT_BLOCK.match(rest)) and m.group(2) in _VIT:
                out[f"vision.encoder.layers.{m.group(1)}.{_VIT[m.group(2)]}.{m.group(3)}"] = value
            else:
                raise EvaluationError(f"unexpected key {key} in the ImageReward checkpoint (not BLIP's ViT)")
        elif key.startswith("blip.text_encoder."):
            if not key.endswith("position_ids"):
                out["text." + key.removeprefix("blip.text_encoder.")] = value
        elif key.startswith("mlp.layers."):
            out[key] = value
    return out


def check_imagereward_folder(folder: str | None) -> None:
    needed = (IMAGEREWARD_FILE, IMAGEREWARD_MED_CONFIG, "tokenizer_config.json")
    if not folder or not all(os.path.isfile(os.path.join(folder, n)) for n in needed):
        raise EvaluationError(
            f"ImageReward folder not found (needs {', '.join(needed)}): {folder} -- put {IMAGEREWARD_FILE} and "
            f"{IMAGEREWARD_MED_CONFIG} from {IMAGEREWARD_URL} in DIR and, on a machine with internet, run "
            f"AutoTokenizer.from_pretrained('bert-base-uncased').save_pretrained(DIR); pass DIR with --imagereward_model")


def load_imagereward_model(folder: str) -> tuple[ImageRewardNet, Any]:
    """``(ImageRewardNet with the checkpoint's weights, tokenizer)`` from a checked ImageReward folder. The text
    encoder's shape comes from med_config.json (BLIP's BertConfig), the ViT's from the checkpoint (BLIP's ViTs
    have 64-wide heads, LayerNorm eps 1e-6)."""
    from transformers import BlipTextConfig, BlipVisionConfig

    tokenizer = _tokenizer(folder, "ImageReward", "save the bert-base-uncased tokenizer there")
    path = os.path.join(folder, IMAGEREWARD_FILE)
    state = imagereward_state_dict(_load_checkpoint(path, "ImageReward"))
    with open(os.path.join(folder, IMAGEREWARD_MED_CONFIG), encoding="utf-8") as f:
        med = json.load(f)
    try:
        patch = state["vision.embeddings.patch_embedding.weight"]
        positions = state["vision.embeddings.position_embedding"].shape[1]
        fc1 = state["vision.encoder.layers.0.mlp.fc1.weight"]
    except KeyError as exc:
        raise EvaluationError(f"{path} is not an ImageReward checkpoint (no {exc.args[0]})") from None
    width = patch.shape[0]
    vision = BlipVisionConfig(
        hidden_size=width, intermediate_size=fc1.shape[0], num_attention_heads=width // 64,
        num_hidden_layers=len({k.split(".")[3] for k in state if k.startswith("vision.encoder.layers.")}),
        patch_size=patch.shape[-1], image_size=int(round((positions - 1) ** 0.5)) * patch.shape[-1],
        layer_norm_eps=1e-6, hidden_act="gelu")
    text = BlipTextConfig(
        vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], intermediate_size=med["intermediate_size"],
        num_hidden_layers=med["num_hidden_layers"], num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"], layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        hidden_act=med.get("hidden_act", "gelu"), pad_token_id=med.get("pad_token_id", 0),
        encoder_hidden_size=width, is_decoder=True,  # is_decoder: the layers get their cross-attention
        bos_token_id=None, sep_token_id=tokenizer.sep_token_id)  # no generation: BLIP's [DEC] is not used
    model = ImageRewardNet(vision, text).eval()
    _load_strict(model, state, path)
    return model, tokenizer


class ImageRewardScorer:
    def __init__(self, model: ImageRewardNet, tokenizer: Any, device: torch.device | str = "cpu"):
        self.model, self.tokenizer, self.device = model.to(device), tokenizer, device

    def score_images(self, pixel_values: torch.Tensor | Sequence[torch.Tensor], prompts: Sequence[str]) -> torch.Tensor:
        batch = pixel_values if isinstance(pixel_values, torch.Tensor) else torch.stack(list(pixel_values))
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=IMAGEREWARD_MAX_TOKENS,
                             return_tensors="pt")
        with torch.inference_mode():
            out = self.model(batch.float().to(self.device), tok["input_ids"].to(self.device),
                             tok["attention_mask"].to(self.device))
        return out.double().cpu()


# --- one code path for all three -------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """A preference scorer ready to run: ``scorer.score_images``, the per-image ``preprocess`` (picklable) and
    what metrics.json records of it (protocol)."""
    scorer: Any
    preprocess: Callable[[Any], torch.Tensor]
    record: dict[str, Any]


def check_folder(name: str, folder: str | None) -> None:
    """One-line refusal of a missing or incomplete weight folder (before any image is read)."""
    from evaluation.weights import check_pickscore_folder

    {"pickscore": check_pickscore_folder, "hps": check_hps_folder, "imagereward": check_imagereward_folder}[name](folder)


def model_record(name: str, folder: str, sha: str | None, score: str, resize: str, **extra: Any) -> dict[str, Any]:
    """What metrics.json records of a scoring model loaded from a local folder (``model_is``: weights.identify)."""
    from evaluation.weights import identify

    return {"model": os.path.basename(os.path.normpath(folder)), "model_path": os.path.abspath(folder),
            "model_sha256": sha, "model_is": identify(name, sha), "score": score, "resize": resize, **extra}


def _file_record(name: str, folder: str, file: str, score: str, resize: str, **extra: Any) -> dict[str, Any]:
    from evaluation.weights import sha256_file

    return model_record(name, folder, sha256_file(os.path.join(folder, file)), score, resize, weights_file=file,
                        **extra)


def load(name: str, folder: str, device: torch.device | str = "cpu") -> Loaded:
    """Load preference scorer ``name`` (one of :data:`NAMES`) from its checked local folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evaluation import clip_score as cliplib

    check_folder(name, folder)
    if name == "pickscore":
        from evaluation.weights import load_clip

        model, tokenizer, processor = load_clip(folder, device)
        scorer = cliplib.pickscore_scorer(model, tokenizer, device)
        from evaluation.weights import folder_weights_sha256

        record = model_record("pickscore", folder, folder_weights_sha256(folder), cliplib.PICKSCORE_CONVENTION,
                              cliplib.describe_preprocessing(processor), scale=scorer.scale)
        return Loaded(scorer, cliplib.ClipImagePreprocess(processor), record)
    if name == "hps":
        model, tokenizer, cfg = load_hps_model(folder)
        scorer = cliplib.ClipScorer(model.to(device), tokenizer, device, scale=100.0)
        record = _file_record("hps", folder, HPS_FILE, HPS_CONVENTION, HPS_RESIZE,
                         architecture=("open_clip ViT-H-14" if cfg == VIT_H_14 else f"open_clip ({OPEN_CLIP_CONFIG})"),
                         max_tokens=cfg["text_cfg"]["context_length"])
        return Loaded(scorer, HpsPreprocess(cfg["vision_cfg"]["image_size"]), record)
    if name == "imagereward":
        net, tokenizer = load_imagereward_model(folder)
        record = _file_record("imagereward", folder, IMAGEREWARD_FILE, IMAGEREWARD_CONVENTION,
                         IMAGEREWARD_RESIZE, max_tokens=IMAGEREWARD_MAX_TOKENS)
        size = net.vision.config.image_size
        return Loaded(ImageRewardScorer(net, tokenizer, device), ImageRewardPreprocess(size), record)
    raise ValueError(f"unknown preference scorer {name!r}")
