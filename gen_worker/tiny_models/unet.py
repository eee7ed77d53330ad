"""UNet families: Stable Diffusion 1.x (sd) and SDXL (sdxl)."""
import tempfile
from typing import TYPE_CHECKING, Any

from gen_worker.tiny_models.text import clip_encoder, clip_tokenizer

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


def sd_vae(**config: Any) -> "AutoencoderKL":
    """Two blocks: images are 2x the latents' size. config: e.g. shift_factor, scaling_factor."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), **config,
    )


def build_sd(folder: str) -> None:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = clip_tokenizer(workdir)
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        )
        vae = sd_vae()
        text_encoder = clip_encoder(tokenizer)
        scheduler = DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        )
        pipe = StableDiffusionPipeline(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.save_pretrained(folder, safe_serialization=True)


def build_sdxl(folder: str) -> None:
    """Two CLIP encoders (the second with a projection); the UNet's text_time embedding takes the
    pooled projection and 6 size/crop numbers."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = clip_tokenizer(workdir)
        torch.manual_seed(0)
        text_encoder = clip_encoder(tokenizer, hidden=32)
        text_encoder_2 = clip_encoder(tokenizer, hidden=32, projection=True)
        time_dim = 8
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
            transformer_layers_per_block=(1, 2), cross_attention_dim=32 + 32,
            projection_class_embeddings_input_dim=6 * time_dim + 32,
        )
        vae = sd_vae()
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1, timestep_spacing="leading")
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
        )
        pipe.save_pretrained(folder, safe_serialization=True)
