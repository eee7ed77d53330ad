"""Write a tiny random-weight diffusers pipeline to a folder, offline.

    python -m gen_worker.tiny_model DIR --arch sd|sdxl|sd3|flux|pixart|sana|wan|wan22

Used by the tests and the README demo: no hub download, a few MB on disk, seconds on a CPU.
Weights are random but deterministic (fixed torch seed), so two builds give the same model.
The builders, one per family, are in gen_worker/tiny_models/.
"""
import argparse
import os
import sys
from typing import Callable, Dict, Sequence

from gen_worker.library_logs import quiet_library_noise
from gen_worker.tiny_models.text import clip_tokenizer  # noqa: F401  (bench/gpu_sd15.py imports it here)

FAMILIES = {
    "sd": "Stable Diffusion 1.x (UNet, CLIP)",
    "sdxl": "Stable Diffusion XL (UNet, two CLIP encoders)",
    "sd3": "Stable Diffusion 3 (MMDiT, two CLIP encoders + T5)",
    "flux": "Flux.1-dev (guidance-embedded transformer, CLIP + T5)",
    "pixart": "PixArt-Sigma (DiT, T5)",
    "sana": "Sana (linear-attention DiT, Gemma-2, DC-AE)",
    "wan": "Wan 2.1 text-to-video (UMT5)",
    "wan22": "Wan 2.2 A14B text-to-video (two transformers, boundary_ratio)",
}
ARCHES = tuple(FAMILIES)


def _builders() -> Dict[str, Callable[[str], None]]:
    from gen_worker.tiny_models import dit, unet, video
    return {"sd": unet.build_sd, "sdxl": unet.build_sdxl, "sd3": dit.build_sd3, "flux": dit.build_flux,
            "pixart": dit.build_pixart, "sana": dit.build_sana, "wan": video.build_wan, "wan22": video.build_wan22}


def build(folder: str, arch: str) -> None:
    if arch not in ARCHES:
        raise ValueError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHES)}")
    quiet_library_noise()
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # "Writing model shards" per component: the line below says it
    _builders()[arch](folder)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="where to write the pipeline (created; must be empty or absent)")
    parser.add_argument("--arch", choices=ARCHES, default="sd", help="; ".join(
        f"{a}: {d}" for a, d in FAMILIES.items()) + " (default: %(default)s)")
    args = parser.parse_args(argv)
    if os.path.isdir(args.folder) and os.listdir(args.folder):
        parser.error(f"{args.folder} exists and is not empty")
    build(args.folder, args.arch)
    print(f"wrote a tiny random-weight {args.arch} pipeline to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
