"""What result integrity costs: the resume check over N finished images, and the model fingerprint.

    .venv/bin/python bench/integrity.py                      # about 3 minutes, 8 GB of scratch disk
    .venv/bin/python bench/integrity.py --images 2000 --large_images 200 --no_sd15   # a quick run

1. resume check: a folder of N finished images, each a whole PNG with its provenance (written
   with the worker's own encoder and provenance, noise pixels), then the timed call a rerun makes
   (output.prepare.prepare_output_dir: settings, manifest, every image checked): once with no
   record of them (every file read), once as after a run (the check's own record: none read).
   Two sizes: 30,000 of 64x64 noise (12 KB files) and 5,000 of 512x512 noise (768 KB: larger than a
   real SD image's PNG; 5,000 to keep the scratch disk at 4 GB: the check is linear in bytes).
2. model fingerprint: model_check.identify() over a folder laid out as Stable Diffusion 1.5 at its
   real sizes (random bytes in correctly sized safetensors files, 4.3 GB in fp32): first look
   (every weight file hashed), then again (the hash cache).
"""
import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from gen_worker.model_check import identify  # noqa: E402
from gen_worker.output import provenance  # noqa: E402
from gen_worker.output.png_file import chunks, image_record_of, text_chunk  # noqa: E402
from gen_worker.output.prepare import prepare_output_dir  # noqa: E402
from gen_worker.prompts import load_samples  # noqa: E402
from gen_worker.spec import JobSpec  # noqa: E402
from gen_worker.worker.png import encode_png  # noqa: E402

# Stable Diffusion 1.5's weight files in fp32 (bytes), and their tensor counts (headers of that size).
SD15 = {"unet/diffusion_pytorch_model.safetensors": (3_438_167_540, 686),
        "text_encoder/model.safetensors": (492_265_168, 197),
        "vae/diffusion_pytorch_model.safetensors": (334_643_268, 248)}


COLD = False


def resume_check(root, count, side):
    folder = os.path.join(root, f"resume_{side}")
    csv_path = os.path.join(root, "prompts.csv")
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write("image_id,prompt\n" + "".join(f"{i},a photo number {i} of a cat on a sofa\n" for i in range(count)))
    spec = JobSpec(prompts_csv=csv_path, output_dir=folder, model_path="/models/sd15", num_samples=count,
                   height=side, width=side, model_identity={"fingerprint": "0123456789abcdef"})
    samples = load_samples(csv_path, spec.seed_start)
    prepare_output_dir(spec, samples).release()
    rng = np.random.default_rng(0)
    pixels = encode_png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), level=1)
    head, tail = pixels[:33], pixels[33:]  # signature + IHDR | IDAT + IEND: the text goes between
    image = image_record_of(chunks(pixels))  # every file has the same pixels
    versions = {"torch": "2.13.0", "diffusers": "0.42.1", "transformers": "5.24.0"}
    total = 0
    for s in samples:
        text = provenance.png_text(provenance.for_sample(spec, s, versions), image)
        data = head + b"".join(text_chunk(k, v) for k, v in text.items()) + tail
        with open(os.path.join(folder, s.file_name), "wb") as f:
            f.write(data)
        total += len(data)
    result = {"images": count, "side": side, "file_kb": round(total / count / 1024, 1)}
    # First as files nobody recorded (copied in, or written by a worker killed before its record):
    # every one read; then as after a run (each worker records what it wrote): none read.
    for label in ("unrecorded", "recorded"):
        os.system("sync")
        if COLD:  # as after a reboot or on another node: every byte from the disk
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        started = time.time()
        prepare_output_dir(spec, samples).release()
        seconds = time.time() - started
        report = json.load(open(os.path.join(folder, "logs", "resume_check.json")))
        assert report["checked"] == count and not report["quarantined"], report
        result[label] = {"seconds": round(seconds, 2), "check_seconds": report["seconds"], "read": report["read"],
                         "mb_per_second_read": round(total / 1e6 / report["seconds"], 1) if report["read"] else None}
    shutil.rmtree(folder)
    return result


def _fake_safetensors(path, size, tensors):
    """A file of `size` bytes whose header declares `tensors` float32 tensors filling it."""
    per = (size - 20_000) // tensors // 4 * 4
    header = {f"layer.{i}.weight": {"dtype": "F32", "shape": [per // 4], "data_offsets": [i * per, (i + 1) * per]}
              for i in range(tensors)}
    raw = json.dumps(header).encode()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        block = os.urandom(8 << 20)
        left = per * tensors
        while left:
            f.write(block[:min(left, len(block))])
            left -= min(left, len(block))


def fingerprint_sd15(root):
    model = os.path.join(root, "sd15")
    for rel, (size, tensors) in SD15.items():
        _fake_safetensors(os.path.join(model, rel), size, tensors)
    for component in ("unet", "text_encoder", "vae"):
        with open(os.path.join(model, component, "config.json"), "w") as f:
            f.write("{}")
    with open(os.path.join(model, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                   "text_encoder": ["transformers", "CLIPTextModel"], "vae": ["diffusers", "AutoencoderKL"]}, f)
    gigabytes = sum(os.path.getsize(os.path.join(model, rel)) for rel in SD15) / 1e9
    os.environ["XDG_CACHE_HOME"] = os.path.join(root, "cache")  # an empty hash cache
    if COLD:
        os.system("sync")
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    started = time.time()
    first = identify(model)
    first_seconds = time.time() - started
    started = time.time()
    again = identify(model)
    again_seconds = time.time() - started
    assert first == again
    shutil.rmtree(model)
    return {"gigabytes": round(gigabytes, 2), "first_seconds": round(first_seconds, 2),
            "cached_seconds": round(again_seconds, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=30_000, help="images of 64x64")
    parser.add_argument("--large_images", type=int, default=5_000, help="images of 512x512 (768 KB each)")
    parser.add_argument("--no_sd15", action="store_true", help="skip the 4.3 GB model fingerprint")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each timed step (root)")
    parser.add_argument("--root", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    global COLD
    COLD = args.cold
    root = args.root or tempfile.mkdtemp(prefix="t2i-integrity-")
    results = {"resume_check": [resume_check(root, args.images, 64), resume_check(root, args.large_images, 512)]}
    if not args.no_sd15:
        results["fingerprint_sd15"] = fingerprint_sd15(root)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
