"""GPU benchmark: the full-size Stable Diffusion 1.5 architecture with random weights, 512x512, 20 steps.

    python bench/gpu_sd15.py                          # on a GPU machine: about 5 minutes, no download
    python bench/gpu_sd15.py --tiny --device cpu      # smoke run of the whole script on a CPU

Measured side by side in one process on one pipeline object (fp16, guidance 7.5, DDIM):
- plain loop as users write it: batch 1, pipe(prompt).images[0].save(...) after each call, and the same
  at the toolkit's best batch size (the fair baseline: batch 1 measures batching, not the toolkit);
- the toolkit's worker loop (run_worker: background PNG writer, one generator per sample) at
  each --batch_sizes, then with channels_last, then also with torch.compile (--no_compile: without);
- pure denoising: the UNet's steps alone (2 rows per image: guidance), synchronized: the limit.
Every timed run follows an untimed one at the same batch size (cuDNN autotuning, compilation).
Speed does not depend on the weights' values, so random weights time the real model (UNet
859.5M parameters); but they draw noise-like images, whose PNGs are larger and slower to
encode than photos: the PNG size and encode time are reported beside the numbers.
Needs torch with CUDA and diffusers/transformers (pip install diffusers==0.42.1 on the GPU machine).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from common import (job_spec, machine, plain_loop, print_table, rate, toolkit_run, write_json,  # noqa: E402
                    write_prompts)

# Stable Diffusion 1.5's configs (runwayml/stable-diffusion-v1-5), written out: nothing is downloaded.
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu",
                 flip_sin_to_cos=True, freq_shift=0, downsample_padding=1)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                norm_num_groups=32, act_fn="silu", sample_size=512, scaling_factor=0.18215)
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
# --tiny: the same architecture, narrow (a smoke test of this script, not a measurement).
TINY = {"unet": dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, cross_attention_dim=32),
        "vae": dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1),
        "text": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)}
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def build_pipeline(device, dtype_name, tiny, workdir):
    """SD 1.5 with random weights, built straight on the device (a CPU build of the UNet takes ~12 s)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel

    from gen_worker.tiny_model import clip_tokenizer

    diffusers_logging.set_verbosity_error()  # casting a model built in fp32 warns, needlessly here
    tokenizer = clip_tokenizer(workdir)  # byte-level, offline; the text encoder keeps SD's 49408-token table
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**{**SD15_UNET, **(TINY["unet"] if tiny else {})})
        vae = AutoencoderKL(**{**SD15_VAE, **(TINY["vae"] if tiny else {})})
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **{**SD15_TEXT, **(TINY["text"] if tiny else {})}))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(device, getattr(torch, DTYPES[dtype_name]))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _synchronize(device):
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def denoise_only(pipe, batch, steps, height, width, device, repeats=3):
    """Seconds for the UNet's steps on a batch with guidance (what no loop can go below); best of 3."""
    import torch

    unet = pipe.unet
    rows, scale = 2 * batch, pipe.vae_scale_factor
    latents = torch.randn(rows, unet.config.in_channels, height // scale, width // scale, device=device, dtype=unet.dtype)
    context = torch.randn(rows, 77, unet.config.cross_attention_dim, device=device, dtype=unet.dtype)
    pipe.scheduler.set_timesteps(steps, device=device)
    # The pipeline's own call signature, so that a compiled UNet reuses its graph.
    kwargs = dict(encoder_hidden_states=context, timestep_cond=None, cross_attention_kwargs=None,
                  added_cond_kwargs=None, return_dict=False)
    best = None
    with torch.inference_mode():
        unet(latents, pipe.scheduler.timesteps[0], **kwargs)
        for _ in range(repeats):
            _synchronize(device)
            started = time.perf_counter()
            for t in pipe.scheduler.timesteps:
                unet(latents, t, **kwargs)
            _synchronize(device)
            best = min(best or float("inf"), time.perf_counter() - started)
    return best


def png_stats(folder, count=5):
    """Size of the plain loop's PNGs, and the time to encode one with Pillow (the plain loop, on its
    critical path) and with the toolkit's encoder (in its writer threads)."""
    import io

    import numpy as np
    from PIL import Image

    from gen_worker.worker.png import encode_png

    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))[:count]
    sizes, pillow, ours = [], [], []
    for name in names:
        path = os.path.join(folder, name)
        sizes.append(os.path.getsize(path))
        with Image.open(path) as im:
            pixels = np.asarray(im)
        started = time.perf_counter()
        Image.fromarray(pixels).save(io.BytesIO(), format="PNG")
        pillow.append(time.perf_counter() - started)
        started = time.perf_counter()
        encode_png(pixels)
        ours.append(time.perf_counter() - started)
    return {"png_kb": round(statistics.mean(sizes) / 1024, 1),
            "pillow_png_ms": round(statistics.median(pillow) * 1000, 1),
            "toolkit_png_ms": round(statistics.median(ours) * 1000, 1)}


