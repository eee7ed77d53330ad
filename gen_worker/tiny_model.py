"""Write a tiny random-weight diffusers pipeline to a folder, offline.

    python -m gen_worker.tiny_model DIR --arch sd|wan

Used by the tests and the README demo: no hub download, a few MB on disk, seconds on a CPU.
Weights are random but deterministic (fixed torch seed), so two builds give the same model.
"""
import argparse
import json
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, T5Tokenizer

ARCHES = ("sd", "wan")


def _byte_level_characters() -> list[str]:
    """GPT-2's bytes_to_unicode table: the 256 characters a byte-level BPE vocab starts from."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def clip_tokenizer(workdir: str) -> "CLIPTokenizer":
    """A CLIP tokenizer with a byte-level vocabulary and no merges: encodes any text, Unicode included."""
    from transformers import CLIPTokenizer

    chars = _byte_level_characters()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    folder = os.path.join(workdir, "clip_tokenizer")
    os.makedirs(folder)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        # Without model_max_length the pipeline pads prompts to a huge length.
        json.dump({"model_max_length": 77}, f)
    return CLIPTokenizer.from_pretrained(folder)


def _t5_tokenizer() -> "T5Tokenizer":
    """A T5 tokenizer over single characters (plus their word-start forms): no sentencepiece file."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(32, 127)] + list("àáâäçèéêëìíîïñòóôöùúûüßæøåœ€£¥°²³µ·–—‘’“”…")
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + c, -1.0) for c in chars] + [(c, -2.0) for c in chars] + [("▁", -3.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_sd(folder: str) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = clip_tokenizer(workdir)
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        )
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), hidden_size=32,
            intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
        ))
        scheduler = DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        )
        pipe = StableDiffusionPipeline(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.save_pretrained(folder, safe_serialization=True)


def build_wan(folder: str) -> None:
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _t5_tokenizer()
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    ))
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)
    pipe.save_pretrained(folder, safe_serialization=True)


def build(folder: str, arch: str) -> None:
    if arch not in ARCHES:
        raise ValueError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHES)}")
    {"sd": build_sd, "wan": build_wan}[arch](folder)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="where to write the pipeline (created; must be empty or absent)")
    parser.add_argument("--arch", choices=ARCHES, default="sd", help="sd: Stable Diffusion; wan: Wan text-to-video (default: %(default)s)")
    args = parser.parse_args(argv)
    if os.path.isdir(args.folder) and os.listdir(args.folder):
        parser.error(f"{args.folder} exists and is not empty")
    build(args.folder, args.arch)
    print(f"wrote a tiny random-weight {args.arch} pipeline to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
