"""Wan text-to-video: Wan 2.1 (wan) and Wan 2.2 A14B (wan22: a high-noise and a low-noise transformer)."""
from typing import Any

from gen_worker.tiny_models.text import t5_encoder, t5_tokenizer

# Wan 2.2 A14B text-to-video: `transformer` below boundary_ratio * 1000 timesteps, `transformer_2` after.
WAN22_BOUNDARY_RATIO = 0.875


def _wan_transformer() -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )


def _build(folder: str, two_stages: bool) -> None:
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    tokenizer = t5_tokenizer()
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    text_encoder = t5_encoder(tokenizer, umt5=True)
    transformer = _wan_transformer()
    stages: dict[str, Any] = {"transformer_2": _wan_transformer(), "boundary_ratio": WAN22_BOUNDARY_RATIO} if two_stages else {}
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer, **stages)
    pipe.save_pretrained(folder, safe_serialization=True)


def build_wan(folder: str) -> None:
    _build(folder, two_stages=False)


def build_wan22(folder: str) -> None:
    _build(folder, two_stages=True)
