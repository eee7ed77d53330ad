"""Tokenizers built offline from a vocabulary written in code, and tiny random text encoders.

Every tokenizer encodes any text (Unicode included): byte-level or byte-fallback vocabularies,
or single characters with an unknown token.
"""
import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import (CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, Gemma2Model,
                              GemmaTokenizer, T5EncoderModel, T5Tokenizer, UMT5EncoderModel)


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
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        # Without model_max_length the pipeline pads prompts to a huge length.
        json.dump({"model_max_length": 77}, f)
    return CLIPTokenizer.from_pretrained(folder)


def t5_tokenizer() -> "T5Tokenizer":
    """A T5 tokenizer over single characters (plus their word-start forms): no sentencepiece file."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(32, 127)] + list("àáâäçèéêëìíîïñòóôöùúûüßæøåœ€£¥°²³µ·–—‘’“”…")
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + c, -1.0) for c in chars] + [(c, -2.0) for c in chars] + [("▁", -3.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def gemma_tokenizer() -> "GemmaTokenizer":
    """A Gemma tokenizer over printable ASCII with byte fallback (<0x00>..<0xFF>) for everything else."""
    from transformers import GemmaTokenizer

    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [chr(c) for c in range(33, 127)]
    return GemmaTokenizer(vocab={t: n for n, t in enumerate(tokens)}, merges=[])


def clip_encoder(tokenizer: "CLIPTokenizer", hidden: int = 32, projection: bool = False
                 ) -> "CLIPTextModel | CLIPTextModelWithProjection":
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), hidden_size=hidden,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
        **({"projection_dim": hidden} if projection else {}),
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5_encoder(tokenizer: "T5Tokenizer", d_model: int = 32, umt5: bool = False
               ) -> "T5EncoderModel | UMT5EncoderModel":
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    settings = dict(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )
    return UMT5EncoderModel(UMT5Config(**settings)) if umt5 else T5EncoderModel(T5Config(**settings))


def gemma2_encoder(tokenizer: "GemmaTokenizer", hidden: int = 8) -> "Gemma2Model":
    from transformers import Gemma2Config, Gemma2Model

    return Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, head_dim=4, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    ))
