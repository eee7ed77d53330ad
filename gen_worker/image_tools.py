"""`submit.py show IMAGE` and `submit.py reproduce IMAGE --output_dir D`: what an image says it is,
and the same image made again from that (byte-identical in the same environment).

reproduce makes the image's whole block again (its batch: batch composition changes the last
bits), as worker b of b+1 over the folder's first samples, so every sample keeps its index, seed and
provenance (--images_per_prompt and --layout too). It needs the manifest.csv of the folder the image
came from (the block's prompts).

An image is a PNG file or, in a --output_format tar folder, `SHARD.tar:STEM` (STEM: the png layout's file
name without .png, e.g. out/shards/000000.tar:000007_seed49), read with output/shards.py.
"""
import argparse
import csv
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from gen_worker.errors import EXIT_USAGE, T2IError
from gen_worker.model_check import identify
from gen_worker.model_source import ModelPathError, check_model_path
from gen_worker.naming import GENEVAL_SAMPLES
from gen_worker.output import layout, provenance, shards
from gen_worker.output.png_file import DamagedPng
from gen_worker.output.record import manifest_sample, read_manifest
from gen_worker.output.prepare import prepare_output_dir
from gen_worker.prompts import Sample
from gen_worker.spec import JobSpec, recorded_defaults, spec_samples


class ImageToolError(T2IError):
    pass


def shard_member(image: str) -> Optional[Tuple[str, str]]:
    """(shard, stem) of `SHARD.tar:STEM`; None for anything else (a PNG file's path)."""
    shard, sep, stem = image.rpartition(":")
    if not sep or not stem or not shard.endswith(shards.SHARD_SUFFIX) or os.path.isfile(image):
        return None
    return shard, stem


def image_bytes(image: str) -> bytes:
    """The bytes of a PNG file, or of the PNG member of `SHARD.tar:STEM`."""
    member = shard_member(image)
    if member is None:
        with open(image, "rb") as f:
            return f.read()
    shard, stem = member
    try:
        for found_stem, png, _ in shards.sample_index(shard):
            if found_stem == stem:
                return shards.read_member(shard, png.offset, png.size)
    except shards.DamagedShard as err:
        raise ImageToolError(f"{shard} is not a whole shard: {err}") from None
    raise ImageToolError(f"{shard} holds no sample {stem} (STEM: the png layout's file name without .png)")


def read_image(path: str) -> Dict[str, Any]:
    try:
        found, _ = provenance.inspect_bytes(image_bytes(path))
    except DamagedPng as err:
        raise ImageToolError(f"{path} is not a whole PNG file: {err}") from None
    except OSError as err:
        raise ImageToolError(f"cannot read {path}: {err.strerror}") from None
    if found is None:
        raise ImageToolError(f"{path} carries no t2i-batch provenance (made by another tool or an older version)")
    return found


def _output_folder(image: str) -> str:
    """The output folder of an image: its own folder, three up in the GenEval layout (<row>/samples/<k>.png), or
    the folder of the shards/ folder of `SHARD.tar:STEM`."""
    member = shard_member(image)
    if member is not None:
        return os.path.dirname(os.path.dirname(os.path.abspath(member[0])))
    folder = os.path.dirname(os.path.abspath(image))
    if os.path.basename(folder) == GENEVAL_SAMPLES and not os.path.isfile(os.path.join(folder, layout.MANIFEST_FILE)):
        return os.path.dirname(os.path.dirname(folder))
    return folder


def _block_samples(image: str, found: Dict[str, Any]) -> List[Sample]:
    """The manifest's samples 0 .. end of the image's block, from the image's own output folder."""
    first, size = found["block"]
    rows = read_manifest(_output_folder(image))
    needed = range(first + size)
    missing = [i for i in needed if i not in rows]
    if missing:
        raise ImageToolError(f"reproduce needs the {layout.MANIFEST_FILE} of the folder {image} came from "
                             f"(rows 0-{first + size - 1}; missing from row {missing[0]})")
    return [manifest_sample(rows[i]) for i in needed]


def reproduce(image: str, output_dir: str, model_path: Optional[str], device: str, cpu_threads: int) -> str:
    """Make the image's block again into output_dir; returns the path of the image made again."""
    found = read_image(image)
    block_samples = _block_samples(image, found)
    settings = {**recorded_defaults(), **found["settings"]}
    recorded = settings.pop("model_path")
    try:
        model = check_model_path(model_path or recorded)
    except ModelPathError as err:
        if model_path:
            raise ImageToolError(f"--model_path {model_path}: {err}") from None
        raise ImageToolError(f"{image} was made with the model at {recorded}, which is not there now ({err}); "
                             "if it moved, give its folder with --model_path") from None
    identity = identify(model)
    expected = found["model"].get("fingerprint")
    if expected and not identity:
        raise ImageToolError(f"{model} is not downloaded here, so it cannot be checked to be the model {image} "
                             "was made with: download it first, or give its folder with --model_path")
    if expected and identity["fingerprint"] != expected:
        raise ImageToolError(f"the model at {model} is not the one {image} was made with (its content changed: "
                             f"fingerprint {identity['fingerprint']}, the image says {expected}); give that model "
                             "with --model_path")
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, "reproduce_prompts.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image_id", "prompt"))
        # One line per prompt row: with --images_per_prompt K, samples rK .. rK+K-1 share row r.
        writer.writerows((s.image_id, s.prompt) for s in {s.row: s for s in block_samples}.values())
    spec = JobSpec(prompts_csv=csv_path, output_dir=os.path.abspath(output_dir), model_path=model,
                   num_samples=len(block_samples), device=device, cpu_threads=cpu_threads, model_identity=identity,
                   schedule="static",  # worker b of b+1 below: block b alone
                   **{k: v for k, v in settings.items() if k in JobSpec.__dataclass_fields__})
    samples = spec_samples(spec)
    block = found["block"][0] // spec.batch_size
    prepare_output_dir(spec, samples).release()
    from gen_worker.worker.loop import run_worker
    run_worker(spec, block, block + 1)  # worker b of b+1 makes block b alone
    # A PNG either way: the output format is the folder's, not the image's (a shard's member is the same file).
    return os.path.join(spec.output_dir, samples[found["index"]].file_name)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"submit.py {argv[0]}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="a PNG made by t2i-batch, or SHARD.tar:STEM (a sample of a tar folder)")
    if argv[0] == "reproduce":
        parser.add_argument("--output_dir", required=True, help="folder to make the image (its block) in")
        parser.add_argument("--model_path", default=None, help="the model, if it moved (its content must match)")
        parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
        parser.add_argument("--cpu_threads", type=int, default=1, help="as the run that made it (default: 1)")
    args = parser.parse_args(argv[1:])
    try:
        if argv[0] == "show":
            print(json.dumps(read_image(args.image), indent=2, ensure_ascii=False))
            edited = provenance.pixel_mismatch_of(image_bytes(args.image))
            if edited:
                print(f"warning: {args.image} {edited}", file=sys.stderr)
            return 1 if edited else 0
        made = reproduce(args.image, args.output_dir, args.model_path, args.device, args.cpu_threads)
    except T2IError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    same = image_bytes(args.image) == image_bytes(made)
    print(f"{made}: {'byte-identical to' if same else 'DIFFERS from'} {args.image}")
    return 0 if same else 1