def peak_memory_gb(device):
    import torch
    if device != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return round(peak, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="narrow model, 64x64, 2 steps: a smoke test")
    parser.add_argument("--images", type=int, default=None, help="images per toolkit run (default 64; --tiny 4)")
    parser.add_argument("--plain_images", type=int, default=None, help="images of the plain loop (default 24; --tiny 2)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=None, help="default 4 8 16; --tiny 2")
    parser.add_argument("--no_compile", action="store_true", help="leave out the torch.compile run")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: fp16 on cuda, fp32 on cpu")
    parser.add_argument("--out", default=os.path.join(HERE, "results_gpu.json"))
    args = parser.parse_args(argv)
    import torch

    tiny = args.tiny
    args.dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")
    size, steps = (64, 2) if tiny else (512, 20)
    images = args.images or (4 if tiny else 64)
    plain_images = args.plain_images or (2 if tiny else 24)
    batch_sizes = args.batch_sizes or ([2] if tiny else [4, 8, 16])
    if any(images % b for b in batch_sizes):
        parser.error("--images must be a multiple of every batch size (a last, smaller block would be another shape)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible (use --tiny --device cpu for a smoke run)")
    settings = dict(num_inference_steps=steps, guidance_scale=7.5, height=size, width=size, dtype=args.dtype,
                    device=args.device, cpu_threads=os.cpu_count() if args.device == "cpu" else 1)
    results = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "machine": machine(),
               "model": "SD 1.5 architecture, random weights" + (" (--tiny: narrow)" if tiny else ""),
               "settings": settings, "date": time.strftime("%Y-%m-%d %H:%M"), "runs": []}
    runs = results["runs"]

    with tempfile.TemporaryDirectory(prefix="t2i-gpu-bench-") as work:
        started = time.perf_counter()
        pipe = build_pipeline(args.device, args.dtype, tiny, work)
        _synchronize(args.device)
        results["build_seconds"] = round(time.perf_counter() - started, 2)
        results["unet_parameters_m"] = round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 1)
        print(f"built in {results['build_seconds']} s, UNet {results['unet_parameters_m']}M parameters", flush=True)
        csv = write_prompts(os.path.join(work, "prompts.csv"), max(images, plain_images))

        def spec(name, count, batch, **speed):
            return job_spec(csv, os.path.join(work, name), "sd15-random", count, batch_size=batch, **settings, **speed)

        def limit(batch):
            return rate(batch, denoise_only(pipe, batch, steps, size, size, args.device))

        # The plain loop users write: batch 1, each PNG saved before the next call.
        plain = spec("plain", plain_images, 1)
        plain_loop(pipe, spec("plain", 1, 1))
        seconds = plain_loop(pipe, plain).wall
        runs.append({"run": "plain loop (batch 1, save each PNG)", "batch": 1, "images_per_s": rate(plain_images, seconds),
                     "denoise_limit_images_per_s": limit(1), "peak_gb": peak_memory_gb(args.device),
                     **png_stats(plain.output_dir)})
        print(runs[-1], flush=True)

        def toolkit(label, batch, **speed):
            warm = toolkit_run(pipe, spec("warm", batch, batch, **speed))[1]
            timer, summary = toolkit_run(pipe, spec(label, images, batch, **speed))
            seconds = timer.wall
            runs.append({"run": f"toolkit {label}", "batch": batch, "images_per_s": rate(images, seconds),
                         "denoise_limit_images_per_s": limit(batch), "peak_gb": peak_memory_gb(args.device),
                         "first_call_seconds": warm["warmup_seconds"],
                         "writer_wait_seconds": summary["writer_wait_seconds"]})
            print(runs[-1], flush=True)
            return runs[-1]["images_per_s"]

        from gen_worker.worker.pipeline import apply_speed_options

        eager = {b: toolkit(f"batch {b}", b) for b in batch_sizes}
        best = max(eager, key=eager.get)
        # The fair baseline: the plain loop at the toolkit's batch size (batch 1 above measures batching too).
        plain_loop(pipe, spec("plain", best, best))
        seconds = plain_loop(pipe, spec("plain", images, best)).wall
        runs.append({"run": f"plain loop (batch {best}, save each PNG)", "batch": best,
                     "images_per_s": rate(images, seconds), "denoise_limit_images_per_s": limit(best)})
        print(runs[-1], flush=True)
        results["toolkit_over_plain_loop_same_batch"] = round(eager[best] / runs[-1]["images_per_s"], 3)
        speed = {"channels_last": True}
        apply_speed_options(pipe, job_spec(csv, work, "-", 1, **speed), args.device)
        last = f"batch {best} channels_last"
        toolkit(last, best, **speed)
        if not args.no_compile:
            speed["compile"] = True
            apply_speed_options(pipe, job_spec(csv, work, "-", 1, compile="whole"), args.device)
            last = f"batch {best} channels_last compile"
            toolkit(last, best, **speed)
        # The pipeline stays as the last run left it (channels_last cannot be undone in place): named so.
        seconds = plain_loop(pipe, spec("alone", images, best), save=False).wall
        runs.append({"run": f"pipeline calls alone, as toolkit {last} (no saving)", "batch": best,
                     "images_per_s": rate(images, seconds)})

    top = max((r for r in runs if r["run"].startswith("toolkit")), key=lambda r: r["images_per_s"])
    results["best_toolkit"] = top
    results["speedup_over_plain_loop"] = round(top["images_per_s"] / runs[0]["images_per_s"], 2)
    results["fraction_of_denoise_limit"] = round(top["images_per_s"] / top["denoise_limit_images_per_s"], 3)
    m = results["machine"]
    print_table(f"{results['model']}, {size}x{size}, {steps} steps, {args.dtype}, on {m.get('gpu', m['cpu'])} "
                f"(torch {m['torch']}, diffusers {m['diffusers']})",
                ["run", "batch", "images/s", "denoise limit", "peak GB", "first call s", "writer wait s"],
                [[r["run"], r["batch"]] + [r.get(key) if r.get(key) is not None else "-" for key in (
                    "images_per_s", "denoise_limit_images_per_s", "peak_gb", "first_call_seconds", "writer_wait_seconds")]
                 for r in runs])
    print(f"  at batch {best}: the toolkit makes {results['toolkit_over_plain_loop_same_batch']}x the images/s "
          "of the plain loop")
    print(f"  best toolkit run: {top['run']}, {results['speedup_over_plain_loop']}x the plain loop at batch 1, "
          f"{results['fraction_of_denoise_limit']:.0%} of its pure denoising rate; "
          f"PNG {runs[0]['png_kb']} KB (noise-like images), {runs[0]['pillow_png_ms']} ms to encode with Pillow, "
          f"{runs[0]['toolkit_png_ms']} ms with the toolkit's encoder")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
