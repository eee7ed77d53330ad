"""Transformer image families: SD3 (sd3), Flux (flux), PixArt-Sigma (pixart), Sana (sana).

PixArt and Sana bin the requested size to the nearest of their aspect-ratio sizes (256 px and up),
make the image there and resize it: their VAEs here shrink 8x and 32x so that stays a few latents.
"""
import tempfile

from gen_worker.tiny_models.text import (clip_encoder, clip_tokenizer, gemma2_encoder, gemma_tokenizer,
                                         t5_encoder, t5_tokenizer)
from gen_worker.tiny_models.unet import sd_vae

# What SD3's and Flux's VAEs record: the pipelines read both.
FLOW_VAE = {"shift_factor": 0.0609, "scaling_factor": 1.5035}


def build_sd3(folder: str) -> None:
    """Two CLIP encoders with projections + T5; CLIP embeddings are padded up to T5's width."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = clip_tokenizer(workdir)
        tokenizer_3 = t5_tokenizer()
        torch.manual_seed(0)
        text_encoder = clip_encoder(tokenizer, hidden=32, projection=True)
        text_encoder_2 = clip_encoder(tokenizer, hidden=32, projection=True)
        text_encoder_3 = t5_encoder(tokenizer_3, d_model=64)  # at least the two CLIP widths added
        transformer = SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
            num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
        )
        pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=sd_vae(**FLOW_VAE),
            text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer,
            text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
        )
        pipe.save_pretrained(folder, safe_serialization=True)


def build_flux(folder: str) -> None:
    """Flux.1-dev-like (guidance embedding): pooled CLIP + T5; latents packed 2x2 (in_channels = 4 x 4)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = clip_tokenizer(workdir)
        tokenizer_2 = t5_tokenizer()
        torch.manual_seed(0)
        text_encoder = clip_encoder(tokenizer, hidden=32)
        text_encoder_2 = t5_encoder(tokenizer_2, d_model=32)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8),
        )
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(), vae=sd_vae(**FLOW_VAE), text_encoder=text_encoder,
            tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
        )
        pipe.save_pretrained(folder, safe_serialization=True)


def build_pixart(folder: str) -> None:
    """PixArt-Sigma: T5 only; transformer sample_size 32 selects the 256-px aspect-ratio bins."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    tokenizer = t5_tokenizer()
    torch.manual_seed(0)
    text_encoder = t5_encoder(tokenizer, d_model=32)
    transformer = PixArtTransformer2DModel(
        sample_size=32, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6,
    )
    vae = AutoencoderKL(  # 4 blocks: 256 px -> 32 latents, as the transformer's sample_size
        block_out_channels=(8, 8, 8, 8), norm_num_groups=4, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.save_pretrained(folder, safe_serialization=True)


def build_sana(folder: str) -> None:
    """Sana: Gemma-2 text encoder, deep-compression VAE (32x); sample_size 16 selects the 512-px bins."""
    import torch
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel

    tokenizer = gemma_tokenizer()
    torch.manual_seed(0)
    text_encoder = gemma2_encoder(tokenizer, hidden=8)
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        # More cross-attention heads than 2: a mask batch twice the images' (CFG) then fails as in real Sana
        # (20 heads) instead of being silently reshaped into per-head masks.
        num_cross_attention_heads=4, cross_attention_head_dim=2, cross_attention_dim=8, caption_channels=8,
        sample_size=16,
    )
    blocks = 6  # 2 ** (6 - 1) = 32x
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2,
        encoder_block_types=("ResBlock",) * blocks, decoder_block_types=("ResBlock",) * blocks,
        encoder_block_out_channels=(8,) * blocks, decoder_block_out_channels=(8,) * blocks,
        encoder_layers_per_block=(1,) * blocks, decoder_layers_per_block=(1,) * blocks,
        encoder_qkv_multiscales=((),) * blocks, decoder_qkv_multiscales=((),) * blocks,
        downsample_block_type="conv", upsample_block_type="interpolate", decoder_norm_types="rms_norm",
        decoder_act_fns="silu", scaling_factor=0.41407,
    )
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.save_pretrained(folder, safe_serialization=True)
