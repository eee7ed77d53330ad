"""Time to list, verify (provenance against the folder's record) and read (decode) a folder's images before
scoring, PNG files against tar shards of the same images.

    .venv/bin/python bench/evaluation_check.py                      # 10,000 images of 128x128, about 2 minutes
    .venv/bin/python bench/evaluation_check.py --images 1000 --size 64

The folder is a real run's record (prepare_output_dir with the tiny SD model: generation_settings.json,
manifest.csv); each image is a smooth random picture written with the worker's own PNG encoder and the
provenance the worker embeds (provenance.for_sample), so every image verifies. The tar folder holds the same
PNG bytes in shards of --shard_size (output/shards.py's writer). The file system's cache is warm (the files
were just written): these are CPU costs, not a cold disk's.
"""
import argparse
import csv
import os
import shutil
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from evaluation import generated as gen  # noqa: E402
from evaluation import verification  # noqa: E402
from evaluation.images import load_rgb  # noqa: E402
from gen_worker.output import layout, provenance, shards  # noqa: E402
from gen_worker.tiny_model import build  # noqa: E402


def make_folders(root: str, images: int, size: int, shard_size: int) -> tuple[str, str]:
    from gen_worker.model_check import identify
    from gen_worker.output.prepare import prepare_output_dir
    from gen_worker.prompts import load_samples
    from gen_worker.spec import JobSpec
    from gen_worker.worker.png import encode_png

    model = os.path.join(root, "tiny-sd")
    build(model, "sd")
    prompts = os.path.join(root, "prompts.csv")
    with open(prompts, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("image_id", "prompt")] + [(str(i), f"a picture, number {i}") for i in range(images)])
    png = os.path.join(root, "png")
    spec = JobSpec(prompts_csv=prompts, output_dir=png, model_path=model, num_samples=images, height=size,
                   width=size, dtype="fp32", device="cpu", model_identity=identify(model))
    samples = load_samples(prompts, spec.seed_start)
    prepare_output_dir(spec, samples).release()
    rng = np.random.default_rng(0)
    members = []
    for s in samples:
        low = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        pixels = np.repeat(np.repeat(low, size // 8, axis=0), size // 8, axis=1)
        said = provenance.for_sample(spec, s, {"bench": "1"})
        data = encode_png(pixels, text_for=lambda image, said=said: provenance.png_text(said, image))
        with open(os.path.join(png, s.file_name), "wb") as f:
            f.write(data)
        members.append((s.file_name[:-len(".png")], data, {"provenance": said}))
    tar = os.path.join(root, "tar")
    os.makedirs(os.path.join(tar, shards.SHARDS_DIR))
    for name in (layout.SETTINGS_FILE, layout.MANIFEST_FILE):
        shutil.copy(os.path.join(png, name), tar)
    for first in range(0, images, shard_size):
        shards.write_shard(shards.shard_path(tar, first // shard_size), members[first:first + shard_size])
    return png, tar


def timed(folder: str) -> dict[str, float]:
    started = time.perf_counter()
    images, _ = gen.list_generated_images(folder)
    listed = time.perf_counter()
    failed = verification.unverified(folder, images)
    verified = time.perf_counter()
    for g in images:
        load_rgb(g)
    read = time.perf_counter()
    assert not failed, failed[:1]
    return {"images": len(images), "list_s": listed - started, "verify_s": verified - listed, "read_s": read - verified}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--size", type=int, default=128, help="image side in pixels (a multiple of 8)")
    p.add_argument("--shard_size", type=int, default=1000)
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="evaluation_check_")
    try:
        png, tar = make_folders(root, args.images, args.size, args.shard_size)
        print(f"{args.images} images of {args.size}x{args.size}, shards of {args.shard_size} (warm cache)")
        print("| format | list s | verify s | read+decode s | verify+read ms/image |")
        print("|---|---|---|---|---|")
        for name, folder in (("png", png), ("tar", tar)):
            t = timed(folder)
            per = 1000 * (t["verify_s"] + t["read_s"]) / t["images"]
            print(f"| {name} | {t['list_s']:.2f} | {t['verify_s']:.2f} | {t['read_s']:.2f} | {per:.3f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
