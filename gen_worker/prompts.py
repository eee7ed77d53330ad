"""Read a prompts file into samples: row r (0-based) gives samples r*K .. r*K+K-1 (K = --images_per_prompt),
sample i gets seed seed_start + i. With K=1, sample i is row i.

Formats, by extension or --prompts_format: CSV, TSV (PartiPrompts), JSONL (one JSON object per line,
GenEval's evaluation_metadata.jsonl) and Parquet (read with pyarrow). Every format gets the same
checks and one-line PromptsError messages naming the file, the line or row, and the column.
CSV/TSV with the plain `csv` module (not pandas): ids keep their leading zeros, empty cells stay empty
strings, quoted fields with commas, quotes, newlines and any Unicode work. The columns other than the
id and the prompt go to the manifest as extra columns (text as is, anything else JSON-encoded).
"""
import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

from gen_worker.naming import file_stem, sample_path
from gen_worker.errors import T2IError, one_line

ID_COLUMNS = ("image_id", "id")
PROMPT_COLUMNS = ("prompt", "caption", "text")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
_NAMES = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSONL", "parquet": "Parquet"}
FORMATS = tuple(_NAMES)


class PromptsError(T2IError):
    pass


# One encoder for every row (json.dumps with options builds one per call: a tenth of planning a million rows).
_ROW_JSON = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False)


@dataclass(frozen=True, slots=True)  # slots: a million samples in less memory
class Sample:
    index: int  # i = row * K + k
    image_id: str  # as written in the prompts file
    prompt: str
    seed: int  # seed_start + index
    file_name: str  # path relative to the output folder: {stem}_seed{seed}.png, or the GenEval layout's
    row: int = -1  # 0-based data row of the prompts file (-1: the same as index)
    k: int = 0  # which of the row's --images_per_prompt images
    # The row's other columns for the manifest, as text, and the whole row as JSON (GenEval's metadata.jsonl).
    extra: tuple[tuple[str, str], ...] = ()
    metadata: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.row == -1:
            object.__setattr__(self, "row", self.index)


class Row(NamedTuple):
    image_id: str
    prompt: str
    fields: dict[str, Any]  # the whole row, every column, values as read


def prompts_format(path: str, given: str | None = None) -> str:
    """The format: as given, else by the file's extension; an unknown extension reads as CSV (as always)."""
    return given or _EXTENSIONS.get(os.path.splitext(path)[1].lower(), "csv")


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


Records = tuple[list[str], list[tuple[str, dict[str, Any]]]]  # columns, [(where, {column: value})]


def _read_delimited(path: str, delimiter: str) -> Records:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            return [], []
        records = []
        for cells in reader:
            if cells and cells != [""]:  # else a blank line
                # A short line lacks the last columns: an error only if the id or the prompt is among them.
                records.append((f"line {reader.line_num}", {name: cell for name, cell in zip(header, cells) if name}))
    return [name for name in header if name], records


class _RepeatedKey(Exception):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json.loads would keep the last one silently)."""
    value = dict(pairs)
    if len(value) < len(pairs):
        keys = [k for k, _ in pairs]
        raise _RepeatedKey(next(k for i, k in enumerate(keys) if k in keys[:i]))
    return value


def _read_jsonl(path: str) -> Records:
    columns: dict[str, None] = {}  # in order of first appearance
    records = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                # NaN and Infinity are no JSON (Python's reader takes them): null, as JSON writers have it
                value = json.loads(line, object_pairs_hook=_object, parse_constant=lambda _: None)
            except _RepeatedKey as key:
                raise PromptsError(f"{path}: line {number} gives the key {key.args[0]!r} twice") from None
            except ValueError as err:
                raise PromptsError(f"{path}: line {number} is not valid JSON ({err})") from None
            if not isinstance(value, dict):
                raise PromptsError(f"{path}: line {number} is not a JSON object")
            if "\\u" in line:  # only a JSON escape can make half a surrogate pair
                _check_unicode(value, path, f"line {number}")
            columns.update(dict.fromkeys(value))
            records.append((f"line {number}", value))
    return list(columns), records


def _check_unicode(value: Any, path: str, where: str) -> None:
    """Half a surrogate pair ("\\ud800") is no character: no file, manifest or PNG chunk can hold it."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise PromptsError(f"{path}: {where} holds a lone surrogate ({err.object[err.start:err.end]!r}), which is "
                           "not text: write the whole pair (e.g. \\ud83d\\ude00) or the character itself") from None


def _finite(value: Any) -> Any:
    """NaN and infinities (a Parquet float column's missing values) as None: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _read_parquet(path: str) -> Records:
    import pyarrow
    import pyarrow.parquet
    try:
        table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as err:
        raise PromptsError(f"{path}: not a readable Parquet file ({one_line(err)[:200]})") from None
    return list(table.column_names), [(f"row {i}", _finite(r)) for i, r in enumerate(table.to_pylist())]


def _as_text(value: Any) -> str:
    """A cell as manifest text: text as is, nothing as empty, anything else JSON (nested values too)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)


