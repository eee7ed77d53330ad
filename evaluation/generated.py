"""Which files are generated images, which are reference images, and which prompt belongs to which image.

Generated images are the ``*.png`` files *directly* in the output folder named ``{image_id}_seed{seed}.png``;
anything else (hidden or temporary files, other extensions, sub-folders such as ``grid/``) is ignored.

Prompt of a generated image (``--seed_start``, default 42):

0. the entry of the folder's ``manifest.csv`` (written by submit.py: index, image_id, seed, file_name,
   prompt) for that file name, when the folder has one -- exact, also for ids submit.py had to rename;
1. the row ``seed - seed_start`` of the prompts CSV (0-based, header excluded), if that row has the same
   image_id -- the convention "row i is generated with seed seed_start + i", which also tells apart the
   several captions of one COCO image (``--all_captions``);
2. otherwise the only row with that image_id, if the image_id is unique in the CSV -- covers
   "every row gets seeds seed_start, seed_start+1, ... for its samples";
3. otherwise the image cannot be matched (an error for the CLIP score).

Image ids are compared as text, except that all-digit ids compare as integers (``007`` == ``7``).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from typing import Sequence

from evaluation.errors import EvaluationError

GENERATED_NAME = re.compile(r"^(?P<image_id>.+)_seed(?P<seed>\d+)\.png$")
REFERENCE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class GeneratedImage:
    path: str
    image_id: str
    seed: int


@dataclass(frozen=True)
class PromptRow:
    index: int  # 0-based data row number in the CSV
    image_id: str
    prompt: str


def normalize_id(image_id: str) -> str:
    s = str(image_id).strip()
    return str(int(s)) if s.isdigit() else s


def _natural_key(image_id: str) -> tuple[int, int, str]:
    s = normalize_id(image_id)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def parse_generated_name(name: str) -> tuple[str, int] | None:
    """``'123_seed42.png'`` -> ``('123', 42)``; ``None`` if the name does not follow the pattern."""
    if name.startswith("."):
        return None
    m = GENERATED_NAME.match(name)
    if m is None:
        return None
    return m.group("image_id"), int(m.group("seed"))


def list_generated_images(folder: str) -> tuple[list[GeneratedImage], list[str]]:
    """The generated images in ``folder`` (sorted by image id, then seed) and the names of ignored entries."""
    if not os.path.isdir(folder):
        raise EvaluationError(f"generated image folder not found: {folder}")
    found: list[GeneratedImage] = []
    ignored: list[str] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        parsed = parse_generated_name(entry.name) if entry.is_file() else None
        if parsed is None:
            ignored.append(entry.name)
            continue
        found.append(GeneratedImage(path=entry.path, image_id=parsed[0], seed=parsed[1]))
    found.sort(key=lambda g: (_natural_key(g.image_id), g.image_id, g.seed))
    return found, ignored


def list_reference_images(folder: str, reference_list: str | None = None) -> list[str]:
    """Image files directly in ``folder`` (sorted), or exactly those named in ``reference_list``."""
    if not os.path.isdir(folder):
        raise EvaluationError(f"reference image folder not found: {folder}")
    if reference_list is None:
        names = sorted(
            e.name
            for e in os.scandir(folder)
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(REFERENCE_EXTENSIONS)
        )
        if not names:
            raise EvaluationError(f"no images ({', '.join(REFERENCE_EXTENSIONS)}) directly in {folder}")
    else:
        if not os.path.isfile(reference_list):
            raise EvaluationError(f"reference list not found: {reference_list}")
        with open(reference_list, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise EvaluationError(f"reference list is empty: {reference_list}")
        missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise EvaluationError(f"{len(missing)} of {len(names)} listed reference images missing in {folder}: {shown}")
    return [os.path.join(folder, n) for n in names]


def read_prompts_csv(path: str) -> list[PromptRow]:
    """Rows of a prompts CSV with at least the columns ``image_id`` and ``prompt``."""
    if not os.path.isfile(path):
        raise EvaluationError(f"prompts CSV not found: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            missing = [c for c in ("image_id", "prompt") if c not in fields]
            if missing:
                raise EvaluationError(f"prompts CSV {path} lacks column(s) {', '.join(missing)} (header: {fields})")
            rows = [
                PromptRow(index=i, image_id=(r["image_id"] or "").strip(), prompt=r["prompt"] or "")
                for i, r in enumerate(reader)
            ]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"cannot read prompts CSV {path}: {exc}") from None
    if not rows:
        raise EvaluationError(f"prompts CSV has no rows: {path}")
    return rows


MANIFEST_NAME = "manifest.csv"


def read_manifest(folder: str) -> dict[str, PromptRow]:
    """``file_name -> PromptRow`` from the ``manifest.csv`` submit.py writes in its output folder ({} if none)."""
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8", newline="") as f:
        return {
            r["file_name"]: PromptRow(index=int(r["index"]), image_id=r["image_id"], prompt=r["prompt"])
            for r in csv.DictReader(f)
        }


def match_prompts(
    images: Sequence[GeneratedImage],
    rows: Sequence[PromptRow],
    seed_start: int = 42,
    manifest: dict[str, PromptRow] | None = None,
) -> tuple[list[PromptRow | None], list[GeneratedImage]]:
    """The prompt row of each image (``None`` where unmatched) and the list of unmatched images."""
    by_id: dict[str, list[PromptRow]] = {}
    for row in rows:
        by_id.setdefault(normalize_id(row.image_id), []).append(row)

    matched: list[PromptRow | None] = []
    unmatched: list[GeneratedImage] = []
    for img in images:
        key = normalize_id(img.image_id)
        idx = img.seed - seed_start
        row: PromptRow | None = (manifest or {}).get(os.path.basename(img.path))
        if row is None and 0 <= idx < len(rows) and normalize_id(rows[idx].image_id) == key:
            row = rows[idx]
        elif row is None and len(by_id.get(key, ())) == 1:
            row = by_id[key][0]
        matched.append(row)
        if row is None:
            unmatched.append(img)
    return matched, unmatched


def require_all_matched(unmatched: Sequence[GeneratedImage], total: int, seed_start: int) -> None:
    if unmatched:
        shown = ", ".join(os.path.basename(g.path) for g in unmatched[:3]) + (" ..." if len(unmatched) > 3 else "")
        raise EvaluationError(
            f"{len(unmatched)} of {total} generated images have no prompt in the CSV (image_id not found, or "
            f"ambiguous and row seed-{seed_start} has another image_id; check --seed_start): {shown}"
        )
