"""The builders behind `python -m gen_worker.tiny_model` (one small function per model family).

    text.py    tokenizers (CLIP, T5, Gemma) built from a vocabulary in code, and tiny text encoders
    unet.py    sd, sdxl: UNet pipelines
    dit.py     sd3, flux, pixart, sana: transformer image pipelines
    video.py   wan, wan22: Wan text-to-video (Wan 2.2: two transformers and a boundary ratio)
"""