def _id_text(value: Any, path: str, where: str, column: str) -> str:
    """An id as text: text as written, an integer as its decimal digits; other types are refused
    (a float id such as 1.0 has no one text form)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        return ""
    raise PromptsError(f"{path}: {column} in {where} is {value!r}; ids must be text or integers")


def read_rows(path: str, id_column: str | None = None, prompt_column: str | None = None,
              fmt: str | None = None) -> tuple[str | None, str, list[Row]]:
    """Return (id_column, prompt_column, rows) for every data row of a prompts file."""
    fmt = prompts_format(path, fmt)
    kind = f"prompts {_NAMES[fmt]}"
    if not os.path.exists(path):
        raise PromptsError(f"{kind} not found: {path}")
    if os.path.isdir(path):
        raise PromptsError(f"{kind} is a directory: {path}")
    try:
        if fmt == "parquet":
            header, records = _read_parquet(path)
        elif fmt == "jsonl":
            header, records = _read_jsonl(path)
        else:
            header, records = _read_delimited(path, "\t" if fmt == "tsv" else ",")
    except UnicodeDecodeError as err:
        raise PromptsError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise PromptsError(f"{path}: malformed {_NAMES[fmt]} ({err})") from None
    except OSError as err:
        raise PromptsError(f"cannot read {kind} {path}: {err.strerror}") from None
    if not header:
        raise PromptsError(f"{kind} is empty: {path}")
    duplicated = sorted({n for n in header if header.count(n) > 1})
    if duplicated:
        raise PromptsError(f"{path}: column {duplicated[0]!r} appears more than once")
    id_col = _find_column(header, id_column, ID_COLUMNS, path)  # None: the row number is the id
    prompt_col = _find_column(header, prompt_column, PROMPT_COLUMNS, path)
    if prompt_col is None:
        raise PromptsError(
            f"{path}: no prompt column; expected one of {', '.join(PROMPT_COLUMNS)} or pass --prompt_column "
            f"(columns: {', '.join(header)})")
    rows: list[Row] = []
    for where, record in records:
        missing = [c for c in (prompt_col, id_col) if c is not None and c not in record]
        if missing:
            raise PromptsError(f"{path}: {where} has no {missing[0]!r} value")
        prompt = record[prompt_col]
        if prompt is not None and not isinstance(prompt, str):
            raise PromptsError(f"{path}: {prompt_col} in data row {len(rows)} ({where}) is not text: {prompt!r}")
        if not prompt or not prompt.strip():
            raise PromptsError(f"{path}: empty prompt in data row {len(rows)} ({where})")
        image_id = _id_text(record[id_col], path, where, id_col) if id_col is not None else str(len(rows))
        if not image_id:
            raise PromptsError(f"{path}: empty {id_col} in data row {len(rows)} ({where})")
        rows.append(Row(image_id, prompt, record))
    if not rows:
        raise PromptsError(f"{kind} has a header but no data rows: {path}")
    return id_col, prompt_col, rows


def load_samples(path: str, seed_start: int, num_samples: int | None = None, id_column: str | None = None,
                 prompt_column: str | None = None, *, images_per_prompt: int = 1, layout: str = "flat",
                 prompts_format: str | None = None) -> list[Sample]:
    """The first num_samples samples (all rows x images_per_prompt when None): sample i = row*K + k."""
    id_col, prompt_col, rows = read_rows(path, id_column, prompt_column, prompts_format)
    per_row = images_per_prompt
    total = len(rows) * per_row
    if num_samples is None:
        num_samples = total
    if num_samples < 1:
        raise PromptsError(f"--num_samples must be at least 1 (got {num_samples})")
    if num_samples > total:
        more = f" x {per_row} images per prompt" if per_row > 1 else ""
        raise PromptsError(f"--num_samples {num_samples} is more than the {len(rows)} prompts{more} in {path}")
    samples = []
    stems: dict[str, str] = {}
    for row in range((num_samples + per_row - 1) // per_row):
        image_id, prompt, fields = rows[row]
        stem = file_stem(image_id)
        other = stems.setdefault(stem, image_id)
        if other != image_id:
            raise PromptsError(
                f"{path}: image ids {other!r} and {image_id!r} map to the same file name stem {stem!r}")
        extra = tuple(_extra_columns(fields, (id_col, prompt_col)))
        metadata = _ROW_JSON.encode(fields)
        for k in range(per_row):
            index = row * per_row + k
            if index < num_samples:
                seed = seed_start + index
                name = sample_path(layout, stem, seed, row, k)
                samples.append(Sample(index, image_id, prompt, seed, name, row, k, extra, metadata))
    return samples


def _extra_columns(fields: dict[str, Any], used: Iterable[str | None]) -> Iterable[tuple[str, str]]:
    for name, value in fields.items():
        if name not in used:
            yield name, _as_text(value)


def fingerprint(samples: Iterable[Sample]) -> str:
    """A hash of what the samples ask for and record: changes when any id, prompt, seed, file name or
    other column of the prompts file (manifest, metadata.jsonl) changes."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.index}\x1f{s.image_id}\x1f{s.seed}\x1f{s.prompt}\x1f{s.file_name}\x1f{s.metadata}\x1e"
                      .encode("utf-8"))
    return digest.hexdigest()
