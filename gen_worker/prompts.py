"""Read the prompts CSV into samples: sample i is data row i (0-based), seed = seed_start + i.

Plain `csv` module (not pandas): ids keep their leading zeros, empty cells stay empty strings,
quoted fields with commas, quotes, newlines and any Unicode work. Every problem raises
PromptsError with a one-line message naming the file, the row or the column.
"""
import csv
import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

from gen_worker.naming import file_stem, image_name
from gen_worker.errors import T2IError

ID_COLUMNS = ("image_id", "id")
PROMPT_COLUMNS = ("prompt", "caption", "text")


class PromptsError(T2IError):
    pass


@dataclass(frozen=True)
class Sample:
    index: int  # 0-based data row
    image_id: str  # as written in the CSV
    prompt: str
    seed: int
    file_name: str  # {stem}_seed{seed}.png


def _find_column(header: Sequence[str], wanted: str | None, candidates: Sequence[str], path: str) -> str | None:
    """The column `wanted` (case and surrounding spaces ignored), else the first of `candidates` there (or None)."""
    lowered = {name.strip().lower(): name for name in header}
    if wanted is not None:
        if wanted in header:
            return wanted
        if wanted.strip().lower() in lowered:
            return lowered[wanted.strip().lower()]
        raise PromptsError(f"{path}: no column {wanted!r} (columns: {', '.join(header)})")
    return next((lowered[name] for name in candidates if name in lowered), None)


def read_rows(path: str, id_column: str | None = None,
              prompt_column: str | None = None) -> tuple[str | None, str, list[tuple[str, str]]]:
    """Return (id_column, prompt_column, [(image_id, prompt), ...]) for every data row."""
    if not os.path.exists(path):
        raise PromptsError(f"prompts CSV not found: {path}")
    if os.path.isdir(path):
        raise PromptsError(f"prompts CSV is a directory: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or not any(cell.strip() for cell in header):
                raise PromptsError(f"prompts CSV is empty: {path}")
            id_col = _find_column(header, id_column, ID_COLUMNS, path)  # None: the row number is the id
            prompt_col = _find_column(header, prompt_column, PROMPT_COLUMNS, path)
            if prompt_col is None:
                raise PromptsError(
                    f"{path}: no prompt column; expected one of {', '.join(PROMPT_COLUMNS)} or pass --prompt_column "
                    f"(columns: {', '.join(header)})")
            id_pos = header.index(id_col) if id_col is not None else None
            prompt_pos = header.index(prompt_col)
            rows: list[tuple[str, str]] = []
            for record in reader:
                if not record or record == [""]:
                    continue  # blank line
                line = reader.line_num
                if len(record) <= max(prompt_pos, id_pos or 0):
                    raise PromptsError(f"{path}: line {line} has {len(record)} fields, expected {len(header)}")
                prompt = record[prompt_pos]
                if not prompt.strip():
                    raise PromptsError(f"{path}: empty prompt in data row {len(rows)} (line {line})")
                image_id = record[id_pos].strip() if id_pos is not None else str(len(rows))
                if not image_id:
                    raise PromptsError(f"{path}: empty {id_col} in data row {len(rows)} (line {line})")
                rows.append((image_id, prompt))
    except UnicodeDecodeError as err:
        raise PromptsError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise PromptsError(f"{path}: malformed CSV ({err})") from None
    except OSError as err:
        raise PromptsError(f"cannot read prompts CSV {path}: {err.strerror}") from None
    if not rows:
        raise PromptsError(f"prompts CSV has a header but no data rows: {path}")
    return id_col, prompt_col, rows


def load_samples(path: str, seed_start: int, num_samples: int | None = None, id_column: str | None = None,
                 prompt_column: str | None = None) -> list[Sample]:
    """The first num_samples samples of the CSV (all rows when None)."""
    _, _, rows = read_rows(path, id_column, prompt_column)
    if num_samples is None:
        num_samples = len(rows)
    if num_samples < 1:
        raise PromptsError(f"--num_samples must be at least 1 (got {num_samples})")
    if num_samples > len(rows):
        raise PromptsError(f"--num_samples {num_samples} is more than the {len(rows)} prompts in {path}")
    samples = []
    stems: dict[str, str] = {}
    for index, (image_id, prompt) in enumerate(rows[:num_samples]):
        stem = file_stem(image_id)
        other = stems.setdefault(stem, image_id)
        if other != image_id:
            raise PromptsError(
                f"{path}: image ids {other!r} and {image_id!r} map to the same file name stem {stem!r}")
        seed = seed_start + index
        samples.append(Sample(index, image_id, prompt, seed, image_name(stem, seed)))
    return samples


def fingerprint(samples: Iterable[Sample]) -> str:
    """A hash of what the samples ask for: changes when any id, prompt or seed changes."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.index}\x1f{s.image_id}\x1f{s.seed}\x1f{s.prompt}\x1e".encode("utf-8"))
    return digest.hexdigest()
