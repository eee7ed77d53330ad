"""Tiny images and sweep folders made on disk by the evaluation tests; the tiny feature networks
(save_tiny_inception, save_tiny_clip) come from evaluation/tiny_networks.py."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageFilter

from evaluation.tiny_networks import save_tiny_clip, save_tiny_inception  # noqa: F401 (for the tests)


def smooth_image(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A random, mostly low-frequency RGB image (a blurred random field plus a bright square)."""
    low = rng.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
    arr = np.array(img)
    x, y, s = rng.integers(0, size // 2, size=3)
    arr[y : y + s // 2 + 4, x : x + s // 2 + 4] = rng.integers(150, 256, size=3)
    return Image.fromarray(arr)


def noisy(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, sigma, size=(img.size[1], img.size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def blurred(img: Image.Image, radius: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def write_generated(folder: str, images: list[Image.Image], image_ids: list[str], seeds: list[int]) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for img, image_id, seed in zip(images, image_ids, seeds):
        path = os.path.join(folder, f"{image_id}_seed{seed}.png")
        img.save(path)
        paths.append(path)
    return paths


def write_reference(folder: str, images: list[Image.Image]) -> str:
    """Reference images r00.png, r01.png, ... in ``folder``; returns it."""
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(images):
        img.save(os.path.join(folder, f"r{i:02d}.png"))
    return folder


def make_sweep(root, pipe, model: str, guidance_scales: list[str], rows) -> str:
    """A sweep folder as the contract says: one plain run per guidance scale in root/sweep/<name>/ (same
    prompts and seeds), and sweep.json written with the shared writer. Returns the sweep's top folder."""
    from conftest import run_worker_in_process
    from gen_worker.output.sweep_record import configuration_name, write_sweep_record

    top = os.path.join(str(root), "sweep")
    configurations = []
    for g in guidance_scales:
        overrides = {"guidance_scale": g}
        name = configuration_name(overrides)
        run_worker_in_process(root, os.path.join("sweep", name), pipe, model, rows=rows, num_inference_steps=2,
                              guidance_scale=float(g))
        configurations.append({"name": name, "folder": name, "overrides": overrides})
    write_sweep_record(top, {"guidance_scale": list(guidance_scales)}, configurations)
    return top


# The images these helpers write carry no t2i-batch provenance (as another tool's): metrics scores them only
# when told (evaluation/verification.py). Use as metrics.main([*UNVERIFIED, folder, ...]).
UNVERIFIED = ("--allow_unverified", "--generated")


def score_preference(d, flag: str, save_model, rng_seed: int, seed_start: int, count: int, batch_size: int) -> dict:
    """A folder of `count` synthetic images with prompts, scored by one preference scorer (`flag`, e.g.
    --hps_model, with the tiny model `save_model` writes) alone; what the scorer tests read."""
    import json

    from evaluation import metrics
    from evaluation.coco_prompts import write_prompts_csv

    rng = np.random.default_rng(rng_seed)
    ids = [str(i) for i in range(count)]
    prompts = [f"a {c} square on a field, number {i}" for i, c in enumerate(["red", "blue"] * (count // 2))]
    gen = str(d / "gen")
    write_generated(gen, [smooth_image(rng) for _ in ids], ids, [seed_start + i for i in range(count)])
    write_prompts_csv(list(zip(ids, prompts)), str(d / "prompts.csv"))
    folder = save_model(str(d / flag[2:-len("_model")]))
    out = d / "metrics.json"
    assert metrics.main([*UNVERIFIED, gen, "--prompts_csv", str(d / "prompts.csv"), flag, folder,
                         "--no_fid", "--no_clip", "--out", str(out), "--num_workers", "0", "--seed_start",
                         str(seed_start), "--batch_size", str(batch_size)]) == 0
    return {"dir": d, "gen": gen, "prompts": prompts, "model": folder, "csv": str(d / "prompts.csv"),
            "result": json.loads(out.read_text()), "metrics": str(out)}
