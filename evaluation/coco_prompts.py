"""COCO captions annotation JSON -> ``prompts.csv`` (``image_id,prompt``) and the matching reference file list.

Usage::

    python -m evaluation.coco_prompts --captions captions_val2014.json --out prompts.csv \\
        [--one_per_image | --all_captions] [--num_images N --seed S] \\
        [--reference_list refs.txt] [--images_dir DIR]

Rules (all deterministic):

* captions are whitespace-normalised (``" ".join(caption.split())``); captions that are empty afterwards are
  dropped; images without any caption are not eligible;
* rows are sorted by image id, then annotation id;
* ``--one_per_image`` (default) keeps the caption with the smallest annotation id, ``--all_captions`` keeps all;
* ``--num_images N`` takes ``random.Random(seed).sample(sorted eligible ids, N)`` and sorts the result;
* ``--reference_list`` gets one ``file_name`` per selected image, in the same image order as the CSV.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from evaluation.errors import EvaluationError, read_json_file, run_cli


@dataclass
class CocoCaptions:
    """The parts of a COCO captions file we need."""

    file_names: dict[Any, str] = field(default_factory=dict)  # image id -> file_name
    captions: dict[Any, list[tuple[Any, str]]] = field(default_factory=dict)  # image id -> [(annotation id, caption)]
    num_empty_captions: int = 0


def _id_key(value: Any) -> tuple[int, Any]:
    """Sort key for ids: integers numerically, anything else after them as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def normalize_caption(text: str) -> str:
    """Strip and collapse every run of whitespace (spaces, tabs, newlines, NBSP ...) to one space."""
    return " ".join(text.split())


def _require(entry: Any, keys: Iterable[str], where: str) -> None:
    if not isinstance(entry, dict):
        raise EvaluationError(f"{where} is not a JSON object")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise EvaluationError(f"{where} lacks key(s) {', '.join(repr(k) for k in missing)}")


def parse_coco_captions(data: Any, source: str = "captions file") -> CocoCaptions:
    """Validate the loaded JSON of a COCO captions file and index it by image id."""
    _require(data, ("images", "annotations"), source)
    images, annotations = data["images"], data["annotations"]
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise EvaluationError(f"{source}: 'images' and 'annotations' must be lists")

    coco = CocoCaptions()
    for i, img in enumerate(images):
        _require(img, ("id", "file_name"), f"{source}: images[{i}]")
        if img["id"] in coco.file_names:
            raise EvaluationError(f"{source}: image id {img['id']!r} appears twice in 'images'")
        coco.file_names[img["id"]] = str(img["file_name"])

    for i, ann in enumerate(annotations):
        _require(ann, ("image_id", "id", "caption"), f"{source}: annotations[{i}]")
        if ann["image_id"] not in coco.file_names:
            raise EvaluationError(
                f"{source}: annotations[{i}] (id {ann['id']!r}) refers to image_id {ann['image_id']!r}, "
                "which is not in 'images'"
            )
        if not isinstance(ann["caption"], str):
            raise EvaluationError(f"{source}: annotations[{i}] (id {ann['id']!r}) has a caption that is not a string")
        caption = normalize_caption(ann["caption"])
        if not caption:
            coco.num_empty_captions += 1
            continue
        coco.captions.setdefault(ann["image_id"], []).append((ann["id"], caption))

    for caps in coco.captions.values():
        caps.sort(key=lambda ac: _id_key(ac[0]))
    return coco


def load_coco_captions(path: str) -> CocoCaptions:
    """Read and validate a COCO captions annotation JSON file."""
    return parse_coco_captions(read_json_file(path, "captions file"), source=path)


def eligible_image_ids(coco: CocoCaptions) -> list[Any]:
    """Ids of the images with at least one non-empty caption, sorted."""
    return sorted(coco.captions, key=_id_key)


def select_image_ids(image_ids: Sequence[Any], num_images: int | None = None, seed: int = 0) -> list[Any]:
    """All ids (sorted), or a seeded random subset of ``num_images`` of them (sorted)."""
    ordered = sorted(image_ids, key=_id_key)
    if num_images is None:
        return ordered
    if num_images <= 0:
        raise EvaluationError(f"--num_images must be positive, got {num_images}")
    if num_images > len(ordered):
        raise EvaluationError(f"--num_images {num_images} is larger than the {len(ordered)} images with captions")
    chosen = random.Random(seed).sample(ordered, num_images)
    return sorted(chosen, key=_id_key)


def build_prompt_rows(coco: CocoCaptions, image_ids: Sequence[Any], all_captions: bool = False) -> list[tuple[Any, str]]:
    """``(image_id, prompt)`` rows in image-id then annotation-id order."""
    rows: list[tuple[Any, str]] = []
    for image_id in image_ids:
        caps = coco.captions[image_id]
        for _, caption in caps if all_captions else caps[:1]:
            rows.append((image_id, caption))
    return rows


def write_prompts_csv(rows: Iterable[tuple[Any, str]], path: str) -> None:
    """Write ``image_id,prompt`` as UTF-8 CSV (RFC 4180 quoting where needed, ``\\n`` line ends)."""
    _make_parent(path)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(["image_id", "prompt"])
        for image_id, prompt in rows:
            writer.writerow([image_id, prompt])


def reference_file_names(coco: CocoCaptions, image_ids: Sequence[Any]) -> list[str]:
    return [coco.file_names[i] for i in image_ids]


def check_reference_files(file_names: Sequence[str], images_dir: str) -> None:
    """Raise if ``images_dir`` is missing or lacks any of ``file_names``."""
    if not os.path.isdir(images_dir):
        raise EvaluationError(f"--images_dir is not a directory: {images_dir}")
    missing = [n for n in file_names if not os.path.isfile(os.path.join(images_dir, n))]
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise EvaluationError(f"{len(missing)} of {len(file_names)} reference images missing in {images_dir}: {shown}")


def write_reference_list(file_names: Iterable[str], path: str) -> None:
    _make_parent(path)
    with open(path, "w", encoding="utf-8", newline="") as f:
        for name in file_names:
            f.write(name + "\n")


def _make_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.coco_prompts",
        description="Turn a COCO captions JSON into prompts.csv (image_id,prompt) and a reference image list.",
    )
    p.add_argument("--captions", required=True, help="COCO captions annotation JSON, e.g. captions_val2014.json")
    p.add_argument("--out", required=True, help="output CSV (image_id,prompt)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--one_per_image", action="store_true", help="one caption per image, the lowest annotation id (default)")
    mode.add_argument("--all_captions", action="store_true", help="every caption of each selected image")
    p.add_argument("--num_images", type=int, default=None, help="seeded random subset of N images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset choice (default 0)")
    p.add_argument("--reference_list", default=None, help="write the selected images' file_name, one per line")
    p.add_argument("--images_dir", default=None, help="check that every selected file_name exists in this folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    coco = load_coco_captions(args.captions)
    image_ids = select_image_ids(eligible_image_ids(coco), args.num_images, args.seed)
    files = reference_file_names(coco, image_ids)
    if args.images_dir is not None:
        check_reference_files(files, args.images_dir)
    rows = build_prompt_rows(coco, image_ids, all_captions=args.all_captions)
    write_prompts_csv(rows, args.out)
    if args.reference_list is not None:
        write_reference_list(files, args.reference_list)
    msg = f"wrote {len(rows)} prompts for {len(image_ids)} images to {args.out}"
    if coco.num_empty_captions:
        msg += f" ({coco.num_empty_captions} empty captions skipped)"
    print(msg)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
