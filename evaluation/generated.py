"""Which files are generated images, which are reference images, and which prompt belongs to which image.

Everything is read with the generator's own code (gen_worker): its file-name pattern
(naming.image_name / parse_image_name), its prompts reader (prompts.read_rows: the same columns,
``--id_column`` / ``--prompt_column``), its manifest and its settings record (output.record).

Generated images are the ``*.png`` files *directly* in the output folder named ``{stem}_seed{seed}.png``,
and in a ``--layout geneval`` folder the ``<row>/samples/<k>.png`` files its manifest lists (their id and
seed from the manifest); anything else (hidden or temporary files, other extensions, other sub-folders
such as ``grid/`` or ``quarantine/``) is ignored. A ``--output_format tar`` folder's images are the PNG
members of its ``shards/*.tar`` (named as the png layout names the file: the same images give the same list,
in the same order, and the same numbers); read_png_bytes reads either.

Prompt of a generated image:

0. the entry of the folder's ``manifest.csv`` (written by submit.py: index, row, k, image_id, seed, file_name,
   prompt) for that file name, when the folder has one -- exact, also for ids submit.py had to rename;
1. the row ``(seed - seed_start) // K`` (K: the recorded ``images_per_prompt``, 1 if none) of the prompts CSV (0-based, header excluded), if that row's id gives
   the image's file stem -- the rule "row i is generated with seed seed_start + i", which also tells
   apart the several captions of one COCO image (``--all_captions``). seed_start is the one the
   folder's ``generation_settings.json`` recorded (or ``--seed_start`` for a folder another tool made);
2. otherwise the only row whose id gives that stem, if there is one -- covers "every row gets seeds
   seed_start, seed_start+1, ... for its samples";
3. otherwise the image cannot be matched (an error for the CLIP score).

Ids compare by the file stem the generator makes of them (``7``, ``007`` and ``7.0`` are all ``000007``).
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from typing import Sequence

from evaluation.errors import EvaluationError
from gen_worker.naming import file_stem, parse_image_name
from gen_worker.output import layout, shards
from gen_worker.output import record as output_record
from gen_worker.prompts import read_rows

REFERENCE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class GeneratedImage:
    path: str  # the PNG file, or the tar shard that holds it (--output_format tar)
    image_id: str  # the file stem
    seed: int
    name: str = ""  # path relative to the output folder (default: the file name); in a shard: the png layout's
    member: tuple[int, int] | None = None  # in a shard: (offset, size) of the PNG member's bytes

    def __str__(self) -> str:
        """How messages name it: the file, or ``SHARD.tar:STEM`` (what ``submit.py show`` takes)."""
        return f"{self.path}:{self.name[:-len('.png')]}" if self.member else self.path


@dataclass(frozen=True)
class PromptRow:
    index: int  # 0-based data row number of the prompts file
    image_id: str
    prompt: str


def _natural_key(stem: str) -> tuple[int, int, str]:
    return (0, int(stem), "") if stem.isascii() and stem.isdigit() else (1, 0, stem)


def list_generated_images(folder: str) -> tuple[list[GeneratedImage], list[str]]:
    """The generated images in ``folder`` (sorted by image id, then seed) and the names of ignored entries."""
    if not os.path.isdir(folder):
        raise EvaluationError(f"generated image folder not found: {folder}")
    found: list[GeneratedImage] = []
    ignored: list[str] = []
    nested = {n for n in output_record.existing_images(folder) if "/" in n}
    manifest = output_record.read_manifest(folder) if nested else {}
    in_manifest = {r["file_name"]: r for r in manifest.values()}
    for name in sorted(nested):
        row = in_manifest.get(name)
        if row is None:
            ignored.append(name)
            continue
        found.append(GeneratedImage(path=os.path.join(folder, name), image_id=file_stem(row["image_id"]),
                                    seed=int(row["seed"]), name=name))
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        parsed = parse_image_name(entry.name) if entry.is_file() else None
        if parsed is None:
            if not any(n.startswith(entry.name + "/") for n in nested) and not (
                    entry.name == shards.SHARDS_DIR and entry.is_dir()):
                ignored.append(entry.name)
            continue
        found.append(GeneratedImage(path=entry.path, image_id=parsed[0], seed=parsed[1], name=entry.name))
    found += _shard_images(folder, ignored)
    names = collections.Counter(g.name for g in found)
    if len(names) != len(found):
        twice = sorted(n for n, count in names.items() if count > 1)
        raise EvaluationError(f"{folder}: {len(twice)} images are both a file and a shard member (first {twice[0]})")
    found.sort(key=lambda g: (_natural_key(g.image_id), g.image_id, g.seed))
    return found, ignored


def _shard_images(folder: str, ignored: list[str]) -> list[GeneratedImage]:
    """The PNG members of the tar shards in ``folder/shards/`` (--output_format tar), read from the shard
    indexes (gen_worker/output/shards.py: the format's one definition); a damaged shard is an error."""
    where = os.path.join(folder, shards.SHARDS_DIR)
    if not os.path.isdir(where):
        return []
    found = []
    for entry in sorted(os.scandir(where), key=lambda e: e.name):
        if shards.parse_shard_name(entry.name) is None or not entry.is_file():
            ignored.append(f"{shards.SHARDS_DIR}/{entry.name}")
            continue
        try:
            members = shards.sample_index(entry.path)
        except (shards.DamagedShard, OSError) as err:
            raise EvaluationError(f"cannot read shard {entry.path}: {err}") from None
        for stem, png, _ in members:
            parsed = parse_image_name(stem + ".png")
            if parsed is None:
                ignored.append(f"{entry.path}:{stem}")
                continue
            found.append(GeneratedImage(path=entry.path, image_id=parsed[0], seed=parsed[1], name=stem + ".png",
                                        member=(png.offset, png.size)))
    return found


def read_png_bytes(image: GeneratedImage | str) -> bytes:
    """The bytes of a generated image's PNG: its file, or its member of a tar shard."""
    if isinstance(image, GeneratedImage) and image.member is not None:
        return shards.read_member(image.path, *image.member)
    with open(image if isinstance(image, str) else image.path, "rb") as f:
        return f.read()


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


def read_prompts_csv(path: str, id_column: str | None = None, prompt_column: str | None = None) -> list[PromptRow]:
    """Every row of a prompts CSV, read as submit.py reads it (same column detection and overrides)."""
    _, _, rows = read_rows(path, id_column, prompt_column)
    return [PromptRow(index=i, image_id=row.image_id, prompt=row.prompt) for i, row in enumerate(rows)]


def read_manifest(folder: str) -> dict[str, PromptRow]:
    """``file_name -> PromptRow`` (the sample's prompt row) from the ``manifest.csv`` submit.py writes in its
    output folder ({} if none)."""
    samples = [output_record.manifest_sample(r) for r in output_record.read_manifest(folder).values()]
    return {s.file_name: PromptRow(index=s.row, image_id=s.image_id, prompt=s.prompt) for s in samples}


def recorded_seed_start(folder: str, given: int | None = None) -> int | None:
    """``given`` if set, else the seed_start the folder's settings record holds (None: no record)."""
    if given is not None or not os.path.isfile(os.path.join(folder, layout.SETTINGS_FILE)):
        return given
    return output_record.read_settings_record(folder).get("settings", {}).get("seed_start")


def recorded_images_per_prompt(folder: str) -> int:
    """The images_per_prompt the folder's settings record holds (1: none recorded)."""
    if not os.path.isfile(os.path.join(folder, layout.SETTINGS_FILE)):
        return 1
    return int(output_record.read_settings_record(folder).get("settings", {}).get("images_per_prompt") or 1)


def match_prompts(
    images: Sequence[GeneratedImage],
    rows: Sequence[PromptRow],
    seed_start: int | None = None,
    manifest: dict[str, PromptRow] | None = None,
    images_per_prompt: int = 1,
) -> tuple[list[PromptRow | None], list[GeneratedImage]]:
    """The prompt row of each image (``None`` where unmatched) and the list of unmatched images."""
    stems = [file_stem(row.image_id) for row in rows]
    by_stem: dict[str, list[PromptRow]] = {}
    for row, stem in zip(rows, stems):
        by_stem.setdefault(stem, []).append(row)

    matched: list[PromptRow | None] = []
    unmatched: list[GeneratedImage] = []
    for img in images:
        stem = file_stem(img.image_id)
        row: PromptRow | None = (manifest or {}).get(img.name or os.path.basename(img.path))
        idx = (img.seed - seed_start) // images_per_prompt if seed_start is not None else -1
        if row is None and 0 <= idx < len(rows) and stems[idx] == stem:
            row = rows[idx]
        elif row is None and len(by_stem.get(stem, ())) == 1:
            row = by_stem[stem][0]
        matched.append(row)
        if row is None:
            unmatched.append(img)
    return matched, unmatched


def match_folder(
    folder: str,
    images: Sequence[GeneratedImage],
    prompts_csv: str | None = None,
    seed_start: int | None = None,
    id_column: str | None = None,
    prompt_column: str | None = None,
) -> tuple[list[PromptRow | None], list[GeneratedImage], list[PromptRow], int | None]:
    """(matched, unmatched, rows, seed_start) for the images of ``folder``: prompts from ``prompts_csv``
    or, without one, from the folder's own manifest.csv; seed_start as given or as recorded."""
    manifest = read_manifest(folder)
    if prompts_csv:
        rows = read_prompts_csv(prompts_csv, id_column, prompt_column)
    else:
        rows = sorted({r.index: r for r in manifest.values()}.values(), key=lambda r: r.index)  # one per prompt
    seed_start = recorded_seed_start(folder, seed_start)
    matched, unmatched = match_prompts(images, rows, seed_start, manifest, recorded_images_per_prompt(folder))
    return matched, unmatched, rows, seed_start


def has_manifest(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, layout.MANIFEST_FILE))


def require_all_matched(unmatched: Sequence[GeneratedImage], total: int, seed_start: int | None) -> None:
    if unmatched:
        shown = ", ".join(g.name or os.path.basename(g.path) for g in unmatched[:3])
        shown += " ..." if len(unmatched) > 3 else ""
        why = (f"or ambiguous and row seed-{seed_start} has another image_id; check --seed_start" if seed_start is not None
               else "or ambiguous, and the folder has no generation_settings.json there: pass --seed_start")
        raise EvaluationError(
            f"{len(unmatched)} of {total} generated images have no prompt in the CSV (image_id not found, {why}): {shown}"
        )
